//! Anything ffmpeg can read (RTSP/RTMP cameras, video files, other capture APIs) as an
//! MJPEG stream on an ffmpeg subprocess's standard output.
//!
//! ffmpeg decodes H.264/H.265 and re-encodes JPEG; we split its output with
//! [`JpegSplitter`]. Running it as a process (rather than linking libav) keeps the build
//! pure Rust and lets the user's ffmpeg, with its hardware decoders, do the work.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mjpeg::{JpegSplitter, SplitError};
use super::{CaptureError, FrameData, FrameSource};

/// ffmpeg's stderr lines kept for the error message when it exits.
const STDERR_LINES: usize = 20;
/// How long an exiting ffmpeg gets before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// An ffmpeg that delivers no frame for this long (from its start, or the last frame) is
/// killed: long enough for an RTSP camera to connect and send a key frame.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the watchdog looks; also the most it delays a reopen.
const WATCHDOG_POLL: Duration = Duration::from_millis(100);

/// Splits `ffmpeg:` source arguments like a POSIX shell would, for the common cases:
/// whitespace separates, `'…'` and `"…"` group, `\` escapes the next character outside
/// single quotes. `None` for an unterminated quote.
pub fn split_args(s: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_arg = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_arg = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_arg = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    Some(args)
}

/// A running ffmpeg and the reader of its output.
struct Running {
    /// Shared with the watchdog, which kills it when it stalls.
    child: Arc<Mutex<Child>>,
    splitter: JpegSplitter<ChildStdout>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    watchdog: Watchdog,
}

/// Kills an ffmpeg that produces nothing for [`STALL_TIMEOUT`].
///
/// ffmpeg reading an RTSP camera that stops sending (without closing the connection)
/// blocks forever, and our read of its output with it; killing it turns the stall into
/// the end of the output, so the source disconnects and the capture loop reconnects.
struct Watchdog {
    /// When the last frame (or the start) happened, in ms since `epoch`.
    progress: Arc<AtomicU64>,
    epoch: Instant,
    /// Set to end the watchdog thread.
    done: Arc<AtomicBool>,
    /// Set by the watchdog when it killed the process.
    fired: Arc<AtomicBool>,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(child: Arc<Mutex<Child>>, timeout: Duration) -> Watchdog {
        let epoch = Instant::now();
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, done, fired) = (progress.clone(), done.clone(), fired.clone());
            std::thread::Builder::new()
                .name("ffmpeg-watchdog".into())
                .spawn(move || {
                    let limit = timeout.as_millis() as u64;
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(WATCHDOG_POLL);
                        let now = epoch.elapsed().as_millis() as u64;
                        if now.saturating_sub(progress.load(Ordering::Relaxed)) > limit {
                            fired.store(true, Ordering::Relaxed);
                            if let Ok(mut c) = child.lock() {
                                // Already exited: nothing to kill.
                                let _ = c.kill();
                            }
                            return;
                        }
                    }
                })
                .ok()
        };
        Watchdog {
            progress,
            epoch,
            done,
            fired,
            timeout,
            thread,
        }
    }

    fn feed(&self) {
        self.progress
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Running {
    /// Waits briefly for ffmpeg to exit (killing it otherwise) and describes how it ended,
    /// with its last stderr lines.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            let polled = match self.child.lock() {
                Ok(mut c) => c.try_wait(),
                Err(_) => break None,
            };
            match polled {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) | Err(_) => break None,
            }
        };
        self.stop();
        let lines = self.stderr_lines();
        let how = if self.watchdog.fired.load(Ordering::Relaxed) {
            format!(
                "no frame from ffmpeg for {:?}: killed it",
                self.watchdog.timeout
            )
        } else {
            match status {
                Some(s) => format!("ffmpeg exited ({s})"),
                None => "ffmpeg closed its output".to_string(),
            }
        };
        if lines.is_empty() {
            how
        } else {
            format!("{how}: {}", lines.join(" | "))
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Kills and reaps the process, and collects the helper threads.
    fn stop(&mut self) {
        self.watchdog.stop();
        if let Ok(mut c) = self.child.lock() {
            // Errors mean it has already exited: nothing left to do.
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Frames from an ffmpeg subprocess:
/// `ffmpeg -hide_banner -loglevel error -nostdin INPUT… -an -f mjpeg -q:v 5 [-vf …] -`.
///
/// The process exiting, for whatever reason, is [`CaptureError::Disconnected`] with its
/// last stderr lines; reopening starts a new one (so a file input plays again). ffmpeg
/// missing is [`CaptureError::Config`].
pub struct Ffmpeg {
    program: String,
    input_args: Vec<String>,
    display: String,
    fps: Option<f32>,
    size: Option<(u32, u32)>,
    stall_timeout: Duration,
    running: Option<Running>,
}

impl Ffmpeg {
    /// ffmpeg reading `url` (`rtsp://` gets `-rtsp_transport tcp`: UDP loses packets, and
    /// so whole frames, on busy Wi-Fi).
    pub fn url(url: &str, fps: Option<f32>, size: Option<(u32, u32)>) -> Ffmpeg {
        let mut args = Vec::new();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
            args.extend(["-rtsp_transport".to_string(), "tcp".to_string()]);
        }
        args.extend(["-i".to_string(), url.to_string()]);
        Ffmpeg::with_input_args(args, url.to_string(), fps, size)
    }

    /// ffmpeg with these input arguments (everything up to and including `-i INPUT`),
    /// shown as `display` in logs. `fps` adds `-vf fps=N`, `size` a scale filter.
    pub fn with_input_args(
        input_args: Vec<String>,
        display: String,
        fps: Option<f32>,
        size: Option<(u32, u32)>,
    ) -> Ffmpeg {
        Ffmpeg {
            program: "ffmpeg".into(),
            input_args,
            display,
            fps,
            size,
            stall_timeout: STALL_TIMEOUT,
            running: None,
        }
    }

    /// Runs `program` instead of `ffmpeg` from `PATH`.
    pub fn program(mut self, program: impl Into<String>) -> Ffmpeg {
        self.program = program.into();
        self
    }

    /// Kills ffmpeg when it delivers no frame for `timeout` (default 20 s), so that a
    /// stalled stream reconnects.
    pub fn stall_timeout(mut self, timeout: Duration) -> Ffmpeg {
        self.stall_timeout = timeout;
        self
    }

    /// The full argument list passed to ffmpeg.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.input_args.iter().cloned());
        args.extend(["-an", "-sn", "-dn", "-f", "mjpeg", "-q:v", "5"].map(String::from));
        let mut filters = Vec::new();
        if let Some(fps) = self.fps.filter(|f| f.is_finite() && *f > 0.0) {
            filters.push(format!("fps={fps}"));
        }
        if let Some((w, h)) = self.size {
            filters.push(format!("scale={w}:{h}"));
        }
        if !filters.is_empty() {
            args.push("-vf".into());
            args.push(filters.join(","));
        }
        args.push("-".into());
        args
    }

    fn disconnected(&self, reason: String) -> CaptureError {
        CaptureError::Disconnected {
            source_name: self.describe(),
            reason,
        }
    }
}

impl FrameSource for Ffmpeg {
    fn describe(&self) -> String {
        format!("{} (via ffmpeg)", self.display)
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        // A previous process (after a disconnect) is killed first.
        self.running = None;
        let mut child = Command::new(&self.program)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => CaptureError::Config {
                    source_name: self.describe(),
                    reason: format!(
                        "`{}` not found: install ffmpeg (Debian, Ubuntu, Raspberry Pi OS: \
                         `sudo apt install ffmpeg`)",
                        self.program
                    ),
                },
                _ => CaptureError::Config {
                    source_name: self.describe(),
                    reason: format!("cannot start `{}`: {e}", self.program),
                },
            })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.disconnected("ffmpeg started without its pipes".into()));
        };
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_thread = {
            let lines = lines.clone();
            let name = self.describe();
            std::thread::Builder::new()
                .name("ffmpeg-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        log::debug!("{name}: ffmpeg: {line}");
                        if let Ok(mut l) = lines.lock() {
                            if l.len() == STDERR_LINES {
                                l.pop_front();
                            }
                            l.push_back(line);
                        }
                    }
                })
                .ok()
        };
        let child = Arc::new(Mutex::new(child));
        self.running = Some(Running {
            watchdog: Watchdog::start(child.clone(), self.stall_timeout),
            child,
            splitter: JpegSplitter::new(stdout),
            stderr: lines,
            stderr_thread,
        });
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        let Some(running) = self.running.as_mut() else {
            return Err(self.disconnected("not started".into()));
        };
        match running.splitter.next_jpeg() {
            Ok(Some(frame)) => {
                running.watchdog.feed();
                Ok(Some(FrameData::Encoded(frame)))
            }
            Err(SplitError::Corrupt(reason)) if !running.splitter.at_eof() => {
                Err(CaptureError::Corrupt {
                    source_name: self.describe(),
                    frame: 0,
                    reason,
                })
            }
            // End of output, a read error, or a frame cut off by the exit: the process is
            // gone or going.
            _ => {
                let reason = match self.running.take() {
                    Some(r) => r.finish(),
                    None => "ffmpeg stopped".into(),
                };
                Err(self.disconnected(reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_like_splitting() {
        assert_eq!(
            split_args(r#"-f v4l2 -i '/dev/my cam' -vf "a b" x\ y"#).unwrap(),
            ["-f", "v4l2", "-i", "/dev/my cam", "-vf", "a b", "x y"]
        );
        assert_eq!(split_args("  ").unwrap(), Vec::<String>::new());
        assert!(split_args("-i 'open").is_none());
    }

    #[test]
    fn rtsp_uses_tcp_and_filters_are_joined() {
        let f = Ffmpeg::url("rtsp://cam/stream", Some(5.0), Some((640, 480)));
        let args = f.args().join(" ");
        assert!(
            args.contains("-rtsp_transport tcp -i rtsp://cam/stream"),
            "{args}"
        );
        assert!(args.ends_with("-vf fps=5,scale=640:480 -"), "{args}");
    }
}
