//! int8 GEMM throughput per instruction set on ViT-B/32's shapes (batch 1: m = 50 rows).
//!
//! Names: `i8_gemm/<isa>/<m>x<k>x<n>/t<threads>`; the throughput is in elements = MACs,
//! so criterion's `Gelem/s` reads as GMAC/s. `i8_gemm/<isa>/vit-b-32/t<threads>` runs the
//! 72 GEMMs of one image-tower forward pass (12 layers × q, k, v, out, fc1, fc2) back to
//! back, the figure the whole-model budget is about.
//!
//! `EDGECLIP_BENCH_ISA=avx2,scalar` limits the instruction sets (default: all supported).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgeclip_linalg::{matmul_i8, Epilogue, I8Scratch, Isa, PackedI8};
use std::hint::black_box;
use std::time::Duration;

const M: usize = 50;
const SHAPES: [(usize, usize); 3] = [(768, 768), (768, 3072), (3072, 768)];

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

fn packed(isa: Isa, k: usize, n: usize, seed: &mut u64) -> PackedI8 {
    let w: Vec<i8> = (0..k * n).map(|_| lcg(seed) as i8).collect();
    let scales = vec![0.01; n];
    let bias = vec![0.1; n];
    PackedI8::new(isa, &w, k, n, &scales, Some(&bias)).expect("pack")
}

fn activations(len: usize, seed: &mut u64) -> Vec<f32> {
    (0..len)
        .map(|_| (lcg(seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn isas() -> Vec<Isa> {
    let all = Isa::supported();
    match std::env::var("EDGECLIP_BENCH_ISA") {
        Ok(list) => list
            .split(',')
            .filter_map(Isa::from_name)
            .filter(|i| all.contains(i))
            .collect(),
        Err(_) => all,
    }
}

/// Runs `f` inside the pool when there is one, as the caller (the ViT forward pass) does:
/// then `matmul_i8`'s scope starts on a worker that is already running, and only the
/// other workers have to pick up their share.
fn in_pool(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() + Send) {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn bench(c: &mut Criterion) {
    let pools: Vec<(usize, Option<rayon::ThreadPool>)> = vec![
        (1, None),
        (
            2,
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .expect("pool"),
            ),
        ),
    ];
    let mut g = c.benchmark_group("i8_gemm");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let mut seed = 1;
    for isa in isas() {
        for &(k, n) in &SHAPES {
            let w = packed(isa, k, n, &mut seed);
            let x = activations(M * k, &mut seed);
            let mut y = vec![0.0; M * n];
            let mut scratch = I8Scratch::default();
            g.throughput(Throughput::Elements((M * k * n) as u64));
            for (t, pool) in &pools {
                g.bench_function(format!("{}/{M}x{k}x{n}/t{t}", isa.name()), |b| {
                    in_pool(pool.as_ref(), || {
                        b.iter(|| {
                            matmul_i8(
                                black_box(&x),
                                M,
                                &w,
                                &mut y,
                                Epilogue::Store,
                                &mut scratch,
                                pool.as_ref(),
                            )
                            .expect("gemm")
                        })
                    })
                });
            }
        }
        // One forward pass's worth of GEMMs: 12 layers of q, k, v, out (768→768),
        // fc1 (768→3072, QuickGelu), fc2 (3072→768, residual add).
        let layers: Vec<[PackedI8; 6]> = (0..12)
            .map(|_| {
                [
                    packed(isa, 768, 768, &mut seed),
                    packed(isa, 768, 768, &mut seed),
                    packed(isa, 768, 768, &mut seed),
                    packed(isa, 768, 768, &mut seed),
                    packed(isa, 768, 3072, &mut seed),
                    packed(isa, 3072, 768, &mut seed),
                ]
            })
            .collect();
        let x = activations(M * 768, &mut seed);
        let mut h = vec![0.0; M * 3072];
        let mut y = vec![0.0; M * 768];
        let mut scratch = I8Scratch::default();
        let macs: usize = 12 * M * (4 * 768 * 768 + 2 * 768 * 3072);
        g.throughput(Throughput::Elements(macs as u64));
        for (t, pool) in &pools {
            g.bench_function(format!("{}/vit-b-32/t{t}", isa.name()), |b| {
                in_pool(pool.as_ref(), || {
                    b.iter(|| {
                        for l in &layers {
                            for w in &l[..4] {
                                matmul_i8(
                                    &x,
                                    M,
                                    w,
                                    &mut y,
                                    Epilogue::Store,
                                    &mut scratch,
                                    pool.as_ref(),
                                )
                                .expect("gemm");
                            }
                            matmul_i8(
                                &x,
                                M,
                                &l[4],
                                &mut h,
                                Epilogue::QuickGelu,
                                &mut scratch,
                                pool.as_ref(),
                            )
                            .expect("gemm");
                            matmul_i8(
                                &h,
                                M,
                                &l[5],
                                &mut y,
                                Epilogue::Accumulate,
                                &mut scratch,
                                pool.as_ref(),
                            )
                            .expect("gemm");
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
