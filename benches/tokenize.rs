//! Tokenizer throughput: CLIP BPE encoding of 1000 distinct prompts with a
//! cold and a warm per-word BPE cache, plus vocabulary loading.
//!
//! Needs the CLIP vocabulary: `EDGECLIP_BPE_VOCAB`, or the prepared bundle at
//! `${EDGECLIP_HOME:-$HOME/.cache/edgeclip}/clip-vit-b-32-seeded/`. Without it
//! the benchmarks print a `skipping:` line and measure nothing.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use edgeclip::tokenizer::{ClipBpe, Tokenizer};

const TEMPLATES: [&str; 25] = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.",
];

const CLASSES: [&str; 40] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
    "accordion",
    "anchor",
    "barrel",
    "bonsai",
    "brontosaurus",
    "butterfly",
    "ceiling fan",
    "chandelier",
    "crocodile head",
    "dalmatian",
    "dragonfly",
    "electric guitar",
    "euphonium",
    "flamingo",
    "grand piano",
    "hedgehog",
    "joshua tree",
    "kangaroo",
    "lotus",
    "mandolin",
    "metronome",
    "nautilus",
    "okapi",
    "pagoda",
    "platypus",
    "saxophone",
    "stegosaurus",
    "sunflower",
    "trilobite",
    "windsor chair",
];

fn prompts() -> Vec<String> {
    CLASSES
        .iter()
        .flat_map(|c| TEMPLATES.iter().map(move |t| t.replace("{}", c)))
        .collect()
}

fn vocab_path() -> Option<PathBuf> {
    let path = std::env::var_os("EDGECLIP_BPE_VOCAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            edgeclip::bundle::edgeclip_home()
                .join("clip-vit-b-32-seeded")
                .join("bpe_simple_vocab_16e6.txt.gz")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: CLIP vocabulary not found at {} — run models/prepare or set EDGECLIP_BPE_VOCAB",
            path.display()
        );
        None
    }
}

fn bench_tokenize(c: &mut Criterion) {
    let Some(path) = vocab_path() else {
        return;
    };
    let tok = match ClipBpe::from_file(&path, 77) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let prompts = prompts();
    assert_eq!(prompts.len(), 1000);

    let mut group = c.benchmark_group("clip_bpe");
    group.sample_size(20);
    group.bench_function("encode_1000_prompts_cold_cache", |b| {
        b.iter(|| {
            tok.clear_cache();
            for p in &prompts {
                black_box(tok.encode(black_box(p)).ok());
            }
        })
    });
    group.bench_function("encode_1000_prompts_warm_cache", |b| {
        for p in &prompts {
            black_box(tok.encode(p).ok());
        }
        b.iter(|| {
            for p in &prompts {
                black_box(tok.encode(black_box(p)).ok());
            }
        })
    });
    group.sample_size(10);
    group.bench_function("load_vocabulary", |b| {
        b.iter(|| black_box(ClipBpe::from_file(&path, 77).ok()))
    });
    group.finish();
}

criterion_group!(benches, bench_tokenize);
criterion_main!(benches);
