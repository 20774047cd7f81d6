//! The hand-over between a camera's capture thread and inference: one frame, the newest.
//!
//! Capture never waits for inference and inference never sees a stale frame: a frame that
//! is still in the slot when a newer one arrives is replaced and counted as dropped, so
//! memory stays bounded at one frame per camera however slow the model is.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::CapturedFrame;

/// Counters of a [`LatestSlot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Frames put in the slot.
    pub captured: u64,
    /// Frames replaced before inference took them.
    pub dropped: u64,
    /// Frames taken by inference.
    pub taken: u64,
}

#[derive(Default)]
struct Inner {
    frame: Option<CapturedFrame>,
    stats: SlotStats,
    closed: bool,
}

/// A single-frame mailbox holding the newest captured frame.
#[derive(Default)]
pub struct LatestSlot {
    inner: Mutex<Inner>,
    ready: Condvar,
}

impl LatestSlot {
    /// An empty, open slot.
    pub fn new() -> LatestSlot {
        LatestSlot::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `frame` in the slot, replacing (and counting as dropped) any frame not yet taken.
    pub fn put(&self, frame: CapturedFrame) {
        let mut inner = self.lock();
        inner.stats.captured += 1;
        if inner.frame.replace(frame).is_some() {
            inner.stats.dropped += 1;
        }
        drop(inner);
        self.ready.notify_all();
    }

    /// Takes the frame if there is one, without waiting.
    pub fn try_take(&self) -> Option<CapturedFrame> {
        let mut inner = self.lock();
        let frame = inner.frame.take();
        if frame.is_some() {
            inner.stats.taken += 1;
        }
        frame
    }

    /// Waits up to `timeout` for a frame. `None` on timeout, or when the slot is closed and
    /// empty.
    pub fn take_timeout(&self, timeout: Duration) -> Option<CapturedFrame> {
        let inner = self.lock();
        let (mut inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.frame.is_none() && !i.closed)
            .unwrap_or_else(|p| p.into_inner());
        let frame = inner.frame.take();
        if frame.is_some() {
            inner.stats.taken += 1;
        }
        frame
    }

    /// Waits up to `timeout` until a frame is in the slot or the slot is closed, without
    /// taking it. Returns whether a frame is there.
    pub fn wait_for_frame(&self, timeout: Duration) -> bool {
        let inner = self.lock();
        let (inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.frame.is_none() && !i.closed)
            .unwrap_or_else(|p| p.into_inner());
        inner.frame.is_some()
    }

    /// Marks the end of capture (the source ended or gave up); a frame still in the slot
    /// can be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether capture has ended and the slot is empty.
    pub fn is_finished(&self) -> bool {
        let inner = self.lock();
        inner.closed && inner.frame.is_none()
    }

    /// The counters.
    pub fn stats(&self) -> SlotStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FrameData;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    fn frame(seq: u64) -> CapturedFrame {
        CapturedFrame {
            seq,
            captured_at: SystemTime::now(),
            instant: Instant::now(),
            data: FrameData::Encoded(vec![seq as u8]),
        }
    }

    #[test]
    fn a_slow_reader_sees_the_newest_frame_and_drops_are_counted() {
        let slot = LatestSlot::new();
        for seq in 1..=5 {
            slot.put(frame(seq));
        }
        assert_eq!(slot.try_take().map(|f| f.seq), Some(5));
        assert!(slot.try_take().is_none());
        assert_eq!(
            slot.stats(),
            SlotStats {
                captured: 5,
                dropped: 4,
                taken: 1
            }
        );
    }

    #[test]
    fn take_waits_for_a_frame_and_close_wakes_the_reader() {
        let slot = Arc::new(LatestSlot::new());
        let writer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slot.put(frame(1));
                std::thread::sleep(Duration::from_millis(20));
                slot.close();
            })
        };
        assert_eq!(
            slot.take_timeout(Duration::from_secs(10)).map(|f| f.seq),
            Some(1)
        );
        assert!(slot.take_timeout(Duration::from_secs(10)).is_none());
        assert!(slot.is_finished());
        writer.join().unwrap();
    }
}
