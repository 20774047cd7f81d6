//! Source strings (`--source`, `source = "…"` in the config) → typed specs → sources.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ffmpeg::{split_args, Ffmpeg};
use super::http::HttpMjpeg;
use super::pattern::{Pattern, PatternKind, DEFAULT_PATTERN_FPS, DEFAULT_PATTERN_SIZE};
use super::replay::{Replay, ReplayInput};
use super::stream::{MjpegFile, ReaderMjpeg};
use super::{CaptureError, FrameSource, IMAGE_EXTENSIONS};

/// The forms a source string may take, for error messages and `--help`.
pub const SOURCE_FORMS: &str = "\
  -                                  MJPEG stream on standard input
  /dev/videoN, v4l:/dev/videoN       V4L2 camera (MJPG or YUYV)
  http://…, https://…                MJPEG-over-HTTP stream, or a JPEG snapshot URL (polled)
  rtsp://…, rtmp://…                 network camera stream, decoded by ffmpeg
  ffmpeg:ARGS                        ffmpeg input arguments, e.g. 'ffmpeg:-f v4l2 -i /dev/video1'
  pattern:[bars|gradient][,frames=N] synthetic test pattern (also test:)
  DIR, 'GLOB' (with * ? [)           image files replayed in name order
  FILE.mjpeg, FILE.jpg               a recorded MJPEG stream or one image, replayed";

/// Pixel format asked of a V4L2 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG (`MJPG`): compressed, the usual choice on USB 2.
    #[serde(alias = "mjpg", alias = "MJPG", alias = "MJPEG", alias = "jpeg")]
    Mjpeg,
    /// Packed YUV 4:2:2 (`YUYV`): uncompressed.
    #[serde(alias = "YUYV", alias = "yuv422", alias = "yuy2", alias = "YUY2")]
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 fourcc.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }

    /// The format of a V4L2 fourcc, if it is one we read.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelFormat> {
        match &fourcc {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Mjpeg => "MJPG",
            PixelFormat::Yuyv => "YUYV",
        })
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<PixelFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "mjpeg" | "mjpg" | "jpeg" => Ok(PixelFormat::Mjpeg),
            "yuyv" | "yuv422" | "yuy2" => Ok(PixelFormat::Yuyv),
            _ => Err(format!(
                "unknown pixel format {s:?} (expected mjpeg or yuyv)"
            )),
        }
    }
}

/// How to capture: the camera mode for V4L2, the rate of replays and patterns.
///
/// Every field is optional; in a config file this is a table such as
/// `capture = { format = "mjpeg", width = 640, height = 480, fps = 15 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOptions {
    /// V4L2 pixel format (default: MJPG when offered, else YUYV).
    pub format: Option<PixelFormat>,
    /// Frame width: V4L2 mode, pattern size, ffmpeg scaling (with `height`).
    pub width: Option<u32>,
    /// Frame height.
    pub height: Option<u32>,
    /// Frames per second: V4L2 mode, ffmpeg `fps` filter, replay/pattern pace, snapshot
    /// polling rate. A replay at 0 runs unpaced.
    pub fps: Option<f32>,
    /// Replays (directories, globs, `.mjpeg` files) start over at the end.
    #[serde(alias = "loop")]
    pub looping: bool,
}

impl SourceOptions {
    /// Checks the values make sense on their own; the reason when not.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(fps) = self.fps {
            if !fps.is_finite() || !(0.0..=1000.0).contains(&fps) {
                return Err(format!("fps {fps} out of range (0..=1000)"));
            }
        }
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == Some(0) || v.is_some_and(|v| v > 16384) {
                return Err(format!(
                    "{name} {} out of range (1..=16384)",
                    v.unwrap_or(0)
                ));
            }
        }
        Ok(())
    }

    fn size(&self) -> Option<(u32, u32)> {
        self.width.zip(self.height)
    }
}

/// What a source string names.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// `-`: an MJPEG stream on standard input.
    Stdin,
    /// `http(s)://…`.
    Http(String),
    /// `rtsp://…`, `rtmp://…` read by ffmpeg.
    FfmpegUrl(String),
    /// `ffmpeg:ARGS`: ffmpeg input arguments.
    FfmpegArgs(Vec<String>),
    /// A V4L2 device node.
    V4l2(PathBuf),
    /// A synthetic pattern, optionally ending after a number of frames.
    Pattern {
        /// What it draws.
        kind: PatternKind,
        /// Frames before the source ends.
        frames: Option<u64>,
    },
    /// Image files replayed.
    Replay(ReplayInput),
    /// A recorded MJPEG stream file.
    MjpegFile(PathBuf),
}

/// A parsed source string and its capture options, ready to build a [`FrameSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// What it names.
    pub kind: SourceKind,
    /// How to capture.
    pub options: SourceOptions,
    text: String,
}

fn config(text: &str, reason: impl Into<String>) -> CaptureError {
    CaptureError::Config {
        source_name: text.to_string(),
        reason: reason.into(),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_pattern(text: &str, rest: &str) -> Result<SourceKind, CaptureError> {
    let mut kind = PatternKind::default();
    let mut frames = None;
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("frames", n)) => {
                frames = Some(
                    n.parse::<u64>()
                        .map_err(|_| config(text, format!("frames={n}: not a whole number")))?,
                )
            }
            None if part.eq_ignore_ascii_case("bars") => kind = PatternKind::Bars,
            None if part.eq_ignore_ascii_case("gradient") => kind = PatternKind::Gradient,
            _ => {
                return Err(config(
                    text,
                    format!("unknown pattern option {part:?} (expected bars, gradient, frames=N)"),
                ))
            }
        }
    }
    Ok(SourceKind::Pattern { kind, frames })
}

fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl SourceSpec {
    /// Parses a source string (see [`SOURCE_FORMS`]). Only a replay's directory is looked
    /// up on disk here; devices and URLs are reached when the source is opened.
    pub fn parse(text: &str, options: SourceOptions) -> Result<SourceSpec, CaptureError> {
        let spec = |kind| SourceSpec {
            kind,
            options,
            text: text.to_string(),
        };
        options.validate().map_err(|r| config(text, r))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(config(
                text,
                format!("empty source; accepted:\n{SOURCE_FORMS}"),
            ));
        }
        if t == "-" {
            return Ok(spec(SourceKind::Stdin));
        }
        if strip_prefix_ci(t, "http://").is_some() || strip_prefix_ci(t, "https://").is_some() {
            let host = t.split_once("://").map_or("", |(_, rest)| rest);
            if host.is_empty() || host.starts_with('/') {
                return Err(config(text, "URL without a host"));
            }
            return Ok(spec(SourceKind::Http(t.to_string())));
        }
        for scheme in ["rtsp://", "rtsps://", "rtmp://", "rtmps://"] {
            if strip_prefix_ci(t, scheme).is_some() {
                return Ok(spec(SourceKind::FfmpegUrl(t.to_string())));
            }
        }
        if let Some(args) = strip_prefix_ci(t, "ffmpeg:") {
            let args = split_args(args).ok_or_else(|| config(text, "unterminated quote"))?;
            if args.is_empty() {
                return Err(config(
                    text,
                    "ffmpeg: needs input arguments, e.g. 'ffmpeg:-f v4l2 -i /dev/video1'",
                ));
            }
            return Ok(spec(SourceKind::FfmpegArgs(args)));
        }
        if let Some(path) = strip_prefix_ci(t, "v4l2:").or_else(|| strip_prefix_ci(t, "v4l:")) {
            if path.is_empty() {
                return Err(config(text, "v4l: needs a device, e.g. v4l:/dev/video0"));
            }
            // `v4l:0` is `/dev/video0`.
            let path = if path.bytes().all(|b| b.is_ascii_digit()) {
                format!("/dev/video{path}")
            } else {
                path.to_string()
            };
            return Ok(spec(SourceKind::V4l2(path.into())));
        }
        if t.starts_with("/dev/video") {
            return Ok(spec(SourceKind::V4l2(t.into())));
        }
        if let Some(rest) = strip_prefix_ci(t, "pattern:").or_else(|| strip_prefix_ci(t, "test:")) {
            return Ok(spec(parse_pattern(text, rest)?));
        }
        let path = Path::new(t);
        if path.is_dir() {
            return Ok(spec(SourceKind::Replay(ReplayInput::Directory(
                path.into(),
            ))));
        }
        if path.is_file() {
            return Ok(spec(if is_image_file(path) {
                SourceKind::Replay(ReplayInput::File(path.into()))
            } else {
                SourceKind::MjpegFile(path.into())
            }));
        }
        if t.contains(['*', '?', '[']) {
            glob::Pattern::new(t).map_err(|e| config(text, format!("bad glob pattern: {e}")))?;
            return Ok(spec(SourceKind::Replay(ReplayInput::Glob(t.to_string()))));
        }
        let why = if t.contains("://") {
            "unsupported URL scheme".to_string()
        } else {
            "no such file or directory, and not a known source form".to_string()
        };
        Err(config(text, format!("{why}; accepted:\n{SOURCE_FORMS}")))
    }

    /// The source string as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Builds the source, not yet opened: the capture loop ([`super::run_capture`]) opens
    /// it and reopens it after disconnects. Fails only for what cannot work whatever the
    /// device does (V4L2 in a build without the `v4l` feature).
    pub fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        let o = &self.options;
        Ok(match &self.kind {
            SourceKind::Stdin => Box::new(ReaderMjpeg::stdin()),
            SourceKind::Http(url) => Box::new(HttpMjpeg::new(url.clone(), o.fps)),
            SourceKind::FfmpegUrl(url) => Box::new(Ffmpeg::url(url, o.fps, o.size())),
            SourceKind::FfmpegArgs(args) => Box::new(Ffmpeg::with_input_args(
                args.clone(),
                format!("ffmpeg:{}", args.join(" ")),
                o.fps,
                o.size(),
            )),
            SourceKind::V4l2(path) => open_v4l2(&self.text, path, o)?,
            SourceKind::Pattern { kind, frames } => {
                let (w, h) = match (o.width, o.height) {
                    (Some(w), Some(h)) => (w, h),
                    // One side given: keep the default 4:3.
                    (Some(w), None) => (w, (w * 3 / 4).max(1)),
                    (None, Some(h)) => ((h * 4 / 3).max(1), h),
                    (None, None) => DEFAULT_PATTERN_SIZE,
                };
                Box::new(Pattern::new(
                    *kind,
                    w,
                    h,
                    o.fps.unwrap_or(DEFAULT_PATTERN_FPS),
                    *frames,
                ))
            }
            SourceKind::Replay(input) => Box::new(Replay::new(input.clone(), o.fps, o.looping)),
            SourceKind::MjpegFile(path) => Box::new(MjpegFile::new(path.clone(), o.fps, o.looping)),
        })
    }
}

#[cfg(feature = "v4l")]
fn open_v4l2(
    _text: &str,
    path: &Path,
    options: &SourceOptions,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(super::v4l2::V4l2::new(path, *options)))
}

#[cfg(not(feature = "v4l"))]
fn open_v4l2(
    text: &str,
    path: &Path,
    _options: &SourceOptions,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    Err(config(
        text,
        format!(
            "this edgeclip was built without V4L2 support (the `v4l` cargo feature); \
             rebuild with default features, or read the camera through ffmpeg: \
             'ffmpeg:-f v4l2 -i {}'",
            path.display()
        ),
    ))
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> SourceKind {
        SourceSpec::parse(s, SourceOptions::default()).unwrap().kind
    }

    #[test]
    fn forms() {
        assert_eq!(kind("-"), SourceKind::Stdin);
        assert_eq!(
            kind("http://cam/video"),
            SourceKind::Http("http://cam/video".into())
        );
        assert_eq!(
            kind("RTSP://cam/1"),
            SourceKind::FfmpegUrl("RTSP://cam/1".into())
        );
        assert_eq!(
            kind("ffmpeg:-f v4l2 -i /dev/video1"),
            SourceKind::FfmpegArgs(vec![
                "-f".into(),
                "v4l2".into(),
                "-i".into(),
                "/dev/video1".into()
            ])
        );
        assert_eq!(kind("/dev/video2"), SourceKind::V4l2("/dev/video2".into()));
        assert_eq!(kind("v4l:3"), SourceKind::V4l2("/dev/video3".into()));
        assert_eq!(
            kind("test:gradient,frames=5"),
            SourceKind::Pattern {
                kind: PatternKind::Gradient,
                frames: Some(5)
            }
        );
        assert_eq!(
            kind("pattern:"),
            SourceKind::Pattern {
                kind: PatternKind::Bars,
                frames: None
            }
        );
        assert_eq!(
            kind("/no/such/*.jpg"),
            SourceKind::Replay(ReplayInput::Glob("/no/such/*.jpg".into()))
        );
        assert_eq!(
            kind("src"),
            SourceKind::Replay(ReplayInput::Directory("src".into()))
        );
    }

    #[test]
    fn errors_list_the_accepted_forms() {
        for bad in [
            "/no/such/dir",
            "ftp://x/y",
            "",
            "pattern:zigzag",
            "ffmpeg:",
            "http://",
        ] {
            let e = SourceSpec::parse(bad, SourceOptions::default()).unwrap_err();
            assert!(matches!(e, CaptureError::Config { .. }), "{bad}: {e}");
        }
        let e = SourceSpec::parse("/no/such/dir", SourceOptions::default()).unwrap_err();
        assert!(e.to_string().contains("rtsp://"), "{e}");
        let bad_fps = SourceOptions {
            fps: Some(-1.0),
            ..SourceOptions::default()
        };
        assert!(SourceSpec::parse("-", bad_fps).is_err());
    }

    #[test]
    fn options_deserialize_from_toml() {
        let o: SourceOptions =
            toml::from_str("format = \"MJPG\"\nwidth = 640\nheight = 480\nfps = 15\nloop = true")
                .unwrap();
        assert_eq!(
            o,
            SourceOptions {
                format: Some(PixelFormat::Mjpeg),
                width: Some(640),
                height: Some(480),
                fps: Some(15.0),
                looping: true
            }
        );
        assert!(toml::from_str::<SourceOptions>("colour = 1").is_err());
        assert!(toml::from_str::<SourceOptions>("format = \"h264\"").is_err());
    }
}
