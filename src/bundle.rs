//! Model bundles: where a model lives on disk and how to feed it.
//!
//! A bundle is a directory. Three layouts are understood:
//!
//! * **edgeclip manifest** — `manifest.toml` names every file with its sha256, the
//!   preprocessing, the tokenizer and the logit scale (written by `models/prepare`).
//! * **Hugging Face / transformers.js** — `onnx/vision_model*.onnx`,
//!   `onnx/text_model*.onnx`, `tokenizer.json`, `config.json`,
//!   `preprocessor_config.json`.
//! * **open_clip export** (as used by Immich / clip-server) — `visual/model.onnx`,
//!   `textual/model.onnx`, `textual/tokenizer.json`, `config.json`,
//!   `visual/preprocess_cfg.json`.
//!
//! Whatever the layout, opening a bundle yields one [`ModelSpec`]; nothing after this
//! module knows which layout it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::classify::Scoring;
use crate::limits::{read_text_capped, MAX_CONFIG_BYTES};
use crate::preprocess::{Interpolation, PreprocessSpec, ResizeMode, CLIP_MEAN, CLIP_STD};

/// Name of the bundle used when `--model` is not given: the small pretrained image–text model
/// committed under `models/edgeclip-demo/` (built by `models/prepare edgeclip-demo`).
pub const DEFAULT_MODEL: &str = "edgeclip-demo";

/// OpenAI CLIP's trained logit scale (exp(4.6052)). Hugging Face configs only carry the
/// *initial* value (2.6592 → 14.3), so layouts without a manifest fall back to this.
pub const CLIP_TRAINED_LOGIT_SCALE: f32 = 100.0;

/// Errors while finding, reading or checking a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Neither a directory at that path nor a bundle of that name under the home.
    #[error(
        "model '{name}' not found (looked in {searched}).\n  Prepare it with `models/prepare {name}` \
         or pass --model PATH to a bundle directory; EDGECLIP_HOME moves the bundle home"
    )]
    NotFound {
        /// What the user asked for.
        name: String,
        /// Where we looked.
        searched: String,
    },
    /// A directory exists but holds none of the known layouts.
    #[error(
        "{path}: not a model bundle: expected manifest.toml, a Hugging Face layout \
         (onnx/vision_model.onnx + config.json) or an open_clip export (visual/model.onnx + textual/model.onnx)"
    )]
    UnknownLayout {
        /// The directory.
        path: PathBuf,
    },
    /// A file the bundle needs is absent.
    #[error("{path}: missing from the bundle ({what}); re-run `models/prepare` or copy the bundle again")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// What it is for.
        what: String,
    },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A manifest or config file could not be parsed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong, with line/column where the parser gives them.
        message: String,
    },
    /// A file's content does not match the sha256 in the manifest.
    #[error(
        "{path}: sha256 mismatch (manifest says {expected}, file is {actual}): the file is corrupt, \
         truncated or from another export; re-run `models/prepare` or restore the bundle"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The bundle has no tower file for the requested precision.
    #[error("{bundle}: no {tower} tower in {precision}; available: {available}")]
    NoPrecision {
        /// Bundle name.
        bundle: String,
        /// `visual` or `textual`.
        tower: &'static str,
        /// What was asked.
        precision: Precision,
        /// What exists.
        available: String,
    },
}

/// Numeric precision of a tower's ONNX graph.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The exported float graph.
    Fp32,
    /// Weights quantised to int8 (see the manifest for the scheme and measured fidelity).
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// How text is turned into token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSpec {
    /// OpenAI CLIP's byte-level BPE from `bpe_simple_vocab_16e6.txt(.gz)`.
    ClipBpe {
        /// The merges file.
        file: PathBuf,
        /// Token sequence length the text tower takes (77 for CLIP).
        context_length: usize,
    },
    /// A Hugging Face `tokenizer.json` (BPE, WordPiece or Unigram).
    HfJson {
        /// The tokenizer.json file.
        file: PathBuf,
        /// Token sequence length the text tower takes.
        context_length: usize,
        /// Padding id; `None` uses the tokenizer's own pad token.
        pad_id: Option<i64>,
    },
}

/// One ONNX file of a tower at one precision.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Expected sha256 (hex), when the layout records one.
    pub sha256: Option<String>,
    /// Free-text extra facts from the manifest (quantisation scheme, measured fidelity).
    pub notes: BTreeMap<String, String>,
}

/// One tower (image or text): its input/output names and files per precision.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerSpec {
    /// Name of the graph input fed with pixels or token ids; `None`: the first input.
    pub input: Option<String>,
    /// Name of the embedding output; `None`: the first output.
    pub output: Option<String>,
    /// Files by precision.
    pub files: BTreeMap<Precision, ModelFile>,
}

impl TowerSpec {
    /// The file for `precision`, or an error listing what the bundle has.
    fn file(
        &self,
        bundle: &str,
        tower: &'static str,
        precision: Precision,
    ) -> Result<&ModelFile, BundleError> {
        self.files
            .get(&precision)
            .ok_or_else(|| BundleError::NoPrecision {
                bundle: bundle.to_string(),
                tower,
                precision,
                available: self
                    .files
                    .keys()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Which on-disk layout a bundle was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `manifest.toml`.
    Manifest,
    /// Hugging Face / transformers.js.
    HuggingFace,
    /// open_clip ONNX export.
    OpenClip,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Manifest => "edgeclip manifest",
            Layout::HuggingFace => "Hugging Face / transformers.js",
            Layout::OpenClip => "open_clip export",
        })
    }
}

/// Everything the runtime needs to know about a model, whatever its layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Short name (directory name or manifest `name`).
    pub name: String,
    /// Architecture label, informational (`ViT-B-32`).
    pub architecture: String,
    /// Length of the embeddings both towers produce.
    pub embedding_dim: usize,
    /// Model family (`clip`, `siglip`, `m-clip`, …), informational.
    pub family: String,
    /// Whether the text tower was trained on many languages (label files in any language);
    /// an English-only model warns about labels that are not ASCII.
    pub multilingual: bool,
    /// How cosines become probabilities: softmax with the logit scale, or SigLIP's sigmoid.
    pub scoring: Scoring,
    /// How the image tower wants its pixels.
    pub preprocess: PreprocessSpec,
    /// How text becomes token ids.
    pub tokenizer: TokenizerSpec,
    /// Image tower.
    pub visual: TowerSpec,
    /// Text tower.
    pub textual: TowerSpec,
    /// Where the layout came from.
    pub layout: Layout,
    /// Values that were not in the files but inferred (shown by `edgeclip inspect`).
    pub inferred: Vec<String>,
}

/// An opened bundle: its root directory and its spec.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub root: PathBuf,
    /// What it holds.
    pub spec: ModelSpec,
}

/// The directory bundles are looked up in: `$EDGECLIP_HOME`, else `~/.cache/edgeclip`.
pub fn edgeclip_home() -> PathBuf {
    if let Some(h) = std::env::var_os("EDGECLIP_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("edgeclip")
}

impl Bundle {
    /// Opens a bundle given by path, or by name in one of [`Bundle::search_paths`].
    pub fn open(name_or_path: &str) -> Result<Bundle, BundleError> {
        let candidates = Self::search_paths(name_or_path);
        let root = candidates
            .iter()
            .find(|p| p.is_dir())
            .cloned()
            .ok_or_else(|| BundleError::NotFound {
                name: name_or_path.to_string(),
                searched: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Self::open_dir(&root)
    }

    /// Where `name_or_path` is looked for, in order: as a path; under [`edgeclip_home`]
    /// (bundles built by `models/prepare`); `../share/edgeclip/models/` beside the executable
    /// (an installed tree); the source checkout's `models/` the binary was built from (the
    /// committed default bundle, so a fresh clone works offline).
    pub fn search_paths(name_or_path: &str) -> Vec<PathBuf> {
        let mut paths = vec![
            PathBuf::from(name_or_path),
            edgeclip_home().join(name_or_path),
        ];
        if let Some(prefix) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        {
            paths.push(prefix.join("share/edgeclip/models").join(name_or_path));
        }
        paths.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(name_or_path),
        );
        // An absolute path joined onto any base is itself: list it once in errors.
        let mut seen = std::collections::HashSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        paths
    }

    /// The precision used when none is asked for: fp32 when both towers have it, else int8
    /// (the committed default bundle ships int8 only, to stay small).
    pub fn default_precision(&self) -> Precision {
        let has = |t: &TowerSpec, p| t.files.contains_key(&p);
        if has(&self.spec.visual, Precision::Fp32) && has(&self.spec.textual, Precision::Fp32) {
            Precision::Fp32
        } else {
            Precision::Int8
        }
    }

    /// Opens the bundle in directory `root`, detecting its layout.
    pub fn open_dir(root: &Path) -> Result<Bundle, BundleError> {
        let root = fs::canonicalize(root).map_err(|source| BundleError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let spec = if root.join("manifest.toml").is_file() {
            manifest::read(&root)?
        } else if root.join("onnx").is_dir() && root.join("config.json").is_file() {
            hf::read(&root)?
        } else if root.join("visual").join("model.onnx").is_file()
            && root.join("textual").join("model.onnx").is_file()
        {
            openclip::read(&root)?
        } else {
            return Err(BundleError::UnknownLayout { path: root });
        };
        // A nonsensical preprocessing spec is reported once, here, not on every frame.
        spec.preprocess.validate().map_err(|e| BundleError::Parse {
            path: root.clone(),
            message: e.to_string(),
        })?;
        Ok(Bundle { root, spec })
    }

    /// The image-tower file for `precision`, checked against its recorded sha256.
    pub fn visual_file(&self, precision: Precision) -> Result<&ModelFile, BundleError> {
        let f = self
            .spec
            .visual
            .file(&self.spec.name, "visual", precision)?;
        verify(f)?;
        Ok(f)
    }

    /// The text-tower file for `precision`, checked against its recorded sha256.
    pub fn textual_file(&self, precision: Precision) -> Result<&ModelFile, BundleError> {
        let f = self
            .spec
            .textual
            .file(&self.spec.name, "textual", precision)?;
        verify(f)?;
        Ok(f)
    }

    /// sha256 of the text tower at `precision`: from the manifest when it records one,
    /// else computed (memoised). Part of every text-embedding cache key.
    pub fn textual_digest(&self, precision: Precision) -> Result<String, BundleError> {
        let f = self.textual_file(precision)?;
        match &f.sha256 {
            Some(s) => Ok(s.clone()),
            None => file_sha256(&f.path),
        }
    }
}

/// Checks a file against its recorded sha256, if any.
///
/// Hashing a 350 MB tower costs about a second, which would dominate a cold start, so a
/// successful check is remembered in `$EDGECLIP_HOME/verified/` keyed by path, size and
/// modification time; any change to the file makes it hashed again.
fn verify(f: &ModelFile) -> Result<(), BundleError> {
    if !f.path.is_file() {
        return Err(BundleError::MissingFile {
            path: f.path.clone(),
            what: "ONNX graph".into(),
        });
    }
    let Some(expected) = &f.sha256 else {
        return Ok(());
    };
    let actual = file_sha256(&f.path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(BundleError::ChecksumMismatch {
            path: f.path.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// sha256 (hex) of a file, memoised on disk by (path, size, mtime).
pub fn file_sha256(path: &Path) -> Result<String, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let memo_key = hex::encode(Sha256::digest(format!(
        "{}\0{}\0{}",
        path.display(),
        meta.len(),
        mtime
    )));
    let memo = edgeclip_home().join("verified").join(&memo_key[..32]);
    if let Ok(s) = fs::read_to_string(&memo) {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s);
        }
    }
    let mut file = fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hex::encode(hasher.finalize());
    // The memo is an optimisation: failing to write it (read-only home) only costs time.
    if let Some(dir) = memo.parent() {
        let _ = fs::create_dir_all(dir).and_then(|_| fs::write(&memo, &digest));
    }
    Ok(digest)
}

/// Reads a manifest or JSON config (small files, so capped at [`MAX_CONFIG_BYTES`]).
fn read_text(path: &Path) -> Result<String, BundleError> {
    read_text_capped(path, MAX_CONFIG_BYTES).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf, BundleError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(BundleError::MissingFile {
            path,
            what: what.to_string(),
        })
    }
}

fn dir_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// The edgeclip `manifest.toml` layout.
mod manifest {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Manifest {
        format: u32,
        name: String,
        architecture: String,
        #[serde(default)]
        #[allow(dead_code)] // informational, shown by `inspect` through the raw file
        description: Option<String>,
        embedding_dim: usize,
        #[serde(default)]
        family: Option<String>,
        #[serde(default)]
        multilingual: bool,
        /// `softmax` (default) or `sigmoid`.
        #[serde(default)]
        scoring: Option<String>,
        logit_scale: f32,
        /// Required with `scoring = "sigmoid"`.
        #[serde(default)]
        logit_bias: Option<f32>,
        #[serde(default)]
        #[allow(dead_code)]
        pooling: Option<String>,
        preprocess: PreprocessSpec,
        tokenizer: Tok,
        visual: Tower,
        textual: Tower,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tok {
        kind: String,
        file: String,
        context_length: usize,
        #[serde(default)]
        pad_id: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tower {
        input: Option<String>,
        output: Option<String>,
        fp32: Option<File>,
        int8: Option<File>,
    }

    #[derive(Deserialize)]
    struct File {
        file: String,
        sha256: String,
        #[serde(flatten)]
        notes: BTreeMap<String, toml::Value>,
    }

    pub(super) fn read(root: &Path) -> Result<ModelSpec, BundleError> {
        let path = root.join("manifest.toml");
        let text = read_text(&path)?;
        let m: Manifest = toml::from_str(&text).map_err(|e| BundleError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if m.format != 1 {
            return Err(BundleError::Parse {
                path,
                message: format!(
                    "manifest format {} is not supported (this edgeclip reads format 1)",
                    m.format
                ),
            });
        }
        let tok_file = require(root.join(&m.tokenizer.file), "tokenizer vocabulary")?;
        let tokenizer = match m.tokenizer.kind.as_str() {
            "clip-bpe" => TokenizerSpec::ClipBpe {
                file: tok_file,
                context_length: m.tokenizer.context_length,
            },
            "hf-json" | "wordpiece" => TokenizerSpec::HfJson {
                file: tok_file,
                context_length: m.tokenizer.context_length,
                pad_id: m.tokenizer.pad_id,
            },
            other => {
                return Err(BundleError::Parse {
                    path,
                    message: format!(
                        "tokenizer kind '{other}' unknown (expected clip-bpe or hf-json)"
                    ),
                })
            }
        };
        let tower = |t: Tower| TowerSpec {
            input: t.input,
            output: t.output,
            files: [(Precision::Fp32, t.fp32), (Precision::Int8, t.int8)]
                .into_iter()
                .filter_map(|(p, f)| {
                    f.map(|f| {
                        let notes = f
                            .notes
                            .into_iter()
                            .map(|(k, v)| {
                                (
                                    k,
                                    v.as_str()
                                        .map(str::to_string)
                                        .unwrap_or_else(|| v.to_string()),
                                )
                            })
                            .collect();
                        (
                            p,
                            ModelFile {
                                path: root.join(f.file),
                                sha256: Some(f.sha256),
                                notes,
                            },
                        )
                    })
                })
                .collect(),
        };
        let scoring = match (m.scoring.as_deref(), m.logit_bias) {
            (None | Some("softmax"), None) => Scoring::Softmax {
                scale: m.logit_scale,
            },
            (Some("sigmoid"), Some(bias)) => Scoring::Sigmoid {
                scale: m.logit_scale,
                bias,
            },
            (Some("sigmoid"), None) => {
                return Err(BundleError::Parse {
                    path,
                    message: "scoring = \"sigmoid\" needs the model's logit_bias".into(),
                })
            }
            (None | Some("softmax"), Some(_)) => {
                return Err(BundleError::Parse {
                    path,
                    message: "logit_bias is only used with scoring = \"sigmoid\"".into(),
                })
            }
            (Some(other), _) => {
                return Err(BundleError::Parse {
                    path,
                    message: format!("scoring {other:?}: expected \"softmax\" or \"sigmoid\""),
                })
            }
        };
        let scale_ok = m.logit_scale.is_finite() && m.logit_scale > 0.0;
        let bias_ok = m.logit_bias.is_none_or(f32::is_finite);
        if !(scale_ok && bias_ok) {
            return Err(BundleError::Parse {
                path,
                message: format!(
                    "logit_scale must be a positive number and logit_bias a number (got {} and {:?})",
                    m.logit_scale, m.logit_bias
                ),
            });
        }
        Ok(ModelSpec {
            name: m.name,
            architecture: m.architecture,
            embedding_dim: m.embedding_dim,
            family: m.family.unwrap_or_else(|| "clip".into()),
            multilingual: m.multilingual,
            scoring,
            preprocess: m.preprocess,
            tokenizer,
            visual: tower(m.visual),
            textual: tower(m.textual),
            layout: Layout::Manifest,
            inferred: Vec::new(),
        })
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BundleError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| BundleError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn onnx_files(dir: &Path, stem: &str) -> BTreeMap<Precision, ModelFile> {
    let mut files = BTreeMap::new();
    let fp32 = dir.join(format!("{stem}.onnx"));
    if fp32.is_file() {
        files.insert(
            Precision::Fp32,
            ModelFile {
                path: fp32,
                sha256: None,
                notes: BTreeMap::new(),
            },
        );
    }
    // transformers.js names its dynamic-int8 export `_quantized`; `_int8` is the other common spelling.
    for suffix in ["quantized", "int8"] {
        let p = dir.join(format!("{stem}_{suffix}.onnx"));
        if p.is_file() {
            files.insert(
                Precision::Int8,
                ModelFile {
                    path: p,
                    sha256: None,
                    notes: BTreeMap::new(),
                },
            );
            break;
        }
    }
    files
}

/// The Hugging Face / transformers.js layout.
mod hf {
    use super::*;

    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        projection_dim: Option<usize>,
        #[serde(default)]
        text_config: Option<TextConfig>,
        #[serde(default)]
        vision_config: Option<VisionConfig>,
        #[serde(default)]
        model_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct TextConfig {
        #[serde(default)]
        max_position_embeddings: Option<usize>,
    }
    #[derive(Deserialize)]
    struct VisionConfig {
        #[serde(default)]
        image_size: Option<u32>,
    }
    #[derive(Deserialize)]
    struct Preproc {
        #[serde(default)]
        size: Option<serde_json::Value>,
        #[serde(default)]
        crop_size: Option<serde_json::Value>,
        #[serde(default)]
        resample: Option<u32>,
        #[serde(default)]
        image_mean: Option<[f32; 3]>,
        #[serde(default)]
        image_std: Option<[f32; 3]>,
        #[serde(default)]
        do_center_crop: Option<bool>,
    }

    /// `size` is an int, `{shortest_edge: n}` or `{height, width}` depending on the version.
    fn size_of(v: &serde_json::Value) -> Option<u32> {
        v.as_u64()
            .or_else(|| v.get("shortest_edge").and_then(|s| s.as_u64()))
            .or_else(|| v.get("height").and_then(|s| s.as_u64()))
            .and_then(|n| u32::try_from(n).ok())
    }

    pub(super) fn read(root: &Path) -> Result<ModelSpec, BundleError> {
        let mut inferred = Vec::new();
        let config: Config = parse_json(&root.join("config.json"))?;
        let pp_path = root.join("preprocessor_config.json");
        let pp: Preproc = if pp_path.is_file() {
            parse_json(&pp_path)?
        } else {
            inferred.push("preprocessing: no preprocessor_config.json, CLIP defaults used".into());
            Preproc {
                size: None,
                crop_size: None,
                resample: None,
                image_mean: None,
                image_std: None,
                do_center_crop: None,
            }
        };
        let image_size = pp
            .crop_size
            .as_ref()
            .and_then(size_of)
            .or(config.vision_config.as_ref().and_then(|v| v.image_size))
            .unwrap_or(224);
        // Without a centre crop the tower sees the resize's output: squashed to its input size.
        let (resize, resize_to) = if pp.do_center_crop == Some(false) {
            (ResizeMode::Squash, image_size)
        } else {
            let to = pp.size.as_ref().and_then(size_of).unwrap_or(image_size);
            (ResizeMode::ShortestSide, to)
        };
        let preprocess = PreprocessSpec {
            image_size,
            resize,
            resize_to,
            // PIL codes: 2 = bilinear, 3 = bicubic (CLIP's).
            interpolation: if pp.resample == Some(2) {
                Interpolation::Bilinear
            } else {
                Interpolation::Bicubic
            },
            mean: pp.image_mean.unwrap_or(CLIP_MEAN),
            std: pp.image_std.unwrap_or(CLIP_STD),
        };
        let tok = require(root.join("tokenizer.json"), "tokenizer")?;
        let context_length = config
            .text_config
            .as_ref()
            .and_then(|t| t.max_position_embeddings)
            .unwrap_or(77);
        let embedding_dim = config.projection_dim.unwrap_or_else(|| {
            inferred.push("embedding_dim: not in config.json, assumed 512".into());
            512
        });
        inferred.push(format!(
            "logit_scale: {CLIP_TRAINED_LOGIT_SCALE} (OpenAI CLIP's trained value; config.json only holds the initial one)"
        ));
        let onnx = root.join("onnx");
        let visual = TowerSpec {
            input: None,
            output: Some("image_embeds".into()),
            files: onnx_files(&onnx, "vision_model"),
        };
        let textual = TowerSpec {
            input: None,
            output: Some("text_embeds".into()),
            files: onnx_files(&onnx, "text_model"),
        };
        if visual.files.is_empty() || textual.files.is_empty() {
            return Err(BundleError::MissingFile {
                path: onnx.join(if visual.files.is_empty() {
                    "vision_model.onnx"
                } else {
                    "text_model.onnx"
                }),
                what: "tower graph".into(),
            });
        }
        let architecture = config.model_type.unwrap_or_else(|| "clip".into());
        if architecture.starts_with("siglip") {
            // SigLIP's learned scale and bias, like CLIP's scale, are weights, not config.
            return Err(BundleError::Parse {
                path: root.join("config.json"),
                message: format!(
                    "model_type {architecture:?}: its learned sigmoid scale and bias are not in \
                     config.json; prepare a manifest.toml bundle with models/prepare, which \
                     records them"
                ),
            });
        }
        Ok(ModelSpec {
            name: dir_name(root),
            architecture,
            embedding_dim,
            family: "clip".into(),
            multilingual: false,
            scoring: Scoring::Softmax {
                scale: CLIP_TRAINED_LOGIT_SCALE,
            },
            preprocess,
            tokenizer: TokenizerSpec::HfJson {
                file: tok,
                context_length,
                // The tokenizer's own padding, as transformers pads: config.json's
                // pad_token_id is often a stale default (1 for CLIP) the tokenizer never uses.
                pad_id: None,
            },
            visual,
            textual,
            layout: Layout::HuggingFace,
            inferred,
        })
    }
}

/// The open_clip ONNX export layout (Immich, clip-server).
mod openclip {
    use super::*;

    #[derive(Deserialize)]
    struct Config {
        embed_dim: usize,
        #[serde(default)]
        text_cfg: Option<TextCfg>,
    }
    #[derive(Deserialize)]
    struct TextCfg {
        #[serde(default)]
        context_length: Option<usize>,
    }
    #[derive(Deserialize)]
    struct PreprocessCfg {
        size: serde_json::Value,
        #[serde(default)]
        mean: Option<[f32; 3]>,
        #[serde(default)]
        std: Option<[f32; 3]>,
        #[serde(default)]
        interpolation: Option<String>,
        #[serde(default)]
        resize_mode: Option<String>,
    }

    pub(super) fn read(root: &Path) -> Result<ModelSpec, BundleError> {
        let mut inferred = Vec::new();
        let config: Config = parse_json(&require(root.join("config.json"), "model config")?)?;
        let pp_path = root.join("visual").join("preprocess_cfg.json");
        let pp: PreprocessCfg = parse_json(&require(pp_path.clone(), "preprocessing config")?)?;
        let size = pp
            .size
            .as_u64()
            .or_else(|| pp.size.get(0).and_then(|v| v.as_u64()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| BundleError::Parse {
                path: pp_path.clone(),
                message: "size: expected n or [h, w]".into(),
            })?;
        let preprocess = PreprocessSpec {
            image_size: size,
            resize: match pp.resize_mode.as_deref() {
                Some("squash") => ResizeMode::Squash,
                _ => ResizeMode::ShortestSide,
            },
            resize_to: size,
            interpolation: match pp.interpolation.as_deref() {
                Some("bilinear") => Interpolation::Bilinear,
                _ => Interpolation::Bicubic,
            },
            mean: pp.mean.unwrap_or(CLIP_MEAN),
            std: pp.std.unwrap_or(CLIP_STD),
        };
        inferred.push(format!(
            "logit_scale: {CLIP_TRAINED_LOGIT_SCALE} (open_clip exports do not record it)"
        ));
        let tok = require(root.join("textual").join("tokenizer.json"), "tokenizer")?;
        let tower = |dir: &str| TowerSpec {
            input: None,
            output: None,
            files: onnx_files(&root.join(dir), "model"),
        };
        Ok(ModelSpec {
            name: dir_name(root),
            architecture: "open_clip".into(),
            embedding_dim: config.embed_dim,
            family: "clip".into(),
            multilingual: false,
            scoring: Scoring::Softmax {
                scale: CLIP_TRAINED_LOGIT_SCALE,
            },
            preprocess,
            tokenizer: TokenizerSpec::HfJson {
                file: tok,
                context_length: config.text_cfg.and_then(|t| t.context_length).unwrap_or(77),
                pad_id: Some(0),
            },
            visual: tower("visual"),
            textual: tower("textual"),
            layout: Layout::OpenClip,
            inferred,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    const MANIFEST: &str = r#"
format = 1
name = "tiny"
architecture = "ViT-B-32"
embedding_dim = 4
logit_scale = 100.0
[preprocess]
image_size = 224
resize = "shortest-side"
resize_to = 224
interpolation = "bicubic"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
[tokenizer]
kind = "clip-bpe"
file = "vocab.txt.gz"
context_length = 77
[visual]
input = "pixel_values"
output = "image_embeds"
[visual.fp32]
file = "visual.onnx"
sha256 = "SHA"
[textual]
[textual.fp32]
file = "textual.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

    fn tiny_bundle(dir: &Path) {
        write(dir, "vocab.txt.gz", "x");
        write(dir, "visual.onnx", "not really onnx");
        write(dir, "textual.onnx", "other");
        let sha = hex::encode(Sha256::digest(b"not really onnx"));
        write(dir, "manifest.toml", &MANIFEST.replace("SHA", &sha));
    }

    #[test]
    fn manifest_bundle_opens_and_checks_sha256() {
        let tmp = tempfile::tempdir().unwrap();
        tiny_bundle(tmp.path());
        let b = Bundle::open(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(b.spec.name, "tiny");
        assert_eq!(b.spec.layout, Layout::Manifest);
        assert!(b.visual_file(Precision::Fp32).is_ok());
        let err = b.textual_file(Precision::Fp32).unwrap_err();
        assert!(matches!(err, BundleError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains("models/prepare"));
        let err = b.visual_file(Precision::Int8).unwrap_err();
        assert!(
            err.to_string()
                .contains("no visual tower in int8; available: fp32"),
            "{err}"
        );
    }

    #[test]
    fn the_manifest_says_how_to_score() {
        let tmp = tempfile::tempdir().unwrap();
        tiny_bundle(tmp.path());
        let b = Bundle::open_dir(tmp.path()).unwrap();
        assert_eq!(b.spec.scoring, Scoring::Softmax { scale: 100.0 });
        assert_eq!(
            (b.spec.family.as_str(), b.spec.multilingual),
            ("clip", false)
        );
        let with = |fields: &str| {
            let text = MANIFEST.replace("logit_scale = 100.0\n", fields);
            write(tmp.path(), "manifest.toml", &text);
            Bundle::open_dir(tmp.path())
        };
        let siglip = with(
            "family = \"siglip\"\nmultilingual = true\nscoring = \"sigmoid\"\n\
             logit_scale = 117.5\nlogit_bias = -12.5\n",
        )
        .unwrap();
        assert_eq!(
            siglip.spec.scoring,
            Scoring::Sigmoid {
                scale: 117.5,
                bias: -12.5
            }
        );
        assert_eq!(siglip.spec.family, "siglip");
        assert!(siglip.spec.multilingual);
        for (fields, says) in [
            (
                "scoring = \"sigmoid\"\nlogit_scale = 10.0\n",
                "needs the model's logit_bias",
            ),
            ("logit_scale = 10.0\nlogit_bias = -3.0\n", "only used with"),
            ("scoring = \"argmax\"\nlogit_scale = 10.0\n", "\"argmax\""),
            ("logit_scale = -1.0\n", "positive"),
            ("logit_scale = nan\n", "positive"),
        ] {
            let err = with(fields).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("manifest.toml"),
                "{fields}: {err}"
            );
        }
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let tmp = tempfile::tempdir().unwrap();
        tiny_bundle(tmp.path());
        let b = Bundle::open_dir(tmp.path()).unwrap();
        assert!(b.visual_file(Precision::Fp32).is_ok());
        // Same size, new content: the memo must not hide the corruption.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(tmp.path(), "visual.onnx", "NOT really onnx");
        assert!(matches!(
            b.visual_file(Precision::Fp32),
            Err(BundleError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn missing_and_unknown_bundles_say_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Bundle::open("no-such-model").unwrap_err();
        assert!(
            err.to_string().contains("models/prepare no-such-model"),
            "{err}"
        );
        let err = Bundle::open(tmp.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(err, BundleError::UnknownLayout { .. }));
        tiny_bundle(tmp.path());
        fs::remove_file(tmp.path().join("vocab.txt.gz")).unwrap();
        let err = Bundle::open_dir(tmp.path()).unwrap_err();
        assert!(matches!(err, BundleError::MissingFile { .. }), "{err}");
        write(tmp.path(), "vocab.txt.gz", "x");
        write(tmp.path(), "manifest.toml", "format = 1\nname = ");
        let err = Bundle::open_dir(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("manifest.toml"), "{err}");
    }

    #[test]
    fn hf_layout_is_inferred() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "config.json",
            r#"{"projection_dim": 512, "model_type": "clip", "text_config": {"max_position_embeddings": 77}}"#,
        );
        write(
            tmp.path(),
            "preprocessor_config.json",
            r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "resample": 3, "image_mean": [0.1,0.2,0.3], "image_std": [0.4,0.5,0.6]}"#,
        );
        write(tmp.path(), "tokenizer.json", "{}");
        write(tmp.path(), "onnx/vision_model.onnx", "");
        write(tmp.path(), "onnx/vision_model_quantized.onnx", "");
        write(tmp.path(), "onnx/text_model.onnx", "");
        let b = Bundle::open_dir(tmp.path()).unwrap();
        assert_eq!(b.spec.layout, Layout::HuggingFace);
        assert_eq!(b.spec.preprocess.mean, [0.1, 0.2, 0.3]);
        assert_eq!(b.spec.visual.files.len(), 2);
        assert_eq!(b.spec.textual.files.len(), 1);
        assert_eq!(
            b.spec.scoring,
            Scoring::Softmax {
                scale: CLIP_TRAINED_LOGIT_SCALE
            }
        );
        assert!(b.spec.inferred.iter().any(|s| s.contains("logit_scale")));
        // SigLIP's sigmoid bias is a weight: without a manifest it cannot score right.
        write(
            tmp.path(),
            "config.json",
            r#"{"projection_dim": 512, "model_type": "siglip"}"#,
        );
        let err = Bundle::open_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("siglip") && err.contains("models/prepare"),
            "{err}"
        );
    }

    #[test]
    fn openclip_layout_is_inferred() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "config.json",
            r#"{"embed_dim": 512, "text_cfg": {"context_length": 77}}"#,
        );
        write(
            tmp.path(),
            "visual/preprocess_cfg.json",
            r#"{"size": [224, 224], "mode": "RGB", "mean": [0.1,0.2,0.3], "std": [0.4,0.5,0.6], "interpolation": "bicubic", "resize_mode": "shortest"}"#,
        );
        write(tmp.path(), "visual/model.onnx", "");
        write(tmp.path(), "textual/model.onnx", "");
        write(tmp.path(), "textual/tokenizer.json", "{}");
        let b = Bundle::open_dir(tmp.path()).unwrap();
        assert_eq!(b.spec.layout, Layout::OpenClip);
        assert_eq!(b.spec.embedding_dim, 512);
        assert_eq!(b.spec.preprocess.resize, ResizeMode::ShortestSide);
    }
}
