//! Embeddings from edgeclip (our decode + preprocessing + tract) against the reference
//! (PIL preprocessing + onnxruntime on the same ONNX graphs), written by
//! `models/make_fixtures.py`, on real photos of all sizes and modes from `../shared`.
//!
//! Environment:
//! - `EDGECLIP_PARITY_BUNDLE`: the seeded bundle to test, with its fixtures (default
//!   `clip-vit-b-32-seeded`; `clip-tiny-seeded` is the same CLIP graph at width 64 and 2
//!   layers, made by `models/prepare clip-tiny-seeded`, for slow machines such as aarch64
//!   under qemu). The bounds are the same for every bundle.
//! - `EDGECLIP_PARITY_LIMIT=N`: embed only the first N fixture photos and the first N
//!   prompts (default all). The first photos are all from `photos/`, so a small N skips the
//!   Caltech-101 and CIFAR-10 bounds (reported as skipped).

mod common;

use std::path::PathBuf;

use common::{ImageRef, TextRef};
use edgeclip::bundle::{Bundle, Precision};
use edgeclip::encoder::{Backend, Embedding};
use edgeclip::engine::{Engine, EngineOptions};
use serde::Deserialize;

struct Setup {
    bundle: Bundle,
    fixtures: PathBuf,
    datasets: PathBuf,
    limit: Option<usize>,
}

fn setup() -> Option<Setup> {
    let name = common::parity_bundle();
    let fixtures = common::fixture_dir(&name)?;
    let bundle_dir = common::bundle_dir(&name)?;
    let datasets = common::shared_datasets()?;
    edgeclip::encoder::set_threads(2);
    let limit = common::parity_limit();
    eprintln!(
        "bundle {name}, {}",
        limit.map_or("all fixtures".into(), |n| format!(
            "first {n} images and texts"
        ))
    );
    Some(Setup {
        bundle: Bundle::open_dir(&bundle_dir).expect("bundle opens"),
        fixtures,
        datasets,
        limit,
    })
}

impl Setup {
    /// The fixture file's records, cut to the limit. `min_full` is checked on the whole
    /// file, so a limit never hides a fixture that lost records.
    fn records<T: for<'de> Deserialize<'de>>(&self, file: &str, min_full: usize) -> Vec<T> {
        let mut refs: Vec<T> = common::read_jsonl(&self.fixtures.join(file));
        assert!(
            refs.len() >= min_full,
            "{file} has only {} records",
            refs.len()
        );
        if let Some(n) = self.limit {
            refs.truncate(n);
        }
        refs
    }
}

fn engine(s: &Setup, precision: Precision) -> Engine {
    engine_on(s, precision, Backend::Auto)
}

fn engine_on(s: &Setup, precision: Precision, backend: Backend) -> Engine {
    // No cache: these tests must exercise the towers, not read back earlier results.
    Engine::open(
        s.bundle.clone(),
        &EngineOptions {
            precision,
            cache_dir: None,
            backend,
            ..Default::default()
        },
    )
    .expect("engine opens")
}

fn unit(v: &[f32]) -> Embedding {
    Embedding::normalised(v.to_vec()).expect("reference embedding is finite")
}

/// Image embeddings for every reference photo at one precision.
fn image_embeddings(
    s: &Setup,
    precision: Precision,
    backend: Backend,
    refs: &[ImageRef],
) -> Vec<Embedding> {
    let mut e = engine_on(s, precision, backend);
    let runs = e.load_image_tower().expect("image tower loads").backend();
    assert_eq!(runs, backend, "the {backend} backend was asked for");
    refs.iter()
        .map(|r| {
            let bytes = std::fs::read(s.datasets.join(&r.path))
                .unwrap_or_else(|err| panic!("{}: {err}", r.path));
            e.embed_image_bytes(&bytes)
                .unwrap_or_else(|err| panic!("{}: {err}", r.path))
        })
        .collect()
}

/// Both image backends (the native ViT and tract) against the reference export, and
/// against each other.
#[test]
fn image_embeddings_match_the_reference_fp32_and_int8() {
    let Some(s) = setup() else { return };
    let refs: Vec<ImageRef> = s.records("images.jsonl", 200);
    let mut failures = Vec::new();
    let mut outputs = Vec::new();
    for backend in [Backend::Native, Backend::Tract] {
        eprintln!("== image tower on {backend}");
        let (fp32, int8) = check_image_backend(&s, &refs, backend, &mut failures);
        outputs.push((fp32, int8));
    }
    // The two backends run the same graph: fp32 agrees to rounding; int8 may differ where
    // an activation lands on a rounding boundary of the per-row quantiser.
    for (k, (precision, bound)) in [(Precision::Fp32, 0.9999f32), (Precision::Int8, 0.997)]
        .into_iter()
        .enumerate()
    {
        let pick =
            |o: &(Vec<Embedding>, Vec<Embedding>)| if k == 0 { o.0.clone() } else { o.1.clone() };
        let (native, tract) = (pick(&outputs[0]), pick(&outputs[1]));
        let pairs: Vec<(String, f32)> = refs
            .iter()
            .zip(native.iter().zip(&tract))
            .map(|(r, (a, b))| (r.path.clone(), a.cosine(b)))
            .collect();
        let st = common::stats(&pairs);
        eprintln!(
            "native vs tract {precision}: min cos {:.6} ({}), mean {:.6}",
            st.min, st.worst, st.mean
        );
        if st.min < bound {
            failures.push(format!(
                "native vs tract {precision}: min cos {} at {} (bound {bound})",
                st.min, st.worst
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One backend against the reference: fp32 and int8 embeddings, int8 fidelity to fp32.
fn check_image_backend(
    s: &Setup,
    refs: &[ImageRef],
    backend: Backend,
    failures: &mut Vec<String>,
) -> (Vec<Embedding>, Vec<Embedding>) {
    let ours_fp32 = image_embeddings(s, Precision::Fp32, backend, refs);
    let fp32: Vec<(String, f32)> = refs
        .iter()
        .zip(&ours_fp32)
        .map(|(r, e)| (r.path.clone(), e.cosine(&unit(&r.fp32))))
        .collect();
    let st = common::stats(&fp32);
    for (path, c) in fp32.iter().filter(|p| p.1 < 0.9999) {
        eprintln!("  below 0.9999: {path} {c:.6}");
    }
    eprintln!(
        "fp32 vs reference over {} photos: min cos {:.6} ({}), mean {:.6}",
        refs.len(),
        st.min,
        st.worst,
        st.mean
    );
    // Photos and Caltech-101 (all sizes, greyscale, PNG, JPEG 4:2:0): the full bound.
    // CIFAR-10 is 32x32 JPEG upscaled 7x, so the decoder's remaining difference from
    // libjpeg-turbo (its IDCT: at most 2 LSB on a few dozen of 3072 values, after the
    // chroma upsampling and colour conversion were made exact; see vendor/README.md)
    // is magnified 49-fold: measured min 0.99982 there. It gets its own bound.
    for (set, bound) in [
        ("photos/", 0.9999f32),
        ("caltech101/", 0.9999),
        ("cifar10/", 0.9995),
    ] {
        let part: Vec<(String, f32)> = fp32
            .iter()
            .filter(|p| p.0.starts_with(set))
            .cloned()
            .collect();
        if part.is_empty() && s.limit.is_some() {
            eprintln!(
                "  {set:<12} skipped: none among the first {} photos",
                refs.len()
            );
            continue;
        }
        let st = common::stats(&part);
        eprintln!(
            "  {set:<12} {:>3} photos: min cos {:.6}, mean {:.6}",
            part.len(),
            st.min,
            st.mean
        );
        if part.is_empty() || st.min < bound {
            failures.push(format!(
                "{backend} fp32 vs reference on {set}: min cos {} at {} (bound {bound})",
                st.min, st.worst
            ));
        }
    }

    let ours_int8 = image_embeddings(s, Precision::Int8, backend, refs);
    let int8: Vec<(String, f32)> = refs
        .iter()
        .zip(&ours_int8)
        .map(|(r, e)| (r.path.clone(), e.cosine(&unit(&r.int8))))
        .collect();
    let st = common::stats(&int8);
    eprintln!(
        "int8 vs reference int8: min cos {:.6} ({}), mean {:.6}",
        st.min, st.worst, st.mean
    );
    // Both runtimes quantise the image tower's activations per row at run time (max|x| / 127,
    // Round, Clip) from slightly different float sums; measured min 0.99865 over 299 photos
    // (0.9983 with the earlier uint8-per-tensor scheme).
    if st.min < 0.997 {
        failures.push(format!(
            "int8 ({backend}) vs int8 (onnxruntime): min cos {} at {}",
            st.min, st.worst
        ));
    }

    // Fidelity of our own int8 path against our own fp32 path.
    let self_cos: Vec<(String, f32)> = refs
        .iter()
        .zip(ours_int8.iter().zip(&ours_fp32))
        .map(|(r, (a, b))| (r.path.clone(), a.cosine(b)))
        .collect();
    let st = common::stats(&self_cos);
    eprintln!(
        "int8 vs fp32 (edgeclip): min cos {:.5} ({}), mean {:.5}",
        st.min, st.worst, st.mean
    );
    if st.min < 0.99 {
        failures.push(format!(
            "{backend} int8 vs fp32: min cos {} at {}",
            st.min, st.worst
        ));
    }

    // Top-1 agreement: does int8 pick the same label as fp32, over all photos, against
    // the CIFAR-10 classes embedded by the fp32 text tower?
    let mut text = engine(s, Precision::Fp32);
    let classes = common::CIFAR10_CLASSES;
    let rows: Vec<Embedding> = classes
        .iter()
        .map(|c| {
            text.embed_text(&format!("a photo of a {c}."))
                .expect("text embeds")
                .0
        })
        .collect();
    let top1 = |e: &Embedding| {
        (0..rows.len()).max_by(|&a, &b| e.cosine(&rows[a]).total_cmp(&e.cosine(&rows[b])))
    };
    let agree = ours_int8
        .iter()
        .zip(&ours_fp32)
        .filter(|(a, b)| top1(a) == top1(b))
        .count();
    let rate = agree as f64 / refs.len() as f64;
    eprintln!(
        "int8/fp32 top-1 agreement: {agree}/{} = {:.1} %",
        refs.len(),
        100.0 * rate
    );
    if rate < 0.97 {
        failures.push(format!("{backend} int8/fp32 top-1 agreement {rate}"));
    }
    (ours_fp32, ours_int8)
}

#[test]
fn text_embeddings_and_ids_match_the_reference() {
    let Some(s) = setup() else { return };
    let refs: Vec<TextRef> = s.records("texts.jsonl", 1);
    for (precision, min_cos) in [(Precision::Fp32, 0.9999f32), (Precision::Int8, 0.999)] {
        let mut e = engine(&s, precision);
        let mut cos = Vec::new();
        for r in &refs {
            assert_eq!(
                e.tokenize(&r.text).expect("tokenizes").ids,
                r.ids,
                "token ids of {:?}",
                r.text
            );
            let ours = e.embed_text_uncached(&r.text).expect("embeds");
            let reference = unit(if precision == Precision::Fp32 {
                &r.fp32
            } else {
                &r.int8
            });
            cos.push((r.text.clone(), ours.cosine(&reference)));
        }
        let st = common::stats(&cos);
        eprintln!(
            "text {precision} vs reference over {} prompts: min cos {:.6} ({:?}), mean {:.6}",
            refs.len(),
            st.min,
            st.worst,
            st.mean
        );
        assert!(
            st.min >= min_cos,
            "text {precision} min cos {} for {:?}",
            st.min,
            st.worst
        );
    }
}

/// A text tower exported without its causal mask lets padding after the end token leak
/// into the pooled embedding (and gives near-uniform probabilities in practice). With the
/// mask, nothing after EOT can change the result.
#[test]
fn text_tower_is_causal_and_pools_at_eot() {
    let Some(s) = setup() else { return };
    let mut e = engine(&s, Precision::Fp32);
    let tokens = e.tokenize("a photo of a cat.").expect("tokenizes");
    let eot = tokens
        .ids
        .iter()
        .position(|&t| t == 49407)
        .expect("has EOT");
    let base = e.embed_text_uncached("a photo of a cat.").expect("embeds");
    let tower = edgeclip::encoder::TextEncoder::load(&s.bundle, Precision::Fp32, tokens.ids.len())
        .expect("loads");
    let mut noisy = tokens.clone();
    for (i, id) in noisy.ids.iter_mut().enumerate().skip(eot + 1) {
        *id = 1000 + i as i64 * 37;
    }
    let after = tower.encode(&noisy).expect("embeds");
    assert!(
        base.cosine(&after) > 0.99999,
        "tokens after EOT changed the embedding: cos {}",
        base.cosine(&after)
    );
    // ...while a change before EOT must matter (the test would pass vacuously otherwise).
    let mut changed = tokens.clone();
    changed.ids[eot - 2] = 1929; // another word in place of "cat"
    let before = tower.encode(&changed).expect("embeds");
    assert!(
        base.cosine(&before) < 0.9999,
        "changing a real token did not change the embedding"
    );
}
