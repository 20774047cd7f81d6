//! CLIP's text normalisation and pre-tokenisation, as in OpenAI's
//! `simple_tokenizer.py`:
//!
//! ```python
//! text = whitespace_clean(basic_clean(text)).lower()
//! for token in re.findall(pat, text): ...
//! ```
//!
//! The character classes come from the Python reference (`tables.rs`), so
//! "whitespace", "letter" and "number" mean exactly what they mean there —
//! Python's `str.strip()`, the `regex` module's `\s`, `\p{L}` and `\p{N}`
//! under IGNORECASE — not Rust's slightly different definitions.

use super::ftfy::Ftfy;
use super::html::in_ranges;
use super::tables::{PAT_FOLDS, PAT_LETTER, PAT_NUMBER, PAT_OTHER, PY_ISSPACE, REGEX_SPACE};
use super::TokenizerError;

/// `basic_clean` + `whitespace_clean` + `lower`, with compiled state.
pub(super) struct Cleaner {
    ftfy: Ftfy,
}

impl Cleaner {
    /// Builds the cleaner (compiles ftfy's regexes once).
    pub(super) fn new() -> Result<Self, TokenizerError> {
        Ok(Self { ftfy: Ftfy::new()? })
    }

    /// `whitespace_clean(basic_clean(text)).lower()`.
    pub(super) fn clean(&self, text: &str) -> String {
        // basic_clean: ftfy.fix_text, then html.unescape twice, then strip.
        let fixed = self.ftfy.fix_text(text);
        let once = self.ftfy.html().unescape(&fixed);
        let twice = self.ftfy.html().unescape(&once);
        let stripped = py_strip(&twice);
        // whitespace_clean: re.sub(r'\s+', ' ', text).strip()
        let collapsed = collapse_whitespace(stripped);
        // Rust's `to_lowercase` uses full case mapping and the Final_Sigma
        // rule, as Python's `str.lower` does.
        py_strip(&collapsed).to_lowercase()
    }
}

/// Python's `str.strip()` with no argument (strips `str.isspace()` chars).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| is_py_space(c))
}

fn is_py_space(c: char) -> bool {
    if c.is_ascii() {
        matches!(
            c,
            '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f' | ' '
        )
    } else {
        PY_ISSPACE.binary_search(&c).is_ok()
    }
}

fn is_regex_space(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
    } else {
        REGEX_SPACE.binary_search(&c).is_ok()
    }
}

/// `regex.sub(r'\s+', ' ', s)`.
fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if is_regex_space(c) {
            if !in_space {
                out.push(' ');
                in_space = true;
            }
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Class of a character with respect to CLIP's pre-tokenisation pattern.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CharClass {
    Letter,
    Number,
    Other,
    /// Matches none of the three classes (whitespace): skipped by findall.
    Skip,
}

fn classify(c: char) -> CharClass {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => CharClass::Letter,
            '0'..='9' => CharClass::Number,
            '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' => CharClass::Skip,
            // The regex module's \s is White_Space: 0x1C..0x1F are not.
            _ => CharClass::Other,
        };
    }
    let v = u64::from(u32::from(c));
    if in_ranges(PAT_LETTER, v) {
        CharClass::Letter
    } else if in_ranges(PAT_NUMBER, v) {
        CharClass::Number
    } else if in_ranges(PAT_OTHER, v) {
        CharClass::Other
    } else {
        CharClass::Skip
    }
}

/// Does `c` match the pattern literal `lit` (an ASCII letter or symbol)
/// under the `regex` module's IGNORECASE (simple case folding)?
fn matches_ci(c: char, lit: char) -> bool {
    if c == lit || (c.is_ascii() && c.eq_ignore_ascii_case(&lit) && lit.is_ascii_alphabetic()) {
        return true;
    }
    if c.is_ascii() {
        return false;
    }
    PAT_FOLDS
        .iter()
        .find(|(l, _)| *l == lit)
        .is_some_and(|(_, extra)| extra.contains(&c))
}

/// If `rest` starts with `lit` (case-insensitively, per [`matches_ci`]),
/// the byte length of that prefix.
fn match_literal(rest: &str, lit: &str) -> Option<usize> {
    let mut chars = rest.char_indices();
    for l in lit.chars() {
        let (_, c) = chars.next()?;
        if !matches_ci(c, l) {
            return None;
        }
    }
    Some(chars.next().map_or(rest.len(), |(i, _)| i))
}

/// The alternatives of CLIP's pattern that are literals, in pattern order.
const LITERALS: [&str; 9] = [
    "<|startoftext|>",
    "<|endoftext|>",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
];

/// `re.findall(pat, text)` for CLIP's pattern
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// (IGNORECASE): at each position the first alternative that matches wins,
/// `+` runs are greedy, and positions matching nothing are skipped.
pub(super) fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < text.len() {
            let rest = &text[pos..];
            let first = rest.chars().next()?;
            if first == '<' || first == '\'' {
                if let Some(len) = LITERALS.iter().find_map(|lit| match_literal(rest, lit)) {
                    pos += len;
                    return Some(&rest[..len]);
                }
            }
            let class = classify(first);
            let len = match class {
                CharClass::Skip => {
                    pos += first.len_utf8();
                    continue;
                }
                CharClass::Number => first.len_utf8(),
                CharClass::Letter | CharClass::Other => rest
                    .char_indices()
                    .find(|&(_, c)| classify(c) != class)
                    .map_or(rest.len(), |(i, _)| i),
            };
            pos += len;
            return Some(&rest[..len]);
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenize_like_simple_tokenizer() {
        let toks: Vec<&str> = pre_tokenize("it's a <|endoftext|>''s dog's 123 ab!!c ſ'ſ").collect();
        assert_eq!(
            toks,
            [
                "it",
                "'s",
                "a",
                "<|endoftext|>",
                "''",
                "s",
                "dog",
                "'s",
                "1",
                "2",
                "3",
                "ab",
                "!!",
                "c",
                "ſ",
                "'ſ"
            ]
        );
    }

    #[test]
    fn whitespace_rules() {
        assert_eq!(collapse_whitespace("a \t\n b\u{3000}c"), "a b c");
        // Python's strip() removes U+001C, the regex module's \s does not.
        assert_eq!(py_strip("\u{1c} a \u{1c}"), "a");
        assert_eq!(collapse_whitespace("a\u{1c}b"), "a\u{1c}b");
    }
}
