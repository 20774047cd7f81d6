//! Recorded frames played back as a camera: the image files of a directory or a glob
//! pattern, in name order, at a frame rate; and the pacing shared by the synthetic sources.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::files::{IMAGE_EXTENSIONS, MAX_IMAGE_BYTES};
use super::{CaptureError, FrameData, FrameSource};
use crate::limits::read_capped;

/// Frame rate of a replay when none is configured: slow enough to watch events go by,
/// fast enough to look like a camera.
pub const DEFAULT_REPLAY_FPS: f32 = 5.0;

/// Emits frames on a fixed schedule: frame *k* is due at `start + k / fps`.
///
/// Sleeping until the next due time (rather than a fixed interval after each frame) keeps
/// the average rate exact however long reading a frame takes. A source that falls behind
/// by more than a second (a stalled disk) restarts the schedule instead of bursting to
/// catch up.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    interval: Option<Duration>,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A schedule at `fps` frames per second; `None` (or a non-positive rate) emits
    /// without waiting.
    pub(crate) fn new(fps: Option<f32>) -> Pacer {
        let interval = fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| Duration::from_secs_f64(1.0 / f64::from(f)));
        Pacer {
            interval,
            next_due: None,
        }
    }

    /// Restarts the schedule: the next frame is due at once.
    pub(crate) fn reset(&mut self) {
        self.next_due = None;
    }

    /// Sleeps until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let due = match self.next_due {
            None => now,
            Some(due) if now > due + Duration::from_secs(1).max(interval) => now,
            Some(due) => due,
        };
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next_due = Some(due + interval);
    }
}

/// Where a replay's files come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayInput {
    /// Every file with an image extension ([`IMAGE_EXTENSIONS`]) under a directory,
    /// recursively.
    Directory(PathBuf),
    /// Every file matching a glob pattern (whatever its extension: the pattern chose it).
    Glob(String),
    /// One file.
    File(PathBuf),
}

impl std::fmt::Display for ReplayInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayInput::Directory(p) | ReplayInput::File(p) => write!(f, "{}", p.display()),
            ReplayInput::Glob(g) => f.write_str(g),
        }
    }
}

/// Image files replayed as a camera: [`FrameData::Encoded`] in path order, paced at a
/// frame rate, optionally looping. An unreadable file is one [`CaptureError::Corrupt`]
/// naming it; replay continues with the next.
pub struct Replay {
    input: ReplayInput,
    fps: f32,
    looping: bool,
    files: Vec<PathBuf>,
    next: usize,
    pacer: Pacer,
}

impl Replay {
    /// A replay of `input` at `fps` frames per second (`None`: [`DEFAULT_REPLAY_FPS`];
    /// 0: as fast as frames can be read), starting over at the end when `looping`.
    pub fn new(input: ReplayInput, fps: Option<f32>, looping: bool) -> Replay {
        let fps = fps.unwrap_or(DEFAULT_REPLAY_FPS);
        Replay {
            input,
            fps,
            looping,
            files: Vec::new(),
            next: 0,
            pacer: Pacer::new(Some(fps)),
        }
    }

    /// The files found by the last [`FrameSource::open`].
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn config_error(&self, reason: String) -> CaptureError {
        CaptureError::Config {
            source_name: self.describe(),
            reason,
        }
    }

    fn list(&self) -> Result<Vec<PathBuf>, CaptureError> {
        let mut files = match &self.input {
            ReplayInput::Directory(dir) => {
                if !dir.is_dir() {
                    return Err(self.config_error(format!("{}: not a directory", dir.display())));
                }
                let mut files = Vec::new();
                for entry in walkdir::WalkDir::new(dir).follow_links(true) {
                    // An unreadable subdirectory or a symlink loop costs its files, not
                    // the replay.
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            log::warn!("{}: skipped: {e}", self.describe());
                            continue;
                        }
                    };
                    if entry.file_type().is_file() && has_image_extension(entry.path()) {
                        files.push(entry.into_path());
                    }
                }
                files
            }
            ReplayInput::Glob(pattern) => {
                let paths = glob::glob(pattern)
                    .map_err(|e| self.config_error(format!("bad glob pattern: {e}")))?;
                // A path the glob cannot read (permissions) is skipped: the pattern still
                // names the others.
                paths.flatten().filter(|p| p.is_file()).collect()
            }
            ReplayInput::File(file) => vec![file.clone()],
        };
        files.sort();
        if files.is_empty() {
            let what = match self.input {
                ReplayInput::Glob(_) => "no file matches the pattern".to_string(),
                _ => format!("no image files ({}) found", IMAGE_EXTENSIONS.join(", ")),
            };
            return Err(self.config_error(what));
        }
        Ok(files)
    }
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads one file, at most [`MAX_IMAGE_BYTES`].
fn read_image_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let bytes = read_capped(file, MAX_IMAGE_BYTES)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("larger than the {MAX_IMAGE_BYTES}-byte limit"))?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    // Catch a file that is not an image at capture time, where it is counted against the
    // source, rather than as a decode failure downstream.
    if image::guess_format(&bytes).is_err() {
        let magic: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(format!("not an image (first bytes {})", magic.join(" ")));
    }
    Ok(bytes)
}

impl FrameSource for Replay {
    fn describe(&self) -> String {
        format!(
            "replay {}{} @{}fps",
            self.input,
            if self.looping { " (loop)" } else { "" },
            self.fps
        )
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        self.files = self.list()?;
        self.next = 0;
        self.pacer.reset();
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        if self.next >= self.files.len() {
            if !self.looping || self.files.is_empty() {
                return Ok(None);
            }
            self.next = 0;
        }
        let index = self.next;
        self.next += 1;
        let path = &self.files[index];
        // Pace corrupt files too: they stand for frames of the recording.
        self.pacer.wait();
        match read_image_file(path) {
            Ok(bytes) => Ok(Some(FrameData::Encoded(bytes))),
            Err(reason) => Err(CaptureError::Corrupt {
                source_name: self.describe(),
                frame: 0,
                reason: format!("{}: {reason}", path.display()),
            }),
        }
    }
}
