//! From per-frame predictions to events: what a camera reports, and when.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::classify::{LabelScore, UNKNOWN};

/// One thing a camera reports: its label for a frame, with the evidence.
///
/// Serialised as one JSON object (one line of JSON Lines, one MQTT message, one webhook
/// body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUID v7: time-ordered).
    pub id: String,
    /// Capture time of the frame, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Camera name.
    pub camera: String,
    /// The frame's sequence number within the camera.
    pub frame: u64,
    /// The label (`unknown` when below the threshold).
    pub label: String,
    /// The label's probability.
    pub score: f32,
    /// The best labels, best first.
    pub top: Vec<LabelScore>,
    /// Capture to classification, milliseconds.
    pub latency_ms: f64,
    /// Path of the JPEG snapshot saved with this event, when snapshots are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// When a camera emits events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EmitMode {
    /// When the top label changes and the new one holds (consensus, dwell, cooldown).
    Change,
    /// Every classified frame (debugging, piping into other tools).
    Every,
}

/// The per-camera event policy.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPolicy {
    /// Change or every frame.
    pub emit: EmitMode,
    /// A frame counts for a label only when the label's probability is at least this;
    /// below it the frame counts as `unknown`.
    pub threshold: f32,
    /// K of [`EventPolicy::window`]: frames of the window that must agree on a label.
    pub consensus: usize,
    /// N: the number of most recent frames considered.
    pub window: usize,
    /// How long a new label must keep its consensus before it is reported.
    pub min_dwell: Duration,
    /// After a label is reported, it is not reported again for this long (a flickering
    /// scene does not flood the sinks with the same label).
    pub cooldown: Duration,
}

impl Default for EventPolicy {
    fn default() -> Self {
        EventPolicy {
            emit: EmitMode::Change,
            threshold: 0.0,
            consensus: 2,
            window: 3,
            min_dwell: Duration::ZERO,
            cooldown: Duration::ZERO,
        }
    }
}

/// Why a policy is inconsistent.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    /// K of N with K = 0 or K > N.
    #[error("consensus {k}/{n}: need 1 ≤ K ≤ N (K of the last N frames must agree)")]
    Consensus {
        /// K.
        k: usize,
        /// N.
        n: usize,
    },
    /// Threshold outside [0, 1].
    #[error("threshold {0}: a probability, between 0 and 1")]
    Threshold(f32),
}

impl EventPolicy {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.consensus == 0 || self.consensus > self.window {
            return Err(PolicyError::Consensus {
                k: self.consensus,
                n: self.window,
            });
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(PolicyError::Threshold(self.threshold));
        }
        Ok(())
    }
}

/// Parses `K/N` (e.g. `3/5`).
pub fn parse_consensus(text: &str) -> Result<(usize, usize), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("'{text}': expected K/N, e.g. 3/5"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{text}': expected K/N with whole numbers, e.g. 3/5"))
    };
    Ok((parse(k)?, parse(n)?))
}

/// Applies an [`EventPolicy`] to one camera's stream of top labels.
///
/// Time is the frames' capture time, passed in, so the policy is deterministic and
/// testable without sleeping.
#[derive(Debug)]
pub struct Debouncer {
    policy: EventPolicy,
    recent: VecDeque<String>,
    current: Option<String>,
    candidate: Option<(String, Instant)>,
    last_emitted: HashMap<String, Instant>,
}

impl Debouncer {
    /// A debouncer with no history.
    pub fn new(policy: EventPolicy) -> Debouncer {
        Debouncer {
            recent: VecDeque::with_capacity(policy.window),
            policy,
            current: None,
            candidate: None,
            last_emitted: HashMap::new(),
        }
    }

    /// The label last reported, if any.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Forgets the history (after the label set changed: old labels mean nothing now).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.current = None;
        self.candidate = None;
        self.last_emitted.clear();
    }

    /// Feeds one frame's top label and probability (captured at `at`); returns the label
    /// to report, if this frame produces an event.
    pub fn observe(&mut self, top_label: &str, score: f32, at: Instant) -> Option<String> {
        let seen = if score >= self.policy.threshold {
            top_label
        } else {
            UNKNOWN
        };
        if self.policy.emit == EmitMode::Every {
            self.current = Some(seen.to_string());
            return Some(seen.to_string());
        }
        if self.recent.len() == self.policy.window {
            self.recent.pop_front();
        }
        self.recent.push_back(seen.to_string());
        let Some(agreed) = self.consensus() else {
            self.candidate = None;
            return None;
        };
        if self.current.as_deref() == Some(agreed.as_str()) {
            self.candidate = None;
            return None;
        }
        let since = match &self.candidate {
            Some((label, since)) if *label == agreed => *since,
            _ => {
                self.candidate = Some((agreed.clone(), at));
                at
            }
        };
        if at.saturating_duration_since(since) < self.policy.min_dwell {
            return None;
        }
        if let Some(last) = self.last_emitted.get(&agreed) {
            if at.saturating_duration_since(*last) < self.policy.cooldown {
                return None;
            }
        }
        self.candidate = None;
        self.current = Some(agreed.clone());
        self.last_emitted.insert(agreed.clone(), at);
        Some(agreed)
    }

    /// The label seen in at least K of the window's frames (the most recent one wins a
    /// tie, which only K ≤ N/2 allows).
    fn consensus(&self) -> Option<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for label in &self.recent {
            *counts.entry(label.as_str()).or_default() += 1;
        }
        self.recent
            .iter()
            .rev()
            .find(|l| counts.get(l.as_str()).copied().unwrap_or(0) >= self.policy.consensus)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(k: usize, n: usize) -> EventPolicy {
        EventPolicy {
            consensus: k,
            window: n,
            threshold: 0.5,
            ..EventPolicy::default()
        }
    }

    /// Feeds (label, score) pairs one frame per 100 ms; returns what each frame emitted.
    fn feed(d: &mut Debouncer, frames: &[(&str, f32)]) -> Vec<Option<String>> {
        let t0 = Instant::now();
        frames
            .iter()
            .enumerate()
            .map(|(i, (l, s))| d.observe(l, *s, t0 + Duration::from_millis(100 * i as u64)))
            .collect()
    }

    fn emitted(v: &[Option<String>]) -> Vec<(usize, &str)> {
        v.iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_deref().map(|l| (i, l)))
            .collect()
    }

    #[test]
    fn change_needs_k_of_n_and_a_single_outlier_is_ignored() {
        let mut d = Debouncer::new(policy(3, 5));
        let out = feed(
            &mut d,
            &[
                ("cat", 0.9),
                ("cat", 0.9),
                ("dog", 0.9),
                ("cat", 0.9),
                ("cat", 0.9),
                ("dog", 0.9),
                ("dog", 0.9),
                ("dog", 0.9),
            ],
        );
        assert_eq!(emitted(&out), [(3, "cat"), (6, "dog")]);
    }

    #[test]
    fn low_scores_count_as_unknown() {
        let mut d = Debouncer::new(policy(2, 3));
        let out = feed(
            &mut d,
            &[("cat", 0.9), ("cat", 0.9), ("cat", 0.2), ("cat", 0.3)],
        );
        assert_eq!(emitted(&out), [(1, "cat"), (3, UNKNOWN)]);
    }

    #[test]
    fn dwell_delays_the_event_until_the_label_has_held() {
        let mut d = Debouncer::new(EventPolicy {
            min_dwell: Duration::from_millis(250),
            ..policy(1, 1)
        });
        let out = feed(&mut d, &[("cat", 0.9); 5]);
        // Candidate from frame 0 (t=0); 250 ms have passed at frame 3 (t=300 ms).
        assert_eq!(emitted(&out), [(3, "cat")]);
        // A label that does not hold long enough never becomes an event.
        let out = feed(
            &mut d,
            &[("dog", 0.9), ("dog", 0.9), ("cat", 0.9), ("cat", 0.9)],
        );
        assert_eq!(emitted(&out), []);
    }

    #[test]
    fn cooldown_suppresses_a_label_flickering_back() {
        let mut d = Debouncer::new(EventPolicy {
            cooldown: Duration::from_millis(450),
            ..policy(1, 1)
        });
        let out = feed(
            &mut d,
            &[
                ("cat", 0.9), // t=0 emitted
                ("dog", 0.9), // t=100 emitted
                ("cat", 0.9), // t=200 within cat's cooldown
                ("cat", 0.9), // t=300 still
                ("cat", 0.9), // t=400 still
                ("cat", 0.9), // t=500 cooldown over
            ],
        );
        assert_eq!(emitted(&out), [(0, "cat"), (1, "dog"), (5, "cat")]);
    }

    #[test]
    fn every_mode_reports_each_frame() {
        let mut d = Debouncer::new(EventPolicy {
            emit: EmitMode::Every,
            ..policy(3, 5)
        });
        let out = feed(&mut d, &[("cat", 0.9), ("cat", 0.9), ("dog", 0.1)]);
        assert_eq!(emitted(&out), [(0, "cat"), (1, "cat"), (2, UNKNOWN)]);
    }

    #[test]
    fn reset_forgets_the_current_label() {
        let mut d = Debouncer::new(policy(1, 1));
        assert_eq!(emitted(&feed(&mut d, &[("cat", 0.9)])), [(0, "cat")]);
        d.reset();
        assert_eq!(emitted(&feed(&mut d, &[("cat", 0.9)])), [(0, "cat")]);
    }

    #[test]
    fn policies_and_consensus_text_are_checked() {
        assert_eq!(parse_consensus("3/5"), Ok((3, 5)));
        assert!(parse_consensus("3").is_err());
        assert!(parse_consensus("a/5").is_err());
        assert!(policy(6, 5).validate().is_err());
        assert!(policy(0, 5).validate().is_err());
        assert!(EventPolicy {
            threshold: 1.5,
            ..policy(1, 1)
        }
        .validate()
        .is_err());
        assert!(policy(3, 5).validate().is_ok());
    }
}
