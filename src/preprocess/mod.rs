//! Preprocess stage: encoded image → normalised CHW tensor for the image tower.
//!
//! The towers were trained on OpenAI CLIP's torchvision/PIL pipeline, and small
//! systematic pixel differences shift embeddings, so every step here mirrors
//! that reference rather than merely resembling it:
//!
//! 1. [`decode`] does `ImageOps.exif_transpose(img).convert("RGB")`;
//! 2. `Resize(resize_to, BICUBIC)`: shortest side to `resize_to`, long side
//!    `int(resize_to * long / short)`, resampled bit-exactly like Pillow
//!    (see `resample.rs` for why `fast_image_resize` is not used);
//! 3. `CenterCrop(image_size)`: offsets `int(round((size - crop) / 2.0))`
//!    with Python's round-half-to-even, zero padding when the image is
//!    smaller than the crop;
//! 4. `ToTensor()` + `Normalize(mean, std)`: CHW, `(x / 255 - mean) / std`.
//!
//! Other families were trained on other pipelines, chosen by [`ResizeMode`]:
//! SigLIP's and ALIGN's Hugging Face processors squash both sides (ALIGN then
//! crops, with HF's floored offsets), ruCLIP crops the centre square first
//! and resizes it. Each mode is tested against its reference processor.

mod decode;
mod resample;

pub use decode::{check_size, decode, quiet_contained_panics, MAX_PIXELS};

use image::RgbImage;
use resample::{AxisWindow, Filter, Resampler};

/// OpenAI CLIP's per-channel RGB mean (the `Normalize` of its preprocess).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel RGB standard deviation.
// OpenAI's published digits, kept verbatim so they compare by eye with the
// Python reference; f32 rounds them the same way numpy does.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Largest crop side a spec may ask for: keeps a corrupt manifest from making
/// us allocate a multi-gigabyte tensor (4096² × 3 × f32 is already 200 MB).
pub const MAX_IMAGE_SIZE: u32 = 4096;

/// How a bundle wants images fed to its image tower (from the bundle manifest).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct PreprocessSpec {
    /// Side of the square crop fed to the tower (224 for ViT-B/32).
    pub image_size: u32,
    /// How the image is brought to `image_size`.
    pub resize: ResizeMode,
    /// Target of the shortest side in [`ResizeMode::ShortestSide`] (224 for
    /// CLIP, 256 for EfficientNet-style "resize 256, crop 224"), of both sides
    /// in [`ResizeMode::Squash`] (image_size for SigLIP, 346 for ALIGN's 289
    /// crop). Unused by [`ResizeMode::CenterSquare`].
    pub resize_to: u32,
    /// Resampling kernel.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

/// How the decoded image is resized before the centre crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// torchvision `Resize(int)`: shortest side to `resize_to`, aspect kept
    /// (long side truncated), then centre crop to `image_size`.
    ShortestSide,
    /// Hugging Face `resize({height, width})`: both sides to `resize_to`,
    /// aspect not kept, then (when `resize_to > image_size`) HF's
    /// `center_crop` to `image_size`, offsets `(resize_to - image_size) // 2`.
    /// SigLIP (no crop), ALIGN (346 → 289).
    Squash,
    /// ruCLIP's `RandomResizedCrop(image_size, scale=(1, 1), ratio=(1, 1))`,
    /// which for any photo that is not (nearly) square falls back to
    /// torchvision's centre crop: the centred square of the shortest side,
    /// offsets `(long - short) // 2`, then that square resized to `image_size`.
    CenterSquare,
}

/// Resampling kernel, with Pillow's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// Pillow `BICUBIC` (Keys cubic, a = -0.5), antialiased when downscaling.
    Bicubic,
    /// Pillow `BILINEAR` (triangle), antialiased when downscaling.
    Bilinear,
}

impl PreprocessSpec {
    /// OpenAI CLIP's preprocessing for a tower taking `image_size` pixels:
    /// bicubic shortest side to `image_size`, centre crop, CLIP mean/std.
    pub fn openai_clip(image_size: u32) -> Self {
        Self {
            image_size,
            resize: ResizeMode::ShortestSide,
            resize_to: image_size,
            interpolation: Interpolation::Bicubic,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Number of f32 values [`Preprocessor::run_into`] writes: 3 × size².
    pub fn tensor_len(&self) -> usize {
        3 * (self.image_size as usize) * (self.image_size as usize)
    }

    /// Rejects specs that cannot produce a meaningful tensor, so a bad
    /// manifest is reported when the bundle loads rather than per frame.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |why: String| Err(PreprocessError::InvalidSpec(why));
        if self.image_size == 0 || self.image_size > MAX_IMAGE_SIZE {
            return bad(format!(
                "image_size {} is outside 1..={MAX_IMAGE_SIZE}",
                self.image_size
            ));
        }
        match self.resize {
            ResizeMode::ShortestSide if self.resize_to == 0 => {
                return bad("resize_to is 0".into());
            }
            ResizeMode::Squash if self.resize_to < self.image_size => {
                return bad(format!(
                    "resize_to {} is smaller than image_size {} (squash resizes to resize_to, \
                     then crops image_size)",
                    self.resize_to, self.image_size
                ));
            }
            ResizeMode::Squash if self.resize_to > MAX_IMAGE_SIZE => {
                return bad(format!(
                    "resize_to {} is outside 1..={MAX_IMAGE_SIZE}",
                    self.resize_to
                ));
            }
            _ => {}
        }
        if let Some(c) = (0..3).find(|&c| !self.mean[c].is_finite()) {
            return bad(format!("mean[{c}] = {} is not finite", self.mean[c]));
        }
        if let Some(c) = (0..3).find(|&c| !(self.std[c].is_finite() && self.std[c] > 0.0)) {
            return bad(format!(
                "std[{c}] = {} is not a positive number",
                self.std[c]
            ));
        }
        Ok(())
    }
}

/// Why an image could not be turned into a tensor. Messages say what was
/// wrong with the data; the caller adds which file or frame it was.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The input held no bytes at all.
    #[error("image data is empty (0 bytes)")]
    Empty,
    /// The bytes match no image format we decode.
    #[error(
        "unrecognised image format (first bytes: {magic}); \
         supported: JPEG, PNG, GIF, BMP, TIFF, WebP, PNM"
    )]
    UnknownFormat {
        /// Hex dump of the first bytes, to tell e.g. an HTML page from a codec we lack.
        magic: String,
    },
    /// The codec rejected the data.
    #[error("cannot decode {format} data: {source}")]
    Decode {
        /// Container format that was detected.
        format: &'static str,
        /// The codec's own error.
        #[source]
        source: image::ImageError,
    },
    /// The codec panicked on the data (a bug in the codec, found by fuzzing); caught, so
    /// the frame is skipped like any other undecodable one.
    #[error("cannot decode {format} data: the decoder failed on it ({message})")]
    DecoderPanic {
        /// Container format that was detected.
        format: &'static str,
        /// The codec's panic message and where it was raised.
        message: String,
    },
    /// The data stops before the image does.
    #[error("{format} data is truncated: {detail}")]
    Truncated {
        /// Container format that was detected.
        format: &'static str,
        /// Where it stops.
        detail: String,
    },
    /// The header declares more pixels than [`MAX_PIXELS`].
    #[error(
        "image is {width}x{height} = {} pixels, over the limit of {max_pixels}",
        u64::from(*width) * u64::from(*height)
    )]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit it exceeds.
        max_pixels: u64,
    },
    /// The image has no pixels.
    #[error("image has no pixels ({width}x{height})")]
    ZeroSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The [`PreprocessSpec`] is unusable.
    #[error("invalid preprocessing spec: {0}")]
    InvalidSpec(String),
    /// `run_into` was handed a buffer of the wrong size.
    #[error("output buffer holds {actual} values, expected {expected} (3 x {size} x {size})")]
    OutputLength {
        /// 3 × image_size².
        expected: usize,
        /// Length of the slice passed in.
        actual: usize,
        /// The spec's image_size.
        size: u32,
    },
    /// A consistency check inside this module failed (a bug, not bad data).
    #[error("internal preprocessing error: {0}")]
    Internal(&'static str),
}

/// Where one axis of the resized image lands in the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AxisLayout {
    window: AxisWindow,
    /// Zero-padding before the image in the crop (torchvision pads when the
    /// resized image is smaller than the crop).
    pad: u32,
}

/// How a centre crop rounds an odd margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CropOffset {
    /// torchvision's `int(round(margin / 2.0))`, half to even.
    TorchVision,
    /// Hugging Face's `margin // 2`.
    Floor,
}

/// Centre-crop placement along one axis, as torchvision's or Hugging Face's
/// `center_crop`.
fn crop_axis(in_size: u32, resized: u64, crop: u32, offset: CropOffset) -> AxisLayout {
    let crop64 = u64::from(crop);
    let (first, count, pad) = if resized >= crop64 {
        let margin = resized - crop64;
        let first = match offset {
            CropOffset::TorchVision => round_half_even_half(margin),
            CropOffset::Floor => margin / 2,
        };
        (first, crop, 0)
    } else {
        // resized < crop ≤ MAX_IMAGE_SIZE, so it fits in u32.
        let r = resized as u32;
        (0, r, (crop - r) / 2)
    };
    AxisLayout {
        window: AxisWindow {
            in_size,
            out_size: resized,
            first,
            count,
        },
        pad,
    }
}

/// `int(round(d / 2.0))` with Python 3's round-half-to-even: a margin of 1
/// starts the crop at 0, 3 at 2, 5 at 2.
fn round_half_even_half(d: u64) -> u64 {
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// torchvision's `_compute_resized_output_size` for an int size:
/// `(new_w, new_h)` with the short side at `target`.
fn shortest_side_size(w: u32, h: u32, target: u32) -> (u64, u64) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python: int(target * long / short). The product is an exact integer
    // below 2^53, so the f64 division rounds exactly as Python's true division.
    let new_long = (f64::from(target) * f64::from(long) / f64::from(short)) as u64;
    let new_short = u64::from(target);
    if w <= h {
        (new_short, new_long)
    } else {
        (new_long, new_short)
    }
}

/// Reusable preprocessor: owns the resize buffers, so that once warmed up on
/// a frame size it allocates nothing per frame.
#[derive(Debug)]
pub struct Preprocessor {
    spec: PreprocessSpec,
    resampler: Resampler,
    /// image_size² RGB pixels after resize + crop (HWC).
    crop: Vec<u8>,
    /// Per channel: value = pixel * scale + bias == (pixel / 255 - mean) / std.
    scale: [f32; 3],
    bias: [f32; 3],
}

impl Preprocessor {
    /// Creates a preprocessor for `spec`. An invalid spec (see
    /// [`PreprocessSpec::validate`]) is reported by every later call.
    pub fn new(spec: PreprocessSpec) -> Self {
        let mut scale = [0.0f32; 3];
        let mut bias = [0.0f32; 3];
        for c in 0..3 {
            // In f64 so the folded constants carry no extra rounding.
            let std = f64::from(spec.std[c]);
            scale[c] = (1.0 / (255.0 * std)) as f32;
            bias[c] = (-f64::from(spec.mean[c]) / std) as f32;
        }
        Self {
            spec,
            resampler: Resampler::default(),
            crop: Vec::new(),
            scale,
            bias,
        }
    }

    /// The spec this preprocessor follows.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Resize + crop only: `image_size`² RGB pixels, u8, HWC — for parity
    /// checks in pixel units and snapshots. Valid until the next call.
    pub fn resize_crop(&mut self, img: &RgbImage) -> Result<&[u8], PreprocessError> {
        self.fill_crop(img)?;
        Ok(&self.crop)
    }

    /// Full path into `out` (length 3 × image_size²): resize, crop, then
    /// CHW `(x / 255 - mean) / std`.
    pub fn run_into(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<(), PreprocessError> {
        let expected = self.spec.tensor_len();
        if out.len() != expected {
            return Err(PreprocessError::OutputLength {
                expected,
                actual: out.len(),
                size: self.spec.image_size,
            });
        }
        self.fill_crop(img)?;
        normalise_hwc_to_chw(&self.crop, out, self.scale, self.bias);
        Ok(())
    }

    fn fill_crop(&mut self, img: &RgbImage) -> Result<(), PreprocessError> {
        self.spec.validate()?;
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(PreprocessError::ZeroSize {
                width: w,
                height: h,
            });
        }
        let s = self.spec.image_size;
        let src_stride = w as usize * 3;
        // The part of the image that is resized (all of it but for
        // CenterSquare), as its top-left pixel and size.
        let (x0, y0, w, h) = match self.spec.resize {
            ResizeMode::CenterSquare => {
                let side = w.min(h);
                ((w - side) / 2, (h - side) / 2, side, side)
            }
            ResizeMode::ShortestSide | ResizeMode::Squash => (0, 0, w, h),
        };
        let (new_w, new_h, offset) = match self.spec.resize {
            ResizeMode::ShortestSide => {
                let (nw, nh) = shortest_side_size(w, h, self.spec.resize_to);
                (nw, nh, CropOffset::TorchVision)
            }
            ResizeMode::Squash => {
                let r = u64::from(self.spec.resize_to);
                (r, r, CropOffset::Floor)
            }
            ResizeMode::CenterSquare => (u64::from(s), u64::from(s), CropOffset::Floor),
        };
        let x = crop_axis(w, new_w, s, offset);
        let y = crop_axis(h, new_h, s, offset);
        let src_first = (y0 as usize * src_stride) + x0 as usize * 3;
        let src = img
            .as_raw()
            .get(src_first..)
            .ok_or(PreprocessError::Internal("centre square outside the image"))?;
        let filter = match self.spec.interpolation {
            Interpolation::Bicubic => Filter::Bicubic,
            Interpolation::Bilinear => Filter::Bilinear,
        };

        let stride = s as usize * 3;
        self.crop.resize(stride * s as usize, 0);
        if x.pad > 0 || y.pad > 0 || x.window.count < s || y.window.count < s {
            // Only when the resized image is smaller than the crop; the
            // padding is black like torchvision's fill=0.
            self.crop.fill(0);
        }
        let offset = y.pad as usize * stride + x.pad as usize * 3;
        let dst = self
            .crop
            .get_mut(offset..)
            .ok_or(PreprocessError::Internal("crop padding exceeds the crop"))?;
        self.resampler
            .resize_window(src, src_stride, x.window, y.window, filter, dst, stride);
        Ok(())
    }
}

/// HWC u8 → CHW f32 with one multiply and one add per value; three planar
/// output streams and a fixed 3-byte input stride keep it vectorisable.
fn normalise_hwc_to_chw(hwc: &[u8], out: &mut [f32], scale: [f32; 3], bias: [f32; 3]) {
    let n = hwc.len() / 3;
    let (r, rest) = out.split_at_mut(n.min(out.len()));
    let (g, b) = rest.split_at_mut(n.min(rest.len()));
    for (((px, r), g), b) in hwc.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = f32::from(px[0]) * scale[0] + bias[0];
        *g = f32::from(px[1]) * scale[1] + bias[1];
        *b = f32::from(px[2]) * scale[2] + bias[2];
    }
}

#[cfg(test)]
mod tests;
