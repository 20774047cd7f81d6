//! Sinks against real peers: a `mosquitto` broker started per test (stopped and restarted
//! to test reconnection) and an HTTP receiver on a local socket (down, then up; answering
//! 5xx and 4xx on demand).
//!
//! TLS: a test CA and a server certificate made with `openssl` per test; mosquitto with a
//! TLS listener (and a password file from `mosquitto_passwd`), a Python `http.server`
//! wrapped in `ssl` as the HTTPS receiver.
//!
//! The MQTT tests need `mosquitto` (Debian: `apt install mosquitto`), the TLS tests also
//! `openssl`, and the HTTPS one `python3`. Without them a test is skipped with a message, or
//! fails when `EDGECLIP_REQUIRE_FIXTURES=1`.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeclip::classify::LabelScore;
use edgeclip::events::Event;
use edgeclip::sink::mqtt::MqttSink;
use edgeclip::sink::{self, Sink, SinkOptions};
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};

fn event(camera: &str, frame: u64, label: &str) -> Event {
    Event {
        id: format!("{camera}-{frame}"),
        ts: format!("2025-01-01T00:00:{:02}.000Z", frame % 60),
        camera: camera.to_string(),
        frame,
        label: label.to_string(),
        score: 0.75,
        top: vec![
            LabelScore {
                label: label.to_string(),
                score: 0.75,
            },
            LabelScore {
                label: "other".to_string(),
                score: 0.25,
            },
        ],
        latency_ms: 20.5,
        snapshot: None,
    }
}

/// Polls `done` every 10 ms until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// An executable: the first of `candidates` that exists, else `name` if it starts from
/// PATH; or `None` (after printing why, with `install`) when the test should skip.
fn tool(name: &str, candidates: &[&str], install: &str) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(found);
    }
    let on_path = Command::new(name)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        return Some(PathBuf::from(name));
    }
    let msg = format!("{name} not found ({install})");
    if common::fixtures_required() {
        panic!(
            "{msg} ({} is set, so this is a failure)",
            common::REQUIRE_FIXTURES_ENV
        );
    }
    eprintln!("skipping: {msg}");
    None
}

/// What this test process logged (level and text): sinks report connection and delivery
/// failures from their own threads, in the log.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLog;

impl log::Log for CaptureLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}", record.level(), record.args());
            LOGGED.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

/// Starts capturing the log (once per process).
fn capture_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CaptureLog).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Logged lines that contain every one of `parts`.
fn logged(parts: &[&str]) -> Vec<String> {
    LOGGED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .cloned()
        .collect()
}

/// A test CA (`ca.pem`) and a server certificate it signed (`server.pem`, `server.key`) for
/// `localhost` and 127.0.0.1, made by `openssl` in a directory of its own.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// `None` (after printing why) without openssl.
    fn make(dir: &Path) -> Option<Pki> {
        let openssl = tool(
            "openssl",
            &["/usr/bin/openssl", "/usr/local/bin/openssl"],
            "Debian: apt install openssl",
        )?;
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // P-256 keys: made in milliseconds, and verified by rustls.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=edgeclip test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat());
        run(&[
            &["req", "-new"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Some(Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// MQTT

/// The `mosquitto` executable, or `None` (after printing why) when the test should skip.
fn mosquitto() -> Option<PathBuf> {
    tool(
        "mosquitto",
        &[
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ],
        "Debian: apt install mosquitto",
    )
}

/// A mosquitto listening on 127.0.0.1:`port`, without persistence (a restart forgets all
/// retained messages, as a default broker does). Killed on drop.
struct Broker {
    exe: PathBuf,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(exe: &Path, dir: &Path, port: u16) -> Broker {
        Broker::start_with(
            exe,
            dir,
            port,
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
    }

    /// A broker with these listeners; `port` is one of them, waited for at start.
    fn start_with(exe: &Path, dir: &Path, port: u16, listeners: &str) -> Broker {
        let config = dir.join("mosquitto.conf");
        // `user root`: started as root, mosquitto would otherwise drop to its own user, who
        // cannot read the password file in the test's private directory (ignored when not
        // root).
        std::fs::write(
            &config,
            format!("persistence false\nuser root\n{listeners}"),
        )
        .expect("write mosquitto.conf");
        let mut broker = Broker {
            exe: exe.to_path_buf(),
            config,
            port,
            child: None,
        };
        broker.restart();
        broker
    }

    /// Starts the broker (again) and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new(&self.exe)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let port = self.port;
        let listening = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening, "mosquitto did not listen on port {port}");
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is acknowledged.
    fn pause(&self) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill -STOP");
        assert!(status.success(), "kill -STOP {pid} failed");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as a subscriber saw it.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: String,
    retain: bool,
}

/// A subscriber that reconnects (50 ms apart) and resubscribes after each connection,
/// recording every message.
struct Subscriber {
    client: Client,
    messages: Arc<Mutex<Vec<Message>>>,
    subscriptions: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    fn start(port: u16, filter: &str) -> Subscriber {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "sinks-test-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let options = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut connection) = Client::new(options, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscriptions = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let client = client.clone();
            let messages = Arc::clone(&messages);
            let subscriptions = Arc::clone(&subscriptions);
            let stop = Arc::clone(&stop);
            let filter = filter.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match connection.recv() {
                        Err(_) => return,
                        Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                            let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                        }
                        Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => {
                            subscriptions.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                            messages.lock().unwrap().push(Message {
                                topic: p.topic.clone(),
                                payload: String::from_utf8_lossy(&p.payload).into_owned(),
                                retain: p.retain,
                            });
                        }
                        Ok(Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        Subscriber {
            client,
            messages,
            subscriptions,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the subscriber has been subscribed `n` times (once per connection).
    fn wait_subscribed(&self, n: u64) {
        let subscribed = wait_until(Duration::from_secs(10), || {
            self.subscriptions.load(Ordering::SeqCst) >= n
        });
        assert!(subscribed, "test subscriber did not subscribe ({n})");
    }

    fn on(&self, topic: &str) -> Vec<Message> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    /// Frames of the events received on `topic`.
    fn frames(&self, topic: &str) -> Vec<u64> {
        self.on(topic)
            .iter()
            .map(|m| {
                serde_json::from_str::<Event>(&m.payload)
                    .expect("an event topic carries Event JSON")
                    .frame
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            // The thread ends on the DISCONNECT or, while the broker is down, within one
            // 50 ms retry; don't hang the test if it is stuck on a dead connection.
            let _ = wait_until(Duration::from_secs(2), || thread.is_finished());
        }
    }
}

/// The retained message on `topic` as a fresh subscriber gets it (the broker's view now), or
/// `None` if there is none within a second.
fn retained(port: u16, topic: &str) -> Option<serde_json::Value> {
    let subscriber = Subscriber::start(port, topic);
    subscriber.wait_subscribed(1);
    let mut found = None;
    wait_until(Duration::from_secs(1), || {
        found = subscriber.on(topic).into_iter().find(|m| m.retain);
        found.is_some()
    });
    found.map(|m| serde_json::from_str(&m.payload).unwrap_or(serde_json::Value::String(m.payload)))
}

#[test]
fn mqtt_publishes_events_state_and_discovery_and_survives_a_broker_restart() {
    let Some(exe) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(&exe, dir.path(), port);
    let watcher = Subscriber::start(port, "#");
    watcher.wait_subscribed(1);

    let options = SinkOptions {
        mqtt_client_id: format!("edgeclip-sinks-test-{}", std::process::id()),
        ..SinkOptions::default()
    };
    let mut sink = MqttSink::open(&format!("mqtt://127.0.0.1:{port}/test"), &options).unwrap();
    assert_eq!(sink.name(), format!("mqtt://127.0.0.1:{port}/test"));
    let cameras = ["door".to_string(), "Back Yard".to_string()];
    sink.announce(&cameras, &["cat".to_string(), "person".to_string()])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sink.is_connected()),
        "sink did not connect"
    );

    let labels = ["cat", "person", "cat", "dog", "person"];
    let sent: Vec<Event> = (1..=5)
        .map(|f| event("door", f, labels[f as usize - 1]))
        .collect();
    for e in &sent {
        sink.send(e).unwrap();
    }
    sink.send(&event("Back Yard", 1, "fox")).unwrap();

    // Events arrive in order, as sent.
    let door_events = "test/door/event";
    assert!(
        wait_until(Duration::from_secs(5), || watcher.on(door_events).len()
            >= 5),
        "events did not arrive: {:?}",
        watcher.on(door_events)
    );
    let received: Vec<Event> = watcher
        .on(door_events)
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    assert_eq!(received, sent);
    assert!(watcher.on(door_events).iter().all(|m| !m.retain));
    assert_eq!(watcher.frames("test/Back Yard/event"), vec![1]);
    assert!(
        wait_until(Duration::from_secs(5), || sink.backlog() == 0),
        "backlog {}",
        sink.backlog()
    );

    // The broker holds the latest state per camera, availability and discovery.
    let state = retained(port, "test/door/state").expect("retained door state");
    assert_eq!(state["label"], "person");
    assert_eq!(state["frame"], 5);
    assert_eq!(state["ts"], sent[4].ts);
    assert!((state["score"].as_f64().unwrap() - 0.75).abs() < 1e-6);
    assert_eq!(retained(port, "test/status"), Some("online".into()));
    let check_discovery = |camera: &str, slug: &str| {
        let topic = format!("homeassistant/sensor/edgeclip_{slug}/config");
        let config = retained(port, &topic).unwrap_or_else(|| panic!("no discovery at {topic}"));
        assert_eq!(config["state_topic"], format!("test/{camera}/state"));
        assert_eq!(
            config["json_attributes_topic"],
            format!("test/{camera}/state")
        );
        assert_eq!(config["availability_topic"], "test/status");
        assert_eq!(config["value_template"], "{{ value_json.label }}");
        assert_eq!(config["unique_id"], format!("edgeclip_{slug}"));
        assert_eq!(config["device"]["name"], "edgeclip");
        assert_eq!(config["icon"], "mdi:cctv");
    };
    check_discovery("door", "door");
    check_discovery("Back Yard", "back_yard");

    // The broker freezes, so two events are written but never acknowledged, then dies;
    // one more event is sent while it is down. None may be lost: rumqttc alone would drop
    // the unacknowledged ones when the next session turns out to be a new one.
    broker.pause();
    sink.send(&event("door", 6, "dog")).unwrap();
    sink.send(&event("door", 7, "cat")).unwrap();
    broker.stop();
    assert!(
        wait_until(Duration::from_secs(5), || !sink.is_connected()),
        "sink did not notice the broker going away"
    );
    let started = Instant::now();
    sink.send(&event("door", 8, "bird")).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "send blocked while the broker was down"
    );
    assert!(
        sink.backlog() >= 6,
        "3 events and 3 states should wait, backlog {}",
        sink.backlog()
    );

    // Broker back, with nothing retained: the sink reconnects, delivers what waited, and
    // publishes availability, discovery and states again.
    broker.restart();
    watcher.wait_subscribed(2);
    assert!(
        wait_until(Duration::from_secs(10), || sink.is_connected()),
        "sink did not reconnect"
    );
    assert!(
        wait_until(Duration::from_secs(5), || sink.backlog() == 0),
        "queued messages were not acknowledged after the restart (backlog {})",
        sink.backlog()
    );
    assert_eq!(retained(port, "test/status"), Some("online".into()));
    check_discovery("door", "door");
    check_discovery("Back Yard", "back_yard");
    assert_eq!(retained(port, "test/door/state").unwrap()["label"], "bird");
    assert_eq!(
        retained(port, "test/Back Yard/state").unwrap()["label"],
        "fox"
    );

    // Events sent after the restart arrive, in order.
    sink.send(&event("door", 9, "cat")).unwrap();
    sink.send(&event("door", 10, "person")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let frames = watcher.frames(door_events);
            frames.contains(&9) && frames.contains(&10)
        }),
        "events after the restart did not arrive: {:?}",
        watcher.frames(door_events)
    );
    let frames = watcher.frames(door_events);
    assert!(
        frames.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {frames:?}"
    );
    assert_eq!(retained(port, "test/door/state").unwrap()["frame"], 10);

    // A clean close says offline (the will is not used on a clean DISCONNECT).
    sink.close(Duration::from_secs(2)).unwrap();
    assert_eq!(sink.backlog(), 0);
    assert_eq!(retained(port, "test/status"), Some("offline".into()));
}

/// A TCP forwarder to the broker that the test opens and closes: closed, it accepts and
/// drops at once (to the sink, a broker that is not there). It lets the test subscriber
/// resubscribe after a broker restart before the sink can reconnect and flush its queue;
/// otherwise the queue can reach the restarted broker before anyone subscribes, and the
/// broker drops what nobody is subscribed to.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
}

impl Gate {
    fn start(broker_port: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("gate listens");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Gate { port, open }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

/// How long [`mqtt_rides_out_a_broker_outage_of_minutes`] keeps the broker down, in
/// seconds (default 120; e.g. 600 by hand).
const OUTAGE_ENV: &str = "EDGECLIP_MQTT_OUTAGE_SECS";

#[test]
fn mqtt_rides_out_a_broker_outage_of_minutes() {
    let Some(exe) = mosquitto() else { return };
    capture_log();
    let outage = Duration::from_secs(
        std::env::var(OUTAGE_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(&exe, dir.path(), port);
    let watcher = Subscriber::start(port, "outage/#");
    watcher.wait_subscribed(1);
    // A queue of 100 messages (50 events): an outage of minutes at one event a second
    // overfills it, so the test sees both what waits and what is refused.
    let options = SinkOptions {
        mqtt_client_id: format!("edgeclip-outage-test-{}", std::process::id()),
        mqtt_queue: 100,
        ..SinkOptions::default()
    };
    let gate = Gate::start(port);
    let name = format!("mqtt://127.0.0.1:{}/outage", gate.port);
    let mut sink = MqttSink::open(&name, &options).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sink.is_connected()),
        "sink did not connect"
    );
    let mut frame = 0;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    // Sends one event and says whether the sink took it; never blocks.
    let mut send = |sink: &mut MqttSink, frame: u64| {
        let started = Instant::now();
        let result = sink.send(&event("gate", frame, "person"));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "send blocked for {:?}",
            started.elapsed()
        );
        match result {
            Ok(()) => accepted.push(frame),
            Err(e) => {
                assert!(e.to_string().contains("queue full"), "{e}");
                refused.push(frame);
            }
        }
        (accepted.len(), refused.len())
    };
    for _ in 0..3 {
        frame += 1;
        send(&mut sink, frame);
    }
    let events_topic = "outage/gate/event";
    assert!(
        wait_until(Duration::from_secs(5), || watcher
            .frames(events_topic)
            .len()
            >= 3),
        "events before the outage did not arrive"
    );

    // Down for minutes: one event a second, each send returns at once.
    gate.set_open(false);
    broker.stop();
    let down = Instant::now();
    let mut refused_so_far = 0;
    while down.elapsed() < outage {
        frame += 1;
        refused_so_far = send(&mut sink, frame).1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!sink.is_connected(), "connected to a stopped broker?");
    assert!(
        refused_so_far > 0 && sink.dropped() > 0,
        "an outage of {outage:?} at one event a second should overfill a 100-message queue"
    );

    // Back: what waited is delivered, the queue takes messages again.
    broker.restart();
    watcher.wait_subscribed(2);
    gate.set_open(true);
    assert!(
        wait_until(Duration::from_secs(10), || sink.is_connected()),
        "sink did not reconnect after {outage:?}"
    );
    for _ in 0..3 {
        frame += 1;
        send(&mut sink, frame);
    }
    let last = frame;
    assert!(
        wait_until(Duration::from_secs(10), || watcher
            .frames(events_topic)
            .contains(&last)
            && sink.backlog() == 0),
        "events after the outage did not arrive (backlog {})",
        sink.backlog()
    );
    sink.close(Duration::from_secs(2)).unwrap();

    // Every accepted event arrived, in order (QoS 1: a repeat only of the one in flight
    // when the broker died); a refused one was refused out loud, never lost in silence.
    let mut received = watcher.frames(events_topic);
    assert!(
        received.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {received:?}"
    );
    received.dedup();
    let missing: Vec<u64> = accepted
        .iter()
        .filter(|f| !received.contains(f))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but never delivered: {missing:?}"
    );
    let sink_log = |parts: &[&str]| logged(&[&[name.as_str()], parts].concat());
    assert_eq!(
        sink_log(&["reconnecting every"]).len(),
        1,
        "one warning for the whole outage, not one per reconnect attempt: {:?}",
        sink_log(&[])
    );
    assert_eq!(sink_log(&["queue full"]).len(), 1, "{:?}", sink_log(&[]));
    assert_eq!(
        sink_log(&["queue accepting messages again"]).len(),
        1,
        "{:?}",
        sink_log(&[])
    );
    eprintln!(
        "broker down {outage:?}: {} events sent, {} accepted and delivered, {} refused \
         (queue full, {} messages dropped)",
        frame,
        accepted.len(),
        refused.len(),
        sink.dropped()
    );
}

/// Set for the child process of [`mqtt_last_will_marks_a_killed_edgeclip_offline`].
const WILL_CHILD_ENV: &str = "EDGECLIP_SINKS_TEST_WILL_URL";

/// Not a test of its own: the process the last-will test kills. Opens a sink and waits.
#[test]
fn mqtt_will_child() {
    let Ok(url) = std::env::var(WILL_CHILD_ENV) else {
        return;
    };
    let options = SinkOptions {
        mqtt_client_id: format!("edgeclip-will-child-{}", std::process::id()),
        ..SinkOptions::default()
    };
    let _sink = MqttSink::open(&url, &options).unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn mqtt_last_will_marks_a_killed_edgeclip_offline() {
    let Some(exe) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&exe, dir.path(), port);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mqtt_will_child", "--nocapture"])
        .env(WILL_CHILD_ENV, format!("mqtt://127.0.0.1:{port}/will"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child test process");
    let online = wait_until(Duration::from_secs(10), || {
        retained(port, "will/status") == Some("online".into())
    });
    // SIGKILL: no close, no DISCONNECT; the broker sees the socket die and publishes the will.
    let _ = child.kill();
    let _ = child.wait();
    assert!(online, "the child never came online");
    let offline = wait_until(Duration::from_secs(5), || {
        retained(port, "will/status") == Some("offline".into())
    });
    assert!(offline, "the last will did not mark the status offline");
}

#[test]
fn mqtt_over_tls_verifies_the_broker_and_logs_in() {
    let Some(exe) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else {
        return;
    };
    capture_log();
    let passwd_tool = tool(
        "mosquitto_passwd",
        &[
            "/usr/bin/mosquitto_passwd",
            "/usr/local/bin/mosquitto_passwd",
        ],
        "comes with mosquitto; testing TLS without a password",
    );
    let passwd = dir.path().join("passwd");
    let (auth, credentials) = match passwd_tool {
        Some(tool) => {
            let status = Command::new(tool)
                .args(["-b", "-c"])
                .arg(&passwd)
                .args(["cam", "s3cret:1"])
                .status()
                .expect("run mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed");
            (
                format!(
                    "allow_anonymous false\npassword_file {}\n",
                    passwd.display()
                ),
                "cam:s3cret%3A1@",
            )
        }
        None => ("allow_anonymous true\n".to_string(), ""),
    };
    let tls_port = free_port();
    let plain_port = free_port();
    // A TLS listener for the sinks; a plain loopback one for the test's own subscriber.
    let _broker = Broker::start_with(
        &exe,
        dir.path(),
        tls_port,
        &format!(
            "per_listener_settings true\n\
             listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n{auth}\
             listener {plain_port} 127.0.0.1\nallow_anonymous true\n",
            pki.ca.display(),
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let watcher = Subscriber::start(plain_port, "#");
    watcher.wait_subscribed(1);
    let options = SinkOptions {
        mqtt_client_id: format!("edgeclip-tls-test-{}", std::process::id()),
        ..SinkOptions::default()
    };

    // The test CA named: connected, logged in, events delivered.
    let spec = format!(
        "mqtts://{credentials}localhost:{tls_port}/secure?ca={}",
        pki.ca.display()
    );
    let mut sink = sink::open(&spec, &options).unwrap();
    assert_eq!(
        sink.name(),
        format!(
            "mqtts://{}localhost:{tls_port}/secure",
            if credentials.is_empty() { "" } else { "cam@" }
        )
    );
    for frame in 1..=3 {
        sink.send(&event("door", frame, "cat")).unwrap();
    }
    let delivered = wait_until(Duration::from_secs(10), || {
        watcher.frames("secure/door/event") == [1, 2, 3]
    });
    assert!(
        delivered,
        "events over TLS: {:?}; log: {:?}",
        watcher.frames("secure/door/event"),
        logged(&[&tls_port.to_string()])
    );
    sink.close(Duration::from_secs(2)).unwrap();
    assert_eq!(sink.backlog(), 0);

    // Mozilla's roots (no ca=): the test CA is not among them, so the broker is refused,
    // with a log that says why, and nothing is delivered.
    let untrusted = format!("mqtts://{credentials}localhost:{tls_port}/untrusted");
    let mut sink = MqttSink::open(&untrusted, &options).unwrap();
    sink.send(&event("door", 4, "cat")).unwrap();
    let name = sink.name();
    let refused = wait_until(Duration::from_secs(10), || {
        !logged(&[&name, "cannot connect", "not trusted", "?ca=FILE"]).is_empty()
    });
    assert!(
        refused,
        "no log of the refused certificate: {:?}",
        logged(&[&name])
    );
    assert!(!sink.is_connected());
    assert!(sink.backlog() > 0, "the event must still be waiting");
    sink.close(Duration::ZERO).unwrap();
    assert!(watcher.on("untrusted/door/event").is_empty());

    // A CA file that is not there is an error at open, naming the file.
    let missing = pki.dir.join("missing-ca.pem");
    let err = sink::open(
        &format!("mqtts://localhost:{tls_port}/x?ca={}", missing.display()),
        &options,
    )
    .err()
    .expect("a missing CA file must fail at open");
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Webhook

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    body: String,
    status: u16,
}

/// A minimal HTTP/1.1 receiver on 127.0.0.1:`port`: records each POST and answers with the
/// next scripted status (200 when the script is empty; 0: no answer for 500 ms, then the
/// connection is dropped). Stops listening on drop.
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, script: &[u16]) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Mutex<VecDeque<u16>>> =
            Arc::new(Mutex::new(script.iter().copied().collect()));
        let thread = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let status = script.lock().unwrap().pop_front().unwrap_or(200);
                            if let Some(request) = serve(stream, status) {
                                received.lock().unwrap().push(request);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Receiver {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Frames of the events it answered 2xx to, in order.
    fn accepted_frames(&self) -> Vec<u64> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| {
                serde_json::from_str::<Event>(&r.body)
                    .expect("body is Event JSON")
                    .frame
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream` and answers `status` (closing the connection).
fn serve(stream: TcpStream, status: u16) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut content_length = 0;
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().ok()?,
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    let body = String::from_utf8(body).ok()?;
    if status == 0 {
        // Scripted silence: hold the connection without answering for 500 ms (aside, so
        // that the next connection is served meanwhile), then drop it.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(stream);
        });
        return Some(Received {
            path,
            content_type,
            body,
            status,
        });
    }
    let reason = if status < 300 { "OK" } else { "Scripted" };
    let answer =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut stream = stream;
    stream.write_all(answer.as_bytes()).ok()?;
    Some(Received {
        path,
        content_type,
        body,
        status,
    })
}

fn webhook_options(spool: &Path) -> SinkOptions {
    SinkOptions {
        spool_dir: spool.to_path_buf(),
        webhook_timeout: Duration::from_secs(2),
        webhook_retry_min: Duration::from_millis(20),
        webhook_retry_max: Duration::from_millis(100),
        ..SinkOptions::default()
    }
}

/// `*.json` files directly in the spool directory of `url`.
fn spool_files(spool: &Path, url: &str) -> Vec<String> {
    let dir = sink::webhook::spool_dir_for(spool, url);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn webhook_spools_while_the_receiver_is_down_then_delivers_in_order() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut sink = sink::open(&url, &webhook_options(spool.path())).unwrap();

    let sent: Vec<Event> = (1..=5).map(|f| event("door", f, "cat")).collect();
    for e in &sent {
        sink.send(e).unwrap();
    }
    // Nothing listens: every event is on disk, none lost to the failing attempts.
    assert_eq!(sink.backlog(), 5);
    assert_eq!(spool_files(spool.path(), &url).len(), 5);

    let receiver = Receiver::start(port, &[]);
    assert!(
        wait_until(Duration::from_secs(5), || sink.backlog() == 0),
        "not delivered: backlog {}",
        sink.backlog()
    );
    let received = receiver.received();
    let bodies: Vec<Event> = received
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies, sent,
        "delivered out of order, duplicated or altered"
    );
    assert!(received
        .iter()
        .all(|r| r.path == "/hook" && r.content_type == "application/json"));
    assert!(
        spool_files(spool.path(), &url).is_empty(),
        "delivered files must be deleted"
    );

    // While up, new events go straight through.
    sink.send(&event("door", 6, "dog")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || receiver
        .accepted_frames()
        .len()
        == 6));
    sink.close(Duration::from_secs(2)).unwrap();
    assert_eq!(receiver.accepted_frames(), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn webhook_retries_5xx_and_sets_aside_4xx_rejections() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    // Event 1: 503, then 429, then accepted; event 2: 400 (rejected for good); event 3: 200.
    let receiver = Receiver::start(port, &[503, 429, 200, 400, 200]);
    let mut sink = sink::open(&url, &webhook_options(spool.path())).unwrap();
    for frame in 1..=3 {
        sink.send(&event("door", frame, "cat")).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || sink.backlog() == 0),
        "backlog {}",
        sink.backlog()
    );
    let attempts: Vec<(u64, u16)> = receiver
        .received()
        .iter()
        .map(|r| {
            (
                serde_json::from_str::<Event>(&r.body).unwrap().frame,
                r.status,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![(1, 503), (1, 429), (1, 200), (2, 400), (3, 200)]
    );
    let rejected =
        sink::webhook::spool_dir_for(spool.path(), &url).join(sink::webhook::REJECTED_DIR);
    let kept: Vec<Event> = std::fs::read_dir(&rejected)
        .expect("rejected/ exists")
        .flatten()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(kept, vec![event("door", 2, "cat")]);
    sink.close(Duration::from_secs(1)).unwrap();
}

#[test]
fn webhook_spool_survives_a_restart_without_loss_or_duplicates() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let options = webhook_options(spool.path());

    // First run: the receiver is down throughout; close leaves the events on disk.
    let mut first = sink::open(&url, &options).unwrap();
    for frame in 1..=4 {
        first.send(&event("door", frame, "cat")).unwrap();
    }
    let started = Instant::now();
    first.close(Duration::from_millis(200)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close overran its timeout"
    );
    assert_eq!(first.backlog(), 4);
    drop(first);
    assert_eq!(spool_files(spool.path(), &url).len(), 4);

    // Second run: old events go first, numbering continues, nothing twice.
    let receiver = Receiver::start(port, &[]);
    let mut second = sink::open(&url, &options).unwrap();
    for frame in 5..=6 {
        second.send(&event("door", frame, "cat")).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || second.backlog() == 0),
        "backlog {}",
        second.backlog()
    );
    second.close(Duration::from_secs(2)).unwrap();
    assert_eq!(receiver.accepted_frames(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        receiver.received().len(),
        6,
        "no attempt should have failed"
    );
    assert!(spool_files(spool.path(), &url).is_empty());
}

#[test]
fn webhook_times_out_a_silent_receiver_and_retries() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let receiver = Receiver::start(port, &[0]);
    let options = SinkOptions {
        webhook_timeout: Duration::from_millis(200),
        ..webhook_options(spool.path())
    };
    let mut sink = sink::open(&url, &options).unwrap();
    sink.send(&event("door", 1, "cat")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sink.backlog() == 0),
        "backlog {}",
        sink.backlog()
    );
    let statuses: Vec<u16> = receiver.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![0, 200], "timed out once, then delivered");
    assert_eq!(receiver.accepted_frames(), vec![1]);
    sink.close(Duration::from_secs(1)).unwrap();
}

#[test]
fn webhook_close_retries_at_once_instead_of_sleeping_out_its_backoff() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let options = SinkOptions {
        webhook_retry_min: Duration::from_secs(20),
        webhook_retry_max: Duration::from_secs(20),
        ..webhook_options(spool.path())
    };
    // The first attempt gets a 503; the next is 20 s away.
    let receiver = Receiver::start(port, &[503]);
    let mut sink = sink::open(&url, &options).unwrap();
    sink.send(&event("door", 1, "cat")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !receiver
        .received()
        .is_empty()));
    let started = Instant::now();
    sink.close(Duration::from_secs(3)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close slept out the backoff ({:?})",
        started.elapsed()
    );
    assert_eq!(sink.backlog(), 0);
    assert_eq!(receiver.accepted_frames(), vec![1]);
}

/// Python's `http.server` behind `ssl` on 127.0.0.1:`port`, answering 200 to every POST and
/// printing each as a line: the path, a space, the body. Killed on drop.
struct HttpsReceiver {
    child: Child,
    posts: Arc<Mutex<Vec<String>>>,
}

const HTTPS_RECEIVER: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(self.path, body.decode(), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl HttpsReceiver {
    /// `None` (after printing why) without python3.
    fn start(pki: &Pki, port: u16) -> Option<HttpsReceiver> {
        let python = tool(
            "python3",
            &["/usr/bin/python3", "/usr/local/bin/python3"],
            "Debian: apt install python3",
        )?;
        let mut child = Command::new(python)
            .arg("-c")
            .arg(HTTPS_RECEIVER)
            .arg(port.to_string())
            .arg(&pki.cert)
            .arg(&pki.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the python HTTPS receiver");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        {
            let posts = Arc::clone(&posts);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    posts.lock().unwrap().push(line);
                }
            });
        }
        let listening = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            listening,
            "the HTTPS receiver did not listen on port {port}"
        );
        Some(HttpsReceiver { child, posts })
    }

    /// (path, frame) of each POST received.
    fn received(&self) -> Vec<(String, u64)> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                let (path, body) = line.split_once(' ').expect("PATH BODY");
                let event: Event = serde_json::from_str(body).expect("body is Event JSON");
                (path.to_string(), event.frame)
            })
            .collect()
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhook_over_https_verifies_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else {
        return;
    };
    let port = free_port();
    let Some(receiver) = HttpsReceiver::start(&pki, port) else {
        return;
    };
    capture_log();
    let spool = tempfile::tempdir().unwrap();
    let options = webhook_options(spool.path());
    let url = format!("https://localhost:{port}/hook");

    // Mozilla's roots: the test CA's certificate is refused; the event stays spooled and
    // the log says why.
    let mut sink = sink::open(&url, &options).unwrap();
    sink.send(&event("door", 1, "cat")).unwrap();
    let refused = wait_until(Duration::from_secs(10), || {
        !logged(&[&url, "cannot deliver", "not trusted", "?ca=FILE"]).is_empty()
    });
    assert!(
        refused,
        "no log of the refused certificate: {:?}",
        logged(&[&url])
    );
    sink.close(Duration::ZERO).unwrap();
    drop(sink);
    assert!(receiver.received().is_empty());
    assert_eq!(spool_files(spool.path(), &url).len(), 1);

    // The test CA named: the spooled event (the spool is the URL's, without ca=) and a new
    // one are delivered, in order; ca= is not sent to the receiver.
    let with_ca = format!("{url}?ca={}", pki.ca.display());
    let mut sink = sink::open(&with_ca, &options).unwrap();
    assert_eq!(sink.name(), url);
    sink.send(&event("door", 2, "cat")).unwrap();
    let expected = [("/hook".to_string(), 1), ("/hook".to_string(), 2)];
    let delivered = wait_until(Duration::from_secs(10), || receiver.received() == expected);
    assert!(
        delivered,
        "over HTTPS with the CA: {:?}; log: {:?}",
        receiver.received(),
        logged(&[&url])
    );
    sink.close(Duration::from_secs(2)).unwrap();
    assert!(spool_files(spool.path(), &url).is_empty());

    // A CA on plain http:// would silently do nothing: refused.
    let err = sink::open(
        &format!("http://localhost:{port}/hook?ca={}", pki.ca.display()),
        &options,
    )
    .err()
    .expect("ca= with http:// must be refused");
    assert!(err.to_string().contains("https://"), "{err}");
}
