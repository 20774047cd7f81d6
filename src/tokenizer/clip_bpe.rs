//! OpenAI CLIP's byte-level BPE tokenizer (`simple_tokenizer.py` +
//! `clip.tokenize(..., truncate=True)`), reimplemented for exact id parity.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::clean::{pre_tokenize, Cleaner};
use super::{Tokenizer, TokenizerError, Tokens};

/// Number of merges OpenAI's tokenizer reads: `merges[1:49152-256-2+1]`.
pub const CLIP_MERGES: usize = 49152 - 256 - 2;

/// Most words the BPE cache holds before it is cleared. Label sets are small
/// (hundreds of distinct words), so this only bounds memory on odd input.
const CACHE_CAPACITY: usize = 1 << 16;

/// Words longer than this many bytes use the O(n log n) merge loop; real
/// words are far shorter and faster with the reference's simple loop.
const LONG_WORD: usize = 64;

/// The start-of-text marker, matched as a whole pre-token.
const SOT_TEXT: &str = "<|startoftext|>";
/// The end-of-text marker, matched as a whole pre-token.
const EOT_TEXT: &str = "<|endoftext|>";

/// OpenAI CLIP's BPE tokenizer, reading `bpe_simple_vocab_16e6.txt.gz`.
///
/// Produces exactly the ids of `clip.tokenize(text, context_length,
/// truncate=True)`, including the text cleanup (ftfy, HTML unescaping,
/// whitespace collapsing, lowercasing). Encoding is thread-safe; BPE results
/// are cached per word.
pub struct ClipBpe {
    context_length: usize,
    fingerprint: String,
    cleaner: Cleaner,
    /// Id of each byte's character (GPT-2 `bytes_to_unicode`).
    byte_ids: [u32; 256],
    /// Id of each byte's character followed by `</w>` (word-final form).
    byte_end_ids: [u32; 256],
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Id → token string, for [`ClipBpe::decode`] and diagnostics.
    vocab: Vec<String>,
    sot: u32,
    eot: u32,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for ClipBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipBpe")
            .field("context_length", &self.context_length)
            .field("fingerprint", &self.fingerprint)
            .field("vocab_size", &self.vocab.len())
            .finish_non_exhaustive()
    }
}

/// GPT-2's `bytes_to_unicode`: the printable bytes map to themselves, the
/// others to U+0100 onwards, in this order (which is also the id order).
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut out: Vec<(u8, char)> = printable.iter().map(|&b| (b, char::from(b))).collect();
    let mut n = 0u32;
    for b in 0u8..=255 {
        if !printable.contains(&b) {
            out.push((b, char::from_u32(256 + n).unwrap_or('\u{FFFD}')));
            n += 1;
        }
    }
    out
}

impl ClipBpe {
    /// Loads the vocabulary (gzip or plain text, detected by content) and
    /// prepares a tokenizer producing `context_length` ids per text.
    ///
    /// The file must hold a header line and at least [`CLIP_MERGES`] merge
    /// lines of two space-separated symbols, as `bpe_simple_vocab_16e6.txt`
    /// does; anything else is a [`TokenizerError::BadVocab`] naming the line,
    /// since a shorter or malformed file would silently shift every id.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::BadContextLength {
                context_length,
                reason: "CLIP needs room for at least the end-of-text token".into(),
            });
        }
        let raw = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let fingerprint = format!("clip-bpe:{}", hex::encode(Sha256::digest(&raw)));
        let bytes = if raw.starts_with(&[0x1F, 0x8B]) {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::MultiGzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .map_err(|source| TokenizerError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            out
        } else {
            raw
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad_vocab(path, line, format!("not UTF-8: {}", e.utf8_error()))
        })?;
        Self::from_merges_text(&text, path, context_length, fingerprint)
    }

    fn from_merges_text(
        text: &str,
        path: &Path,
        context_length: usize,
        fingerprint: String,
    ) -> Result<Self, TokenizerError> {
        // simple_tokenizer: merges = text.split('\n')[1:49152-256-2+1]
        let mut merge_pairs: Vec<(&str, &str)> = Vec::with_capacity(CLIP_MERGES);
        for (index, line) in text.split('\n').enumerate().skip(1).take(CLIP_MERGES) {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merge_pairs.push((a, b)),
                _ => {
                    return Err(bad_vocab(
                        path,
                        index + 1,
                        format!("expected two space-separated symbols, found {line:?}"),
                    ))
                }
            }
        }
        if merge_pairs.len() < CLIP_MERGES {
            return Err(bad_vocab(
                path,
                merge_pairs.len() + 2,
                format!(
                    "file ends after {} merges; CLIP's vocabulary has {CLIP_MERGES}",
                    merge_pairs.len()
                ),
            ));
        }

        // vocab = byte chars + byte chars with </w> + merges + specials; the
        // encoder is `dict(zip(vocab, range(len(vocab))))`, so a repeated
        // string keeps its last index.
        let byte_chars = bytes_to_unicode();
        let mut vocab: Vec<String> = Vec::with_capacity(512 + CLIP_MERGES + 2);
        vocab.extend(byte_chars.iter().map(|(_, c)| c.to_string()));
        vocab.extend(byte_chars.iter().map(|(_, c)| format!("{c}</w>")));
        vocab.extend(merge_pairs.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(SOT_TEXT.to_string());
        vocab.push(EOT_TEXT.to_string());
        let mut encoder: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        for (id, token) in vocab.iter().enumerate() {
            encoder.insert(token.as_str(), id as u32);
        }
        let id_of = |s: &str| encoder.get(s).copied();

        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for (b, c) in &byte_chars {
            let plain = c.to_string();
            let end = format!("{c}</w>");
            match (id_of(&plain), id_of(&end)) {
                (Some(p), Some(e)) => {
                    byte_ids[usize::from(*b)] = p;
                    byte_end_ids[usize::from(*b)] = e;
                }
                _ => return Err(TokenizerError::Internal("byte symbol missing".into())),
            }
        }
        // bpe_ranks = dict(zip(merges, range(len(merges)))): a repeated pair
        // keeps its last rank. Pairs whose halves are not vocabulary strings
        // can never be adjacent symbols, so they are dropped.
        let mut merges = HashMap::with_capacity(CLIP_MERGES);
        for (rank, (a, b)) in merge_pairs.iter().enumerate() {
            if let (Some(ia), Some(ib), Some(iab)) = (id_of(a), id_of(b), id_of(&format!("{a}{b}")))
            {
                merges.insert((ia, ib), (rank as u32, iab));
            }
        }
        let (Some(sot), Some(eot)) = (id_of(SOT_TEXT), id_of(EOT_TEXT)) else {
            return Err(TokenizerError::Internal("special tokens missing".into()));
        };
        // Ids index `vocab`; make it the id → string inverse of `encoder`.
        let mut decoder = vec![String::new(); vocab.len()];
        for (s, &id) in &encoder {
            decoder[id as usize] = (*s).to_string();
        }
        drop(encoder);

        Ok(Self {
            context_length,
            fingerprint,
            cleaner: Cleaner::new()?,
            byte_ids,
            byte_end_ids,
            merges,
            vocab: decoder,
            sot,
            eot,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Id of `<|startoftext|>` (49406 for CLIP's vocabulary).
    pub fn sot_id(&self) -> i64 {
        i64::from(self.sot)
    }

    /// Id of `<|endoftext|>` (49407 for CLIP's vocabulary).
    pub fn eot_id(&self) -> i64 {
        i64::from(self.eot)
    }

    /// Number of ids in the vocabulary (49408 for CLIP's).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Empties the per-word BPE cache (to measure or bound cold-start cost).
    pub fn clear_cache(&self) {
        match self.cache.lock() {
            Ok(mut guard) => guard.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// The BPE token ids of `text` after CLIP's cleanup, without the start
    /// and end markers, padding or truncation (`SimpleTokenizer.encode`).
    pub fn encode_raw(&self, text: &str) -> Vec<i64> {
        let mut out = Vec::new();
        self.encode_into(text, usize::MAX, &mut out);
        out.into_iter().map(i64::from).collect()
    }

    /// Appends the BPE ids of `text` to `out`, stopping once `out` holds
    /// `limit` ids (later ids would be truncated away anyway).
    fn encode_into(&self, text: &str, limit: usize, out: &mut Vec<u32>) {
        let cleaned = self.cleaner.clean(text);
        let mut cache = match self.cache.lock() {
            Ok(guard) => guard,
            // A panic elsewhere cannot leave the cache inconsistent (every
            // entry is inserted whole), so keep using it.
            Err(poisoned) => poisoned.into_inner(),
        };
        for token in pre_tokenize(&cleaned) {
            if out.len() >= limit {
                break;
            }
            // simple_tokenizer pre-seeds its cache with the two markers, so
            // they map to their ids instead of being split into bytes.
            if token == SOT_TEXT {
                out.push(self.sot);
                continue;
            }
            if token == EOT_TEXT {
                out.push(self.eot);
                continue;
            }
            if let Some(ids) = cache.get(token) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.bpe(token.as_bytes());
            out.extend_from_slice(&ids);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(token.to_string(), ids);
        }
    }

    /// `SimpleTokenizer.bpe` on the byte-encoded word, returning ids. The
    /// last byte carries the `</w>` end-of-word marker, as in the reference;
    /// losing it (a known bug elsewhere) changes most ids.
    fn bpe(&self, word: &[u8]) -> Vec<u32> {
        let Some((&last, init)) = word.split_last() else {
            return Vec::new();
        };
        let mut symbols: Vec<u32> = init
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        symbols.push(self.byte_end_ids[usize::from(last)]);
        if symbols.len() > LONG_WORD {
            self.merge_long(symbols)
        } else {
            self.merge_short(symbols)
        }
    }

    /// The reference algorithm, literally: each round finds the
    /// lowest-ranked adjacent pair and merges all its occurrences left to
    /// right. Quadratic in the word length, fastest for real words.
    fn merge_short(&self, mut symbols: Vec<u32>) -> Vec<u32> {
        while symbols.len() > 1 {
            // Ranks are unique, so the minimum is unambiguous.
            let best = symbols
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])).map(|&m| ((w[0], w[1]), m)))
                .min_by_key(|&(_, (rank, _))| rank);
            let Some(((first, second), (_, merged))) = best else {
                break;
            };
            let mut next = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if symbols[i] == first && i + 1 < symbols.len() && symbols[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(symbols[i]);
                    i += 1;
                }
            }
            symbols = next;
        }
        symbols
    }

    /// The same rounds with a heap of candidate pairs and a linked list of
    /// symbols, O(n log n), so a pathological unbroken "word" of thousands of
    /// letters cannot stall encoding. Equivalence with [`Self::merge_short`]
    /// hinges on one detail: pairs created by a round are only queued after
    /// the round, because the reference merges *all* occurrences of a pair
    /// before looking at the pairs those merges create.
    fn merge_long(&self, mut sym: Vec<u32>) -> Vec<u32> {
        const NONE: usize = usize::MAX;
        let n = sym.len();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        // (rank, left position, left id, right id): smallest rank first, then
        // leftmost, which is the reference's left-to-right scan.
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        let pair_entry = |sym: &[u32], left: usize, right: usize| {
            self.merges
                .get(&(sym[left], sym[right]))
                .map(|&(rank, _)| Reverse((rank, left, sym[left], sym[right])))
        };
        for i in 0..n.saturating_sub(1) {
            heap.extend(pair_entry(&sym, i, i + 1));
        }
        let mut merged_at = Vec::new();
        while let Some(&Reverse((round_rank, ..))) = heap.peek() {
            merged_at.clear();
            while let Some(&Reverse((rank, p, left, right))) = heap.peek() {
                if rank != round_rank {
                    break;
                }
                heap.pop();
                // Entries go stale when a symbol merged since they were queued.
                let q = next[p];
                if !alive[p] || sym[p] != left || q == NONE || sym[q] != right {
                    continue;
                }
                let Some(&(_, merged)) = self.merges.get(&(left, right)) else {
                    continue;
                };
                sym[p] = merged;
                alive[q] = false;
                next[p] = next[q];
                if next[q] != NONE {
                    prev[next[q]] = p;
                }
                merged_at.push(p);
            }
            for &p in &merged_at {
                if prev[p] != NONE {
                    heap.extend(pair_entry(&sym, prev[p], p));
                }
                if next[p] != NONE {
                    heap.extend(pair_entry(&sym, p, next[p]));
                }
            }
        }
        // Position 0 is never the right half of a merge, so it starts the list.
        let mut out = Vec::new();
        let mut i = 0;
        while i != NONE && i < n {
            out.push(sym[i]);
            i = next[i];
        }
        out
    }

    /// Test hook: the two merge strategies on the same word.
    #[cfg(test)]
    pub(super) fn bpe_both_ways(&self, word: &[u8]) -> (Vec<u32>, Vec<u32>) {
        let Some((&last, init)) = word.split_last() else {
            return (Vec::new(), Vec::new());
        };
        let mut symbols: Vec<u32> = init
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        symbols.push(self.byte_end_ids[usize::from(last)]);
        (self.merge_short(symbols.clone()), self.merge_long(symbols))
    }

    /// Turns ids back into text (`SimpleTokenizer.decode`): markers are kept,
    /// `</w>` becomes a space, padding id 0 decodes as `!` as in Python, and
    /// ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = Vec::new();
        let unicode_to_byte: HashMap<char, u8> = bytes_to_unicode()
            .into_iter()
            .map(|(b, c)| (c, b))
            .collect();
        for &id in ids {
            let Some(token) = usize::try_from(id).ok().and_then(|i| self.vocab.get(i)) else {
                continue;
            };
            if token == SOT_TEXT || token == EOT_TEXT {
                bytes.extend_from_slice(token.as_bytes());
                continue;
            }
            let (body, end) = match token.strip_suffix("</w>") {
                Some(body) => (body, true),
                None => (token.as_str(), false),
            };
            bytes.extend(body.chars().filter_map(|c| unicode_to_byte.get(&c)));
            if end {
                bytes.push(b' ');
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn bad_vocab(path: &Path, line: usize, reason: String) -> TokenizerError {
    TokenizerError::BadVocab {
        path: PathBuf::from(path),
        line,
        reason,
    }
}

impl Tokenizer for ClipBpe {
    fn encode(&self, text: &str) -> Result<Tokens, TokenizerError> {
        let ctx = self.context_length;
        let mut ids: Vec<u32> = Vec::with_capacity(ctx);
        ids.push(self.sot);
        // One id past the window is enough to know truncation happened.
        self.encode_into(text, ctx, &mut ids);
        if ids.len() + 1 > ctx {
            // clip.tokenize(truncate=True): tokens[:ctx], last one := EOT.
            ids.truncate(ctx);
            if let Some(last) = ids.last_mut() {
                *last = self.eot;
            }
        } else {
            ids.push(self.eot);
        }
        let real = ids.len();
        let mut ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        ids.resize(ctx, 0);
        let mut attention_mask = vec![1i64; real];
        attention_mask.resize(ctx, 0);
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
