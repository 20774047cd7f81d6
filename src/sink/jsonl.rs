//! `jsonl:-` and `jsonl:PATH`: one JSON object per line.
//!
//! On stdout every event is flushed at once, so `edgeclip run --sink jsonl:- | jq` streams.
//! A file is opened for appending (a restart continues it) and rotated by size the way
//! logrotate would: when the next line would take `PATH` past
//! [`SinkOptions::jsonl_max_bytes`], `PATH.K-1` → `PATH.K`, …, `PATH` → `PATH.1`, and a
//! fresh `PATH` is started; at most [`SinkOptions::jsonl_keep`] old files are kept.
//!
//! On a full disk `send` fails for that event (the service counts and logs it) and cuts off
//! whatever part of the line was written, so the file holds only whole lines; writing
//! resumes by itself once there is room.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{spec_error, Sink, SinkError, SinkOptions};
use crate::events::Event;

/// Where the lines go.
enum Target {
    /// Standard output.
    Stdout,
    /// An appended, size-rotated file.
    File {
        /// `PATH`.
        path: PathBuf,
        /// Open for appending.
        file: File,
        /// Bytes in `PATH` now (its length at open, plus what we wrote since).
        size: u64,
    },
}

/// The JSON Lines sink. See the [module documentation](self).
pub struct JsonlSink {
    /// `jsonl:-` or `jsonl:PATH`.
    name: String,
    target: Target,
    max_bytes: u64,
    keep: usize,
}

impl JsonlSink {
    /// Opens `jsonl:-` or `jsonl:PATH` (creating the file's parent directories).
    pub fn open(spec: &str, options: &SinkOptions) -> Result<JsonlSink, SinkError> {
        let rest = parse(spec)?;
        let target = if rest == "-" {
            Target::Stdout
        } else {
            let path = PathBuf::from(rest);
            let (file, size) = open_append(spec, &path)?;
            Target::File { path, file, size }
        };
        Ok(JsonlSink {
            name: format!("jsonl:{rest}"),
            target,
            max_bytes: options.jsonl_max_bytes,
            keep: options.jsonl_keep,
        })
    }
}

/// What follows `jsonl:` (`-` or a path).
fn parse(spec: &str) -> Result<&str, SinkError> {
    match spec.strip_prefix("jsonl:") {
        None => Err(spec_error(spec, "expected jsonl:- or jsonl:PATH")),
        Some("") => Err(spec_error(spec, "jsonl: needs a path, or - for stdout")),
        Some(rest) => Ok(rest),
    }
}

/// Checks a `jsonl:` spec without creating anything; returns the sink's name.
pub fn check(spec: &str) -> Result<String, SinkError> {
    parse(spec).map(|rest| format!("jsonl:{rest}"))
}

/// Opens `path` for appending, creating it and its parents, and returns its current length.
fn open_append(sink: &str, path: &Path) -> Result<(File, u64), SinkError> {
    let io_error = |source| SinkError::Io {
        sink: sink.to_string(),
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    Ok((file, size))
}

/// Only regular files are rotated: `jsonl:/dev/null`, a FIFO or a terminal must never be
/// renamed or removed (as root that would replace /dev/null with a plain file).
fn is_regular_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// `PATH.n`.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `PATH.K-1` → `PATH.K`, …, `PATH` → `PATH.1` (dropping the old `PATH.K`); with
/// `keep` 0 the old `PATH` is simply removed. Missing files in the chain are skipped, so a
/// hand-deleted `PATH.2` does not stop rotation.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    if keep == 0 {
        return remove_if_exists(path);
    }
    remove_if_exists(&rotated(path, keep))?;
    for n in (1..keep).rev() {
        rename_if_exists(&rotated(path, n), &rotated(path, n + 1))?;
    }
    rename_if_exists(path, &rotated(path, 1))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(event).map_err(|e| SinkError::Failed {
            sink: self.name.clone(),
            reason: format!("cannot serialise the event: {e}"),
        })?;
        line.push(b'\n');
        match &mut self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)
                    .and_then(|()| out.flush())
                    .map_err(|source| SinkError::Io {
                        sink: self.name.clone(),
                        path: "<stdout>".to_string(),
                        source,
                    })
            }
            Target::File { path, file, size } => {
                let len = line.len() as u64;
                // A line longer than the limit still gets a file of its own rather than
                // being dropped; an empty file is never rotated away.
                if *size > 0 && *size + len > self.max_bytes && is_regular_file(path) {
                    let io_error = |source| SinkError::Io {
                        sink: self.name.clone(),
                        path: path.display().to_string(),
                        source,
                    };
                    rotate(path, self.keep).map_err(io_error)?;
                    let (new_file, new_size) = open_append(&self.name, path)?;
                    *file = new_file;
                    *size = new_size;
                }
                // One write of the whole line: with O_APPEND a reader (tail -f) never sees
                // half a line from us, and there is no user-space buffer to flush.
                if let Err(source) = file.write_all(&line) {
                    // A full disk may have taken part of the line: cut it off, so that the
                    // next line (once there is room) does not continue a torn one.
                    let _ = file.set_len(*size);
                    return Err(SinkError::Io {
                        sink: self.name.clone(),
                        path: path.display().to_string(),
                        source,
                    });
                }
                *size += len;
                Ok(())
            }
        }
    }

    fn close(&mut self, _timeout: std::time::Duration) -> Result<(), SinkError> {
        // Lines are written straight to the file (or flushed to stdout) by `send`; syncing
        // makes them survive a power cut right after a clean stop.
        if let Target::File { path, file, .. } = &mut self.target {
            file.sync_data().map_err(|source| SinkError::Io {
                sink: self.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::LabelScore;

    fn event(frame: u64, label: &str) -> Event {
        Event {
            id: format!("id-{frame}"),
            ts: "2025-01-01T00:00:00.000Z".to_string(),
            camera: "door".to_string(),
            frame,
            label: label.to_string(),
            score: 0.9,
            top: vec![LabelScore {
                label: label.to_string(),
                score: 0.9,
            }],
            latency_ms: 12.5,
            snapshot: None,
        }
    }

    fn lines(path: &Path) -> Vec<Event> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one event"))
            .collect()
    }

    #[test]
    fn appends_one_event_per_line_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/events.jsonl");
        let spec = format!("jsonl:{}", path.display());
        let mut sink = JsonlSink::open(&spec, &SinkOptions::default()).unwrap();
        assert_eq!(sink.name(), spec);
        sink.send(&event(1, "cat")).unwrap();
        sink.send(&event(2, "dog")).unwrap();
        sink.close(std::time::Duration::ZERO).unwrap();
        drop(sink);
        // Reopening appends instead of truncating.
        let mut sink = JsonlSink::open(&spec, &SinkOptions::default()).unwrap();
        sink.send(&event(3, "cat")).unwrap();
        assert_eq!(
            lines(&path),
            vec![event(1, "cat"), event(2, "dog"), event(3, "cat")]
        );
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_never_rotated() {
        use std::os::unix::fs::FileTypeExt;
        let options = SinkOptions {
            jsonl_max_bytes: 10,
            ..SinkOptions::default()
        };
        let mut sink = JsonlSink::open("jsonl:/dev/null", &options).unwrap();
        for _ in 0..3 {
            sink.send(&event(1, "cat")).unwrap();
        }
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(!Path::new("/dev/null.1").exists());
    }

    #[test]
    fn rotates_by_size_and_keeps_k_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let line_len = serde_json::to_vec(&event(1, "cat")).unwrap().len() as u64 + 1;
        let options = SinkOptions {
            // Two lines fit, the third rotates.
            jsonl_max_bytes: 2 * line_len + line_len / 2,
            jsonl_keep: 3,
            ..SinkOptions::default()
        };
        let mut sink = JsonlSink::open(&format!("jsonl:{}", path.display()), &options).unwrap();
        // Frames 1..=9 all have the same line length (one digit).
        for frame in 1..=9 {
            sink.send(&event(frame, "cat")).unwrap();
        }
        let frames = |p: &Path| lines(p).iter().map(|e| e.frame).collect::<Vec<_>>();
        assert_eq!(frames(&path), vec![9]);
        assert_eq!(frames(&rotated(&path, 1)), vec![7, 8]);
        assert_eq!(frames(&rotated(&path, 2)), vec![5, 6]);
        assert_eq!(frames(&rotated(&path, 3)), vec![3, 4]);
        // Frames 1 and 2 were in PATH.4, which is not kept.
        assert!(!rotated(&path, 4).exists());
        for p in [path.clone(), rotated(&path, 1)] {
            assert!(fs::metadata(&p).unwrap().len() <= options.jsonl_max_bytes);
        }
    }

    #[test]
    fn an_existing_file_counts_towards_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        fs::write(&path, "x".repeat(100)).unwrap();
        let options = SinkOptions {
            jsonl_max_bytes: 120,
            ..SinkOptions::default()
        };
        let mut sink = JsonlSink::open(&format!("jsonl:{}", path.display()), &options).unwrap();
        sink.send(&event(1, "cat")).unwrap();
        assert_eq!(
            fs::read_to_string(rotated(&path, 1)).unwrap(),
            "x".repeat(100)
        );
        // A line longer than the limit gets a file of its own, not dropped.
        assert_eq!(lines(&path), vec![event(1, "cat")]);
        sink.send(&event(2, "cat")).unwrap();
        assert_eq!(lines(&path), vec![event(2, "cat")]);
        assert_eq!(lines(&rotated(&path, 1)), vec![event(1, "cat")]);
    }

    #[test]
    fn a_missing_path_is_a_spec_error() {
        let err = JsonlSink::open("jsonl:", &SinkOptions::default())
            .err()
            .expect("jsonl: without a path must fail");
        assert!(matches!(err, SinkError::Spec { .. }), "{err}");
        assert!(err.to_string().contains("jsonl:-"), "{err}");
    }
}
