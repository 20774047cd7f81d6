//! Packed YUYV 4:2:2 (V4L2 `YUYV`, ffmpeg `yuyv422`) → RGB.
//!
//! UVC webcams deliver BT.601 *limited-range* YCbCr (Y in 16..235, Cb/Cr in 16..240), so
//! this is the conversion libv4lconvert and ffmpeg's swscale apply to it:
//!
//! ```text
//! R = 1.164 (Y - 16)                   + 1.596 (V - 128)
//! G = 1.164 (Y - 16) - 0.392 (U - 128) - 0.813 (V - 128)
//! B = 1.164 (Y - 16) + 2.017 (U - 128)
//! ```
//!
//! in 16-bit fixed point, rounded and clamped to 0..=255. Each 4-byte macropixel
//! `Y0 U Y1 V` holds two pixels sharing one chroma pair; the chroma is not interpolated
//! (as in libv4lconvert and swscale's default packed-YUV path).

use image::RgbImage;

use crate::preprocess::{check_size, PreprocessError};

/// Fixed-point scale of the coefficients.
const SHIFT: u32 = 16;
const HALF: i32 = 1 << (SHIFT - 1);
/// 255/219: limited-range luma to full range.
const C_Y: i32 = 76_309;
/// 1.402 × 255/224.
const C_RV: i32 = 104_597;
/// 0.344136 × 255/224.
const C_GU: i32 = 25_675;
/// 0.714136 × 255/224.
const C_GV: i32 = 53_279;
/// 1.772 × 255/224.
const C_BU: i32 = 132_201;

#[inline(always)]
fn clamp_u8(v: i32) -> u8 {
    (v >> SHIFT).clamp(0, 255) as u8
}

/// Converts a YUYV frame of `width × height` pixels, `stride` bytes per row, to RGB.
///
/// An odd `width` reads the last macropixel's first pixel only (V4L2 widths are even).
/// Errors: zero size, more than [`MAX_PIXELS`], a stride shorter than a row, or `data`
/// shorter than the frame.
pub fn yuyv_to_rgb(
    width: u32,
    height: u32,
    stride: u32,
    data: &[u8],
) -> Result<RgbImage, PreprocessError> {
    check_size(width, height)?;
    let (w, h, stride) = (width as usize, height as usize, stride as usize);
    let row_bytes = w.div_ceil(2) * 4;
    if stride < row_bytes {
        return Err(PreprocessError::Truncated {
            format: "YUYV",
            detail: format!(
                "stride {stride} is shorter than a {width}-pixel row ({row_bytes} bytes)"
            ),
        });
    }
    // The last row need not be padded to the full stride. In u64: on 32-bit boards a
    // bogus stride must not overflow.
    let needed = stride as u64 * (h as u64 - 1) + row_bytes as u64;
    if (data.len() as u64) < needed {
        return Err(PreprocessError::Truncated {
            format: "YUYV",
            detail: format!(
                "{} bytes for a {width}x{height} frame with stride {stride} (needs {needed})",
                data.len()
            ),
        });
    }

    let mut out = vec![0u8; w * h * 3];
    for (src_row, dst_row) in data.chunks(stride).zip(out.chunks_exact_mut(w * 3)) {
        convert_row(&src_row[..row_bytes], dst_row);
    }
    RgbImage::from_raw(width, height, out).ok_or(PreprocessError::Internal(
        "YUYV conversion produced a buffer of the wrong size",
    ))
}

/// One row: `src` holds whole macropixels, `dst` the row's RGB pixels (possibly one pixel
/// short of `src`'s pairs when the width is odd).
#[inline]
fn convert_row(src: &[u8], dst: &mut [u8]) {
    let mut pairs = dst.chunks_exact_mut(6);
    let mut macro_pixels = src.chunks_exact(4);
    for (px, m) in (&mut pairs).zip(&mut macro_pixels) {
        let (y0, u, y1, v) = (m[0] as i32, m[1] as i32, m[2] as i32, m[3] as i32);
        let (r_c, g_c, b_c) = chroma(u, v);
        let l0 = C_Y * (y0 - 16) + HALF;
        let l1 = C_Y * (y1 - 16) + HALF;
        px[0] = clamp_u8(l0 + r_c);
        px[1] = clamp_u8(l0 + g_c);
        px[2] = clamp_u8(l0 + b_c);
        px[3] = clamp_u8(l1 + r_c);
        px[4] = clamp_u8(l1 + g_c);
        px[5] = clamp_u8(l1 + b_c);
    }
    // Odd width: one pixel left, from the next macropixel's Y0.
    let last = pairs.into_remainder();
    if last.len() == 3 {
        if let Some(m) = macro_pixels.next() {
            let (r_c, g_c, b_c) = chroma(m[1] as i32, m[3] as i32);
            let l0 = C_Y * (m[0] as i32 - 16) + HALF;
            last[0] = clamp_u8(l0 + r_c);
            last[1] = clamp_u8(l0 + g_c);
            last[2] = clamp_u8(l0 + b_c);
        }
    }
}

/// The chroma terms of R, G and B for one macropixel, in fixed point.
#[inline(always)]
fn chroma(u: i32, v: i32) -> (i32, i32, i32) {
    let (u, v) = (u - 128, v - 128);
    (C_RV * v, -C_GU * u - C_GV * v, C_BU * u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_colours() {
        // Black, white and the BT.601 limited-range codes of pure red.
        let data = [16, 128, 235, 128, 81, 90, 81, 240];
        let img = yuyv_to_rgb(4, 1, 8, &data).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        let red = img.get_pixel(2, 0).0;
        assert!(red[0] >= 254 && red[1] <= 1 && red[2] <= 1, "{red:?}");
    }

    #[test]
    fn stride_padding_and_odd_width() {
        // 3x2, stride 12 (two macropixels = 8 bytes + 4 padding), last row unpadded.
        let row = [16, 128, 235, 128, 126, 128, 200, 128];
        let mut data = row.to_vec();
        data.extend([9, 9, 9, 9]);
        data.extend(row);
        let img = yuyv_to_rgb(3, 2, 12, &data).unwrap();
        for y in 0..2 {
            assert_eq!(img.get_pixel(0, y).0, [0, 0, 0]);
            assert_eq!(img.get_pixel(1, y).0, [255, 255, 255]);
            assert_eq!(img.get_pixel(2, y).0, [128, 128, 128]);
        }
        assert!(yuyv_to_rgb(3, 2, 6, &data).is_err());
        assert!(yuyv_to_rgb(3, 3, 12, &data).is_err());
        assert!(yuyv_to_rgb(0, 3, 12, &data).is_err());
    }
}
