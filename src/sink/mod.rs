//! Where events go: JSON Lines, MQTT, webhooks (with an on-disk spool), GPIO pins.
//!
//! A sink must never hold up inference: network sinks queue (in memory for MQTT, on disk
//! for webhooks) and deliver from their own threads, so `send` returns at once.
//!
//! A sink is written as one `--sink` text, parsed by [`open`]:
//!
//! | spec | sink |
//! |------|------|
//! | `jsonl:-` | one JSON object per line on stdout, flushed per event ([`jsonl`]) |
//! | `jsonl:PATH` | appended to `PATH`, rotated by size ([`jsonl`]) |
//! | `mqtt://[USER:PASS@]HOST[:PORT][/PREFIX]` | MQTT broker, Home Assistant discovery ([`mqtt`]) |
//! | `mqtts://[USER:PASS@]HOST[:PORT][/PREFIX][?ca=FILE]` | the same over TLS (port 8883) |
//! | `http://…`, `https://…[?ca=FILE]` | webhook: POST per event, spooled on disk ([`webhook`]) |
//! | `gpio:PIN=LABEL[,MS]` | a Raspberry Pi output pin (feature `gpio`) ([`gpio`]) |
//!
//! TLS (`mqtts://`, `https://`) always verifies the server's certificate: against Mozilla's
//! roots, or only against the CA certificates in the PEM file `ca=FILE` names ([`tls`]).

pub mod gpio;
pub mod jsonl;
pub mod mqtt;
pub mod tls;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use crate::events::Event;

/// The forms [`open`] accepts, quoted in its errors.
pub const ACCEPTED_FORMS: &str = "accepted: jsonl:- (stdout), jsonl:PATH, \
    mqtt://[USER:PASS@]HOST[:PORT][/PREFIX], mqtts://…[?ca=FILE] (TLS), \
    http://URL or https://URL[?ca=FILE] (webhook), gpio:PIN=LABEL[,MS] (Raspberry Pi, \
    feature gpio)";

/// Settings shared by the sinks, beyond what the spec text says.
///
/// [`SinkOptions::default`] gives the documented defaults; the service overrides what its
/// configuration names.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkOptions {
    /// Where webhook sinks spool events not yet delivered: one subdirectory per URL
    /// (default `$EDGECLIP_HOME/spool`, see [`crate::bundle::edgeclip_home`]).
    pub spool_dir: PathBuf,
    /// A JSON Lines file is rotated before it would grow past this many bytes
    /// (default 10 MiB).
    pub jsonl_max_bytes: u64,
    /// How many rotated JSON Lines files (`PATH.1` … `PATH.K`) are kept (default 3).
    pub jsonl_keep: usize,
    /// MQTT client id; must be unique on the broker, since a broker disconnects the older of
    /// two clients with one id (default `edgeclip-` and 8 random hex digits). The second and
    /// later MQTT sinks opened in one process append `-2`, `-3`, ….
    pub mqtt_client_id: String,
    /// MQTT messages that may wait in memory for the connection (an event is two: the event
    /// and the camera state). When full, `send` fails rather than blocks (default 1000).
    pub mqtt_queue: usize,
    /// Time limit for one webhook POST, connection included (default 5 s).
    pub webhook_timeout: Duration,
    /// First wait before retrying a failed webhook delivery; doubles per failure
    /// (default 0.5 s).
    pub webhook_retry_min: Duration,
    /// Longest wait between webhook retries (default 30 s).
    pub webhook_retry_max: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        // The tail of a v7 UUID is random; its head is the clock, identical for two
        // instances started in the same millisecond.
        let tail = &id[id.len() - 8..];
        SinkOptions {
            spool_dir: crate::bundle::edgeclip_home().join("spool"),
            jsonl_max_bytes: 10 * 1024 * 1024,
            jsonl_keep: 3,
            mqtt_client_id: format!("edgeclip-{tail}"),
            mqtt_queue: 1000,
            webhook_timeout: Duration::from_secs(5),
            webhook_retry_min: Duration::from_millis(500),
            webhook_retry_max: Duration::from_secs(30),
        }
    }
}

/// The kinds of sink, by the text before the first `:`.
enum Kind {
    Jsonl,
    Mqtt,
    Webhook,
    Gpio,
}

/// Which kind of sink `spec` names, or why none.
fn kind(spec: &str) -> Result<Kind, SinkError> {
    let scheme = spec.split_once(':').map_or(spec, |(scheme, _)| scheme);
    match scheme {
        "jsonl" => Ok(Kind::Jsonl),
        "mqtt" | "mqtts" => Ok(Kind::Mqtt),
        "http" | "https" => Ok(Kind::Webhook),
        "gpio" => Ok(Kind::Gpio),
        "" => Err(spec_error(spec, "empty sink")),
        _ => Err(spec_error(spec, "unknown kind of sink")),
    }
}

/// Opens the sink a `--sink` text describes (see the module documentation for the forms).
///
/// Network sinks start their delivery threads here but do not wait for the broker or
/// receiver: one that is down at start is retried in the background while events queue.
/// Errors name the spec and list the accepted forms.
pub fn open(spec: &str, options: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    let spec = spec.trim();
    Ok(match kind(spec)? {
        Kind::Jsonl => Box::new(jsonl::JsonlSink::open(spec, options)?),
        Kind::Mqtt => Box::new(mqtt::MqttSink::open(spec, options)?),
        Kind::Webhook => Box::new(webhook::WebhookSink::open(spec, options)?),
        Kind::Gpio => gpio::open(spec)?,
    })
}

/// Checks a `--sink` text without opening anything (no file, connection, thread or pin):
/// the errors [`open`] would give for the text itself. Returns the sink's
/// [`Sink::name`] (passwords and URL query strings left out), for reports.
pub fn check(spec: &str) -> Result<String, SinkError> {
    let spec = spec.trim();
    match kind(spec)? {
        Kind::Jsonl => jsonl::check(spec),
        Kind::Mqtt => Ok(mqtt::MqttUrl::parse(spec)?.display()),
        Kind::Webhook => webhook::check(spec),
        Kind::Gpio => gpio::check(spec),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A [`SinkError::Spec`] for `spec` whose reason ends with [`ACCEPTED_FORMS`].
pub(crate) fn spec_error(spec: &str, reason: &str) -> SinkError {
    SinkError::Spec {
        spec: spec.to_string(),
        reason: format!("{reason}; {ACCEPTED_FORMS}"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn open_err(spec: &str) -> SinkError {
        match open(spec, &SinkOptions::default()) {
            Ok(sink) => panic!("'{spec}' opened as {}", sink.name()),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_spec_and_list_the_accepted_forms() {
        for spec in [
            "",
            "stdout",
            "ftp://host/x",
            "jsonl:",
            "mqtt://",
            "gpio:17",
            "http://",
        ] {
            let err = open_err(spec);
            assert!(matches!(err, SinkError::Spec { .. }), "{spec}: {err}");
            let text = err.to_string();
            assert!(text.contains(&format!("sink '{spec}'")), "{text}");
            for form in ["jsonl:-", "mqtt://", "https://", "gpio:PIN=LABEL"] {
                assert!(text.contains(form), "'{spec}' error lacks {form}: {text}");
            }
        }
        assert!(open_err("ssl://broker").to_string().contains("mqtts://"));
        for spec in [
            "",
            "ftp://host/x",
            "jsonl:",
            "mqtt://",
            "gpio:17",
            "http://",
        ] {
            let err = check(spec)
                .err()
                .unwrap_or_else(|| panic!("check('{spec}') passed"));
            assert_eq!(err.to_string(), open_err(spec).to_string());
        }
    }

    #[test]
    fn check_touches_nothing_and_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let spec = format!("jsonl:{}", path.display());
        assert_eq!(check(&spec).unwrap(), spec);
        assert!(
            !path.parent().unwrap().exists(),
            "check must not create anything"
        );
        assert_eq!(check("jsonl:-").unwrap(), "jsonl:-");
        assert_eq!(
            check("mqtt://me:secret@broker/cams").unwrap(),
            "mqtt://me@broker:1883/cams"
        );
        // The CA file is read at open, not by check.
        assert_eq!(
            check("mqtts://me:secret@broker/cams?ca=/nonexistent/ca.pem").unwrap(),
            "mqtts://me@broker:8883/cams"
        );
        assert_eq!(
            check("https://example.com/hook?ca=/nonexistent/ca.pem").unwrap(),
            "https://example.com/hook"
        );
        assert_eq!(
            check("https://u:pw@example.com/hook?token=abc").unwrap(),
            "https://example.com/hook?…"
        );
        let gpio = check("gpio:17=person,500");
        if cfg!(feature = "gpio") {
            assert_eq!(gpio.unwrap(), "gpio:17=person,500");
        } else {
            assert!(gpio.unwrap_err().to_string().contains("--features gpio"));
        }
    }

    #[test]
    fn opens_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let options = SinkOptions {
            spool_dir: dir.path().join("spool"),
            ..SinkOptions::default()
        };
        let path = dir.path().join("events.jsonl");
        let mut cases = vec![
            ("jsonl:-".to_string(), "jsonl:-".to_string()),
            (
                format!("jsonl:{}", path.display()),
                format!("jsonl:{}", path.display()),
            ),
            // Nothing listens on port 9: opening does not wait for the broker or receiver.
            (
                "mqtt://127.0.0.1:9".to_string(),
                "mqtt://127.0.0.1:9/edgeclip".to_string(),
            ),
            (
                "http://127.0.0.1:9/hook".to_string(),
                "http://127.0.0.1:9/hook".to_string(),
            ),
        ];
        if cfg!(not(feature = "gpio")) {
            assert!(open_err("gpio:17=person")
                .to_string()
                .contains("--features gpio"));
        }
        for (spec, name) in cases.drain(..) {
            let mut sink = open(&spec, &options).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(sink.name(), name);
            sink.close(Duration::ZERO).unwrap();
        }
        assert!(path.exists(), "jsonl:PATH creates the file at open");
    }

    #[test]
    fn defaults() {
        let options = SinkOptions::default();
        assert!(options.spool_dir.ends_with("spool"));
        assert_eq!(options.jsonl_max_bytes, 10 * 1024 * 1024);
        assert_eq!(options.jsonl_keep, 3);
        assert!(options.mqtt_client_id.starts_with("edgeclip-"));
        assert_ne!(
            options.mqtt_client_id,
            SinkOptions::default().mqtt_client_id
        );
    }
}
