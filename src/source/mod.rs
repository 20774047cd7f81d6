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

mod files;
mod slot;

pub use files::{Frame, PathSource, SourceError, IMAGE_EXTENSIONS, MAX_IMAGE_BYTES};
pub use slot::{LatestSlot, SlotStats};

use std::time::{Instant, SystemTime};

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
