//! Token-id parity of [`ClipBpe`] with OpenAI's reference tokenizer.
//!
//! The fixture (`tokens.jsonl`, one `{"text": …, "ids": [77 ints]}` per line)
//! is produced by `models/prepare` from `clip.simple_tokenizer` +
//! `clip.tokenize(truncate=True)`; the vocabulary is the bundle's
//! `bpe_simple_vocab_16e6.txt.gz`. Both live under `$EDGECLIP_HOME`.
//!
//! The ids do not depend on the model: every seeded bundle's fixtures hold the same corpus,
//! so this reads the bundle `EDGECLIP_PARITY_BUNDLE` names (default `clip-vit-b-32-seeded`;
//! `clip-tiny-seeded` is enough where the big export is not prepared).
//!
//! For development against another corpus, point `EDGECLIP_TOKENS_JSONL`
//! (and optionally `EDGECLIP_BPE_VOCAB`) at it; the same checks run.

mod common;

use std::io::BufRead;
use std::path::PathBuf;

use edgeclip::tokenizer::{ClipBpe, Tokenizer};

const VOCAB_FILE: &str = "bpe_simple_vocab_16e6.txt.gz";

#[derive(serde::Deserialize)]
struct Line {
    text: String,
    ids: Vec<i64>,
}

/// Fixture and vocabulary paths, or `None` when the test should skip.
fn inputs() -> Option<(PathBuf, PathBuf)> {
    let bundle = common::parity_bundle();
    let vocab_override = std::env::var_os("EDGECLIP_BPE_VOCAB").map(PathBuf::from);
    if let Some(fixture) = std::env::var_os("EDGECLIP_TOKENS_JSONL").map(PathBuf::from) {
        let vocab = vocab_override
            .unwrap_or_else(|| common::edgeclip_home().join(&bundle).join(VOCAB_FILE));
        return Some((fixture, vocab));
    }
    let dir = common::fixture_dir(&bundle)?;
    let fixture = common::require_path(
        &dir.join("tokens.jsonl"),
        "tokenizer fixture",
        "run models/prepare to create it",
    )?;
    let vocab = match vocab_override {
        Some(v) => v,
        None => common::require_path(
            &common::edgeclip_home().join(&bundle).join(VOCAB_FILE),
            "CLIP BPE vocabulary",
            "run models/prepare to fetch it",
        )?,
    };
    Some((fixture, vocab))
}

#[test]
fn clip_bpe_ids_equal_reference_fixture() {
    let Some((fixture, vocab)) = inputs() else {
        return;
    };
    let file = std::fs::File::open(&fixture)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", fixture.display()));
    let mut tokenizer: Option<ClipBpe> = None;
    let mut total = 0usize;
    let mut mismatches: Vec<String> = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        if line.trim().is_empty() {
            continue;
        }
        let entry: Line = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} line {}: {e}", fixture.display(), index + 1));
        // The fixture fixes the context length (77 for CLIP).
        let tok = tokenizer.get_or_insert_with(|| {
            ClipBpe::from_file(&vocab, entry.ids.len())
                .unwrap_or_else(|e| panic!("loading {}: {e}", vocab.display()))
        });
        total += 1;
        let got = tok
            .encode(&entry.text)
            .unwrap_or_else(|e| panic!("encoding {:?}: {e}", entry.text));
        // Padding is id 0 and the end marker is the last real token, so the
        // real length is one past the last non-zero id.
        let real = entry
            .ids
            .iter()
            .rposition(|&id| id != 0)
            .map_or(0, |i| i + 1);
        let want_mask: Vec<i64> = (0..entry.ids.len()).map(|i| i64::from(i < real)).collect();
        if got.ids != entry.ids || got.attention_mask != want_mask {
            let first_diff = got
                .ids
                .iter()
                .zip(&entry.ids)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            mismatches.push(format!(
                "line {}: text {:?}\n  first differing position {first_diff}\n  want {:?}\n   got {:?}\n  want tokens {:?}\n   got tokens {:?}",
                index + 1,
                entry.text,
                &entry.ids[..real],
                &got.ids[..got.attention_mask.iter().filter(|&&m| m == 1).count()],
                tok.decode(&entry.ids[..real]),
                tok.decode(&got.ids),
            ));
        }
    }
    assert!(total > 0, "{} holds no entries", fixture.display());
    assert!(
        mismatches.is_empty(),
        "{} of {total} texts tokenize differently from the reference ({}):\n{}",
        mismatches.len(),
        fixture.display(),
        mismatches.join("\n")
    );
    eprintln!(
        "tokenizer parity: {total}/{total} equal ({})",
        fixture.display()
    );
}
