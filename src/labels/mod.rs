//! The label file: what a technician writes on the device to say what to look for.
//!
//! ```text
//! # comments start with '#'; blank lines are ignored
//! @templates imagenet80          # optional: imagenet7 (default), imagenet80 or none
//! @template a security camera photo of a {}.   # optional: own templates (replace the set)
//! cat
//! dog: a photo of a dog | a photo of a puppy | a {} on a lawn
//! coffee mug
//! ```
//!
//! A plain line is a label whose prompts are the templates applied to it. After `:`,
//! prompts are given explicitly, separated by `|`; `{}` in one is replaced by the label.
//! A label's embedding is the normalised mean of its prompts' normalised embeddings
//! (CLIP's prompt ensembling).
//!
//! Any language: labels, prompts and templates are written in the language the model's
//! text tower was trained on (`@template это фото {}.`, `gato: uma foto de um gato`).
//! Each line is brought to Unicode NFC, so a label typed with combining accents (as macOS
//! keyboards and some editors produce) is the same label, with the same token ids and cache
//! entry, as its precomposed spelling; and the invisible direction marks that editors put
//! into right-to-left text (U+200E/F, U+061C, U+202A–E, U+2066–9) are removed, since the
//! text is stored in logical order and a tokenizer would otherwise see them as characters.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;

/// Longest line accepted, in bytes: longer is a pasted blob, not a label.
pub const MAX_LINE_BYTES: usize = 1024;
/// Most labels in one file (the label matrix and cache grow with it).
pub const MAX_LABELS: usize = 10_000;
/// Largest label file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// CLIP's seven-template ImageNet ensemble, the subset its authors' prompt-engineering
/// notebook selected as nearly as good as all 80 at a tenth of the text-tower work.
const IMAGENET7: &str = include_str!("imagenet7.txt");
/// CLIP's full 80-template ImageNet ensemble from the paper.
const IMAGENET80: &str = include_str!("imagenet80.txt");

/// Errors in a label file, each naming `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something on one line is wrong.
    #[error("{origin}:{line}: {reason}")]
    Line {
        /// File name (or `<input>`).
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The file as a whole is unusable.
    #[error("{origin}: {reason}")]
    File {
        /// File name.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// A built-in template set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateSet {
    /// CLIP's 7-template ensemble (the default).
    #[default]
    Imagenet7,
    /// CLIP's 80-template ensemble.
    Imagenet80,
    /// The label text itself is the only prompt.
    None,
}

impl TemplateSet {
    /// The templates, each containing `{}`.
    pub fn templates(self) -> Vec<String> {
        match self {
            TemplateSet::Imagenet7 => IMAGENET7.lines().map(str::to_string).collect(),
            TemplateSet::Imagenet80 => IMAGENET80.lines().map(str::to_string).collect(),
            TemplateSet::None => vec!["{}".to_string()],
        }
    }

    fn parse(name: &str) -> Option<TemplateSet> {
        match name {
            "imagenet7" | "default" => Some(TemplateSet::Imagenet7),
            "imagenet80" => Some(TemplateSet::Imagenet80),
            "none" => Some(TemplateSet::None),
            _ => None,
        }
    }
}

/// One label and the prompts whose embeddings are averaged for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// What is reported when this label wins.
    pub name: String,
    /// Texts fed to the text tower.
    pub prompts: Vec<String>,
}

/// The labels to classify against, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    /// Where the set came from (file path or a description).
    pub origin: String,
    /// The labels.
    pub labels: Vec<Label>,
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prompts: usize = self.labels.iter().map(|l| l.prompts.len()).sum();
        write!(
            f,
            "{}: {} labels, {} prompts",
            self.origin,
            self.labels.len(),
            prompts
        )
    }
}

/// A label line before templates are applied.
struct Pending {
    name: String,
    explicit: Option<Vec<String>>,
}

fn key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Invisible bidirectional formatting marks: they order how text is displayed, never what
/// it says.
fn is_direction_mark(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One line as labels are compared, tokenized and cached: NFC, without direction marks.
fn canonical(text: &str) -> String {
    text.chars()
        .filter(|&c| !is_direction_mark(c))
        .nfc()
        .collect()
}

fn fill(template: &str, label: &str) -> String {
    template.replace("{}", label)
}

impl LabelSet {
    /// Reads and parses a label file.
    pub fn load(path: &Path) -> Result<LabelSet, LabelError> {
        let io = |source| LabelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(LabelError::File {
                origin: path.display().to_string(),
                reason: format!("{len} bytes; a label file may have at most {MAX_FILE_BYTES}"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses label-file bytes; `origin` names them in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<LabelSet, LabelError> {
        let line_err = |line: usize, reason: String| LabelError::Line {
            origin: origin.to_string(),
            line,
            reason,
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut set = TemplateSet::default();
        let mut own_templates: Vec<String> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();

        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            if raw.len() > MAX_LINE_BYTES {
                return Err(line_err(
                    n,
                    format!(
                        "line is {} bytes long; at most {MAX_LINE_BYTES} allowed",
                        raw.len()
                    ),
                ));
            }
            let text = std::str::from_utf8(raw).map_err(|e| {
                line_err(
                    n,
                    format!(
                        "not valid UTF-8 (byte {}); save the file as UTF-8",
                        e.valid_up_to() + 1
                    ),
                )
            })?;
            let text = canonical(text);
            let line = text.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(directive) = line.strip_prefix('@') {
                let (name, arg) = directive
                    .split_once(char::is_whitespace)
                    .unwrap_or((directive, ""));
                let arg = arg.trim();
                match name {
                    "template" => {
                        if !arg.contains("{}") {
                            return Err(line_err(
                                n,
                                format!("template '{arg}' has no {{}} where the label goes"),
                            ));
                        }
                        own_templates.push(arg.to_string());
                    }
                    "templates" => {
                        set = TemplateSet::parse(arg).ok_or_else(|| {
                            line_err(n, format!("unknown template set '{arg}' (use imagenet7, imagenet80 or none)"))
                        })?;
                    }
                    _ => {
                        return Err(line_err(
                            n,
                            format!("unknown directive '@{name}' (known: @template, @templates)"),
                        ))
                    }
                }
                continue;
            }
            let (name, explicit) = match line.split_once(':') {
                Some((name, prompts)) => {
                    let prompts: Vec<String> =
                        prompts.split('|').map(|p| p.trim().to_string()).collect();
                    if prompts.iter().any(String::is_empty) {
                        return Err(line_err(
                            n,
                            "empty prompt: write prompts as 'label: prompt one | prompt two'"
                                .into(),
                        ));
                    }
                    (name.trim(), Some(prompts))
                }
                None => (line, None),
            };
            if name.is_empty() {
                return Err(line_err(n, "no label before ':'".into()));
            }
            if let Some(first) = seen.insert(key(name), n) {
                return Err(line_err(
                    n,
                    format!("duplicate label '{name}' (first on line {first})"),
                ));
            }
            if pending.len() == MAX_LABELS {
                return Err(line_err(n, format!("more than {MAX_LABELS} labels")));
            }
            pending.push(Pending {
                name: name.to_string(),
                explicit,
            });
        }
        if pending.is_empty() {
            return Err(LabelError::File {
                origin: origin.to_string(),
                reason: "no labels: write one label per line".into(),
            });
        }
        let templates = if own_templates.is_empty() {
            set.templates()
        } else {
            own_templates
        };
        Ok(LabelSet {
            origin: origin.to_string(),
            labels: pending.into_iter().map(|p| p.build(&templates)).collect(),
        })
    }

    /// A label set from bare class names, each expanded through `templates` (used by `eval`).
    pub fn from_names<I: IntoIterator<Item = String>>(
        names: I,
        templates: TemplateSet,
        origin: &str,
    ) -> LabelSet {
        let templates = templates.templates();
        LabelSet {
            origin: origin.to_string(),
            labels: names
                .into_iter()
                .map(|name| {
                    Pending {
                        name,
                        explicit: None,
                    }
                    .build(&templates)
                })
                .collect(),
        }
    }

    /// Names of the labels written in letters beyond Latin script (Cyrillic, Greek, Arabic,
    /// CJK, …), in order: what an English-only text tower cannot read. Accented Latin
    /// (`café`) and emoji do not count.
    pub fn foreign_script_labels(&self) -> Vec<String> {
        self.labels
            .iter()
            .filter(|l| l.name.chars().any(|c| c.is_alphabetic() && c > '\u{24F}'))
            .map(|l| l.name.clone())
            .collect()
    }

    /// Label names in order.
    pub fn names(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.name.clone()).collect()
    }
}

impl Pending {
    fn build(self, templates: &[String]) -> Label {
        let mut prompts: Vec<String> = match self.explicit {
            Some(p) => p.iter().map(|p| fill(p, &self.name)).collect(),
            None => templates.iter().map(|t| fill(t, &self.name)).collect(),
        };
        // Two prompts that read the same would only weigh that text twice.
        let mut seen = std::collections::HashSet::new();
        prompts.retain(|p| seen.insert(p.clone()));
        Label {
            name: self.name,
            prompts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LabelSet, LabelError> {
        LabelSet::parse(s.as_bytes(), "labels.txt")
    }

    fn err_text(s: &[u8]) -> String {
        LabelSet::parse(s, "labels.txt").unwrap_err().to_string()
    }

    #[test]
    fn plain_labels_use_the_default_ensemble() {
        let s = parse("# pets\n\ncat\r\n  coffee mug  \n").unwrap();
        assert_eq!(s.names(), ["cat", "coffee mug"]);
        assert_eq!(s.labels[0].prompts.len(), 7);
        assert!(s.labels[0].prompts.contains(&"itap of a cat.".to_string()));
        assert!(s.labels[1]
            .prompts
            .contains(&"a photo of the large coffee mug.".to_string()));
    }

    #[test]
    fn template_sets_and_own_templates() {
        assert_eq!(
            parse("@templates imagenet80\ncat").unwrap().labels[0]
                .prompts
                .len(),
            80
        );
        assert_eq!(
            parse("@templates none\ncat").unwrap().labels[0].prompts,
            ["cat"]
        );
        let s = parse("cat\n@template a photo of a {}.\n@template a cctv still of a {}.").unwrap();
        assert_eq!(
            s.labels[0].prompts,
            ["a photo of a cat.", "a cctv still of a cat."]
        );
    }

    #[test]
    fn explicit_prompts_fill_the_label_and_drop_repeats() {
        let s = parse("dog: a photo of a puppy | a {} on a lawn | a photo of a puppy").unwrap();
        assert_eq!(s.labels[0].name, "dog");
        assert_eq!(
            s.labels[0].prompts,
            ["a photo of a puppy", "a dog on a lawn"]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            err_text(b"cat\ndog\nCat "),
            "labels.txt:3: duplicate label 'Cat' (first on line 1)"
        );
        assert!(
            err_text(b"cat\n@colour red").starts_with("labels.txt:2: unknown directive '@colour'")
        );
        assert!(err_text(b"@template a photo")
            .starts_with("labels.txt:1: template 'a photo' has no {}"));
        assert!(
            err_text(b"@templates fancy\ncat").starts_with("labels.txt:1: unknown template set")
        );
        assert!(err_text(b"cat\n: a cat").starts_with("labels.txt:2: no label before ':'"));
        assert!(err_text(b"cat: a || b").starts_with("labels.txt:1: empty prompt"));
        assert!(err_text(b"cat\nd\xFFg").starts_with("labels.txt:2: not valid UTF-8 (byte 2)"));
        let long = format!("cat\n{}", "x".repeat(MAX_LINE_BYTES + 1));
        assert!(err_text(long.as_bytes()).starts_with("labels.txt:2: line is 1025 bytes long"));
        assert_eq!(
            err_text(b"# nothing\n\n"),
            "labels.txt: no labels: write one label per line"
        );
        assert_eq!(
            err_text(b""),
            "labels.txt: no labels: write one label per line"
        );
    }

    #[test]
    fn too_many_labels_is_refused() {
        let text: String = (0..=MAX_LABELS).map(|i| format!("label {i}\n")).collect();
        assert!(err_text(text.as_bytes()).contains("more than 10000 labels"));
    }

    #[test]
    fn bom_and_unicode_labels_are_fine() {
        let s = LabelSet::parse("\u{FEFF}кошка\n咖啡杯\n".as_bytes(), "x").unwrap();
        assert_eq!(s.names(), ["кошка", "咖啡杯"]);
    }

    #[test]
    fn labels_in_other_languages_and_scripts() {
        let s = parse(
            "@template это фото {}.\n\
             кошка\n\
             собака: фотография собаки | {} на траве\n",
        )
        .unwrap();
        assert_eq!(s.names(), ["кошка", "собака"]);
        assert_eq!(s.labels[0].prompts, ["это фото кошка."]);
        assert_eq!(
            s.labels[1].prompts,
            ["фотография собаки", "собака на траве"]
        );
        // Cyrillic capitals fold for the duplicate check like Latin ones.
        let err = err_text("Кошка\nкошка\n".as_bytes());
        assert!(
            err.contains("labels.txt:2: duplicate label 'кошка'"),
            "{err}"
        );
        // Arabic with the marks an editor adds around a Latin word; the separators work
        // in logical order whatever the display direction.
        let s = parse("\u{200F}قطة\u{200F}: صورة \u{2066}cat\u{2069} | {} في الحديقة\n").unwrap();
        assert_eq!(s.names(), ["قطة"]);
        assert_eq!(s.labels[0].prompts, ["صورة cat", "قطة في الحديقة"]);
        // Chinese and emoji pass through unchanged.
        assert_eq!(parse("猫 🐈\n").unwrap().names(), ["猫 🐈"]);
        // What an English-only model is warned about: other scripts, not accents or emoji.
        let mixed = parse("café\n🐈\nкошка\ngato\n猫\n").unwrap();
        assert_eq!(mixed.foreign_script_labels(), ["кошка", "猫"]);
    }

    #[test]
    fn combining_accents_are_the_same_label_as_precomposed() {
        // "café" typed as e + U+0301 (NFD) and as U+00E9 (NFC).
        let nfd = parse("cafe\u{301}\nmaçã: uma foto de uma mac\u{327}a\u{303}\n").unwrap();
        assert_eq!(nfd.names(), ["café", "maçã"]);
        assert_eq!(nfd.labels[1].prompts, ["uma foto de uma maçã"]);
        let err = err_text("caf\u{e9}\ncafe\u{301}\n".as_bytes());
        assert!(
            err.contains(":2: duplicate label 'café' (first on line 1)"),
            "{err}"
        );
    }

    #[test]
    fn builtin_sets_are_well_formed() {
        assert_eq!(TemplateSet::Imagenet7.templates().len(), 7);
        assert_eq!(TemplateSet::Imagenet80.templates().len(), 80);
        for t in TemplateSet::Imagenet80.templates() {
            assert_eq!(t.matches("{}").count(), 1, "{t}");
        }
        // The 7 are a subset of the 80.
        let all = TemplateSet::Imagenet80.templates();
        assert!(TemplateSet::Imagenet7
            .templates()
            .iter()
            .all(|t| all.contains(t)));
    }

    #[test]
    fn load_reports_missing_file() {
        let err = LabelSet::load(Path::new("/nonexistent/labels.txt")).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/labels.txt: "),
            "{err}"
        );
    }
}
