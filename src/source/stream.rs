//! MJPEG byte streams as cameras: standard input (`--source -`), any reader, and a
//! recorded `.mjpeg` file played back at a frame rate.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::mjpeg::{JpegSplitter, SplitError};
use super::replay::{Pacer, DEFAULT_REPLAY_FPS};
use super::{CaptureError, FrameData, FrameSource};

type BoxRead = Box<dyn Read + Send>;

/// Concatenated JPEGs read from a byte stream (standard input, a pipe, any reader).
///
/// The end of the stream is the end of the source (`Ok(None)`): a pipe cannot be
/// reopened. A truncated last frame is reported as [`CaptureError::Corrupt`] before the
/// end.
pub struct ReaderMjpeg {
    name: String,
    reader: Option<BoxRead>,
    splitter: Option<JpegSplitter<BoxRead>>,
}

impl ReaderMjpeg {
    /// Frames from `reader`, called `name` in logs.
    pub fn new(name: impl Into<String>, reader: impl Read + Send + 'static) -> ReaderMjpeg {
        ReaderMjpeg {
            name: name.into(),
            reader: Some(Box::new(reader)),
            splitter: None,
        }
    }

    /// Frames from standard input (`--source -`), e.g.
    /// `ffmpeg -i cam.mp4 -f mjpeg - | edgeclip run --source -`.
    pub fn stdin() -> ReaderMjpeg {
        ReaderMjpeg::new("stdin", io::stdin())
    }
}

/// Maps a splitter result to the capture interface. End of stream and read errors are
/// for the caller to decide (end or disconnect).
fn split_result(
    name: &str,
    r: Result<Option<Vec<u8>>, SplitError>,
) -> Result<Option<FrameData>, SplitOutcome> {
    match r {
        Ok(Some(frame)) => Ok(Some(FrameData::Encoded(frame))),
        Ok(None) => Ok(None),
        Err(SplitError::Corrupt(reason)) => Err(SplitOutcome::Error(CaptureError::Corrupt {
            source_name: name.to_string(),
            frame: 0,
            reason,
        })),
        Err(SplitError::Io(e)) => Err(SplitOutcome::Io(e)),
    }
}

enum SplitOutcome {
    Error(CaptureError),
    Io(io::Error),
}

impl FrameSource for ReaderMjpeg {
    fn describe(&self) -> String {
        format!("{} (MJPEG stream)", self.name)
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        // Reopening after a read error keeps reading the same stream: there is no other.
        if let Some(reader) = self.reader.take() {
            self.splitter = Some(JpegSplitter::new(reader));
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        let Some(splitter) = self.splitter.as_mut() else {
            return Err(CaptureError::Disconnected {
                source_name: self.describe(),
                reason: "not opened".into(),
            });
        };
        match split_result(&self.name, splitter.next_jpeg()) {
            Ok(frame) => Ok(frame),
            Err(SplitOutcome::Error(e)) => Err(e),
            Err(SplitOutcome::Io(e)) => Err(CaptureError::Disconnected {
                source_name: self.describe(),
                reason: format!("read error: {e}"),
            }),
        }
    }
}

/// A recorded MJPEG file (concatenated JPEGs, as `ffmpeg -f mjpeg` writes) played back at
/// a frame rate, optionally looping.
pub struct MjpegFile {
    path: PathBuf,
    fps: f32,
    looping: bool,
    splitter: Option<JpegSplitter<File>>,
    pacer: Pacer,
}

impl MjpegFile {
    /// Playback of `path` at `fps` (`None`: [`DEFAULT_REPLAY_FPS`]; 0: unpaced).
    pub fn new(path: impl Into<PathBuf>, fps: Option<f32>, looping: bool) -> MjpegFile {
        let fps = fps.unwrap_or(DEFAULT_REPLAY_FPS);
        MjpegFile {
            path: path.into(),
            fps,
            looping,
            splitter: None,
            pacer: Pacer::new(Some(fps)),
        }
    }

    fn open_file(&mut self) -> Result<(), CaptureError> {
        let file = File::open(&self.path).map_err(|e| CaptureError::Config {
            source_name: self.describe(),
            reason: format!("cannot open: {e}"),
        })?;
        self.splitter = Some(JpegSplitter::new(file));
        Ok(())
    }
}

impl FrameSource for MjpegFile {
    fn describe(&self) -> String {
        format!(
            "{} (MJPEG file{}) @{}fps",
            self.path.display(),
            if self.looping { ", loop" } else { "" },
            self.fps
        )
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        self.pacer.reset();
        self.open_file()
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        // At most one restart per call: a file without a single frame must not spin.
        let mut restarted = false;
        loop {
            let Some(splitter) = self.splitter.as_mut() else {
                return Err(CaptureError::Disconnected {
                    source_name: self.describe(),
                    reason: "not opened".into(),
                });
            };
            let name = self.path.display().to_string();
            match split_result(&name, splitter.next_jpeg()) {
                Ok(Some(frame)) => {
                    self.pacer.wait();
                    return Ok(Some(frame));
                }
                Ok(None) if self.looping && !restarted => {
                    restarted = true;
                    self.open_file()?;
                }
                Ok(None) => return Ok(None),
                Err(SplitOutcome::Error(e)) => return Err(e),
                Err(SplitOutcome::Io(e)) => {
                    return Err(CaptureError::Disconnected {
                        source_name: self.describe(),
                        reason: format!("read error: {e}"),
                    })
                }
            }
        }
    }
}
