//! On-disk cache of text embeddings, so a label file is embedded once per model.
//!
//! One file per (text tower sha256, tokenizer fingerprint): a header naming that key,
//! then append-only records `prompt → embedding`, each with a CRC32. Appending keeps a
//! label edit cheap (only new prompts are written); the CRC catches torn writes from a
//! power cut. A foreign file (other key, other format) is discarded; a corrupt tail is
//! cut off at the last good record. The cache is an accelerator, never a source of
//! truth: when it cannot be written (read-only or full disk), classification goes on.
//!
//! A failed append is cut back off the file (a full disk leaves no torn record for the
//! next open to repair) and its prompts are kept as unsaved; the failure is reported once.
//! The first insert at least [`WRITE_RETRY`] later tries again, quietly, to write everything
//! unsaved, so once the disk has room the next new prompt brings the file up to date, and a
//! disk that stays full costs one failed write per [`WRITE_RETRY`], not one per prompt.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::encoder::Embedding;

const MAGIC: &[u8; 8] = b"EDGCLIPT";
const VERSION: u32 = 1;
/// Longest prompt stored; anything longer in a file means the file is damaged.
const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// After a failed write, how long inserts only keep prompts in memory before writing again.
pub const WRITE_RETRY: Duration = Duration::from_secs(5);

/// Errors writing the cache (reading problems are repaired, not reported as errors).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache file could not be created or appended to.
    #[error("embedding cache {path}: {source}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a cache file is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// sha256 of the text tower graph.
    pub model_sha256: String,
    /// The tokenizer's fingerprint (kind + vocabulary hash + context length).
    pub tokenizer: String,
    /// Embedding length.
    pub dim: usize,
    /// How the embeddings were computed when it was not in fp32 on the CPU (`TensorRT
    /// fp16`, `CUDA`: [`crate::encoder::BackendInfo::compute_tag`]); `None` for the CPU.
    /// GPU embeddings differ from CPU ones in the third decimal, so they get their own file
    /// rather than being mixed with (or served to) CPU runs. The CPU backends (tract, native,
    /// onnxruntime's CPU provider) agree to a cosine of 0.9999 and share one file, and the key
    /// text is unchanged for them, so caches written before this field existed stay valid.
    pub compute: Option<String>,
}

impl CacheKey {
    fn text(&self) -> String {
        let mut text = format!(
            "model={} tokenizer={} dim={}",
            self.model_sha256, self.tokenizer, self.dim
        );
        if let Some(c) = &self.compute {
            text.push_str(&format!(" compute={c}"));
        }
        text
    }

    pub(crate) fn file_name(&self) -> String {
        let h = hex::encode(Sha256::digest(self.text().as_bytes()));
        format!("{}.emb", &h[..24])
    }
}

/// How a cache file was found when opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// No file yet.
    New,
    /// Read completely.
    Intact,
    /// A damaged tail was cut off (count of good records kept is in `len()`).
    Repaired,
    /// The file belonged to another model/format and was discarded.
    Foreign,
}

/// Text embeddings for one model, in memory, backed by an append-only file.
pub struct EmbeddingCache {
    path: PathBuf,
    key: CacheKey,
    entries: HashMap<String, Embedding>,
    state: CacheState,
    /// `None` until the first append, and again after a write failure.
    writer: Option<File>,
    /// Length of the file up to its last complete record, while `writer` is open.
    good_len: u64,
    /// Prompts held in memory but not yet in the file (a write failed).
    unsaved: Vec<String>,
    /// The file must be written from scratch, header and every entry: it is new, foreign,
    /// or a failed write could not be cut back off it.
    rewrite: bool,
    /// Set by a failed write (which has been reported) until a write succeeds: when the
    /// next attempt is due.
    retry_at: Option<Instant>,
}

impl EmbeddingCache {
    /// Opens (reading and repairing) the cache for `key` in directory `dir`.
    pub fn open(dir: &Path, key: CacheKey) -> EmbeddingCache {
        let path = dir.join(key.file_name());
        let (entries, state, good_len) = match fs::read(&path) {
            Err(_) => (HashMap::new(), CacheState::New, 0),
            Ok(bytes) => read_records(&bytes, &key),
        };
        match state {
            CacheState::Foreign => log::warn!(
                "{}: written for another model or format; rebuilding",
                path.display()
            ),
            CacheState::Repaired => {
                log::warn!(
                    "{}: damaged after {} good entries; cut there",
                    path.display(),
                    entries.len()
                );
                // Cutting the tail lets new appends follow the last good record.
                if let Err(e) = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good_len as u64))
                {
                    log::warn!("{}: could not cut the damaged tail: {e}", path.display());
                }
            }
            _ => {}
        }
        EmbeddingCache {
            path,
            key,
            entries,
            rewrite: matches!(state, CacheState::New | CacheState::Foreign),
            state,
            writer: None,
            good_len: 0,
            unsaved: Vec::new(),
            retry_at: None,
        }
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the file was found.
    pub fn state(&self) -> CacheState {
        self.state
    }

    /// Number of cached prompts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached embedding of `prompt`.
    pub fn get(&self, prompt: &str) -> Option<&Embedding> {
        self.entries.get(prompt)
    }

    /// Stores an embedding in memory and writes it, with any earlier prompts a failed write
    /// left unsaved, to the file. A write failure is returned once; later failures are
    /// silent until a write succeeds again (see the [module documentation](self)).
    pub fn insert(&mut self, prompt: &str, embedding: Embedding) -> Result<(), CacheError> {
        if embedding.as_slice().len() != self.key.dim {
            self.entries.insert(prompt.to_string(), embedding);
            return Ok(());
        }
        self.entries.insert(prompt.to_string(), embedding);
        self.unsaved.push(prompt.to_string());
        let failing = self.retry_at.is_some();
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        match self.write_unsaved() {
            Ok(saved) => {
                if self.retry_at.take().is_some() {
                    log::info!(
                        "{}: writable again; {saved} embeddings saved",
                        self.path.display()
                    );
                }
                Ok(())
            }
            Err(source) => {
                self.retry_at = Some(Instant::now() + WRITE_RETRY);
                if failing {
                    return Ok(());
                }
                Err(CacheError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Writes the unsaved prompts (everything, when the file must be rewritten) in one
    /// write; returns how many. On failure the file is cut back to its last good record.
    fn write_unsaved(&mut self) -> std::io::Result<usize> {
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = if self.rewrite {
                File::create(&self.path)?
            } else {
                OpenOptions::new().append(true).open(&self.path)?
            };
            self.good_len = f.metadata()?.len();
            self.writer = Some(f);
        }
        let mut bytes = Vec::new();
        let prompts: Vec<&String> = if self.rewrite {
            bytes.extend_from_slice(&header(&self.key));
            self.entries.keys().collect()
        } else {
            self.unsaved.iter().collect()
        };
        let mut saved = 0;
        for prompt in prompts {
            if let Some(e) = self.entries.get(prompt.as_str()) {
                bytes.extend_from_slice(&record(prompt, e.as_slice()));
                saved += 1;
            }
        }
        let Some(f) = self.writer.as_mut() else {
            return Ok(0);
        };
        // One write: a crash leaves at most one torn record, which the CRC catches.
        match f.write_all(&bytes) {
            Ok(()) => {
                self.good_len += bytes.len() as u64;
                self.unsaved.clear();
                self.rewrite = false;
                self.state = CacheState::Intact;
                Ok(saved)
            }
            Err(e) => {
                // A full disk may have taken part of the write: cut it off, so that the
                // next write follows the last good record. If even that fails, the file
                // is written afresh next time.
                if f.set_len(self.good_len).is_err() {
                    self.rewrite = true;
                }
                self.writer = None;
                Err(e)
            }
        }
    }
}

pub(crate) fn header(key: &CacheKey) -> Vec<u8> {
    let text = key.text();
    let mut h = Vec::with_capacity(16 + text.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(text.len() as u32).to_le_bytes());
    h.extend_from_slice(text.as_bytes());
    h
}

pub(crate) fn record(prompt: &str, values: &[f32]) -> Vec<u8> {
    let mut r = Vec::with_capacity(8 + prompt.len() + 4 * values.len());
    r.extend_from_slice(&(prompt.len() as u32).to_le_bytes());
    r.extend_from_slice(prompt.as_bytes());
    for v in values {
        r.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

/// Parses a whole cache file: the records that are intact, how the file was, and the
/// byte length up to the last good record.
fn read_records(bytes: &[u8], key: &CacheKey) -> (HashMap<String, Embedding>, CacheState, usize) {
    let mut entries = HashMap::new();
    let expected = header(key);
    if !bytes.starts_with(&expected) {
        return (entries, CacheState::Foreign, 0);
    }
    let mut r = &bytes[expected.len()..];
    let mut good = expected.len();
    let rec_tail = 4 * key.dim + 4;
    while !r.is_empty() {
        let Some(len) = r
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            break;
        };
        if len > MAX_PROMPT_BYTES || r.len() < 4 + len + rec_tail {
            break;
        }
        let body = &r[..4 + len + 4 * key.dim];
        let crc_bytes = &r[4 + len + 4 * key.dim..4 + len + rec_tail];
        let crc = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(prompt) = std::str::from_utf8(&body[4..4 + len]) else {
            break;
        };
        let values: Vec<f32> = body[4 + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        entries.insert(prompt.to_string(), Embedding::from_unit(values));
        r = &r[4 + len + rec_tail..];
        good += 4 + len + rec_tail;
    }
    let state = if r.is_empty() {
        CacheState::Intact
    } else {
        CacheState::Repaired
    };
    (entries, state, good)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str) -> CacheKey {
        CacheKey {
            model_sha256: model.into(),
            tokenizer: "clip-bpe:abc".into(),
            dim: 3,
            compute: None,
        }
    }

    #[test]
    fn gpu_embeddings_get_their_own_file_and_cpu_keys_are_unchanged() {
        let cpu = key("m1");
        // The key text of CPU embeddings is what it was before `compute` existed, so an
        // existing cache file keeps its name.
        assert_eq!(cpu.text(), "model=m1 tokenizer=clip-bpe:abc dim=3");
        let gpu = CacheKey {
            compute: Some("TensorRT fp16".into()),
            ..key("m1")
        };
        assert_ne!(cpu.file_name(), gpu.file_name());
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), gpu.clone());
        c.insert("a photo of a cat.", emb(1.0)).unwrap();
        drop(c);
        assert!(EmbeddingCache::open(dir.path(), cpu)
            .get("a photo of a cat.")
            .is_none());
        assert!(EmbeddingCache::open(dir.path(), gpu)
            .get("a photo of a cat.")
            .is_some());
    }

    fn emb(x: f32) -> Embedding {
        Embedding::normalised(vec![x, 1.0, 2.0]).unwrap()
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::New);
        c.insert("a photo of a cat.", emb(1.0)).unwrap();
        c.insert("a photo of a dog.", emb(2.0)).unwrap();
        drop(c);
        let c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::Intact);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a photo of a dog."), Some(&emb(2.0)));
    }

    #[test]
    fn another_model_uses_another_file_and_a_foreign_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), key("m1"));
        c.insert("x", emb(1.0)).unwrap();
        let other = EmbeddingCache::open(dir.path(), key("m2"));
        assert!(other.is_empty());
        assert_ne!(other.path(), c.path());
        // Someone copies m2's name over m1's file: the header no longer matches.
        let path = c.path().to_path_buf();
        drop(c);
        fs::write(&path, b"something else entirely").unwrap();
        let mut c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::Foreign);
        assert!(c.is_empty());
        c.insert("y", emb(3.0)).unwrap();
        let c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::Intact);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_torn_or_flipped_record_is_cut_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), key("m1"));
        for i in 0..3 {
            c.insert(&format!("p{i}"), emb(i as f32)).unwrap();
        }
        let path = c.path().to_path_buf();
        drop(c);
        let mut bytes = fs::read(&path).unwrap();
        // Flip one bit in the last record's values.
        let n = bytes.len();
        bytes[n - 6] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let mut c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::Repaired);
        assert_eq!(c.len(), 2);
        assert!(c.get("p2").is_none());
        c.insert("p2", emb(2.0)).unwrap();
        drop(c);
        // Torn write: half a record at the end.
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&record("p3", emb(3.0).as_slice())[..7]);
        fs::write(&path, &bytes).unwrap();
        let c = EmbeddingCache::open(dir.path(), key("m1"));
        assert_eq!(c.state(), CacheState::Repaired);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("p2"), Some(&emb(2.0)));
    }

    #[test]
    fn an_unwritable_cache_keeps_working_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"file where the cache dir should be").unwrap();
        let mut c = EmbeddingCache::open(&blocker, key("m1"));
        assert!(c.insert("a", emb(1.0)).is_err());
        // Reported once, then silent; the entry is still served.
        assert!(c.insert("b", emb(2.0)).is_ok());
        assert_eq!(c.get("a"), Some(&emb(1.0)));
    }

    #[test]
    fn prompts_left_unsaved_by_a_failed_write_are_written_once_the_disk_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        fs::write(&cache_dir, b"a file where the cache dir should be").unwrap();
        let mut c = EmbeddingCache::open(&cache_dir, key("m1"));
        assert!(c.insert("a", emb(1.0)).is_err());
        // Within WRITE_RETRY: kept in memory, no second report.
        assert!(c.insert("b", emb(2.0)).is_ok());
        assert_eq!(c.unsaved, ["a", "b"]);
        fs::remove_file(&cache_dir).unwrap();
        // As if WRITE_RETRY had passed: the next insert writes all three.
        c.retry_at = Some(Instant::now());
        assert!(c.insert("c", emb(3.0)).is_ok());
        assert!(c.unsaved.is_empty());
        assert!(c.retry_at.is_none());
        drop(c);
        let c = EmbeddingCache::open(&cache_dir, key("m1"));
        assert_eq!(c.state(), CacheState::Intact);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b"), Some(&emb(2.0)));
    }
}
