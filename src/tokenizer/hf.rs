//! Hugging Face `tokenizer.json` tokenizers (BPE, WordPiece, Unigram) via the
//! `tokenizers` crate, for text towers that ship one instead of CLIP's BPE
//! vocabulary (multilingual and ruCLIP-style models).
//!
//! For BERT WordPiece files (`BertNormalizer` + `BertPreTokenizer`, e.g. the
//! `edgeclip-demo` bundle's all-MiniLM-L6-v2), ids equal transformers' slow,
//! pure-Python `BertTokenizer` (tests/wordpiece_parity.rs). One crate bug is
//! worked around here: its `BertNormalizer` puts spaces around CJK ideographs
//! only from U+2B920 on in Extension E, where BERT's `_is_chinese_char` starts
//! at U+2B820 (tokenizers 0.22.2); see [`BERT_CJK_GAP`]. Known remaining
//! differences, which no real label reaches: the crate classifies characters
//! (control, punctuation, non-spacing mark) with older Unicode tables than
//! Python 3.11's 14.0, so code points unassigned there or assigned/recategorised
//! since (e.g. U+061D, U+0898, U+2E55) can tokenize differently, and Python
//! drops unassigned code points as control characters while the crate keeps
//! them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::{
    NormalizerWrapper, PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use super::{Tokenizer, TokenizerError, Tokens};

/// Pad tokens looked up, in order, when neither the caller nor the
/// tokenizer.json names a padding id.
const PAD_TOKEN_CANDIDATES: [&str; 3] = ["[PAD]", "<pad>", "<|endoftext|>"];

/// CJK Extension E ideographs that BERT's reference tokenizer splits off as
/// Chinese characters (its range is U+2B820..=U+2CEAF) but the `tokenizers`
/// crate's `BertNormalizer` does not (its range starts at U+2B920, a typo
/// upstream). With `handle_chinese_chars`, [`HfTokenizer::encode`] puts the
/// spaces around them itself, as BERT's `_tokenize_chinese_chars` does.
const BERT_CJK_GAP: std::ops::RangeInclusive<char> = '\u{2B820}'..='\u{2B91F}';

/// A `tokenizer.json` tokenizer, truncating and padding to a fixed length.
///
/// Special tokens are added by the file's post-processor (e.g. `[CLS] …
/// [SEP]`); truncation makes room for them first, so the end token survives.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// Where the tokenizer.json came from, for error messages.
    path: PathBuf,
    context_length: usize,
    pad_id: i64,
    fingerprint: String,
    /// The normalizer is a `BertNormalizer` with `handle_chinese_chars`: space
    /// out [`BERT_CJK_GAP`] characters before encoding.
    space_cjk_gap: bool,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("context_length", &self.context_length)
            .field("pad_id", &self.pad_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl HfTokenizer {
    /// Loads `tokenizer_json` and configures truncation and right padding to
    /// `context_length`, overriding any truncation/padding in the file.
    ///
    /// The padding id is `pad_id` when given; otherwise the file's padding
    /// id, else the id of the first of `[PAD]`, `<pad>`, `<|endoftext|>` the
    /// vocabulary has, else 0.
    pub fn from_file(
        tokenizer_json: &Path,
        context_length: usize,
        pad_id: Option<i64>,
    ) -> Result<Self, TokenizerError> {
        let raw = std::fs::read(tokenizer_json).map_err(|source| TokenizerError::Io {
            path: tokenizer_json.to_path_buf(),
            source,
        })?;
        let hf_err = |message: String| TokenizerError::Hf {
            path: PathBuf::from(tokenizer_json),
            message,
        };
        let mut inner =
            tokenizers::Tokenizer::from_bytes(&raw).map_err(|e| hf_err(e.to_string()))?;

        // The post-processor's special tokens must fit: the crate subtracts
        // them from max_length without checking.
        let added = inner.get_post_processor().map_or(0, |p| {
            tokenizers::tokenizer::PostProcessor::added_tokens(p, false)
        });
        if context_length <= added {
            return Err(TokenizerError::BadContextLength {
                context_length,
                reason: format!("the post-processor alone adds {added} special tokens"),
            });
        }

        let pad_id = match pad_id {
            Some(id) => id,
            None => inner
                .get_padding()
                .map(|p| i64::from(p.pad_id))
                .or_else(|| {
                    PAD_TOKEN_CANDIDATES
                        .iter()
                        .find_map(|t| inner.token_to_id(t))
                        .map(i64::from)
                })
                .unwrap_or(0),
        };
        let pad_id_u32 = u32::try_from(pad_id)
            .map_err(|_| hf_err(format!("padding id {pad_id} is not a valid token id")))?;
        let pad_token = inner
            .id_to_token(pad_id_u32)
            .unwrap_or_else(|| "[PAD]".to_string());

        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| hf_err(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad_id_u32,
            pad_type_id: 0,
            pad_token,
        }));

        let space_cjk_gap = matches!(
            inner.get_normalizer(),
            Some(NormalizerWrapper::BertNormalizer(n)) if n.handle_chinese_chars
        );

        let fingerprint = format!("hf-tokenizer:{}", hex::encode(Sha256::digest(&raw)));
        Ok(Self {
            inner,
            path: tokenizer_json.to_path_buf(),
            context_length,
            pad_id,
            fingerprint,
            space_cjk_gap,
        })
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The tokenization model the file holds: `BPE`, `WordPiece`, `Unigram` (SentencePiece's)
    /// or `WordLevel`, and its vocabulary size (added tokens included).
    pub fn model_kind(&self) -> (&'static str, usize) {
        let kind = match self.inner.get_model() {
            tokenizers::ModelWrapper::BPE(_) => "BPE",
            tokenizers::ModelWrapper::WordPiece(_) => "WordPiece",
            tokenizers::ModelWrapper::Unigram(_) => "Unigram",
            tokenizers::ModelWrapper::WordLevel(_) => "WordLevel",
        };
        (kind, self.inner.get_vocab_size(true))
    }

    fn hf_error(&self, message: String) -> TokenizerError {
        TokenizerError::Hf {
            path: self.path.clone(),
            message,
        }
    }
}

/// `text` with a space either side of every [`BERT_CJK_GAP`] character.
/// Spaces commute with the rest of `BertNormalizer` (clean-up keeps them,
/// the character has no decomposition or lowercase), so the result equals
/// splitting the character off after clean-up, as BERT does.
fn space_cjk_gap(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if BERT_CJK_GAP.contains(&c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Tokens, TokenizerError> {
        let spaced;
        let input = if self.space_cjk_gap && text.chars().any(|c| BERT_CJK_GAP.contains(&c)) {
            spaced = space_cjk_gap(text);
            spaced.as_str()
        } else {
            text
        };
        let encoding = self
            .inner
            .encode(input, true)
            .map_err(|e| self.hf_error(format!("encoding {text:?}: {e}")))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        let mut attention_mask: Vec<i64> = encoding
            .get_attention_mask()
            .iter()
            .map(|&m| i64::from(m))
            .collect();
        // Truncation and fixed padding already give exactly context_length;
        // enforce the contract anyway rather than trust every model type.
        ids.resize(self.context_length, self.pad_id);
        attention_mask.resize(self.context_length, 0);
        Ok(Tokens {
            ids,
            attention_mask,
        })
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
