//! Start-up with a warm text-embedding cache: 1000 labels × the default 7 templates
//! (7000 prompts) → label matrix, including opening the engine (tokenizer, cache read).
//! Target: < 2 s. The cache is filled with synthetic unit vectors under the real cache
//! key, so the text tower never runs: exactly the warm path a restarting device takes.
//!
//! Run: `cargo bench --bench label_cache` (after `models/prepare`).

use criterion::{criterion_group, criterion_main, Criterion};
use edgeclip::bundle::{Bundle, DEFAULT_MODEL};
use edgeclip::cache::{CacheKey, EmbeddingCache};
use edgeclip::encoder::Embedding;
use edgeclip::engine::{load_tokenizer, Engine, EngineOptions};
use edgeclip::labels::{LabelSet, TemplateSet};

fn warm_start(c: &mut Criterion) {
    let Ok(bundle) = Bundle::open(DEFAULT_MODEL) else {
        eprintln!("skipping: bundle {DEFAULT_MODEL} not prepared (run models/prepare)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = LabelSet::from_names(
        (0..1000).map(|i| format!("object number {i}")),
        TemplateSet::Imagenet7,
        "bench",
    );
    let key = CacheKey {
        model_sha256: bundle
            .textual_digest(bundle.default_precision())
            .expect("digest"),
        tokenizer: load_tokenizer(&bundle.spec.tokenizer)
            .expect("tokenizer")
            .fingerprint()
            .to_string(),
        dim: bundle.spec.embedding_dim,
        compute: None,
    };
    let mut cache = EmbeddingCache::open(dir.path(), key);
    let mut seed = 1u32;
    for prompt in labels.labels.iter().flat_map(|l| &l.prompts) {
        let v: Vec<f32> = (0..bundle.spec.embedding_dim)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        cache
            .insert(prompt, Embedding::normalised(v).expect("non-zero"))
            .expect("cache writes");
    }
    drop(cache);
    let options = EngineOptions {
        precision: bundle.default_precision(),
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut g = c.benchmark_group("warm_start");
    g.sample_size(10);
    g.bench_function("1000_labels_7000_prompts", |b| {
        b.iter(|| {
            let mut engine = Engine::open(bundle.clone(), &options).expect("engine opens");
            let (matrix, stats) = engine
                .label_matrix(&labels, |_, _| {})
                .expect("matrix builds");
            assert_eq!(stats.computed, 0, "warm cache must serve every prompt");
            matrix
        })
    });
    g.finish();
}

criterion_group!(benches, warm_start);
criterion_main!(benches);
