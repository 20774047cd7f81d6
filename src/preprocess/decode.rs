//! Encoded bytes → 8-bit RGB, the way the PIL reference sees them:
//! `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`.

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::panic::AssertUnwindSafe;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::PreprocessError;

/// Largest image (width × height) that [`decode`] accepts.
///
/// Checked against the header before any pixel buffer is allocated, so a
/// small file declaring enormous dimensions (a decompression bomb) cannot make
/// an edge device allocate gigabytes. 100 MP covers any real camera frame.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Upper bound on any single allocation made by the codecs: a 100 MP RGBA
/// 16-bit frame is 800 MB, so this sits just above it.
const MAX_ALLOC_BYTES: u64 = MAX_PIXELS * 8 + (64 << 20);

/// Rejects a zero-sized frame or one over [`MAX_PIXELS`], from its declared size, before
/// anything is allocated for it.
pub fn check_size(width: u32, height: u32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize { width, height });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PreprocessError::TooLarge {
            width,
            height,
            max_pixels: MAX_PIXELS,
        });
    }
    Ok(())
}

/// Decodes encoded image bytes (JPEG, PNG, GIF, BMP, TIFF, WebP, PNM) to 8-bit
/// RGB, applying the EXIF orientation, with PIL's `convert("RGB")` semantics:
///
/// * greyscale is replicated into the three channels;
/// * alpha is dropped, not composited onto a background;
/// * 16-bit RGB / RGBA / grey+alpha keep the high byte (PIL reads them with
///   its `;16B` raw modes), while 16-bit greyscale is *clipped* to 0..=255
///   (PIL opens it as mode `I;16`, whose conversion to RGB saturates);
/// * CMYK / YCCK JPEGs are converted to RGB by the JPEG decoder.
///
/// Known difference: JPEGs are decoded by zune-jpeg (via `image`), not
/// libjpeg-turbo. IDCT and colour conversion agree to ~0.01 LSB, but zune's
/// fancy chroma upsampling rounds half-up twice, so 4:2:0 / 4:2:2 / 4:4:0
/// JPEGs come out with R and B ~+0.1..0.2 LSB and G ~-0.1 LSB off on average
/// (max 7 LSB at sharp colour edges). PNG, GIF, WebP, BMP, TIFF, PNM, CMYK
/// and 4:4:4 / greyscale JPEGs match PIL to within 1 LSB or exactly.
///
/// Images over [`MAX_PIXELS`] are rejected from their header, before their
/// pixels are allocated. Truncated JPEGs are an error (as in PIL, whose
/// default is `LOAD_TRUNCATED_IMAGES = False`), not a grey-filled image.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| PreprocessError::UnknownFormat {
        magic: magic_hex(bytes),
    })?;
    let format_name = format_name(format);
    let decode_err = |source| PreprocessError::Decode {
        format: format_name,
        source,
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC_BYTES);
    reader.limits(limits);
    let mut decoder = match reader.into_decoder() {
        Ok(d) => d,
        // A decoder may refuse a huge header before it reports the dimensions: PNG's sizes
        // its output buffer in `usize`, which overflows on 32-bit ARM. Name the size anyway.
        Err(e @ image::ImageError::Limits(_)) => {
            if let Some((width, height)) = png_declared_size(bytes) {
                check_size(width, height)?;
            }
            return Err(decode_err(e));
        }
        Err(e) => return Err(decode_err(e)),
    };

    let (width, height) = decoder.dimensions();
    check_size(width, height)?;
    // After the size check, so a bomb is reported as too large.
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
        check_jpeg_plausible(bytes.len(), width, height)?;
    }
    // PIL's exif_transpose ignores an unreadable EXIF block rather than
    // failing the image, so an orientation we cannot read means "upright".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = contained(|| DynamicImage::from_decoder(decoder))
        .map_err(|message| PreprocessError::DecoderPanic {
            format: format_name,
            message,
        })?
        .map_err(decode_err)?;

    let rgb = to_rgb8_like_pil(image)?;
    if orientation == Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut oriented = DynamicImage::ImageRgb8(rgb);
    oriented.apply_orientation(orientation);
    Ok(match oriented {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}

thread_local! {
    /// Set while this thread runs a codec under [`contained`].
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// Where the last contained panic was raised (recorded by [`quiet_contained_panics`]).
    static CONTAINED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs a codec on untrusted bytes and turns a panic inside it into its message.
///
/// The codecs are third-party code parsing untrusted bytes, and fuzzing found one panic
/// in them already (zune-jpeg's AVX2 IDCT, patched in vendor/; see its README). Another
/// must cost one skipped frame, not the inference thread. The codec state is dropped with
/// the panic, so nothing half-updated is used again.
pub(super) fn contained<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    CONTAINED.with(|c| c.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(run));
    CONTAINED.with(|c| c.set(false));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        match CONTAINED_AT.with(|at| at.borrow_mut().take()) {
            Some(at) => format!("{message} at {at}"),
            None => message,
        }
    })
}

/// Whether this thread is inside a codec whose panics [`decode`] catches.
pub fn panic_is_contained() -> bool {
    CONTAINED.with(Cell::get)
}

/// Installs a panic hook that keeps a codec panic [`decode`] catches off stderr (its
/// message and location go into the frame's error instead) and hands every other panic
/// to the hook installed before. Called once at start by the binary and the fuzz driver.
pub fn quiet_contained_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if panic_is_contained() {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            CONTAINED_AT.with(|slot| *slot.borrow_mut() = at);
        } else {
            previous(info);
        }
    }));
}

/// Width and height from a PNG's IHDR chunk (the first chunk, right after the signature).
fn png_declared_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let ihdr = bytes.get(12..24)?;
    if &ihdr[..4] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| Some(u32::from_be_bytes(b.try_into().ok()?));
    Some((be(&ihdr[4..8])?, be(&ihdr[8..12])?))
}

/// PIL's `convert("RGB")` for each layout the codecs can produce.
fn to_rgb8_like_pil(image: DynamicImage) -> Result<RgbImage, PreprocessError> {
    let (w, h) = (image.width(), image.height());
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) => return Ok(rgb),
        // Dropping alpha without compositing: what convert("RGB") does.
        DynamicImage::ImageRgba8(img) => map_pixels(img.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(img) => map_pixels(img.as_raw(), 1, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(img) => map_pixels(img.as_raw(), 2, |p| [p[0]; 3]),
        // Mode I;16 → RGB saturates instead of scaling (measured with
        // Pillow 13: 256 → 255, 65535 → 255).
        DynamicImage::ImageLuma16(img) => map_pixels(img.as_raw(), 1, |p| [p[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(img) => map_pixels(img.as_raw(), 2, |p| [(p[0] >> 8) as u8; 3]),
        DynamicImage::ImageRgb16(img) => map_pixels(img.as_raw(), 3, high_bytes),
        DynamicImage::ImageRgba16(img) => map_pixels(img.as_raw(), 4, high_bytes),
        // Float images (HDR-ish TIFFs) have no PIL RGB equivalent; image's
        // own 0..1 → 0..255 mapping is the sensible reading. Alpha is dropped
        // like everywhere else. Future layouts fall back to the same.
        other => return Ok(other.into_rgb8()),
    };
    RgbImage::from_raw(w, h, rgb).ok_or(PreprocessError::Internal(
        "converted pixel buffer does not match the image dimensions",
    ))
}

fn high_bytes(p: &[u16]) -> [u8; 3] {
    [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]
}

/// Packs `channels`-sample pixels into RGB8 through `f`.
fn map_pixels<T>(raw: &[T], channels: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / channels * 3);
    for p in raw.chunks_exact(channels) {
        out.extend_from_slice(&f(p));
    }
    out
}

/// A JPEG whose entropy-coded data stops before the end-of-image marker.
///
/// zune-jpeg in non-strict mode (as `image` configures it) fills missing MCUs
/// with grey and reports success; PIL raises "image file is truncated". A
/// silently grey half-image would be classified as if it were real, so look
/// for the EOI marker after the first start-of-scan. Inside scan data every
/// 0xFF byte is stuffed (0xFF00) or a restart marker, so 0xFFD9 there can only
/// be the real EOI. The header walk skips whole segments, so an EXIF
/// thumbnail's own EOI is not mistaken for ours.
/// Most pixels a complete JPEG can hold per byte of file. Every 8×8 block of every component
/// costs at least one bit in the (Huffman-coded) scan, so a complete JPEG carries at least
/// one byte per 512 pixels; twice that is allowed. Found by fuzzing: a 391-byte progressive
/// JPEG declaring 85 megapixels "decodes" (the decoder fills what is missing) into an
/// 85-megapixel frame whose decode and resize stall the pipeline for seconds.
const MAX_JPEG_PIXELS_PER_BYTE: u64 = 1024;

/// Refuses a JPEG too small for its declared size (see [`MAX_JPEG_PIXELS_PER_BYTE`]).
fn check_jpeg_plausible(len: usize, width: u32, height: u32) -> Result<(), PreprocessError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_JPEG_PIXELS_PER_BYTE.saturating_mul(len as u64) {
        return Err(PreprocessError::Truncated {
            format: "JPEG",
            detail: format!(
                "declares {width}x{height} pixels in {len} bytes, less than one bit per 8x8 \
                 block: not a complete image"
            ),
        });
    }
    Ok(())
}

fn check_jpeg_complete(bytes: &[u8]) -> Result<(), PreprocessError> {
    let truncated = |detail: &str| PreprocessError::Truncated {
        format: "JPEG",
        detail: format!("{detail} ({} bytes)", bytes.len()),
    };
    let mut pos = 2; // past SOI, which guess_format has seen
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(0xFF), Some(&marker)) => {
                pos += 2;
                // Stand-alone markers carry no length.
                if marker == 0x01 || (0xD0..=0xD8).contains(&marker) {
                    continue;
                }
                if marker == 0xD9 {
                    return Err(truncated("end of image before any scan data"));
                }
                let len = match (bytes.get(pos), bytes.get(pos + 1)) {
                    (Some(&hi), Some(&lo)) => usize::from(hi) << 8 | usize::from(lo),
                    _ => return Err(truncated("ends inside a marker header")),
                };
                pos += len;
                if pos > bytes.len() {
                    return Err(truncated("ends inside a header segment"));
                }
                if marker == 0xDA {
                    let scan = &bytes[pos..];
                    return if scan.windows(2).any(|w| w == [0xFF, 0xD9]) {
                        Ok(())
                    } else {
                        Err(truncated("no end-of-image marker after the scan data"))
                    };
                }
            }
            (None, _) | (Some(0xFF), None) => {
                return Err(truncated("ends before the first scan"));
            }
            // Not a marker where one should be: malformed rather than
            // truncated, and the decoder's error says more about it.
            _ => return Ok(()),
        }
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Pnm => "PNM",
        _ => "image",
    }
}

/// The first bytes, to let a user tell an HTML error page or a truncated
/// download from an image format we lack.
fn magic_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
