//! Where events go: JSON Lines, MQTT, webhooks (with an on-disk spool), GPIO pins.
//!
//! A sink must never hold up inference: network sinks queue (in memory for MQTT, on disk
//! for webhooks) and deliver from their own threads, so `send` returns at once.

use std::time::Duration;

use crate::events::Event;

/// Why a sink could not be opened or could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The `--sink` text is malformed.
    #[error("sink '{spec}': {reason}")]
    Spec {
        /// The sink as written.
        spec: String,
        /// What is wrong, and what is accepted.
        reason: String,
    },
    /// Reading or writing a file (JSON Lines file, spool).
    #[error("sink {sink}: {path}: {source}")]
    Io {
        /// The sink.
        sink: String,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else the sink reports (broker refused, pin unavailable, ...).
    #[error("sink {sink}: {reason}")]
    Failed {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
}

/// A destination for events.
pub trait Sink: Send {
    /// Short description for logs and metrics (`jsonl:-`, `mqtt://host:1883/edgeclip`, ...;
    /// never a password).
    fn name(&self) -> String;
    /// Tells the sink which cameras and labels exist: at start and after each label reload
    /// (MQTT publishes Home Assistant discovery and availability here).
    fn announce(&mut self, _cameras: &[String], _labels: &[String]) -> Result<(), SinkError> {
        Ok(())
    }
    /// Hands one event to the sink. Returns once the event is written or safely queued.
    fn send(&mut self, event: &Event) -> Result<(), SinkError>;
    /// Events taken but not yet delivered (spool files, MQTT messages in flight).
    fn backlog(&self) -> u64 {
        0
    }
    /// Delivers what can be delivered within `timeout`, then releases resources. What is not
    /// delivered stays where a restart finds it (the webhook spool).
    fn close(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}
