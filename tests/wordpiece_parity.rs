//! Token-id parity of [`HfTokenizer`] on the `edgeclip-demo` bundle's
//! WordPiece (BERT uncased, all-MiniLM-L6-v2) tokenizer.json with an
//! independent reference: transformers' slow, pure-Python `BertTokenizer`
//! called as `tokenizer(text, max_length=32, truncation=True,
//! padding="max_length")`.
//!
//! The fixture (`wordpiece_tokens.jsonl`, one `{"text", "ids"[32],
//! "attention_mask"[32]}` per line, next to `wordpiece_meta.json`) lives in
//! `$EDGECLIP_HOME/fixtures/edgeclip-demo/` and is written by
//! `models/make_demo_fixtures.py`. The tokenizer.json is the bundle's
//! `models/edgeclip-demo/tokenizer.json` in this repository when present,
//! else `$EDGECLIP_HOME/work/all-MiniLM-L6-v2/tokenizer.json` (unpacked by
//! the demo recipe).
//!
//! Overrides: `EDGECLIP_WORDPIECE_JSONL` (fixture) and
//! `EDGECLIP_WORDPIECE_TOKENIZER` (tokenizer.json). When the meta file is
//! next to the fixture, the tokenizer.json must be the one the fixture was
//! generated from (same sha256).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use edgeclip::tokenizer::{HfTokenizer, Tokenizer};

const BUNDLE: &str = "edgeclip-demo";
const FIXTURE_FILE: &str = "wordpiece_tokens.jsonl";
const META_FILE: &str = "wordpiece_meta.json";
/// The bundle's padding id: `[PAD]`.
const PAD_ID: i64 = 0;
/// Mismatches printed in full on failure.
const SHOW: usize = 10;

#[derive(serde::Deserialize)]
struct Line {
    text: String,
    ids: Vec<i64>,
    attention_mask: Vec<i64>,
}

#[derive(serde::Deserialize)]
struct Meta {
    tokenizer_json_sha256: String,
}

/// Fixture and tokenizer.json paths, or `None` when the test should skip.
fn inputs() -> Option<(PathBuf, PathBuf)> {
    let fixture = match std::env::var_os("EDGECLIP_WORDPIECE_JSONL").map(PathBuf::from) {
        Some(f) => f,
        None => common::require_path(
            &common::fixture_dir(BUNDLE)?.join(FIXTURE_FILE),
            "WordPiece tokenizer fixture",
            "run `$(models/prepare --python) models/make_demo_fixtures.py` to create it",
        )?,
    };
    let tokenizer = match std::env::var_os("EDGECLIP_WORDPIECE_TOKENIZER").map(PathBuf::from) {
        Some(t) => t,
        None => {
            let in_repo = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(BUNDLE)
                .join("tokenizer.json");
            if in_repo.exists() {
                in_repo
            } else {
                common::require_path(
                    &common::edgeclip_home()
                        .join("work")
                        .join("all-MiniLM-L6-v2")
                        .join("tokenizer.json"),
                    "all-MiniLM-L6-v2 tokenizer.json (nor models/edgeclip-demo/tokenizer.json)",
                    "run models/prepare to unpack it",
                )?
            }
        }
    };
    Some((fixture, tokenizer))
}

/// id → token, from tokenizer.json's `model.vocab`, for readable failures.
fn vocab(tokenizer_json: &Path) -> Vec<String> {
    let raw = std::fs::read(tokenizer_json)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", tokenizer_json.display()));
    let json: serde_json::Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{}: {e}", tokenizer_json.display()));
    let map = json["model"]["vocab"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no model.vocab object", tokenizer_json.display()));
    let mut tokens = vec![String::new(); map.len()];
    for (token, id) in map {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = token.clone();
        }
    }
    tokens
}

fn show(vocab: &[String], ids: &[i64], mask: &[i64]) -> String {
    let real = mask.iter().filter(|&&m| m == 1).count().min(ids.len());
    let tokens: Vec<&str> = ids[..real]
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| vocab.get(i))
                .map_or("<?>", String::as_str)
        })
        .collect();
    format!("{:?} {tokens:?}", &ids[..real])
}

#[test]
fn wordpiece_ids_equal_python_bert_tokenizer() {
    let Some((fixture, tokenizer_json)) = inputs() else {
        return;
    };
    let file = std::fs::File::open(&fixture)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", fixture.display()));
    let mut tokenizer: Option<HfTokenizer> = None;
    let mut total = 0usize;
    let mut n_mismatch = 0usize;
    let mut shown: Vec<String> = Vec::new();
    let mut vocab_cache: Option<Vec<String>> = None;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        if line.trim().is_empty() {
            continue;
        }
        let entry: Line = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} line {}: {e}", fixture.display(), index + 1));
        assert_eq!(
            entry.ids.len(),
            entry.attention_mask.len(),
            "{} line {}: ids and attention_mask differ in length",
            fixture.display(),
            index + 1
        );
        // The fixture fixes the context length (32 for edgeclip-demo).
        let tok = tokenizer.get_or_insert_with(|| {
            HfTokenizer::from_file(&tokenizer_json, entry.ids.len(), Some(PAD_ID))
                .unwrap_or_else(|e| panic!("loading {}: {e}", tokenizer_json.display()))
        });
        assert_eq!(
            entry.ids.len(),
            tok.context_length(),
            "{} line {}: context length changes within the fixture",
            fixture.display(),
            index + 1
        );
        total += 1;
        let got = tok
            .encode(&entry.text)
            .unwrap_or_else(|e| panic!("encoding {:?}: {e}", entry.text));
        if got.ids != entry.ids || got.attention_mask != entry.attention_mask {
            n_mismatch += 1;
            if shown.len() < SHOW {
                let first_diff = got
                    .ids
                    .iter()
                    .zip(&entry.ids)
                    .position(|(a, b)| a != b)
                    .map_or("ids equal, attention_mask differs".to_string(), |p| {
                        format!("first differing id at position {p}")
                    });
                let vocab = vocab_cache.get_or_insert_with(|| vocab(&tokenizer_json));
                shown.push(format!(
                    "line {}: text {:?}\n  {first_diff}\n  want {}\n   got {}",
                    index + 1,
                    entry.text,
                    show(vocab, &entry.ids, &entry.attention_mask),
                    show(vocab, &got.ids, &got.attention_mask),
                ));
            }
        }
    }
    assert!(total > 0, "{} holds no entries", fixture.display());
    let tok = tokenizer.expect("at least one entry");

    // A fixture made from another tokenizer.json proves nothing about this one.
    let meta_path = fixture.with_file_name(META_FILE);
    if meta_path.exists() {
        let meta: Meta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", meta_path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
        let want = format!("hf-tokenizer:{}", meta.tokenizer_json_sha256);
        assert_eq!(
            tok.fingerprint(),
            want,
            "{} is not the tokenizer.json that {} was generated from; regenerate the fixture with \
             models/make_demo_fixtures.py --tokenizer {}",
            tokenizer_json.display(),
            fixture.display(),
            tokenizer_json.display()
        );
    }

    assert!(
        n_mismatch == 0,
        "{n_mismatch} of {total} texts tokenize differently from the reference ({}, tokenizer {}); first {}:\n{}",
        fixture.display(),
        tokenizer_json.display(),
        shown.len(),
        shown.join("\n")
    );
    eprintln!(
        "wordpiece parity: {total}/{total} equal ({}, tokenizer {})",
        fixture.display(),
        tokenizer_json.display()
    );
}
