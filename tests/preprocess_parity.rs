//! Parity of our preprocessing with the PIL reference OpenAI CLIP uses.
//!
//! The fixtures (`pixels.jsonl`, written by PIL) give for each photo of the
//! shared datasets `<i>.rgb` (224x224x3 u8 after resize + crop) and `<i>.f32`
//! (CHW, normalised with CLIP mean/std). We decode the same photo with our
//! code and compare. PNGs decode losslessly, so they measure the resampler
//! alone, which is bit-exact with Pillow; JPEGs add the decoder difference
//! (zune-jpeg vs libjpeg-turbo: IDCT, chroma upsampling and YCbCr rounding).
//!
//! Measured against Pillow 13.0.0 on 144 images (24 photos, 80 random
//! Caltech-101, 40 random CIFAR-10; 11 PNG, 133 JPEG):
//!
//! | path                         | max | mean (LSB) | worst image mean |
//! |------------------------------|-----|------------|------------------|
//! | resize+crop, same RGB input  |  0  | 0          | 0 (144/144 bit-exact) |
//! | decode+resize, PNG           |  0  | 0          | 0 (11/11 bit-exact) |
//! | decode+resize, JPEG (all)    |  5  | 0.223      | 0.456            |
//! |   Caltech-101 / CIFAR / photos | 5 / 5 / 3 | 0.187 / 0.344 / 0.042 | |
//! | JPEG decode alone, full res  |  7  | 0.101      | 0.413            |
//! | fast_image_resize (for contrast) | 22 | 0.164  | 0.271            |
//!
//! The official set (`models/make_fixtures.py`, 16 entries incl. chelsea.png
//! re-stored with EXIF orientations 2/3/6/8): lossless 8/8 bit-exact, JPEG
//! max 4, mean 0.158 LSB.
//!
//! The JPEG residual is zune-jpeg's chroma upsampling: it rounds half-up twice
//! (vertical then horizontal, `(3a + b + 2) >> 2` each), where libjpeg-turbo's
//! fancy upsampling rounds once with alternating +8/+7 biases. Chroma comes out
//! ~+0.2 LSB high, so 4:2:0 JPEGs decode with R and B about +0.1..0.2 and G
//! about -0.1 LSB off on average; 4:4:4 and greyscale JPEGs are within 0.01.
//! CIFAR is worst because upscaling 32 → 224 spreads each decoded pixel over
//! 49 output pixels instead of averaging many of them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use edgeclip::preprocess::{decode, PreprocessSpec, Preprocessor, CLIP_STD};

const SIZE: usize = 224;
const PIXELS: usize = SIZE * SIZE * 3;

/// Pixel bounds (LSB) for JPEG inputs: the measured worst (max 5, image mean
/// 0.456, set mean 0.223 — 0.344 for a CIFAR-only set) with headroom for
/// other photos, tight enough to catch a real regression (a wrong crop offset
/// or filter moves means by whole LSBs).
const JPEG_MAX_ABS: u8 = 8;
const JPEG_MEAN_ABS: f64 = 0.6;
const JPEG_SET_MEAN_ABS: f64 = 0.4;
/// Lossless inputs go through the resampler alone, which mirrors Pillow's
/// integer arithmetic exactly.
const LOSSLESS_MAX_ABS: u8 = 0;

/// Normalised values: pixel differences scaled by 1/(255·std) ≈ 0.0146 per
/// LSB, plus float rounding (~1e-6) between our folded multiply-add and the
/// reference's `(x/255 - mean)/std`.
const F32_SLACK: f32 = 1e-5;

/// One line of `pixels.jsonl` (written by `models/make_fixtures.py`).
#[derive(Debug, serde::Deserialize)]
struct Entry {
    /// Photo, relative to the shared datasets.
    path: String,
    /// `<i>.f32`, under `pixels/` (or beside `pixels.jsonl` in older layouts).
    file: String,
    /// `<i>.rgb`; derived from `file` when absent.
    #[serde(default)]
    rgb: Option<String>,
    /// A re-encoded copy (e.g. with an EXIF orientation) to decode instead,
    /// relative to the fixtures dir; its expected pixels are the upright photo's.
    #[serde(default)]
    fixture_file: Option<String>,
}

/// `name` under `pixels/` if it is there, else beside `pixels.jsonl`.
fn fixture_path(dir: &Path, name: &str) -> PathBuf {
    let nested = dir.join("pixels").join(name);
    if nested.exists() {
        nested
    } else {
        dir.join(name)
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[derive(Default)]
struct Stats {
    images: usize,
    values: u64,
    sum_abs: u64,
    max_abs: u8,
    exact_images: usize,
}

impl Stats {
    fn add(&mut self, max: u8, sum: u64, n: usize) {
        self.images += 1;
        self.values += n as u64;
        self.sum_abs += sum;
        self.max_abs = self.max_abs.max(max);
        self.exact_images += usize::from(max == 0);
    }
    fn mean(&self) -> f64 {
        self.sum_abs as f64 / self.values.max(1) as f64
    }
}

#[test]
fn preprocessing_matches_pil_fixtures() {
    // The pixels are the model's input, not its output: every seeded bundle's fixtures hold
    // the same ones, so any prepared bundle will do (EDGECLIP_PARITY_BUNDLE, as the other
    // parity tests).
    let Some(fixtures) = common::fixture_dir(&common::parity_bundle()) else {
        return;
    };
    let Some(datasets) = common::shared_datasets() else {
        return;
    };
    let index = fixtures.join("pixels.jsonl");
    let Some(index) = common::require_path(&index, "pixel fixtures index", "run models/prepare")
    else {
        return;
    };
    let text = fs::read_to_string(&index).expect("read pixels.jsonl");
    let entries: Vec<Entry> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("pixels.jsonl line"))
        .collect();
    assert!(!entries.is_empty(), "{} lists no fixtures", index.display());

    let mut pre = Preprocessor::new(PreprocessSpec::openai_clip(SIZE as u32));
    let mut tensor = vec![0.0f32; pre.spec().tensor_len()];
    let (mut jpeg, mut lossless) = (Stats::default(), Stats::default());
    let mut failures = Vec::new();

    for e in &entries {
        let photo = match &e.fixture_file {
            Some(f) => fixtures.join(f),
            None => datasets.join(&e.path),
        };
        let label = e.fixture_file.as_deref().unwrap_or(&e.path);
        let bytes = fs::read(&photo).unwrap_or_else(|err| panic!("{}: {err}", photo.display()));
        let img = decode(&bytes).unwrap_or_else(|err| panic!("{label}: {err}"));

        let rgb_name = e
            .rgb
            .clone()
            .unwrap_or_else(|| e.file.replace(".f32", ".rgb"));
        let rgb_path = fixture_path(&fixtures, &rgb_name);
        let want_rgb = fs::read(&rgb_path).expect("read .rgb fixture");
        assert_eq!(want_rgb.len(), PIXELS, "{}", rgb_path.display());
        let got_rgb = pre.resize_crop(&img).expect("resize_crop");
        let (mut max, mut sum) = (0u8, 0u64);
        for (a, b) in got_rgb.iter().zip(&want_rgb) {
            let d = a.abs_diff(*b);
            max = max.max(d);
            sum += u64::from(d);
        }
        let mean = sum as f64 / PIXELS as f64;
        let lower = label.to_ascii_lowercase();
        let is_jpeg = lower.ends_with(".jpg") || lower.ends_with(".jpeg");
        if is_jpeg {
            jpeg.add(max, sum, PIXELS);
            if max > JPEG_MAX_ABS || mean > JPEG_MEAN_ABS {
                failures.push(format!("{label}: max {max} LSB, mean {mean:.4} LSB"));
            }
        } else {
            lossless.add(max, sum, PIXELS);
            if max > LOSSLESS_MAX_ABS {
                failures.push(format!(
                    "{} (lossless): max {max} LSB, mean {mean:.4}",
                    e.path
                ));
            }
        }

        // The normalised tensor: bounded by the pixel difference it carries.
        let want = read_f32(&fixture_path(&fixtures, &e.file));
        assert_eq!(want.len(), tensor.len(), "{}", e.file);
        pre.run_into(&img, &mut tensor).expect("run_into");
        // One LSB in the channel with the smallest std is the largest step.
        let min_std = CLIP_STD.iter().copied().fold(f32::INFINITY, f32::min);
        let lsb = 1.0 / (255.0 * min_std);
        let bound = f32::from(max) * lsb + F32_SLACK;
        let worst = tensor
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if worst > bound {
            failures.push(format!("{label}: tensor off by {worst} > {bound}"));
        }
    }

    eprintln!(
        "JPEG: {} images, max {} LSB, mean {:.4} LSB, {} bit-exact; \
         lossless: {} images, max {} LSB, mean {:.4} LSB, {} bit-exact",
        jpeg.images,
        jpeg.max_abs,
        jpeg.mean(),
        jpeg.exact_images,
        lossless.images,
        lossless.max_abs,
        lossless.mean(),
        lossless.exact_images
    );
    assert!(
        failures.is_empty(),
        "over the bounds:\n{}",
        failures.join("\n")
    );
    assert!(
        jpeg.mean() <= JPEG_SET_MEAN_ABS,
        "JPEG mean abs diff over the set {:.4} > {JPEG_SET_MEAN_ABS}",
        jpeg.mean()
    );
}
