//! On-disk cache of text embeddings, so a label file is embedded once per model.
//!
//! One file per (text tower sha256, tokenizer fingerprint): a header naming that key,
//! then append-only records `prompt → embedding`, each with a CRC32. Appending keeps a
//! label edit cheap (only new prompts are written); the CRC catches torn writes from a
//! power cut. A foreign file (other key, other format) is discarded; a corrupt tail is
//! cut off at the last good record. The cache is an accelerator, never a source of
//! truth: when it cannot be written (read-only or full disk), classification goes on.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encoder::Embedding;

const MAGIC: &[u8; 8] = b"EDGCLIPT";
const VERSION: u32 = 1;
/// Longest prompt stored; anything longer in a file means the file is damaged.
const MAX_PROMPT_BYTES: usize = 64 * 1024;

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

    fn file_name(&self) -> String {
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
    /// `None` until the first append; also `None` for good after a write failure.
    writer: Option<File>,
    write_failed: bool,
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
            state,
            writer: None,
            write_failed: false,
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

    /// Stores an embedding in memory and appends it to the file. A write failure is
    /// returned once and then writing stops, so a full disk does not spam the log.
    pub fn insert(&mut self, prompt: &str, embedding: Embedding) -> Result<(), CacheError> {
        let result = if self.write_failed || embedding.as_slice().len() != self.key.dim {
            Ok(())
        } else {
            self.append(prompt, &embedding).map_err(|source| {
                self.write_failed = true;
                self.writer = None;
                CacheError::Io {
                    path: self.path.clone(),
                    source,
                }
            })
        };
        self.entries.insert(prompt.to_string(), embedding);
        result
    }

    fn append(&mut self, prompt: &str, embedding: &Embedding) -> std::io::Result<()> {
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let fresh = matches!(self.state, CacheState::New | CacheState::Foreign);
            let mut f = if fresh {
                File::create(&self.path)?
            } else {
                OpenOptions::new().append(true).open(&self.path)?
            };
            if fresh {
                f.write_all(&header(&self.key))?;
                self.state = CacheState::Intact;
            }
            self.writer = Some(f);
        }
        let rec = record(prompt, embedding.as_slice());
        match self.writer.as_mut() {
            // One write per record: a crash leaves at most one torn record, which the CRC catches.
            Some(f) => f.write_all(&rec),
            None => Ok(()),
        }
    }
}

fn header(key: &CacheKey) -> Vec<u8> {
    let text = key.text();
    let mut h = Vec::with_capacity(16 + text.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(text.len() as u32).to_le_bytes());
    h.extend_from_slice(text.as_bytes());
    h
}

fn record(prompt: &str, values: &[f32]) -> Vec<u8> {
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
}
