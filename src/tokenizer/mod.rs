//! Tokenizer stage: label text → fixed-length token ids for a text tower.
//!
//! Two implementations behind one [`Tokenizer`] trait:
//!
//! * [`ClipBpe`] — OpenAI CLIP's byte-level BPE, bit-for-bit equal to
//!   `clip.tokenize(text, context_length, truncate=True)`, text cleanup
//!   included (a port of `ftfy.fix_text`, Python's `html.unescape`, CLIP's
//!   whitespace rules and pre-tokenisation regex). Parity matters because a
//!   single different id changes the text embedding, and with it the
//!   zero-shot scores.
//! * [`HfTokenizer`] — any Hugging Face `tokenizer.json`, through the
//!   `tokenizers` crate.
//!
//! Known differences of [`ClipBpe`] from the Python reference (Python 3.11,
//! ftfy 6.3.1, regex 2026.x), none of which real label text reaches:
//! * Lowercasing and NFC use Rust's / `unicode-normalization`'s Unicode
//!   version, the reference uses its Python's (14.0 for 3.11); they differ
//!   only on characters assigned after Unicode 14.
//! * Lone UTF-16 surrogates cannot occur in a Rust `&str`, so ftfy's
//!   `fix_surrogates` has nothing to do.
//! * ftfy's repeat-until-stable loops are capped at 64 rounds.

mod clean;
mod clip_bpe;
mod ftfy;
mod hf;
mod html;
#[allow(clippy::all)] // generated data
mod tables;

use std::path::PathBuf;

pub use clip_bpe::{ClipBpe, CLIP_MERGES};
pub use hf::HfTokenizer;

/// Token ids ready for a text tower: exactly `context_length` ids, padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, padded at the end to the context length.
    pub ids: Vec<i64>,
    /// 1 for a real token (markers included), 0 for padding; same length as `ids`.
    pub attention_mask: Vec<i64>,
}

/// Why a tokenizer could not be built or could not encode a text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A vocabulary / tokenizer file could not be read (or un-gzipped).
    #[error("cannot read tokenizer file {}: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The BPE vocabulary file is not what CLIP's tokenizer expects.
    #[error("bad BPE vocabulary {}, line {line}: {reason}", path.display())]
    BadVocab {
        /// The vocabulary file.
        path: PathBuf,
        /// 1-based line number of the problem.
        line: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The `tokenizers` crate rejected a tokenizer.json or failed to encode.
    #[error("Hugging Face tokenizer {}: {message}", path.display())]
    Hf {
        /// The tokenizer.json file.
        path: PathBuf,
        /// The crate's message.
        message: String,
    },
    /// The requested context length cannot hold the tokenizer's markers.
    #[error("context length {context_length} is too small: {reason}")]
    BadContextLength {
        /// The requested length.
        context_length: usize,
        /// Why it does not fit.
        reason: String,
    },
    /// A built-in table or pattern failed to load: a bug in this module.
    #[error("internal tokenizer error: {0}")]
    Internal(String),
}

/// Turns text into fixed-length token ids for a text tower.
pub trait Tokenizer: Send + Sync {
    /// Encodes one text, truncating to the context length (keeping the end token).
    fn encode(&self, text: &str) -> Result<Tokens, TokenizerError>;

    /// Number of ids every [`Tokens`] holds.
    fn context_length(&self) -> usize;

    /// A stable identifier of this tokenizer and its vocabulary (kind + sha256 of the vocabulary file), used as part of cache keys.
    fn fingerprint(&self) -> &str;
}

#[cfg(test)]
mod tests;
