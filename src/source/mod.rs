//! Where images come from.
//!
//! Two kinds of input:
//! - one-shot inputs for `classify`/`eval` ([`PathSource`]: files, directories, `-`);
//! - live cameras for `run`: anything implementing [`FrameSource`] (V4L2, an MJPEG stream on
//!   stdin or over HTTP, an `ffmpeg` subprocess, a directory replayed at a frame rate, a
//!   synthetic pattern), driven by a capture loop that reconnects with backoff and hands the
//!   newest frame to inference through a [`LatestSlot`].
//!
//! Frames cross from capture to inference still encoded ([`FrameData`]): a frame that is
//! dropped because a newer one arrived is never decoded.

mod capture;
mod ffmpeg;
mod files;
pub(crate) mod http;
pub(crate) mod mjpeg;
mod pattern;
mod replay;
mod slot;
mod spec;
mod stream;
pub mod v4l2;
mod yuyv;

pub use capture::{run_capture, Backoff, CaptureSnapshot, CaptureStats};
pub use ffmpeg::{split_args, Ffmpeg};
pub use files::{Frame, PathSource, SourceError, IMAGE_EXTENSIONS, MAX_IMAGE_BYTES};
pub use http::HttpMjpeg;
pub use mjpeg::{
    decode_encoded, lacks_huffman_tables, with_huffman_tables, JpegSplitter, SplitError,
    MAX_FRAME_BYTES, STANDARD_DHT,
};
pub use pattern::{Pattern, PatternKind, DEFAULT_PATTERN_FPS, DEFAULT_PATTERN_SIZE};
pub use replay::{Replay, ReplayInput, DEFAULT_REPLAY_FPS};
pub use slot::{LatestSlot, SlotStats};
pub use spec::{PixelFormat, SourceKind, SourceOptions, SourceSpec, SOURCE_FORMS};
pub use stream::{MjpegFile, ReaderMjpeg};
pub use yuyv::yuyv_to_rgb;

use std::time::{Instant, SystemTime};

use crate::preprocess::PreprocessError;

/// Pixels of one captured frame, as the device delivered them.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameData {
    /// An encoded image: a JPEG from an MJPEG stream (Huffman tables possibly omitted), or
    /// any format [`crate::preprocess::decode`] reads (directory replay).
    Encoded(Vec<u8>),
    /// Packed YUYV 4:2:2 (V4L2 `YUYV`), `stride` bytes per row (≥ 2 × width).
    Yuyv {
        /// Width in pixels (even).
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per row.
        stride: u32,
        /// `stride × height` bytes.
        data: Vec<u8>,
    },
    /// Already decoded RGB (the synthetic pattern).
    Rgb(image::RgbImage),
}

impl FrameData {
    /// Decodes the frame to RGB (see [`decode_frame`]), without copying an already-RGB
    /// frame.
    pub fn into_rgb(self) -> Result<image::RgbImage, PreprocessError> {
        match self {
            FrameData::Rgb(image) => Ok(image),
            other => decode_frame(&other),
        }
    }
}

/// Decodes a captured frame to 8-bit RGB:
/// - [`FrameData::Encoded`]: [`crate::preprocess::decode`], after inserting the standard
///   Huffman tables into an MJPEG frame that omits them ([`with_huffman_tables`]);
/// - [`FrameData::Yuyv`]: BT.601 limited-range conversion ([`yuyv_to_rgb`]);
/// - [`FrameData::Rgb`]: a copy.
pub fn decode_frame(frame: &FrameData) -> Result<image::RgbImage, PreprocessError> {
    match frame {
        FrameData::Encoded(bytes) => decode_encoded(bytes),
        FrameData::Yuyv {
            width,
            height,
            stride,
            data,
        } => yuyv_to_rgb(*width, *height, *stride, data),
        FrameData::Rgb(image) => Ok(image.clone()),
    }
}

/// One frame from a camera, stamped by the capture loop.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// Sequence number within this camera, from 1, counting every frame captured
    /// (including those dropped before inference).
    pub seq: u64,
    /// Wall-clock capture time.
    pub captured_at: SystemTime,
    /// Monotonic capture time (latency is measured from here).
    pub instant: Instant,
    /// The pixels.
    pub data: FrameData,
}

/// Why capturing failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The device or stream is gone or unreachable (unplugged, refused, EOF of a live
    /// stream): the capture loop reconnects with backoff.
    #[error("{source_name}: disconnected: {reason}")]
    Disconnected {
        /// The source, as described in logs.
        source_name: String,
        /// What happened.
        reason: String,
    },
    /// The configuration cannot work (a mode the device does not offer, a malformed URL,
    /// ffmpeg missing): not retried.
    #[error("{source_name}: {reason}")]
    Config {
        /// The source.
        source_name: String,
        /// What is wrong, with what would be accepted.
        reason: String,
    },
    /// One frame could not be read or decoded: counted and skipped.
    #[error("{source_name}: frame {frame}: {reason}")]
    Corrupt {
        /// The source.
        source_name: String,
        /// The frame's sequence number (0 when unknown).
        frame: u64,
        /// Why.
        reason: String,
    },
}

/// A camera or stream: opened (and re-opened after a disconnect) by the capture loop, then
/// read frame by frame.
pub trait FrameSource: Send {
    /// What this source is, for logs and `/healthz` (e.g. `/dev/video0 MJPEG 640x480@30`).
    fn describe(&self) -> String;
    /// Opens the device or stream; called before the first frame and after each
    /// [`CaptureError::Disconnected`].
    fn open(&mut self) -> Result<(), CaptureError>;
    /// Blocks for the next frame. `Ok(None)` is a normal end (replay finished, stdin closed).
    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError>;
}
