//! Tower latency: one image embedding from a preprocessed tensor, one text embedding from
//! token ids, at every precision each bundle ships: the default edgeclip-demo and the prepared
//! reference bundle (ViT-B/32). The image tower is timed on every backend that can run it
//! (the native ViT where the graph is a CLIP ViT, and tract).
//!
//! Run: `cargo bench --bench encode` (after `models/prepare`). EDGECLIP_BENCH_THREADS sets
//! the thread count (default: all cores).

use criterion::{criterion_group, criterion_main, Criterion};
use edgeclip::bundle::{Bundle, Precision, DEFAULT_MODEL};
use edgeclip::encoder::{self, Backend, ImageEncoder, TextEncoder};
use edgeclip::engine::load_tokenizer;

fn towers(c: &mut Criterion) {
    let threads = std::env::var("EDGECLIP_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(encoder::default_threads);
    encoder::set_threads(threads);
    for name in [DEFAULT_MODEL, "clip-vit-b-32-seeded"] {
        let Ok(bundle) = Bundle::open(name) else {
            eprintln!("skipping: bundle {name} not prepared (run models/prepare)");
            continue;
        };
        bundle_towers(c, &bundle, threads);
    }
}

/// Every precision the bundle ships, both towers.
fn bundle_towers(c: &mut Criterion, bundle: &Bundle, threads: usize) {
    let tokenizer = load_tokenizer(&bundle.spec.tokenizer).expect("tokenizer loads");
    let tokens = tokenizer
        .encode("a photo of the large coffee mug.")
        .expect("tokenizes");
    let mut g = c.benchmark_group(format!("{}/{threads}t", bundle.spec.name));
    g.sample_size(20);
    for precision in [Precision::Fp32, Precision::Int8] {
        if !bundle.spec.visual.files.contains_key(&precision) {
            continue;
        }
        for backend in [Backend::Native, Backend::Tract] {
            let Ok(image) = ImageEncoder::load(bundle, precision, backend) else {
                eprintln!(
                    "{}: no {backend} image tower at {precision}",
                    bundle.spec.name
                );
                continue;
            };
            // A deterministic, image-like input: the values are irrelevant to the cost.
            let pixels: Vec<f32> = (0..image.input_len())
                .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
                .collect();
            g.bench_function(format!("image/{precision}/{backend}"), |b| {
                b.iter(|| image.encode(&pixels).expect("runs"))
            });
        }
        let text = TextEncoder::load(bundle, precision, tokenizer.context_length())
            .expect("text tower loads");
        g.bench_function(format!("text/{precision}"), |b| {
            b.iter(|| text.encode(&tokens).expect("runs"))
        });
    }
    g.finish();
}

criterion_group!(benches, towers);
criterion_main!(benches);
