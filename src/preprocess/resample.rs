//! Pillow-exact separable resampling of 8-bit RGB, computing only the pixels
//! that survive the centre crop.
//!
//! OpenAI CLIP was trained on images resized by Pillow's `Image.resize`
//! (`libImaging/Resample.c`). `fast_image_resize` follows the same filters but
//! not the same integer arithmetic: for u8 images it runs the vertical pass
//! first and stores coefficients as i16 with a per-axis precision of ~14 bits,
//! whereas Pillow runs the horizontal pass first in most cases (rounding to
//! 8 bits in between) with 22-bit i32 coefficients. Those differences move a few percent
//! of pixels by 1 LSB, so this module mirrors Pillow's arithmetic step by step
//! instead — same coefficient formula and evaluation order, same fixed-point
//! rounding, same pass order — and is bit-identical to it.
//!
//! Pass order follows Pillow 13 (see [`vertical_first`]).
//!
//! Every output pixel depends only on its own coefficient row, so evaluating
//! the full-size resize and then cropping equals evaluating just the crop
//! window. Skipping the discarded margins saves work and keeps degenerate
//! aspect ratios (a 1x5000 strip "resizes" to 224x1,120,000) cheap.

/// Pillow's `PRECISION_BITS` for 8-bit images: 8 bits of result and 2 of
/// headroom for the negative lobes leave 22 fractional bits in an `i32`.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling kernels, with Pillow's definitions and supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Filter {
    /// Keys cubic with a = -0.5 (Pillow `BICUBIC`), support 2.
    Bicubic,
    /// Triangle (Pillow `BILINEAR`), support 1.
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    /// Written with Pillow's operation order so the doubles round identically.
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

/// Identifies an [`AxisPlan`] so a stream of same-sized frames reuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlanKey {
    in_size: u32,
    out_size: u64,
    first: u64,
    count: u32,
    filter: Filter,
}

/// Fixed-point coefficients for the `count` output positions `first..` of one
/// axis resized from `in_size` to `out_size` samples.
#[derive(Debug, Default)]
pub(crate) struct AxisPlan {
    key: Option<PlanKey>,
    /// Pillow skips a pass whose size does not change; so do we (it would be
    /// an identity anyway, but skipping also skips its rounding).
    identity: bool,
    ksize: usize,
    /// First input sample of each output position.
    starts: Vec<usize>,
    /// Number of input samples (and coefficients) of each output position.
    lens: Vec<usize>,
    /// `count * ksize` coefficients, row `i` at `i * ksize`.
    coeffs: Vec<i32>,
    /// Scratch for the double-precision weights, kept to avoid reallocating.
    weights: Vec<f64>,
}

impl AxisPlan {
    /// (Re)computes the plan unless it already matches; allocation-free once
    /// the buffers have grown to the largest size seen.
    pub(crate) fn prepare(
        &mut self,
        in_size: u32,
        out_size: u64,
        first: u64,
        count: u32,
        filter: Filter,
    ) {
        let key = PlanKey {
            in_size,
            out_size,
            first,
            count,
            filter,
        };
        if self.key == Some(key) {
            return;
        }
        self.key = Some(key);
        self.identity = out_size == u64::from(in_size);
        self.starts.clear();
        self.lens.clear();
        self.coeffs.clear();
        if self.identity {
            // Plain copies: output position i is input sample first + i.
            self.ksize = 1;
            for i in 0..u64::from(count) {
                self.starts
                    .push(usize::try_from(first + i).unwrap_or(usize::MAX));
                self.lens.push(1);
                self.coeffs.push(1 << PRECISION_BITS);
            }
            return;
        }

        // Pillow passes the box as C floats, so the input extent goes through
        // f32 before the double arithmetic (exact below 2^24 samples).
        let in0 = 0.0f32;
        let in1 = in_size as f32;
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        self.ksize = (support.ceil() as usize) * 2 + 1;
        let ss = 1.0 / filterscale;
        let in_len = i64::from(in_size);

        for xx in first..first + u64::from(count) {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, like `as i64`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_len);
            let n = usize::try_from((xmax - xmin).max(0)).unwrap_or(0);
            self.weights.clear();
            let mut ww = 0.0f64;
            for x in 0..n {
                let w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                self.weights.push(w);
                ww += w;
            }
            for x in 0..self.ksize {
                let mut k = self.weights.get(x).copied().unwrap_or(0.0);
                if x < n && ww != 0.0 {
                    k /= ww;
                }
                // normalize_coeffs_8bpc: round half away from zero, then C's
                // truncating cast.
                let fixed = if k < 0.0 {
                    (-0.5 + k * f64::from(1u32 << PRECISION_BITS)) as i32
                } else {
                    (0.5 + k * f64::from(1u32 << PRECISION_BITS)) as i32
                };
                self.coeffs.push(fixed);
            }
            self.starts.push(usize::try_from(xmin).unwrap_or(0));
            self.lens.push(n.min(self.ksize));
        }
    }

    /// Input samples `lo..hi` that the planned outputs read.
    fn input_span(&self) -> (usize, usize) {
        let lo = self.starts.iter().copied().min().unwrap_or(0);
        let hi = self
            .starts
            .iter()
            .zip(&self.lens)
            .map(|(s, l)| s + l)
            .max()
            .unwrap_or(0);
        (lo, hi.max(lo))
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Reusable state for [`Resampler::resize_window`].
#[derive(Debug, Default)]
pub(crate) struct Resampler {
    horiz: AxisPlan,
    vert: AxisPlan,
    /// The image between the two passes (Pillow's `imTemp`), cut down to
    /// what the second pass reads.
    temp: Vec<u8>,
    /// Per-row i32 accumulators for the vertical pass.
    acc: Vec<i32>,
}

/// One axis of a resize-then-crop: resize `in_size` to `out_size`, then keep
/// `count` samples starting at `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AxisWindow {
    pub in_size: u32,
    pub out_size: u64,
    pub first: u64,
    pub count: u32,
}

impl Resampler {
    /// Writes the window `x`×`y` of `src` (packed RGB, `x.in_size`×`y.in_size`
    /// pixels in rows `src_stride` bytes apart: a crop of a larger image, as
    /// Pillow's `img.crop(box).resize(...)` sees it) resized to
    /// `x.out_size`×`y.out_size` into `dst`, a packed RGB buffer with
    /// `dst_stride` bytes per row, starting at its first byte.
    ///
    /// Callers guarantee `src` holds `y.in_size` such rows, windows inside the
    /// resized extent and `dst` large enough; violations skip rows rather than
    /// index out of bounds.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resize_window(
        &mut self,
        src: &[u8],
        src_stride: usize,
        x: AxisWindow,
        y: AxisWindow,
        filter: Filter,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        // Bytes of one source row inside the crop (src_stride may be longer).
        let src_row_bytes = x.in_size as usize * 3;
        let out_w = x.count as usize;
        let out_h = y.count as usize;
        if out_w == 0 || out_h == 0 || src_row_bytes == 0 || src_stride < src_row_bytes {
            return;
        }
        self.horiz
            .prepare(x.in_size, x.out_size, x.first, x.count, filter);
        self.vert
            .prepare(y.in_size, y.out_size, y.first, y.count, filter);
        let row_bytes = out_w * 3;

        if self.vert.identity {
            // Horizontal pass only (or a plain copy), straight into `dst`.
            for (i, &row) in self.vert.starts.iter().enumerate() {
                let Some(src_row) = src.get(row * src_stride..row * src_stride + src_row_bytes)
                else {
                    continue;
                };
                let Some(dst_row) = dst.get_mut(i * dst_stride..i * dst_stride + row_bytes) else {
                    continue;
                };
                horizontal_row(&self.horiz, 0, src_row, dst_row);
            }
            return;
        }
        if self.horiz.identity {
            // Vertical pass only, reading the source at the window's columns.
            let col0 = self.horiz.starts.first().copied().unwrap_or(0) * 3;
            let src = src.get(col0..).unwrap_or(&[]);
            vertical_pass(
                &self.vert,
                src,
                src_stride,
                0,
                &mut self.acc,
                dst,
                dst_stride,
                row_bytes,
            );
            return;
        }

        if vertical_first(x, y) {
            // Vertical pass over the source columns the horizontal pass will
            // read, rounded to u8, then the horizontal pass.
            let (col_lo, col_hi) = self.horiz.input_span();
            let temp_row = (col_hi - col_lo) * 3;
            self.temp.resize(out_h * temp_row, 0);
            let src = src.get(col_lo * 3..).unwrap_or(&[]);
            vertical_pass(
                &self.vert,
                src,
                src_stride,
                0,
                &mut self.acc,
                &mut self.temp,
                temp_row,
                temp_row,
            );
            for (i, line) in self.temp.chunks_exact(temp_row).enumerate() {
                if let Some(dst_row) = dst.get_mut(i * dst_stride..i * dst_stride + row_bytes) {
                    horizontal_row(&self.horiz, col_lo, line, dst_row);
                }
            }
        } else {
            // Horizontal pass over the rows the vertical pass will read
            // (Pillow's `imTemp`), rounded to u8, then the vertical pass.
            let (row_lo, row_hi) = self.vert.input_span();
            self.temp.resize((row_hi - row_lo) * row_bytes, 0);
            for (r, temp_row) in self.temp.chunks_exact_mut(row_bytes).enumerate() {
                let row = row_lo + r;
                if let Some(src_row) = src.get(row * src_stride..row * src_stride + src_row_bytes) {
                    horizontal_row(&self.horiz, 0, src_row, temp_row);
                }
            }
            vertical_pass(
                &self.vert,
                &self.temp,
                row_bytes,
                row_lo,
                &mut self.acc,
                dst,
                dst_stride,
                row_bytes,
            );
        }
    }
}

/// Pillow ≥ 13's pass order (`ImagingResampleInner`): vertical first when the
/// height shrinks by more than twice as many pixels as the width does, which
/// makes the expensive horizontal pass run on fewer rows. Pillow ≤ 12 always
/// went horizontal first; the two orders round differently between passes.
fn vertical_first(x: AxisWindow, y: AxisWindow) -> bool {
    let dh = i128::from(y.in_size) - i128::from(y.out_size);
    let dw = i128::from(x.in_size) - i128::from(x.out_size);
    dh > 0 && dh > dw * 2
}

/// Pillow's `ImagingResampleVertical_8bpc` for the planned output rows:
/// `src` holds rows `src_first_row..` with `src_stride` bytes each, of which
/// the first `row_bytes` are resampled.
#[allow(clippy::too_many_arguments)]
fn vertical_pass(
    plan: &AxisPlan,
    src: &[u8],
    src_stride: usize,
    src_first_row: usize,
    acc: &mut Vec<i32>,
    dst: &mut [u8],
    dst_stride: usize,
    row_bytes: usize,
) {
    acc.resize(row_bytes, 0);
    let ksize = plan.ksize;
    for (i, (&start, &len)) in plan.starts.iter().zip(&plan.lens).enumerate() {
        let Some(dst_row) = dst.get_mut(i * dst_stride..i * dst_stride + row_bytes) else {
            continue;
        };
        let k = &plan.coeffs[i * ksize..i * ksize + len];
        acc.fill(1 << (PRECISION_BITS - 1));
        for (tap, &coef) in k.iter().enumerate() {
            let offset = (start + tap).saturating_sub(src_first_row) * src_stride;
            let Some(line) = src.get(offset..offset + row_bytes) else {
                continue;
            };
            // Contiguous bytes times one coefficient: this loop vectorises.
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i32::from(p) * coef;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
            *d = clip8(a);
        }
    }
}

/// One row of Pillow's `ImagingResampleHorizontal_8bpc` for 3 bands; `src_row`
/// starts at input column `col_offset`.
fn horizontal_row(plan: &AxisPlan, col_offset: usize, src_row: &[u8], dst_row: &mut [u8]) {
    let ksize = plan.ksize;
    let half = 1 << (PRECISION_BITS - 1);
    for (j, (px, (&start, &len))) in dst_row
        .chunks_exact_mut(3)
        .zip(plan.starts.iter().zip(&plan.lens))
        .enumerate()
    {
        let k = &plan.coeffs[j * ksize..j * ksize + len];
        let first = start.saturating_sub(col_offset) * 3;
        let Some(taps) = src_row.get(first..first + len * 3) else {
            continue;
        };
        let (mut s0, mut s1, mut s2) = (half, half, half);
        for (p, &c) in taps.chunks_exact(3).zip(k) {
            s0 += i32::from(p[0]) * c;
            s1 += i32::from(p[1]) * c;
            s2 += i32::from(p[2]) * c;
        }
        px[0] = clip8(s0);
        px[1] = clip8(s1);
        px[2] = clip8(s2);
    }
}
