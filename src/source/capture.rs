//! The capture loop: one per camera, on its own thread. Reads frames from a
//! [`FrameSource`] into a [`LatestSlot`], skipping corrupt frames and reconnecting with
//! exponential backoff, until the source ends, a configuration error, or a stop request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{CaptureError, CapturedFrame, FrameSource, LatestSlot};

/// A corrupt frame is logged when it is the first, then every this many.
const CORRUPT_LOG_EVERY: u64 = 100;
/// Reconnect attempts are logged at the first failure, then every this many.
const RETRY_LOG_EVERY: u32 = 10;
/// Granularity of the stop check while waiting between reconnect attempts.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Delays between reconnect attempts: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first reconnect attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.5 s, 1 s, 2 s, … 30 s: quick recovery from a glitch, and a camera unplugged for
    /// the night costs one attempt every 30 s.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (from 0).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Counters of one capture loop, shared with the metrics and health endpoints.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames captured (put in the slot).
    pub frames: AtomicU64,
    /// Frames skipped as corrupt.
    pub corrupt: AtomicU64,
    /// Times the source was lost (a disconnect while streaming, or a first open that
    /// failed); `disconnects - reconnects` is 1 while it is down, else 0.
    pub disconnects: AtomicU64,
    /// Times the source came back after being lost.
    pub reconnects: AtomicU64,
    /// Open attempts that failed (every retry counts).
    pub failed_opens: AtomicU64,
    /// Whether the source is open now.
    pub connected: AtomicBool,
    /// The last error, as logged.
    pub last_error: Mutex<Option<String>>,
    /// The source's description, refreshed at each open (it may name the negotiated mode).
    pub description: Mutex<String>,
}

/// A copy of [`CaptureStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSnapshot {
    /// See [`CaptureStats::frames`].
    pub frames: u64,
    /// See [`CaptureStats::corrupt`].
    pub corrupt: u64,
    /// See [`CaptureStats::disconnects`].
    pub disconnects: u64,
    /// See [`CaptureStats::reconnects`].
    pub reconnects: u64,
    /// See [`CaptureStats::failed_opens`].
    pub failed_opens: u64,
    /// See [`CaptureStats::connected`].
    pub connected: bool,
    /// See [`CaptureStats::last_error`].
    pub last_error: Option<String>,
    /// See [`CaptureStats::description`].
    pub description: String,
}

impl CaptureStats {
    /// All counters at zero.
    pub fn new() -> CaptureStats {
        CaptureStats::default()
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current values.
    pub fn snapshot(&self) -> CaptureSnapshot {
        CaptureSnapshot {
            frames: self.frames.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            failed_opens: self.failed_opens.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self.last_error(),
            description: self
                .description
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn record(&self, e: &CaptureError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn describe(&self, source: &dyn FrameSource) {
        *self.description.lock().unwrap_or_else(|p| p.into_inner()) = source.describe();
    }
}

/// Closes the slot however the loop exits (return, error, panic in a source), so
/// inference never waits on a camera that has stopped.
struct CloseOnExit<'a>(&'a LatestSlot);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(STOP_POLL));
    }
}

/// Runs one camera: opens `source`, then puts each frame in `slot` stamped with a sequence
/// number (from 1), wall-clock and monotonic time.
///
/// - [`CaptureError::Corrupt`] frames are counted and skipped (logged at warn: the first,
///   then every 100th). A corrupt error whose `frame` is 0 is reported with the sequence
///   number the frame would have had.
/// - [`CaptureError::Disconnected`] (while streaming or when opening) is counted, logged,
///   and followed by reopen attempts spaced by `backoff` (the sleep ends early on `stop`);
///   the backoff restarts after the first good frame, so a stream that connects and drops
///   at once still backs off.
/// - [`CaptureError::Config`] ends the loop with that error.
/// - `Ok(None)` from the source (the end of a replay, of stdin) ends it with `Ok(())`.
/// - `stop` is checked between frames; setting it ends the loop with `Ok(())`.
///
/// The slot is closed on every exit.
pub fn run_capture(
    mut source: Box<dyn FrameSource>,
    slot: &LatestSlot,
    stop: &AtomicBool,
    stats: &CaptureStats,
    backoff: Backoff,
) -> Result<(), CaptureError> {
    let _close = CloseOnExit(slot);
    stats.describe(source.as_ref());
    let mut seq = 0u64;
    let mut open = false;
    // Whether the source is lost (so the next successful open is a reconnect).
    let mut down = false;
    // Open attempts in the current outage, for the "reconnected after N tries" log.
    let mut tries = 0u32;
    // Backoff exponent: failures since the last good frame.
    let mut failures = 0u32;
    loop {
        if stop.load(Ordering::Relaxed) {
            stats.connected.store(false, Ordering::Relaxed);
            return Ok(());
        }
        if !open {
            tries += 1;
            match source.open() {
                Ok(()) => {
                    open = true;
                    stats.describe(source.as_ref());
                    stats.connected.store(true, Ordering::Relaxed);
                    if down {
                        down = false;
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "{}: reconnected after {tries} {}",
                            source.describe(),
                            if tries == 1 { "try" } else { "tries" }
                        );
                    } else {
                        log::info!("{}: opened", source.describe());
                    }
                    tries = 0;
                }
                Err(e @ CaptureError::Config { .. }) => {
                    stats.record(&e);
                    log::error!("{e}");
                    return Err(e);
                }
                Err(e) => {
                    stats.record(&e);
                    stats.failed_opens.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.delay(failures);
                    if !down {
                        down = true;
                        stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if tries == 1 || tries.is_multiple_of(RETRY_LOG_EVERY) {
                        log::warn!("{e} (attempt {tries}; retrying in {delay:?})");
                    } else {
                        log::debug!("{e} (attempt {tries}; retrying in {delay:?})");
                    }
                    failures = failures.saturating_add(1);
                    sleep_unless_stopped(delay, stop);
                    continue;
                }
            }
        }
        match source.next_frame() {
            Ok(Some(data)) => {
                seq += 1;
                slot.put(CapturedFrame {
                    seq,
                    captured_at: SystemTime::now(),
                    instant: Instant::now(),
                    data,
                });
                stats.frames.fetch_add(1, Ordering::Relaxed);
                failures = 0;
            }
            Ok(None) => {
                stats.connected.store(false, Ordering::Relaxed);
                log::info!("{}: ended after {seq} frames", source.describe());
                return Ok(());
            }
            Err(CaptureError::Corrupt {
                source_name,
                frame,
                reason,
            }) => {
                let e = CaptureError::Corrupt {
                    source_name,
                    frame: if frame == 0 { seq + 1 } else { frame },
                    reason,
                };
                stats.record(&e);
                let n = stats.corrupt.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(CORRUPT_LOG_EVERY) {
                    log::warn!("{e} (skipped; {n} corrupt so far)");
                }
            }
            Err(e @ CaptureError::Config { .. }) => {
                stats.record(&e);
                stats.connected.store(false, Ordering::Relaxed);
                log::error!("{e}");
                return Err(e);
            }
            Err(e @ CaptureError::Disconnected { .. }) => {
                stats.record(&e);
                stats.connected.store(false, Ordering::Relaxed);
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                open = false;
                down = true;
                tries = 0;
                let delay = backoff.delay(failures);
                log::warn!("{e}; reconnecting in {delay:?}");
                failures = failures.saturating_add(1);
                sleep_unless_stopped(delay, stop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FrameData;
    use std::collections::VecDeque;

    type Step = Result<Option<FrameData>, CaptureError>;

    /// A scripted source: `opens` answers each open in turn (then Ok), `frames` each
    /// next_frame (then the end).
    struct Script {
        opens: VecDeque<Result<(), CaptureError>>,
        frames: VecDeque<Step>,
    }

    impl FrameSource for Script {
        fn describe(&self) -> String {
            "script".into()
        }
        fn open(&mut self) -> Result<(), CaptureError> {
            self.opens.pop_front().unwrap_or(Ok(()))
        }
        fn next_frame(&mut self) -> Step {
            self.frames.pop_front().unwrap_or(Ok(None))
        }
    }

    fn gone() -> CaptureError {
        CaptureError::Disconnected {
            source_name: "script".into(),
            reason: "gone".into(),
        }
    }

    fn frame() -> Step {
        Ok(Some(FrameData::Encoded(vec![1])))
    }

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<f32> = (0..9).map(|i| b.delay(i).as_secs_f32()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn corrupt_frames_are_skipped_and_disconnects_reconnect() {
        let corrupt = CaptureError::Corrupt {
            source_name: "script".into(),
            frame: 0,
            reason: "bad".into(),
        };
        let source = Script {
            opens: VecDeque::from([Err(gone()), Ok(()), Err(gone()), Err(gone())]),
            frames: VecDeque::from([frame(), Err(corrupt), frame(), Err(gone()), frame()]),
        };
        let (slot, stop, stats) = (
            LatestSlot::new(),
            AtomicBool::new(false),
            CaptureStats::new(),
        );
        run_capture(Box::new(source), &slot, &stop, &stats, fast()).unwrap();
        let s = stats.snapshot();
        assert_eq!((s.frames, s.corrupt), (3, 1));
        assert_eq!((s.disconnects, s.reconnects, s.failed_opens), (2, 2, 3));
        assert!(!s.connected);
        assert!(s.last_error.unwrap().contains("gone"));
        assert!(slot.is_finished() || slot.try_take().map(|f| f.seq) == Some(3));
    }

    #[test]
    fn config_errors_end_the_loop_and_close_the_slot() {
        let source = Script {
            opens: VecDeque::from([Err(CaptureError::Config {
                source_name: "script".into(),
                reason: "no".into(),
            })]),
            frames: VecDeque::new(),
        };
        let (slot, stop, stats) = (
            LatestSlot::new(),
            AtomicBool::new(false),
            CaptureStats::new(),
        );
        assert!(run_capture(Box::new(source), &slot, &stop, &stats, fast()).is_err());
        assert!(slot.is_finished());
    }

    #[test]
    fn stop_interrupts_the_backoff() {
        let source = Script {
            opens: (0..1000).map(|_| Err(gone())).collect(),
            frames: VecDeque::new(),
        };
        let (slot, stop, stats) = (
            LatestSlot::new(),
            AtomicBool::new(false),
            CaptureStats::new(),
        );
        let slow = Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            run_capture(Box::new(source), &slot, &stop, &stats, slow).unwrap();
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(slot.is_finished());
    }
}
