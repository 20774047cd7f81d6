//! Unit tests of the tokenizer stage.
//!
//! Structural behaviour (markers, truncation, padding, errors) is tested on a
//! small synthetic vocabulary written to a temporary file, so it always runs.
//! Ids of the real CLIP vocabulary are checked when that file is available
//! (`EDGECLIP_BPE_VOCAB`, or the prepared bundle under `EDGECLIP_HOME`); the
//! expected ids were produced by running OpenAI's `simple_tokenizer` +
//! `clip.tokenize(truncate=True)`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::clip_bpe::CLIP_MERGES;
use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// GPT-2 byte characters for bytes 0x80..=0xFF, which never occur in the
/// ASCII words these tests encode: filler merges built from them cannot
/// interfere with the merges under test.
fn high_byte_chars() -> Vec<char> {
    let mut out = Vec::new();
    let mut n = 0u32;
    for b in 0u32..=255 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let c = if printable {
            char::from_u32(b)
        } else {
            n += 1;
            char::from_u32(255 + n)
        };
        if b >= 0x80 {
            out.extend(c);
        }
    }
    out
}

/// A vocabulary file in CLIP's format: header, `merges` test merges first
/// (ranks 0..), then filler up to [`CLIP_MERGES`].
fn synthetic_vocab(merges: &[(&str, &str)]) -> String {
    let mut text = String::from("\"bpe_simple_vocab_16e6.txt#version: 0.2\n");
    for (a, b) in merges {
        text.push_str(&format!("{a} {b}\n"));
    }
    let high = high_byte_chars();
    let mut filler = 0;
    'outer: for &x in &high {
        for &y in &high {
            for end in ["", "</w>"] {
                for z in ["", "\u{100}"] {
                    if merges.len() + filler == CLIP_MERGES {
                        break 'outer;
                    }
                    text.push_str(&format!("{x}{z} {y}{end}\n"));
                    filler += 1;
                }
            }
        }
    }
    text
}

/// Id of the merge of rank `rank` (after 256 bytes and 256 `</w>` bytes).
fn merge_id(rank: i64) -> i64 {
    512 + rank
}

const SOT: i64 = 49406;
const EOT: i64 = 49407;

struct Synthetic {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write_synthetic(
    merges: &[(&str, &str)],
    gzip: bool,
) -> Result<Synthetic, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let text = synthetic_vocab(merges);
    let path = dir
        .path()
        .join(if gzip { "vocab.txt.gz" } else { "vocab.txt" });
    let file = std::fs::File::create(&path)?;
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(text.as_bytes())?;
        enc.finish()?;
    } else {
        let mut file = file;
        file.write_all(text.as_bytes())?;
    }
    Ok(Synthetic { _dir: dir, path })
}

/// Merges for "cat": rank 0 `c a`, rank 1 `ca t</w>` (word-final "cat"),
/// rank 2 `ca t` (word-internal "cat").
const CAT_MERGES: [(&str, &str); 3] = [("c", "a"), ("ca", "t</w>"), ("ca", "t")];

fn byte_id(b: u8) -> i64 {
    // Printable ASCII bytes come first, in order, starting at '!'.
    i64::from(b - b'!')
}

#[test]
fn end_of_word_marker_selects_the_final_form() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let tok = ClipBpe::from_file(&vocab.path, 8)?;
    assert_eq!(tok.sot_id(), SOT);
    assert_eq!(tok.eot_id(), EOT);
    // "cat" alone is word-final: `ca` + `t</w>` → rank 1.
    assert_eq!(tok.encode_raw("cat"), [merge_id(1)]);
    // "catcat": the first "cat" is internal (rank 2), the second final.
    assert_eq!(tok.encode_raw("catcat"), [merge_id(2), merge_id(1)]);
    // A single character is its own word-final byte symbol.
    assert_eq!(tok.encode_raw("x"), [256 + byte_id(b'x')]);
    Ok(())
}

#[test]
fn encode_adds_markers_pads_and_masks() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, true)?;
    let tok = ClipBpe::from_file(&vocab.path, 8)?;
    let t = tok.encode("  CAT ")?;
    assert_eq!(t.ids, [SOT, merge_id(1), EOT, 0, 0, 0, 0, 0]);
    assert_eq!(t.attention_mask, [1, 1, 1, 0, 0, 0, 0, 0]);
    Ok(())
}

#[test]
fn empty_text_is_just_the_markers() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let tok = ClipBpe::from_file(&vocab.path, 5)?;
    for text in ["", "   ", "\n\t"] {
        let t = tok.encode(text)?;
        assert_eq!(t.ids, [SOT, EOT, 0, 0, 0], "{text:?}");
        assert_eq!(t.attention_mask, [1, 1, 0, 0, 0], "{text:?}");
    }
    Ok(())
}

#[test]
fn truncation_keeps_the_end_token() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let tok = ClipBpe::from_file(&vocab.path, 6)?;
    let cat = merge_id(1);
    // Exactly filling the window: no truncation.
    let t = tok.encode("cat cat cat cat")?;
    assert_eq!(t.ids, [SOT, cat, cat, cat, cat, EOT]);
    // One more word: clip.tokenize keeps ctx ids and forces the last to EOT.
    let t = tok.encode("cat cat cat cat cat")?;
    assert_eq!(t.ids, [SOT, cat, cat, cat, cat, EOT]);
    assert_eq!(t.attention_mask, [1; 6]);
    let t = tok.encode(&"cat ".repeat(500))?;
    assert_eq!(t.ids, [SOT, cat, cat, cat, cat, EOT]);
    // A context of one keeps only the end token, as the reference does.
    let tiny = ClipBpe::from_file(&vocab.path, 1)?;
    assert_eq!(tiny.encode("cat")?.ids, [EOT]);
    Ok(())
}

#[test]
fn literal_markers_in_text_map_to_their_ids() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let tok = ClipBpe::from_file(&vocab.path, 8)?;
    let t = tok.encode("cat<|endoftext|><|STARTOFTEXT|>")?;
    assert_eq!(t.ids[..5], [SOT, merge_id(1), EOT, SOT, EOT]);
    Ok(())
}

#[test]
fn zero_context_length_is_rejected() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let err = ClipBpe::from_file(&vocab.path, 0).err();
    assert!(
        matches!(err, Some(TokenizerError::BadContextLength { .. })),
        "{err:?}"
    );
    Ok(())
}

fn expect_bad_vocab(path: &Path, want_line: usize) {
    match ClipBpe::from_file(path, 77) {
        Err(TokenizerError::BadVocab {
            path: p,
            line,
            reason,
        }) => {
            assert_eq!(p, path);
            assert_eq!(line, want_line, "{reason}");
            let msg = TokenizerError::BadVocab {
                path: p,
                line,
                reason,
            }
            .to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("line {want_line}")), "{msg}");
        }
        other => panic!("expected BadVocab at line {want_line}, got {other:?}"),
    }
}

#[test]
fn bad_vocab_files_name_path_and_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let good = synthetic_vocab(&CAT_MERGES);
    let lines: Vec<&str> = good.split('\n').collect();

    // Line 5 (1-based) has three symbols.
    let mut broken = lines.clone();
    broken[4] = "a b c";
    let path = dir.path().join("three.txt");
    std::fs::write(&path, broken.join("\n"))?;
    expect_bad_vocab(&path, 5);

    // An empty merge line.
    let mut broken = lines.clone();
    broken[100] = "";
    let path = dir.path().join("empty_line.txt");
    std::fs::write(&path, broken.join("\n"))?;
    expect_bad_vocab(&path, 101);

    // Too few merges (header + 1000): the first missing one, on line 1002,
    // is reported — with or without a final newline.
    let path = dir.path().join("short.txt");
    std::fs::write(&path, lines[..1001].join("\n"))?;
    expect_bad_vocab(&path, 1002);
    std::fs::write(&path, lines[..1001].join("\n") + "\n")?;
    expect_bad_vocab(&path, 1002);

    // Not UTF-8 on line 3.
    let path = dir.path().join("latin1.txt");
    std::fs::write(&path, b"#version\nc a\n\xff t\n")?;
    expect_bad_vocab(&path, 3);

    // Missing file: an Io error carrying the path.
    let path = dir.path().join("missing.txt.gz");
    match ClipBpe::from_file(&path, 77) {
        Err(TokenizerError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Io error, got {other:?}"),
    }

    // Truncated gzip stream.
    let gz_path = dir.path().join("cut.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(good.as_bytes())?;
    let gz = enc.finish()?;
    std::fs::write(&gz_path, &gz[..gz.len() / 2])?;
    assert!(matches!(
        ClipBpe::from_file(&gz_path, 77),
        Err(TokenizerError::Io { .. })
    ));
    Ok(())
}

#[test]
fn fingerprint_is_kind_and_sha256_of_the_file() -> TestResult {
    let a = write_synthetic(&CAT_MERGES, false)?;
    let b = write_synthetic(&[("c", "a")], false)?;
    let ta = ClipBpe::from_file(&a.path, 77)?;
    let tb = ClipBpe::from_file(&b.path, 77)?;
    let fp = ta.fingerprint();
    let hex_part = fp.strip_prefix("clip-bpe:").unwrap_or_default();
    assert_eq!(hex_part.len(), 64, "{fp}");
    assert!(hex_part.bytes().all(|c| c.is_ascii_hexdigit()), "{fp}");
    assert_ne!(fp, tb.fingerprint());
    assert_eq!(fp, ClipBpe::from_file(&a.path, 77)?.fingerprint());
    Ok(())
}

#[test]
fn shared_across_threads_as_trait_object() -> TestResult {
    let vocab = write_synthetic(&CAT_MERGES, false)?;
    let tok: std::sync::Arc<dyn Tokenizer> =
        std::sync::Arc::new(ClipBpe::from_file(&vocab.path, 8)?);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let tok = tok.clone();
            std::thread::spawn(move || tok.encode("cat catcat").map(|t| t.ids))
        })
        .collect();
    for h in handles {
        let ids = h.join().map_err(|_| "thread panicked")??;
        assert_eq!(ids[..4], [SOT, merge_id(1), merge_id(2), merge_id(1)]);
    }
    Ok(())
}

/// The real CLIP vocabulary, or `None` (with a message) when not prepared.
fn real_vocab() -> Option<PathBuf> {
    let path = std::env::var_os("EDGECLIP_BPE_VOCAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::bundle::edgeclip_home()
                .join("clip-vit-b-32-seeded")
                .join("bpe_simple_vocab_16e6.txt.gz")
        });
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("EDGECLIP_REQUIRE_FIXTURES")
        .map(|v| !matches!(v.trim(), "" | "0" | "false"))
        .unwrap_or(false);
    assert!(!required, "CLIP vocabulary missing at {}", path.display());
    eprintln!(
        "skipping: CLIP vocabulary not found at {} — run models/prepare",
        path.display()
    );
    None
}

#[test]
fn real_vocab_ids_match_reference() -> TestResult {
    let Some(path) = real_vocab() else {
        return Ok(());
    };
    let tok = ClipBpe::from_file(&path, 77)?;
    assert_eq!(tok.vocab_size(), 49408);
    // (text, ids up to and including EOT) from the Python reference.
    let cases: [(&str, &[i64]); 6] = [
        (
            "a photo of a cat.",
            &[49406, 320, 1125, 539, 320, 2368, 269, 49407],
        ),
        (
            "a photo of a cats",
            &[49406, 320, 1125, 539, 320, 3989, 49407],
        ),
        // `</w>`: word-internal "cat" (1481) vs word-final "cat</w>" (2368).
        ("catcat", &[49406, 1481, 2368, 49407]),
        (
            "Tom &amp; Jerry\u{2019}s \u{fb01}sh caf\u{e9}",
            &[49406, 2435, 261, 9164, 568, 2759, 15304, 49407],
        ),
        // Mojibake repaired by ftfy before tokenisation ("schön").
        ("sch\u{c3}\u{b6}n", &[49406, 844, 7255, 333, 49407]),
        ("", &[49406, 49407]),
    ];
    for (text, want) in cases {
        let t = tok.encode(text)?;
        assert_eq!(&t.ids[..want.len()], want, "{text:?}");
        assert!(t.ids[want.len()..].iter().all(|&i| i == 0), "{text:?}");
    }
    let long = format!("a photo of a {}", vec!["cat"; 100].join(" "));
    let t = tok.encode(&long)?;
    assert_eq!(t.ids.len(), 77);
    assert_eq!(t.ids[74..], [2368, 2368, 49407]);
    Ok(())
}

/// A minimal WordPiece tokenizer.json with a `[CLS] $A [SEP]` template.
const HF_JSON: &str = r###"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": {"type": "Lowercase"},
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {
    "type": "TemplateProcessing",
    "single": [
      {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
      {"Sequence": {"id": "A", "type_id": 0}},
      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
    ],
    "pair": [
      {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
      {"Sequence": {"id": "A", "type_id": 0}},
      {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
      {"Sequence": {"id": "B", "type_id": 1}},
      {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
    ],
    "special_tokens": {
      "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
      "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
    }
  },
  "decoder": null,
  "model": {
    "type": "WordPiece",
    "unk_token": "[UNK]",
    "continuing_subword_prefix": "##",
    "max_input_chars_per_word": 100,
    "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "photo": 5, "of": 6, "cat": 7, "##s": 8}
  }
}"###;

#[test]
fn hf_tokenizer_pads_and_truncates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, HF_JSON)?;

    let tok = HfTokenizer::from_file(&path, 10, None)?;
    assert_eq!(tok.context_length(), 10);
    assert_eq!(tok.pad_id(), 0, "[PAD] is found by name");
    let t = tok.encode("A photo of a cats")?;
    assert_eq!(t.ids, [2, 4, 5, 6, 4, 7, 8, 3, 0, 0]);
    assert_eq!(t.attention_mask, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    let t = tok.encode("")?;
    assert_eq!(t.ids, [2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);

    // Truncation keeps [SEP] at the end.
    let short = HfTokenizer::from_file(&path, 5, Some(1))?;
    let t = short.encode("a photo of a cat")?;
    assert_eq!(t.ids, [2, 4, 5, 6, 3]);
    assert_eq!(t.attention_mask, [1; 5]);
    // Explicit padding id.
    let t = short.encode("cat")?;
    assert_eq!(t.ids, [2, 7, 3, 1, 1]);
    assert_eq!(t.attention_mask, [1, 1, 1, 0, 0]);

    assert!(tok.fingerprint().starts_with("hf-tokenizer:"));
    Ok(())
}

#[test]
fn hf_tokenizer_errors_are_typed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, HF_JSON)?;
    // Two special tokens do not fit in two positions (and must not panic).
    assert!(matches!(
        HfTokenizer::from_file(&path, 2, None),
        Err(TokenizerError::BadContextLength { .. })
    ));
    assert!(matches!(
        HfTokenizer::from_file(&path, 8, Some(-1)),
        Err(TokenizerError::Hf { .. })
    ));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json")?;
    match HfTokenizer::from_file(&bad, 8, None) {
        Err(TokenizerError::Hf { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected Hf error, got {other:?}"),
    }
    assert!(matches!(
        HfTokenizer::from_file(&dir.path().join("missing.json"), 8, None),
        Err(TokenizerError::Io { .. })
    ));
    Ok(())
}

/// [`HF_JSON`] as a BERT tokenizer (`BertNormalizer` + `BertPreTokenizer`)
/// whose vocabulary also has two CJK Extension E ideographs and `b`.
fn bert_json(handle_chinese_chars: bool) -> String {
    HF_JSON
        .replace(
            r#""normalizer": {"type": "Lowercase"}"#,
            &format!(
                r#""normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": {handle_chinese_chars}, "strip_accents": null, "lowercase": true}}"#
            ),
        )
        .replace(
            r#""pre_tokenizer": {"type": "Whitespace"}"#,
            r#""pre_tokenizer": {"type": "BertPreTokenizer"}"#,
        )
        .replace(
            r###""##s": 8}"###,
            "\"##s\": 8, \"\u{2B820}\": 9, \"\u{2B920}\": 10, \"b\": 11}",
        )
}

/// BERT's `_is_chinese_char` covers U+2B820..=U+2CEAF; the `tokenizers`
/// crate starts that range at U+2B920, so `HfTokenizer` spaces out
/// U+2B820..=U+2B91F itself (expected ids from transformers' slow
/// `BertTokenizer`: `a` + ideograph + `b` are three words).
#[test]
fn bert_splits_all_of_cjk_extension_e() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bert_json(true))?;
    let tok = HfTokenizer::from_file(&path, 8, None)?;
    let t = tok.encode("A\u{2B820}b")?;
    assert_eq!(t.ids, [2, 4, 9, 11, 3, 0, 0, 0]);
    assert_eq!(t.attention_mask, [1, 1, 1, 1, 1, 0, 0, 0]);
    // Already split by the crate (U+2B920), and the gap's ends.
    assert_eq!(tok.encode("a\u{2B920}b")?.ids, [2, 4, 10, 11, 3, 0, 0, 0]);
    assert_eq!(tok.encode("a\u{2B91F}b")?.ids, [2, 4, 1, 11, 3, 0, 0, 0]);
    assert_eq!(
        tok.encode("\u{2B820}\u{2B820}")?.ids,
        [2, 9, 9, 3, 0, 0, 0, 0]
    );
    // Untouched text around it, truncation still keeps [SEP] last.
    assert_eq!(
        tok.encode("a photo of \u{2B820} cats a a")?.ids,
        [2, 4, 5, 6, 9, 7, 8, 3]
    );

    // Without handle_chinese_chars BERT does not split CJK at all: one word.
    std::fs::write(&path, bert_json(false))?;
    let tok = HfTokenizer::from_file(&path, 8, None)?;
    assert_eq!(tok.encode("a\u{2B820}b")?.ids, [2, 1, 3, 0, 0, 0, 0, 0]);
    assert_eq!(tok.encode("a\u{2B920}b")?.ids, [2, 1, 3, 0, 0, 0, 0, 0]);
    Ok(())
}

/// Deterministic pseudo-random words over a few alphabets.
fn random_words(count: usize, max_len: usize) -> Vec<String> {
    let alphabets: [&[char]; 5] = [
        &['a', 'b', 'c', 'd', 'e', 'n', 'r', 's', 't'],
        &[
            'a', 'e', 'i', 'o', 'u', 'l', 'm', 'p', 'x', 'q', 'z', 'k', 'h',
        ],
        &['к', 'о', 'ш', 'а', 'с', 'б', 'е'],
        &['猫', '犬', '的', '照', '片'],
        &['!', '.', '-', '😀', 'é', 'ß', '1'],
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    (0..count)
        .map(|_| {
            let alphabet = alphabets[rand(alphabets.len())];
            let len = 1 + rand(max_len);
            (0..len).map(|_| alphabet[rand(alphabet.len())]).collect()
        })
        .collect()
}

#[test]
fn long_word_merge_loop_equals_reference_loop() -> TestResult {
    // A hand-made file where a merge outranks the merge creating its left
    // half: the reference merges every `a b` before it considers `ab a`.
    let odd = write_synthetic(&[("ab", "a"), ("a", "b")], false)?;
    let tok = ClipBpe::from_file(&odd.path, 77)?;
    let (short, long) = tok.bpe_both_ways(b"ababx");
    let short: Vec<i64> = short.into_iter().map(i64::from).collect();
    let long: Vec<i64> = long.into_iter().map(i64::from).collect();
    assert_eq!(short, [merge_id(1), merge_id(1), 256 + byte_id(b'x')]);
    assert_eq!(long, short);

    let synthetic = write_synthetic(&CAT_MERGES, false)?;
    let mut vocabularies = vec![synthetic.path.clone()];
    vocabularies.extend(real_vocab());
    for path in vocabularies {
        let tok = ClipBpe::from_file(&path, 77)?;
        for word in random_words(3000, 300) {
            let (short, long) = tok.bpe_both_ways(word.as_bytes());
            assert_eq!(short, long, "{word:?} with {}", path.display());
        }
    }
    Ok(())
}
