//! `mqtt://[USER:PASS@]HOST[:PORT][/PREFIX]`: events to an MQTT broker, with Home Assistant
//! discovery. `mqtts://[USER:PASS@]HOST[:PORT][/PREFIX][?ca=FILE]`: the same over TLS
//! (default port 8883), the broker's certificate verified against Mozilla's roots, or only
//! against the CA certificates in `FILE` ([`super::tls`]); user name and password then
//! travel encrypted.
//!
//! Topics (`PREFIX` defaults to `edgeclip`, `CAMERA` is the camera name with `/`, `+` and
//! `#` replaced by `_`):
//!
//! | topic | payload | QoS | retained |
//! |-------|---------|-----|----------|
//! | `PREFIX/CAMERA/event` | the [`Event`] as JSON | 1 | no |
//! | `PREFIX/CAMERA/state` | `{"label":…,"score":…,"ts":…,"frame":…}` of the latest event | 1 | yes |
//! | `PREFIX/status` | `online`; `offline` at close, and as last will if edgeclip dies | 1 | yes |
//! | `homeassistant/sensor/edgeclip_<camera_slug>/config` | discovery ([`MqttSink::announce`]) | 1 | yes |
//!
//! So a Home Assistant with the MQTT integration shows one sensor per camera (state: the
//! label; attributes: score, time, frame) with no YAML, unavailable while edgeclip is not.
//!
//! rumqttc's connection is driven on its own thread, which reconnects forever (one attempt a
//! second, logging only changes between connected and not). After every (re)connection it
//! publishes `online`, the discovery configs and each camera's latest state again, since a
//! restarted broker without persistence has forgotten retained messages. Messages the broker
//! had not acknowledged when the connection broke are sent again (at least once: QoS 1),
//! rather than dropped with the old session as rumqttc would with a clean session.
//!
//! `send` never blocks: messages wait in a bounded in-memory queue
//! ([`SinkOptions::mqtt_queue`]); when it is full (a long broker outage) `send` fails and
//! the message is counted and dropped. MQTT has no disk spool: use a webhook sink where
//! every event must survive an edgeclip restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, RecvError, Request, TlsConfiguration, TlsError, Transport,
};

use super::tls::{self, Trust};
use super::{percent_decode, spec_error, Sink, SinkError, SinkOptions};
use crate::events::Event;

/// Default broker port.
pub const DEFAULT_PORT: u16 = 1883;
/// Default broker port over TLS (`mqtts://`).
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Default topic prefix.
pub const DEFAULT_PREFIX: &str = "edgeclip";
/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// Wait between reconnection attempts.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Keep-alive: also how soon a silently dead connection (cable pulled) is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Largest packet either way (an event with a long top list is a few KiB; rumqttc's
/// default of 10 KiB is too tight to be safe).
const MAX_PACKET: usize = 1024 * 1024;

/// A parsed `mqtt://` or `mqtts://` spec.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// `mqtts://`: TLS, verifying the broker against these roots; `None` for `mqtt://`.
    pub tls: Option<Trust>,
    /// Broker host name or address (IPv6 without brackets).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any (never logged).
    pub password: Option<String>,
    /// Topic prefix, without leading or trailing `/`.
    pub prefix: String,
}

impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl MqttUrl {
    /// Parses `mqtt://[USER[:PASS]@]HOST[:PORT][/PREFIX]` and
    /// `mqtts://[USER[:PASS]@]HOST[:PORT][/PREFIX][?ca=FILE]`. `USER`, `PASS` and `FILE`
    /// may be percent-encoded (`%40` for `@`, `%2F` for `/`).
    pub fn parse(spec: &str) -> Result<MqttUrl, SinkError> {
        const FORM: &str =
            "expected mqtt://[USER:PASS@]HOST[:PORT][/PREFIX] or mqtts://…[?ca=FILE]";
        let fail = |why: &str| spec_error(spec, &format!("{why}; {FORM}"));
        let (tls, rest) = if let Some(rest) = spec.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = spec.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(fail("not an mqtt:// or mqtts:// URL"));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (ca, unknown) = tls::take_ca(query).map_err(|why| fail(&why))?;
        if let Some(param) = unknown.first() {
            return Err(fail(&format!(
                "unknown parameter '{param}' (only {}=FILE, with mqtts://)",
                tls::CA_PARAM
            )));
        }
        if ca.is_some() && !tls {
            return Err(fail(&format!("{}=FILE needs TLS: mqtts://", tls::CA_PARAM)));
        }
        let tls = tls.then(|| Trust::from_ca(ca));
        let (authority, prefix) = match rest.split_once('/') {
            Some((authority, prefix)) => (authority, prefix),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, pass) = match userinfo.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (userinfo, None),
                };
                let user = percent_decode(user).ok_or_else(|| fail("bad %-escape in the user"))?;
                let pass = pass
                    .map(|p| percent_decode(p).ok_or_else(|| fail("bad %-escape in the password")))
                    .transpose()?;
                (Some(user), pass)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| fail("unclosed [ in an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| fail("junk after the IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(fail("no broker host"));
        }
        let port = match port {
            None if tls.is_some() => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| fail(&format!("'{p}' is not a port")))?,
        };
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        if prefix.contains(['+', '#', '\0']) || prefix.split('/').any(str::is_empty) {
            return Err(fail(&format!(
                "topic prefix '{prefix}' must not contain +, # or empty levels"
            )));
        }
        Ok(MqttUrl {
            tls,
            host: host.to_string(),
            port,
            username,
            password,
            prefix: prefix.to_string(),
        })
    }

    /// `mqtt[s]://[USER@]HOST:PORT/PREFIX`: the URL without the password (or CA file).
    pub fn display(&self) -> String {
        let user = self
            .username
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{user}{host}:{}/{}", self.port, self.prefix)
    }
}

/// A camera name as one topic level: `/`, `+`, `#` (and NUL) would change the topic's
/// structure or make it invalid, so they become `_`.
pub fn topic_level(camera: &str) -> String {
    if camera.is_empty() {
        return "_".to_string();
    }
    camera
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A name as Home Assistant likes ids: ASCII lower-case letters, digits and `_`.
pub fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if slug.is_empty() {
        "_".to_string()
    } else {
        slug
    }
}

/// The retained discovery config topic for a camera.
pub fn discovery_topic(camera: &str) -> String {
    format!("{DISCOVERY_PREFIX}/sensor/edgeclip_{}/config", slug(camera))
}

/// What the connection thread re-publishes after every (re)connection.
#[derive(Default)]
struct Retained {
    /// Discovery configs, topic → payload (an empty payload removes a camera's sensor).
    discovery: BTreeMap<String, Vec<u8>>,
    /// Each camera's latest state, topic → payload.
    states: BTreeMap<String, Vec<u8>>,
}

/// What the sink and its connection thread share.
struct Shared {
    /// QoS 1 messages handed to rumqttc (by `send`, `announce`, `close` and the connection
    /// thread's re-publishing).
    published: AtomicU64,
    /// PubAcks received.
    acked: AtomicU64,
    /// Messages dropped because the queue was full.
    dropped: AtomicU64,
    /// Connected to the broker now.
    connected: AtomicBool,
    /// `close`: end once disconnected, or after sending DISCONNECT.
    stop: AtomicBool,
    /// `close` gave up waiting, or the sink was dropped: end at the next chance.
    abort: AtomicBool,
    /// The connection thread has returned.
    finished: AtomicBool,
    retained: Mutex<Retained>,
    /// `PREFIX/status`.
    status_topic: String,
}

impl Shared {
    fn retained(&self) -> MutexGuard<'_, Retained> {
        // Two maps of payloads, consistent at every unlock: poisoning cannot matter.
        self.retained.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The MQTT sink. See the [module documentation](self).
pub struct MqttSink {
    /// The URL without the password.
    name: String,
    prefix: String,
    client: Client,
    shared: Arc<Shared>,
    /// Cuts the connection thread's reconnect wait short (at close).
    wake: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    /// Logging state: messages are being dropped (warn once, then info when it ends).
    dropping: bool,
}

impl MqttSink {
    /// Parses the spec and starts the connection thread. Does not wait for the broker: one
    /// that is down now is retried in the background.
    pub fn open(spec: &str, options: &SinkOptions) -> Result<MqttSink, SinkError> {
        let url = MqttUrl::parse(spec)?;
        let name = url.display();
        let status_topic = format!("{}/status", url.prefix);

        // A broker disconnects the older of two clients with one id, and the service shares
        // one SinkOptions among its sinks: the second MQTT sink of this process gets `-2`.
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let client_id = match OPENED.fetch_add(1, Ordering::SeqCst) {
            0 => options.mqtt_client_id.clone(),
            n => format!("{}-{}", options.mqtt_client_id, n + 1),
        };
        let mut mqtt_options = MqttOptions::new(client_id, &url.host, url.port);
        mqtt_options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                &status_topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &url.username {
            mqtt_options.set_credentials(user, url.password.as_deref().unwrap_or(""));
        }
        if let Some(trust) = &url.tls {
            // Read now, so that a missing or broken CA file fails at start, naming the file.
            let config = trust.rustls_config(&name)?;
            mqtt_options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        let (client, mut connection) = Client::new(mqtt_options, options.mqtt_queue.max(1));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(5);
        connection.eventloop.set_network_options(network);

        let shared = Arc::new(Shared {
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            retained: Mutex::new(Retained::default()),
            status_topic,
        });
        let (wake, wake_rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink {name}"))
            .spawn(move || {
                drive(connection, &thread_shared, &wake_rx, &thread_name);
                thread_shared.connected.store(false, Ordering::SeqCst);
                thread_shared.finished.store(true, Ordering::SeqCst);
            })
            .map_err(|e| SinkError::Failed {
                sink: name.clone(),
                reason: format!("cannot start the connection thread: {e}"),
            })?;
        Ok(MqttSink {
            name,
            prefix: url.prefix,
            client,
            shared,
            wake,
            thread: Some(thread),
            dropping: false,
        })
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Messages dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// `PREFIX/CAMERA/event`.
    pub fn event_topic(&self, camera: &str) -> String {
        format!("{}/{}/event", self.prefix, topic_level(camera))
    }

    /// `PREFIX/CAMERA/state`.
    pub fn state_topic(&self, camera: &str) -> String {
        format!("{}/{}/state", self.prefix, topic_level(camera))
    }

    /// `PREFIX/status`.
    pub fn status_topic(&self) -> &str {
        &self.shared.status_topic
    }

    /// The Home Assistant discovery config for `camera`.
    pub fn discovery_config(&self, camera: &str) -> serde_json::Value {
        let state_topic = self.state_topic(camera);
        serde_json::json!({
            "name": camera,
            "unique_id": format!("edgeclip_{}", slug(camera)),
            "state_topic": state_topic,
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": state_topic,
            "availability_topic": self.shared.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "icon": "mdi:cctv",
            "device": {
                "identifiers": [format!("edgeclip_{}", slug(&self.prefix))],
                "name": "edgeclip",
                "model": "edgeclip zero-shot camera classifier",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        })
    }

    /// Queues one QoS 1 message without blocking.
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), SinkError> {
        // Counted before it is queued, so that its PubAck can never be counted first.
        self.shared.published.fetch_add(1, Ordering::SeqCst);
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                if self.dropping {
                    self.dropping = false;
                    log::info!(
                        "{}: queue accepting messages again ({} dropped so far)",
                        self.name,
                        self.dropped()
                    );
                }
                Ok(())
            }
            Err(_) => {
                self.shared.published.fetch_sub(1, Ordering::SeqCst);
                if self.shared.finished.load(Ordering::SeqCst) {
                    return Err(SinkError::Failed {
                        sink: self.name.clone(),
                        reason: "the sink is closed".to_string(),
                    });
                }
                let dropped = self.shared.dropped.fetch_add(1, Ordering::SeqCst) + 1;
                if !self.dropping {
                    self.dropping = true;
                    log::warn!(
                        "{}: queue full ({}broker unreachable?): dropping messages",
                        self.name,
                        if self.is_connected() {
                            ""
                        } else {
                            "disconnected, "
                        }
                    );
                }
                Err(SinkError::Failed {
                    sink: self.name.clone(),
                    reason: format!("queue full, message dropped ({dropped} so far)"),
                })
            }
        }
    }
}

/// The connection thread: polls rumqttc's event loop (which reconnects on the next poll
/// after an error), counts acks, re-publishes what the broker must hold after each
/// connection, and requeues what a broken connection left unacknowledged.
fn drive(mut connection: Connection, shared: &Shared, wake: &mpsc::Receiver<()>, name: &str) {
    // Publishes waiting to be handed to the event loop, oldest first.
    let mut requeue: VecDeque<Publish> = VecDeque::new();
    let mut connected = false;
    // A failure to connect has been logged since the last state change.
    let mut failure_logged = false;
    let max_inflight = connection.eventloop.mqtt_options.inflight();
    loop {
        if shared.abort.load(Ordering::SeqCst) || (!connected && shared.stop.load(Ordering::SeqCst))
        {
            return;
        }
        // Feed requeued messages one at a time, within the in-flight window: the event
        // loop's `pending` list bypasses its flow control, and overfilling it would make
        // packet ids collide (rumqttc keeps only one collided publish).
        let eventloop = &mut connection.eventloop;
        if connected
            && eventloop.pending.is_empty()
            && eventloop.state.collision.is_none()
            && eventloop.state.inflight() + 1 < max_inflight
        {
            if let Some(publish) = requeue.pop_front() {
                eventloop.pending.push_back(Request::Publish(publish));
            }
        }
        let event = match connection.recv() {
            Ok(event) => event,
            // The request channel is gone: nothing can be sent any more.
            Err(RecvError) => return,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                failure_logged = false;
                shared.connected.store(true, Ordering::SeqCst);
                log::info!("{name}: connected");
                // Whatever the broker knew may be gone (restart without persistence):
                // availability, discovery and states go out first, ahead of older traffic.
                let retained = shared.retained();
                let fresh: Vec<Publish> = std::iter::once((&shared.status_topic, &b"online"[..]))
                    .chain(retained.discovery.iter().map(|(t, p)| (t, &p[..])))
                    .chain(retained.states.iter().map(|(t, p)| (t, &p[..])))
                    .map(|(topic, payload)| {
                        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
                        publish.retain = true;
                        publish
                    })
                    .collect();
                drop(retained);
                shared
                    .published
                    .fetch_add(fresh.len() as u64, Ordering::SeqCst);
                for publish in fresh.into_iter().rev() {
                    requeue.push_front(publish);
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            // Only `close` asks for a disconnect; the packet has been flushed.
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                // rumqttc has moved unacknowledged publishes (with their packet ids) and
                // the requests still queued into `pending`, and clears that list when the
                // next session is a new one: take them back. In-flight ones were sent
                // before anything still in `requeue`; queued ones (no packet id yet) after.
                let mut in_flight = VecDeque::new();
                let mut queued = VecDeque::new();
                for request in connection.eventloop.pending.drain(..) {
                    if let Request::Publish(mut publish) = request {
                        let was_sent = publish.pkid != 0;
                        // A fresh id in the new session; a broker without the old session
                        // would not recognise a duplicate anyway.
                        publish.pkid = 0;
                        publish.dup = false;
                        if was_sent {
                            in_flight.push_back(publish);
                        } else {
                            queued.push_back(publish);
                        }
                    }
                }
                in_flight.extend(requeue.drain(..));
                in_flight.extend(queued);
                requeue = in_flight;

                if connected {
                    connected = false;
                    failure_logged = true;
                    shared.connected.store(false, Ordering::SeqCst);
                    log::warn!(
                        "{name}: disconnected ({}); reconnecting every {}s, {} messages waiting",
                        describe(&error),
                        RECONNECT_DELAY.as_secs(),
                        requeue.len()
                    );
                } else if !failure_logged {
                    failure_logged = true;
                    log::warn!(
                        "{name}: cannot connect ({}); retrying every {}s",
                        describe(&error),
                        RECONNECT_DELAY.as_secs()
                    );
                }
                if shared.stop.load(Ordering::SeqCst) || shared.abort.load(Ordering::SeqCst) {
                    return;
                }
                // Not a busy loop against a broker that refuses at once; `close` ends the
                // wait early.
                let _ = wake.recv_timeout(RECONNECT_DELAY);
            }
        }
    }
}

/// A connection error as text (see [`tls::describe`]).
fn describe(error: &ConnectionError) -> String {
    let tls_error = match error {
        ConnectionError::Tls(TlsError::TLS(e)) => Some(e),
        ConnectionError::Tls(TlsError::Io(e)) | ConnectionError::Io(e) => tls::rustls_error_in(e),
        _ => None,
    };
    tls::describe(error, tls_error)
}

impl Sink for MqttSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn announce(&mut self, cameras: &[String], _labels: &[String]) -> Result<(), SinkError> {
        let mut discovery: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for camera in cameras {
            let config = serde_json::to_vec(&self.discovery_config(camera)).map_err(|e| {
                SinkError::Failed {
                    sink: self.name.clone(),
                    reason: format!("cannot serialise discovery: {e}"),
                }
            })?;
            discovery.insert(discovery_topic(camera), config);
        }
        {
            let mut retained = self.shared.retained();
            // A camera that is gone: an empty retained config removes its sensor. Kept
            // (empty) so that a broker that still has the old config gets the removal too.
            for (topic, payload) in retained.discovery.iter() {
                if !discovery.contains_key(topic) && !payload.is_empty() {
                    discovery.insert(topic.clone(), Vec::new());
                }
            }
            retained.discovery = discovery.clone();
        }
        // Not connected: the connection thread publishes all this once connected. (Stored
        // first, then checked, so that a connection made in between publishes it, at worst
        // twice.)
        if !self.is_connected() {
            return Ok(());
        }
        let status = self.shared.status_topic.clone();
        let mut first_error = self.publish(status, b"online".to_vec(), true).err();
        for (topic, payload) in discovery {
            if let Err(e) = self.publish(topic, payload, true) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let serialise = |e: serde_json::Error| SinkError::Failed {
            sink: self.name.clone(),
            reason: format!("cannot serialise the event: {e}"),
        };
        let payload = serde_json::to_vec(event).map_err(serialise)?;
        let state = serde_json::to_vec(&serde_json::json!({
            "label": event.label,
            "score": event.score,
            "ts": event.ts,
            "frame": event.frame,
        }))
        .map_err(serialise)?;
        let state_topic = self.state_topic(&event.camera);
        // Remembered even if the queue is full now: the next connection publishes it.
        self.shared
            .retained()
            .states
            .insert(state_topic.clone(), state.clone());
        let event_result = self.publish(self.event_topic(&event.camera), payload, false);
        let state_result = self.publish(state_topic, state, true);
        event_result.and(state_result)
    }

    fn backlog(&self) -> u64 {
        let published = self.shared.published.load(Ordering::SeqCst);
        let acked = self.shared.acked.load(Ordering::SeqCst);
        published.saturating_sub(acked)
    }

    fn close(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        // The will covers a crash; a clean stop says so itself, since a clean DISCONNECT
        // suppresses the will.
        let status = self.shared.status_topic.clone();
        if let Err(e) = self.publish(status, b"offline".to_vec(), true) {
            log::warn!("{e}");
        }
        while self.backlog() > 0
            && Instant::now() < deadline
            && !self.shared.finished.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.backlog();
        self.shared.stop.store(true, Ordering::SeqCst);
        // Queued after everything else, so it goes out once the queue is written.
        let _ = self.client.try_disconnect();
        let _ = self.wake.send(());
        // The DISCONNECT itself needs a moment even when the timeout is spent.
        let grace = deadline.max(Instant::now() + Duration::from_millis(500));
        while !self.shared.finished.load(Ordering::SeqCst) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.shared.finished.load(Ordering::SeqCst) {
            let _ = thread.join();
        } else {
            // Stuck in a connection attempt (up to its 5 s time-out): let it end on its own.
            self.shared.abort.store(true, Ordering::SeqCst);
            log::debug!(
                "{}: connection thread still busy at close; detached",
                self.name
            );
        }
        if left > 0 {
            log::warn!(
                "{}: {left} messages not acknowledged by the broker at close (lost: MQTT \
                 keeps no disk spool)",
                self.name
            );
        }
        Ok(())
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.abort.store(true, Ordering::SeqCst);
            let _ = self.client.try_disconnect();
            let _ = self.wake.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = MqttUrl::parse("mqtt://broker").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("broker", 1883, "edgeclip")
        );
        assert_eq!(url.username, None);

        let url = MqttUrl::parse("mqtt://me:p%40ss:w@10.0.0.2:1884/home/cams/").unwrap();
        assert_eq!(url.host, "10.0.0.2");
        assert_eq!(url.port, 1884);
        assert_eq!(url.username.as_deref(), Some("me"));
        assert_eq!(url.password.as_deref(), Some("p@ss:w"));
        assert_eq!(url.prefix, "home/cams");
        assert_eq!(url.display(), "mqtt://me@10.0.0.2:1884/home/cams");
        assert!(!format!("{url:?}").contains("p@ss"));

        let url = MqttUrl::parse("mqtt://[::1]:1885").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 1885));
        assert_eq!(url.display(), "mqtt://[::1]:1885/edgeclip");
        assert_eq!(url.tls, None);
    }

    #[test]
    fn parses_tls_urls() {
        let url = MqttUrl::parse("mqtts://broker.example").unwrap();
        assert_eq!(url.port, DEFAULT_TLS_PORT);
        assert_eq!(url.tls, Some(Trust::PublicRoots));
        assert_eq!(url.display(), "mqtts://broker.example:8883/edgeclip");

        let url =
            MqttUrl::parse("mqtts://me:pw@broker:9883/cams?ca=/etc/edgeclip/ca%2B.pem").unwrap();
        assert_eq!(url.port, 9883);
        assert_eq!(url.prefix, "cams");
        assert_eq!(url.password.as_deref(), Some("pw"));
        assert_eq!(url.tls, Some(Trust::CaFile("/etc/edgeclip/ca+.pem".into())));
        assert_eq!(url.display(), "mqtts://me@broker:9883/cams");
    }

    #[test]
    fn rejects_bad_urls_naming_the_spec() {
        for bad in [
            "mqtt://",
            "mqtt://host:notaport",
            "mqtt://host:0",
            "mqtt://host:70000",
            "mqtt://host/a/+/b",
            "mqtt://host/a//b",
            "mqtt://u%zz@host",
            "mqtt://[::1",
            // A CA without TLS would silently not be used.
            "mqtt://host?ca=/tmp/ca.pem",
            "mqtts://host?ca=",
            "mqtts://host?insecure=1",
        ] {
            let err = MqttUrl::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            let text = err.to_string();
            assert!(
                text.contains(bad)
                    && text.contains("mqtt://[USER:PASS@]HOST")
                    && text.contains("mqtts://"),
                "{text}"
            );
        }
    }

    #[test]
    fn topics_and_slugs() {
        assert_eq!(topic_level("front/door+#"), "front_door__");
        assert_eq!(topic_level(""), "_");
        assert_eq!(slug("Front Door-2"), "front_door_2");
        assert_eq!(
            discovery_topic("Front Door"),
            "homeassistant/sensor/edgeclip_front_door/config"
        );
    }

    #[test]
    fn the_name_never_shows_the_password() {
        let options = SinkOptions::default();
        // Nothing listens on port 9 of localhost; opening must still succeed (the broker is
        // retried in the background).
        let mut sink = MqttSink::open("mqtt://user:hunter2@127.0.0.1:9/x", &options).unwrap();
        assert_eq!(sink.name(), "mqtt://user@127.0.0.1:9/x");
        let config = sink.discovery_config("Front Door");
        assert_eq!(config["state_topic"], "x/Front Door/state");
        assert_eq!(config["availability_topic"], "x/status");
        assert_eq!(config["unique_id"], "edgeclip_front_door");
        sink.close(Duration::ZERO).unwrap();
    }

    #[test]
    fn a_full_queue_fails_instead_of_blocking() {
        use crate::classify::LabelScore;
        let options = SinkOptions {
            mqtt_queue: 4,
            ..SinkOptions::default()
        };
        let mut sink = MqttSink::open("mqtt://127.0.0.1:9/x", &options).unwrap();
        let event = Event {
            id: "x".to_string(),
            ts: "2025-01-01T00:00:00.000Z".to_string(),
            camera: "door".to_string(),
            frame: 1,
            label: "cat".to_string(),
            score: 0.5,
            top: vec![LabelScore {
                label: "cat".to_string(),
                score: 0.5,
            }],
            latency_ms: 1.0,
            snapshot: None,
        };
        let started = Instant::now();
        // Two messages per event: two events fill a queue of four.
        sink.send(&event).unwrap();
        sink.send(&event).unwrap();
        let err = sink.send(&event).expect_err("a full queue must fail");
        assert!(started.elapsed() < Duration::from_secs(1), "send blocked");
        assert!(err.to_string().contains("queue full"), "{err}");
        assert_eq!(sink.dropped(), 2);
        assert_eq!(sink.backlog(), 4);
        assert!(!sink.is_connected());
        sink.close(Duration::ZERO).unwrap();
    }
}
