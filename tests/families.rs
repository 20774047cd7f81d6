//! Model families beyond CLIP, each against its reference export (`models/export_<family>.py`
//! writes the bundle and the fixtures): token ids equal to the family's reference tokenizer,
//! image and text embeddings equal to PyTorch (fp32) and onnxruntime (int8), and the
//! probabilities the model itself gives, through the family's own scoring.
//!
//! Families:
//! - `siglip-tiny-seeded` (transformers `SiglipModel`, seeded; SentencePiece Unigram
//!   tokenizer, squash preprocessing, sigmoid scoring with the model's bias);
//! - `mclip-tiny-seeded` (the `multilingual-clip` package's `MultilingualCLIP`: XLM-R text
//!   tower, mean pooling over the mask the graph rebuilds from the padding, a linear map into
//!   `clip-tiny-seeded`'s image space, whose image tower it reuses; XLM-R SentencePiece with
//!   fairseq ids);
//! - `align-tiny-seeded` (transformers `AlignModel`: EfficientNet + BERT, squash to 346 then a
//!   289 crop, WordPiece), `ruclip-tiny-seeded` (the ruclip package's CLIP, YouTokenToMe BPE
//!   converted to tokenizer.json, centre square then resize), `coca-tiny-seeded` (open_clip
//!   CoCa's contrastive towers, CLIP BPE at 76) and `mobileclip-s0v2-seeded` (open_clip
//!   MobileCLIP2-S0 at real sizes, reparameterised FastViT, 256 px, mean 0 / std 1). Each
//!   block below says what its family checks.

mod common;

use std::path::PathBuf;

use common::{ImageRef, TextRef};
use edgeclip::bundle::{Bundle, Precision};
use edgeclip::classify::Scoring;
use edgeclip::encoder::Embedding;
use edgeclip::engine::{Engine, EngineOptions};
use edgeclip::labels::LabelSet;
use serde::Deserialize;

#[derive(Deserialize)]
struct ScoreRef {
    path: String,
    labels: Vec<String>,
    prompts: Vec<String>,
    probs: Vec<f32>,
}

struct Family {
    bundle: Bundle,
    fixtures: PathBuf,
    datasets: PathBuf,
}

fn family(name: &str) -> Option<Family> {
    let fixtures = common::fixture_dir(name)?;
    let bundle = common::bundle_dir(name)?;
    let datasets = common::shared_datasets()?;
    edgeclip::encoder::set_threads(2);
    Some(Family {
        bundle: Bundle::open_dir(&bundle).expect("bundle opens"),
        fixtures,
        datasets,
    })
}

impl Family {
    fn engine(&self, precision: Precision) -> Engine {
        // No cache: the towers must run.
        Engine::open(
            self.bundle.clone(),
            &EngineOptions {
                precision,
                cache_dir: None,
                ..Default::default()
            },
        )
        .expect("engine opens")
    }

    fn records<T: for<'de> Deserialize<'de>>(&self, file: &str) -> Vec<T> {
        let refs: Vec<T> = common::read_jsonl(&self.fixtures.join(file));
        assert!(!refs.is_empty(), "{file} is empty");
        refs
    }

    fn image(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.datasets.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

fn unit(v: &[f32]) -> Embedding {
    Embedding::normalised(v.to_vec()).expect("reference embedding is finite")
}

/// Lowest cosine of `ours` against the references, printed with its item.
fn min_cos(what: &str, items: &[(String, Embedding, Embedding)]) -> f32 {
    let pairs: Vec<(String, f32)> = items
        .iter()
        .map(|(name, ours, reference)| (name.clone(), ours.cosine(reference)))
        .collect();
    let st = common::stats(&pairs);
    eprintln!(
        "{what}: {} items, min cos {:.6} ({}), mean {:.6}",
        items.len(),
        st.min,
        st.worst,
        st.mean
    );
    st.min
}

/// Every fixture text tokenizes to the reference ids.
fn tokens_match(f: &Family) {
    let e = f.engine(Precision::Int8);
    let refs: Vec<TextRef> = f.records("texts.jsonl");
    let mut wrong = Vec::new();
    for r in &refs {
        let ours = e.tokenize(&r.text).expect("tokenizes");
        if ours.ids != r.ids {
            wrong.push(format!(
                "{:?}\n  ours {:?}\n  ref  {:?}",
                r.text, ours.ids, r.ids
            ));
        }
    }
    eprintln!(
        "{} texts (Russian, Portuguese, Chinese, Arabic, emoji, long)",
        refs.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Image (where the family has its own image tower) and text embeddings against the
/// reference: fp32 to cos 0.9999, int8 to 0.99.
fn embeddings_match(f: &Family, images_file: Option<&str>) {
    let images: Vec<ImageRef> = images_file.map_or_else(Vec::new, |file| f.records(file));
    let texts: Vec<TextRef> = f.records("texts.jsonl");
    let mut failures = Vec::new();
    for (precision, bound) in [(Precision::Fp32, 0.9999f32), (Precision::Int8, 0.99)] {
        let mut e = f.engine(precision);
        let reference =
            |r: &[f32], q: &[f32]| unit(if precision == Precision::Fp32 { r } else { q });
        let img: Vec<(String, Embedding, Embedding)> = images
            .iter()
            .map(|r| {
                let ours = e
                    .embed_image_bytes(&f.image(&r.path))
                    .unwrap_or_else(|err| panic!("{}: {err}", r.path));
                (r.path.clone(), ours, reference(&r.fp32, &r.int8))
            })
            .collect();
        let txt: Vec<(String, Embedding, Embedding)> = texts
            .iter()
            .map(|r| {
                let ours = e.embed_text_uncached(&r.text).expect("text embeds");
                (r.text.clone(), ours, reference(&r.fp32, &r.int8))
            })
            .collect();
        for (what, items) in [("image", &img), ("text", &txt)] {
            if items.is_empty() {
                continue;
            }
            let min = min_cos(&format!("{what} {precision} vs reference"), items);
            if min < bound {
                failures.push(format!("{what} {precision}: min cos {min} < {bound}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn siglip_tokens_match_the_reference_tokenizer() {
    if let Some(f) = family("siglip-tiny-seeded") {
        tokens_match(&f);
    }
}

#[test]
fn siglip_embeddings_match_the_reference_fp32_and_int8() {
    if let Some(f) = family("siglip-tiny-seeded") {
        embeddings_match(&f, Some("images.jsonl"));
    }
}

#[test]
fn mclip_tokens_match_the_reference_tokenizer() {
    if let Some(f) = family("mclip-tiny-seeded") {
        tokens_match(&f);
    }
}

#[test]
fn mclip_text_embeddings_match_the_packages_forward() {
    let Some(f) = family("mclip-tiny-seeded") else {
        return;
    };
    assert_eq!(f.bundle.spec.family, "m-clip");
    assert!(f.bundle.spec.multilingual);
    // The image tower is clip-tiny-seeded's, byte for byte (its parity is
    // tests/embedding_parity.rs with EDGECLIP_PARITY_BUNDLE=clip-tiny-seeded).
    let clip = common::bundle_dir("clip-tiny-seeded").expect("the image bundle");
    let clip = Bundle::open_dir(&clip).expect("clip-tiny-seeded opens");
    for p in [Precision::Fp32, Precision::Int8] {
        let ours = std::fs::read(&f.bundle.visual_file(p).unwrap().path).unwrap();
        let theirs = std::fs::read(&clip.visual_file(p).unwrap().path).unwrap();
        assert!(
            ours == theirs,
            "{p} image tower differs from clip-tiny-seeded's"
        );
    }
    assert_eq!(f.bundle.spec.preprocess, clip.spec.preprocess);
    embeddings_match(&f, None);
}

#[test]
fn siglip_scores_each_label_with_the_models_sigmoid() {
    let Some(f) = family("siglip-tiny-seeded") else {
        return;
    };
    assert!(
        matches!(f.bundle.spec.scoring, Scoring::Sigmoid { bias, .. } if bias != 0.0),
        "{:?}",
        f.bundle.spec.scoring
    );
    let refs: Vec<ScoreRef> = f.records("scores.jsonl");
    let mut e = f.engine(Precision::Fp32);
    // The reference's prompts exactly, one per label.
    let file: String = refs[0]
        .labels
        .iter()
        .zip(&refs[0].prompts)
        .map(|(l, p)| format!("{l}: {p}\n"))
        .collect();
    let labels = LabelSet::parse(file.as_bytes(), "cifar10 prompts").unwrap();
    let (classifier, _) = e.classifier(&labels).expect("label matrix");
    let mut worst = (0.0f32, String::new());
    for r in &refs {
        let image = e
            .embed_image_bytes(&f.image(&r.path))
            .expect("image embeds");
        let scores = classifier.scores(&image);
        for ((label, ours), theirs) in r.labels.iter().zip(&scores.probs).zip(&r.probs) {
            let d = (ours - theirs).abs();
            if d > worst.0 {
                worst = (
                    d,
                    format!("{} / {label}: ours {ours}, model {theirs}", r.path),
                );
            }
        }
    }
    let spread = refs
        .iter()
        .flat_map(|r| r.probs.iter().copied())
        .fold((1.0f32, 0.0f32), |(lo, hi), p| (lo.min(p), hi.max(p)));
    eprintln!(
        "{} photos x {} labels: max |p - p_model| {:.2e} ({}); model's p spans {:.3}..{:.3}",
        refs.len(),
        refs[0].labels.len(),
        worst.0,
        worst.1,
        spread.0,
        spread.1
    );
    // fp32 embeddings agree to cos 0.9999; through a scale of 100 that moves p by ~1e-3.
    assert!(worst.0 < 5e-3, "{}", worst.1);
    assert!(
        spread.1 - spread.0 > 0.5,
        "the fixture should exercise the sigmoid's range"
    );
}

// ALIGN (`align-tiny-seeded`, models/export_align.py): transformers `AlignModel`, seeded. An
// EfficientNet image tower fed 346 px squashed then centre-cropped to 289 (align-base's
// EfficientNetImageProcessor, bilinear, x / 127.5 - 1); bert-base-uncased WordPiece padded
// with [PAD] to 64, the text graph rebuilding the attention mask from the padding; softmax
// with 1 / temperature.

#[test]
fn align_tokens_match_the_reference_tokenizer() {
    if let Some(f) = family("align-tiny-seeded") {
        tokens_match(&f);
    }
}

#[test]
fn align_embeddings_match_the_reference_fp32_and_int8() {
    let Some(f) = family("align-tiny-seeded") else {
        return;
    };
    assert_eq!(f.bundle.spec.family, "align");
    let pp = &f.bundle.spec.preprocess;
    assert_eq!((pp.resize_to, pp.image_size), (346, 289), "{pp:?}");
    embeddings_match(&f, Some("images.jsonl"));
}

#[test]
fn align_softmax_matches_the_models_probabilities() {
    // 4.0e-3 measured (fp32 image cos >= 0.999998 through a scale of 100).
    if let Some(f) = family("align-tiny-seeded") {
        softmax_matches_the_model(&f);
    }
}

// CoCa (`coca-tiny-seeded`, models/export_coca.py): open_clip's `CoCa`, seeded, its contrastive
// towers only (the attentional pooler's first query; the text tower's appended CLS, its mask
// traced from the ids), CLIP BPE at context 76, OpenAI preprocessing, softmax.
// MobileCLIP (`mobileclip-s0v2-seeded`, models/export_mobileclip.py): open_clip's MobileCLIP2-S0
// at its real sizes, seeded, the FastViT image tower reparameterised; 256 px, mean 0 / std 1,
// bilinear; text without a causal mask; CLIP BPE at 77, softmax.

/// The bundle's softmax (scale from the manifest) against the model's own probabilities over
/// the fixture's CIFAR-10 prompts, fp32.
fn softmax_matches_the_model(f: &Family) {
    assert!(
        matches!(f.bundle.spec.scoring, Scoring::Softmax { scale } if scale > 1.0),
        "{:?}",
        f.bundle.spec.scoring
    );
    let refs: Vec<ScoreRef> = f.records("scores.jsonl");
    let mut e = f.engine(Precision::Fp32);
    let file: String = refs[0]
        .labels
        .iter()
        .zip(&refs[0].prompts)
        .map(|(l, p)| format!("{l}: {p}\n"))
        .collect();
    let labels = LabelSet::parse(file.as_bytes(), "cifar10 prompts").expect("labels parse");
    let (classifier, _) = e.classifier(&labels).expect("label matrix");
    let (mut worst, mut top_max) = ((0.0f32, String::new()), 0.0f32);
    for r in &refs {
        let image = e
            .embed_image_bytes(&f.image(&r.path))
            .expect("image embeds");
        let scores = classifier.scores(&image);
        for ((label, ours), theirs) in r.labels.iter().zip(&scores.probs).zip(&r.probs) {
            let d = (ours - theirs).abs();
            if d > worst.0 {
                worst = (
                    d,
                    format!("{} / {label}: ours {ours}, model {theirs}", r.path),
                );
            }
        }
        top_max = r.probs.iter().copied().fold(top_max, f32::max);
    }
    eprintln!(
        "{} photos x {} labels: max |p - p_model| {:.2e} ({}); model's largest p {top_max:.3}",
        refs.len(),
        refs[0].labels.len(),
        worst.0,
        worst.1
    );
    // fp32 embeddings agree to cos 0.9999; through a scale of 100 that moves p by ~1e-3, while a
    // wrong scale, crop or tokenization moves it by hundredths to tenths.
    let bound = 1e-2f32;
    assert!(worst.0 < bound, "{}", worst.1);
    // A flat softmax (a scale near 0) would agree within the bound if the model's own
    // probabilities were all near 1/n: they must leave 1/n by several times the bound.
    // (mobileclip-s0v2-seeded's seeded text tower puts the ten prompts close together: its
    // largest p is 0.16, its smallest 0.036.)
    let flat = 1.0 / refs[0].labels.len() as f32;
    let off_flat = refs
        .iter()
        .flat_map(|r| r.probs.iter().map(|p| (p - flat).abs()))
        .fold(0.0f32, f32::max);
    eprintln!("largest |p_model - 1/n| {off_flat:.3}");
    assert!(
        off_flat > 5.0 * bound,
        "the fixture's probabilities are all flat (top {top_max})"
    );
}

#[test]
fn coca_tokens_match_open_clips_tokenizer() {
    if let Some(f) = family("coca-tiny-seeded") {
        // CoCa's tokenizer stops at 76 ids; the CLS token is the graph's 77th position.
        assert_eq!(
            f.engine(Precision::Int8)
                .tokenize("cat")
                .expect("tokenizes")
                .ids
                .len(),
            76
        );
        tokens_match(&f);
    }
}

#[test]
fn coca_embeddings_match_the_reference_fp32_and_int8() {
    let Some(f) = family("coca-tiny-seeded") else {
        return;
    };
    assert_eq!(f.bundle.spec.family, "coca");
    embeddings_match(&f, Some("images.jsonl"));
}

#[test]
fn coca_softmax_matches_the_models_probabilities() {
    if let Some(f) = family("coca-tiny-seeded") {
        softmax_matches_the_model(&f);
    }
}

#[test]
fn mobileclip_tokens_match_open_clips_tokenizer() {
    if let Some(f) = family("mobileclip-s0v2-seeded") {
        tokens_match(&f);
    }
}

#[test]
fn mobileclip_embeddings_match_the_reference_fp32_and_int8() {
    let Some(f) = family("mobileclip-s0v2-seeded") else {
        return;
    };
    assert_eq!(f.bundle.spec.family, "mobileclip");
    let pp = &f.bundle.spec.preprocess;
    assert_eq!((pp.resize_to, pp.image_size), (256, 256), "{pp:?}");
    embeddings_match(&f, Some("images.jsonl"));
}

#[test]
fn mobileclip_softmax_matches_the_models_probabilities() {
    if let Some(f) = family("mobileclip-s0v2-seeded") {
        softmax_matches_the_model(&f);
    }
}

// ruCLIP (`ruclip-tiny-seeded`, models/export_ruclip.py): the `ruclip` package's `CLIP`, seeded,
// Russian; its YouTokenToMe BPE converted to tokenizer.json (lowercase with Python's final
// sigma, yttm's separators, <BOS> 2 … <EOS> 3, padded with 0); the text tower pools <EOS>;
// RandomResizedCrop(scale=1, ratio=1)'s centre-square fallback, bilinear; softmax.

#[test]
fn ruclip_tokens_match_the_reference_tokenizer() {
    if let Some(f) = family("ruclip-tiny-seeded") {
        tokens_match(&f);
    }
}

#[test]
fn ruclip_embeddings_match_the_reference_fp32_and_int8() {
    let Some(f) = family("ruclip-tiny-seeded") else {
        return;
    };
    assert_eq!(f.bundle.spec.family, "ruclip");
    assert!(!f.bundle.spec.multilingual, "ruCLIP is a Russian model");
    embeddings_match(&f, Some("images.jsonl"));
}

#[test]
fn ruclip_softmax_matches_the_models_probabilities() {
    if let Some(f) = family("ruclip-tiny-seeded") {
        softmax_matches_the_model(&f);
    }
}

/// `edgeclip inspect` names each family's kind of tokenizer, scoring and preprocessing (what a
/// user checks before trusting a bundle), read from the bundle, not assumed.
#[test]
fn inspect_shows_family_tokenizer_scoring_and_preprocessing() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "siglip-tiny-seeded",
            &[
                "family        siglip (multilingual)",
                "scoring       sigmoid per label",
                "squashed to 224x224, no crop",
                "(Unigram,",
            ],
        ),
        (
            "mclip-tiny-seeded",
            &[
                "family        m-clip (multilingual)",
                "(Unigram,",
                "context 128",
            ],
        ),
        (
            "align-tiny-seeded",
            &[
                "family        align",
                "squashed to 346x346 then 289x289 centre crop, Bilinear",
                "(WordPiece, 30522 tokens; context 64)",
            ],
        ),
        (
            "ruclip-tiny-seeded",
            &[
                "family        ruclip",
                "centre square of the shortest side, resized to 224x224, Bilinear",
                "(BPE,",
            ],
        ),
        (
            "coca-tiny-seeded",
            &["family        coca", "CLIP BPE", "(context 76)"],
        ),
        (
            "mobileclip-s0v2-seeded",
            &[
                "family        mobileclip",
                "shortest side to 256 then 256x256 centre crop, Bilinear, mean [0.0, 0.0, 0.0]",
                "softmax over labels of",
            ],
        ),
    ];
    let home = tempfile::tempdir().expect("temp dir");
    for (name, expected) in cases {
        let Some(dir) = common::bundle_dir(name) else {
            return;
        };
        let o = common::edgeclip(home.path(), &["inspect", &dir.to_string_lossy()]);
        assert!(o.status.success(), "{name}: {}", common::stderr(&o));
        let out = common::stdout(&o);
        for line in expected {
            assert!(out.contains(line), "{name}: no {line:?} in\n{out}");
        }
        assert_eq!(out.matches("sha256 ok").count(), 4, "{name}:\n{out}");
    }
}
