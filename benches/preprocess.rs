//! Preprocessing throughput: decode + resize + normalise of a real ~640x480
//! JPEG, and resize + normalise alone (the per-frame cost for a camera that
//! hands us RGB already).
//!
//! The photo comes from `../shared/datasets/photos`; without it the JPEG
//! benchmark is skipped and the resize benchmark runs on synthetic pixels.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use edgeclip::preprocess::{decode, PreprocessSpec, Preprocessor};
use image::RgbImage;

/// Preferred photos, ~640x427: typical webcam/phone-thumbnail sizes.
const CANDIDATES: &[&str] = &[
    "photos/sklearn-1.7.2-wheel/china.jpg",
    "photos/skimage-0.25.2-wheel/rocket.jpg",
    "photos/darknet-deb/person.jpg",
];

fn find_photo() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    CANDIDATES
        .iter()
        .map(|c| root.join(c))
        .find(|p| p.is_file())
}

fn synthetic(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 3) as u8, (x ^ y) as u8])
    })
}

fn bench_preprocess(c: &mut Criterion) {
    let mut pre = Preprocessor::new(PreprocessSpec::openai_clip(224));
    let mut out = vec![0.0f32; pre.spec().tensor_len()];

    let photo = find_photo().and_then(|p| fs::read(&p).ok().map(|b| (p, b)));
    let frame = match &photo {
        Some((path, bytes)) => match decode(bytes) {
            Ok(img) => {
                let (w, h) = img.dimensions();
                eprintln!("benchmarking with {} ({w}x{h})", path.display());
                let name = format!("decode+preprocess jpeg {w}x{h}");
                c.bench_function(&name, |b| {
                    b.iter(|| {
                        let img = decode(black_box(bytes)).expect("photo decodes");
                        pre.run_into(&img, &mut out).expect("preprocess");
                        black_box(&out);
                    })
                });
                c.bench_function(&format!("decode jpeg {w}x{h}"), |b| {
                    b.iter(|| black_box(decode(black_box(bytes)).expect("photo decodes")))
                });
                img
            }
            Err(e) => {
                eprintln!(
                    "skipping JPEG benchmarks: {} does not decode: {e}",
                    path.display()
                );
                synthetic(640, 480)
            }
        },
        None => {
            eprintln!("skipping JPEG benchmarks: no photo under ../shared/datasets/photos");
            synthetic(640, 480)
        }
    };

    let (w, h) = frame.dimensions();
    c.bench_function(&format!("resize+normalise {w}x{h} -> 224"), |b| {
        b.iter(|| {
            pre.run_into(black_box(&frame), &mut out)
                .expect("preprocess");
            black_box(&out);
        })
    });

    let big = synthetic(1920, 1080);
    c.bench_function("resize+normalise 1920x1080 -> 224", |b| {
        b.iter(|| {
            pre.run_into(black_box(&big), &mut out).expect("preprocess");
            black_box(&out);
        })
    });

    let cifar = synthetic(32, 32);
    c.bench_function("resize+normalise 32x32 -> 224 (upscale)", |b| {
        b.iter(|| {
            pre.run_into(black_box(&cifar), &mut out)
                .expect("preprocess");
            black_box(&out);
        })
    });
}

criterion_group!(benches, bench_preprocess);
criterion_main!(benches);
