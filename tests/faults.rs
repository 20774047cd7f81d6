//! Fault injection against `edgeclip run` and the parts it stands on: `kill -9` while the
//! webhook spool is being written and drained, a full disk (a small tmpfs) under the spool,
//! the embedding cache and JSON Lines files, a label file caught half-written or replaced
//! by rename, and a damaged embedding cache or model file.
//!
//! The disk-full tests mount a tmpfs and so need root (CI runs as root); elsewhere they
//! print why they skip. Everything else runs with the committed edgeclip-demo bundle.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeclip::events::Event;
use edgeclip::sink::jsonl::JsonlSink;
use edgeclip::sink::webhook::spool_dir_for;
use edgeclip::sink::{Sink, SinkError, SinkOptions};
use serde_json::Value;

/// These tests run edgeclip processes that use both cores; one at a time keeps their
/// timing (label settle times, kill moments) about the machine, not about each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A webhook receiver whose answer (status, delay) the test changes as it goes, recording
/// every body it answered with a 2xx, in arrival order.
struct Receiver {
    server: Arc<tiny_http::Server>,
    accepted: Arc<Mutex<Vec<Value>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> (Receiver, String) {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind receiver"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, a, st, d) = (
            server.clone(),
            accepted.clone(),
            status.clone(),
            delay_ms.clone(),
        );
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                std::thread::sleep(Duration::from_millis(d.load(Ordering::Relaxed)));
                let code = st.load(Ordering::Relaxed);
                if (200..300).contains(&code) {
                    let v: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("receiver got a torn body ({e}): {body}"));
                    a.lock().unwrap().push(v);
                }
                let _ = req.respond(tiny_http::Response::empty(code));
            }
        });
        let receiver = Receiver {
            server,
            accepted,
            status,
            delay_ms,
            thread: Some(thread),
        };
        (receiver, format!("http://127.0.0.1:{port}/hook"))
    }

    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.accepted().iter().map(id_of).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn id_of(e: &Value) -> String {
    e["id"].as_str().expect("event id").to_string()
}

/// Lines of a JSON Lines file, each of which must parse (a torn line fails the test).
fn jsonl_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line ({e}): {l:?}")))
        .collect()
}

/// Event files of a webhook spool, oldest first, each parsed: a file under a real name
/// that does not parse is a corrupt spool and fails the test. Also counts `.tmp-` files.
fn spool_events(dir: &Path) -> (Vec<Value>, usize) {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => return (Vec::new(), 0),
    };
    names.sort();
    let tmp = names.iter().filter(|n| n.starts_with(".tmp-")).count();
    let events = names
        .iter()
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .map(|n| {
            let bytes = std::fs::read(dir.join(n)).unwrap();
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "corrupt spool file {n} ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        })
        .collect();
    (events, tmp)
}

/// SIGKILL (what `Child::kill` sends on Unix), then reap.
fn kill_9(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// `edgeclip run` on a synthetic camera with `--emit every`: an event per classified frame.
fn every_frame_args<'a>(labels: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--labels",
        labels,
        "--source",
        "cam=pattern:",
        "--capture-fps",
        "25",
        "--fps",
        "25",
        "--emit",
        "every",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn webhook_spool_survives_kill_9_without_loss_corruption_or_reordering() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let (receiver, hook) = Receiver::start();
    let spool = spool_dir_for(&home.path().join("spool"), &hook);
    let log = home.path().join("events.jsonl");
    let jsonl = format!("jsonl:{}", log.display());
    // The webhook comes first, so an event is in the JSON Lines file only after its spool
    // write returned: the file lists events the spool acknowledged. A kill between the two
    // sinks leaves one event spooled but not listed.
    let args = every_frame_args(
        "examples/labels.txt",
        &["--sink", &hook, "--sink", &jsonl, "--no-http"],
    );
    // (receiver status, receiver delay ms, kill delay ms, counted from the first new event
    // (true) or from the start (false)): down receivers, slow ones, kills during start-up
    // (while the previous run's spool drains) and mid-stream.
    let rounds: [(u16, u64, u64, bool); 8] = [
        (200, 0, 1500, true),
        (503, 0, 2000, true),
        (200, 150, 300, false),
        (200, 150, 1200, true),
        (200, 0, 90, true),
        (503, 0, 1500, true),
        (200, 100, 2500, false),
        (200, 60, 700, true),
    ];
    let mut tmp_seen = 0;
    let mut spooled_at_kill = Vec::new();
    for (round, &(status, delay, kill_after, after_event)) in rounds.iter().enumerate() {
        receiver.status.store(status, Ordering::Relaxed);
        receiver.delay_ms.store(delay, Ordering::Relaxed);
        let before = jsonl_lines(&log).len();
        let mut child = common::run_command(home.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgeclip starts");
        if after_event {
            assert!(
                common::wait_until(Duration::from_secs(60), || jsonl_lines(&log).len() > before),
                "round {round}: no event within 60 s"
            );
        }
        std::thread::sleep(Duration::from_millis(kill_after));
        kill_9(&mut child);
        let (events, tmp) = spool_events(&spool);
        tmp_seen += tmp;
        spooled_at_kill.push(events.len());
    }

    // Last run: receiver up; a clean stop after a few frames drains the spool.
    receiver.status.store(200, Ordering::Relaxed);
    receiver.delay_ms.store(0, Ordering::Relaxed);
    let mut last = args.clone();
    last.extend_from_slice(&["--max-frames", "5"]);
    let mut child = common::run_command(home.path(), &last)
        .stdout(Stdio::null())
        .spawn()
        .expect("edgeclip starts");
    let log_text = common::collect_stderr(&mut child);
    let status = child.wait().unwrap();
    let log_text = log_text.join().unwrap();
    assert!(status.success(), "exit {status}; log:\n{log_text}");
    let (left, tmp) = spool_events(&spool);
    assert_eq!(tmp, 0, "temporary files are removed at start");
    assert!(
        left.is_empty(),
        "spool drained, left {}; log:\n{log_text}",
        left.len()
    );

    let listed: Vec<String> = jsonl_lines(&log).iter().map(id_of).collect();
    let got = receiver.accepted();
    let got_ids = receiver.ids();
    let kills = rounds.len();
    // None lost: every event the spool acknowledged reached the receiver.
    let got_set: HashSet<&String> = got_ids.iter().collect();
    let lost: Vec<&String> = listed.iter().filter(|id| !got_set.contains(id)).collect();
    assert!(lost.is_empty(), "lost events: {lost:?}");
    // Order: first deliveries, restricted to listed events, are the listing's order.
    let listed_set: HashSet<&String> = listed.iter().collect();
    let mut first_seen = HashSet::new();
    let order: Vec<&String> = got_ids
        .iter()
        .filter(|id| first_seen.insert(*id) && listed_set.contains(id))
        .collect();
    assert_eq!(order, listed.iter().collect::<Vec<_>>(), "delivery order");
    // Only a kill can make an event spooled but unlisted, or delivered twice (between the
    // 2xx and the deletion of its file); at most one of each per kill, and a repeat is
    // the same event, same id and body.
    let unlisted = first_seen.len() - listed.len();
    let mut by_id: HashMap<String, &Value> = HashMap::new();
    let mut repeats = 0;
    for e in &got {
        if let Some(first) = by_id.insert(id_of(e), e) {
            assert_eq!(first, e, "a repeat carries the same body");
            repeats += 1;
        }
    }
    assert!(
        unlisted <= kills,
        "{unlisted} unlisted events after {kills} kills"
    );
    assert!(repeats <= kills, "{repeats} repeats after {kills} kills");
    eprintln!(
        "kill -9 x{kills}: {} events listed, {} delivered ({repeats} repeated, {unlisted} \
         spooled but not listed), spool sizes at the kills {spooled_at_kill:?}, {tmp_seen} \
         temporary files seen after kills",
        listed.len(),
        got.len()
    );
    assert!(
        spooled_at_kill.iter().any(|&n| n > 0),
        "some kill found a non-empty spool (else the test proves little): {spooled_at_kill:?}"
    );
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one (`size` as mount(8) takes it, `2m`), or prints why not and returns `None`
    /// (mounting needs root; CI runs as root).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs to fill ({}); this test needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount ({e}); this test needs root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `filler` until the file system refuses (the disk is then full); returns
    /// the bytes written.
    fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let mut written = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                    break;
                }
            }
        }
        written
    }

    /// Deletes the filler: room again.
    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn test_event(frame: u64) -> Event {
    Event {
        id: format!("00000000-0000-7000-8000-{frame:012}"),
        ts: "2026-01-01T00:00:00.000Z".into(),
        camera: "door".into(),
        frame,
        label: "cat".into(),
        score: 0.9,
        top: vec![],
        latency_ms: 10.0,
        snapshot: None,
    }
}

fn is_enospc(e: &SinkError) -> bool {
    matches!(e, SinkError::Io { source, .. } if source.raw_os_error() == Some(28))
}

#[test]
fn a_full_disk_under_rotated_json_lines_loses_only_what_it_refused() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let path = fs.path().join("events.jsonl");
    let line = serde_json::to_vec(&test_event(1)).unwrap().len() as u64 + 1;
    let options = SinkOptions {
        jsonl_max_bytes: 20 * line,
        jsonl_keep: 2,
        ..SinkOptions::default()
    };
    let mut sink = JsonlSink::open(&format!("jsonl:{}", path.display()), &options).unwrap();
    let mut taken = Vec::new();
    let mut refused = 0;
    let mut send_all = |sink: &mut JsonlSink, frames: std::ops::RangeInclusive<u64>| {
        for frame in frames {
            match sink.send(&test_event(frame)) {
                Ok(()) => taken.push(frame),
                Err(e) => {
                    assert!(is_enospc(&e), "{e}");
                    assert!(
                        e.to_string().contains("events.jsonl"),
                        "names the file: {e}"
                    );
                    refused += 1;
                }
            }
        }
        refused
    };
    send_all(&mut sink, 1..=30);
    fs.fill();
    // Frames 100+ have longer lines than the room left: some are refused, some may
    // still fit in the last partly used page.
    assert!(
        send_all(&mut sink, 100..=160) > 0,
        "a full disk refuses lines"
    );
    fs.free();
    send_all(&mut sink, 200..=260);
    sink.close(Duration::ZERO).unwrap();
    // Whatever is in the files is whole lines, and exactly the events taken (those the
    // rotation kept: PATH, PATH.1, PATH.2 hold the newest).
    let mut kept: Vec<u64> = Vec::new();
    for p in [
        path.with_extension("jsonl.2"),
        path.with_extension("jsonl.1"),
        path,
    ] {
        kept.extend(jsonl_lines(&p).iter().map(|e| e["frame"].as_u64().unwrap()));
    }
    assert!(!kept.is_empty());
    assert_eq!(
        kept[..],
        taken[taken.len() - kept.len()..],
        "files hold the taken lines"
    );
    assert_eq!(
        *kept.last().unwrap(),
        260,
        "writing resumed after the disk had room"
    );
    eprintln!(
        "jsonl on a full tmpfs: {} lines taken, {refused} refused with ENOSPC",
        taken.len()
    );
}

/// A child's log (stderr), readable while it runs.
struct LiveLog(Arc<Mutex<String>>);

impl LiveLog {
    fn of(child: &mut Child) -> LiveLog {
        let err = child.stderr.take().expect("stderr piped");
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
                let Ok(line) = line else { break };
                let mut t = t.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        LiveLog(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, limit: Duration) {
        assert!(
            common::wait_until(limit, || self.text().contains(needle)),
            "no {needle:?} in the log within {limit:?}:\n{}",
            self.text()
        );
    }
}

/// Events a child prints on stdout (`jsonl:-`), collected as they come.
fn stdout_events(child: &mut Child) -> Arc<Mutex<Vec<Value>>> {
    let out = child.stdout.take().expect("stdout piped");
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            e.lock().unwrap().push(v);
        }
    });
    events
}

fn count(events: &Mutex<Vec<Value>>) -> usize {
    events.lock().unwrap().len()
}

#[test]
fn a_full_disk_under_spool_cache_and_events_keeps_classifying_and_recovers() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    // EDGECLIP_HOME on the tmpfs: the webhook spool and the embedding cache live there.
    let home = fs.path();
    let work = tempfile::tempdir().unwrap();
    let labels = work.path().join("labels.txt");
    std::fs::write(&labels, "cat\ndog\nhorse\n").unwrap();
    let events_file = home.join("events.jsonl");
    let jsonl = format!("jsonl:{}", events_file.display());
    let (receiver, hook) = Receiver::start();
    let filled = fs.fill();

    let mut child = common::run_command(
        home,
        &every_frame_args(
            labels.to_str().unwrap(),
            &[
                "--sink",
                &hook,
                "--sink",
                &jsonl,
                "--sink",
                "jsonl:-",
                "--no-http",
            ],
        ),
    )
    .spawn()
    .expect("edgeclip starts");
    let log = LiveLog::of(&mut child);
    let events = stdout_events(&mut child);

    // Full: classification goes on (events on stdout), the other sinks say why they drop.
    assert!(
        common::wait_until(Duration::from_secs(60), || count(&events) >= 10),
        "no events on stdout while the disk is full; log:\n{}",
        log.text()
    );
    let full_log = log.text();
    assert!(
        full_log.contains("embedding cache") && full_log.contains("No space left on device"),
        "the cache says it cannot write:\n{full_log}"
    );
    let spool_errors = full_log
        .lines()
        .filter(|l| l.contains("not taken") && l.contains("No space left on device"))
        .count();
    assert!(
        spool_errors >= 2,
        "the sinks say why they drop events:\n{full_log}"
    );
    assert!(receiver.ids().is_empty(), "nothing could be spooled");
    let lines_while_full = jsonl_lines(&events_file).len();
    // Every cache write so far came while the start-up labels were embedded, before the
    // first event: the last refusal's retry time is at most WRITE_RETRY from here.
    let cache_retry_due = Instant::now() + edgeclip::cache::WRITE_RETRY;

    // Room again: the spool and the events file resume by themselves.
    fs.free();
    let freed_at = count(&events);
    assert!(
        common::wait_until(Duration::from_secs(30), || receiver.ids().len() >= 3
            && jsonl_lines(&events_file).len() >= lines_while_full + 3),
        "webhook and events file resume once there is room; log:\n{}",
        log.text()
    );
    // The cache writes again with the next new prompt once its retry time has passed,
    // and then holds every prompt, those embedded while the disk was full included.
    std::thread::sleep(cache_retry_due.saturating_duration_since(Instant::now()));
    std::fs::write(&labels, "cat\ndog\nhorse\nbicycle\n").unwrap();
    log.wait_for("writable again", Duration::from_secs(30));
    common::sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", log.text());
    assert!(count(&events) > freed_at, "classification went on");

    let again = common::edgeclip(
        home,
        &[
            "-v",
            "classify",
            "--labels",
            labels.to_str().unwrap(),
            "examples/images/chelsea.png",
        ],
    );
    assert!(again.status.success(), "{}", common::stderr(&again));
    assert!(
        common::stderr(&again).contains("28 cached, 0 embedded"),
        "all 4 labels x 7 templates cached:\n{}",
        common::stderr(&again)
    );
    eprintln!(
        "full tmpfs (filler {filled} bytes): {spool_errors} refusals logged, {} events on \
         stdout, {} delivered after the disk had room",
        count(&events),
        receiver.ids().len()
    );
}

/// `labels.sha256` as `/healthz` shows it: the first 8 bytes of the file's SHA-256, hex.
fn label_sha(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// The `labels` object of `/healthz`.
fn healthz_labels(port: u16) -> Option<Value> {
    let mut r = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .ok()?;
    let body = r.body_mut().read_to_vec().ok()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(v["labels"].clone())
}

/// Writes `parts` into `path` in place (truncated first), one write each, sleeping the
/// paired time after each: a slow or interrupted editor.
fn write_in_parts(path: &Path, parts: &[(&str, u64)]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    for (part, pause_ms) in parts {
        f.write_all(part.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(*pause_ms));
    }
}

#[test]
fn a_label_file_caught_half_written_is_never_applied() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let labels = home.path().join("labels.txt");
    let first = "cat\ndog\n";
    std::fs::write(&labels, first).unwrap();
    let port = common::free_port();
    let http = format!("127.0.0.1:{port}");
    let mut child = common::run_command(
        home.path(),
        &every_frame_args(
            labels.to_str().unwrap(),
            &["--sink", "jsonl:/dev/null", "--http", &http],
        ),
    )
    .stdout(Stdio::null())
    .spawn()
    .expect("edgeclip starts");
    let log = LiveLog::of(&mut child);
    assert!(
        common::wait_until(Duration::from_secs(60), || healthz_labels(port).is_some()),
        "no /healthz within 60 s; log:\n{}",
        log.text()
    );

    // Every label state /healthz ever shows, polled faster than the watcher reads.
    let seen = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(l) = healthz_labels(port) {
                    let state = (l["version"].as_u64().unwrap(), l["sha256"].to_string());
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    // Waits until the poller has recorded `text` (not merely until /healthz shows it, or
    // the poller could be stopped before it records the last state).
    let applied = |text: &str| {
        let sha = format!("{:?}", label_sha(text));
        assert!(
            common::wait_until(Duration::from_secs(20), || seen
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(_, s)| *s == sha)),
            "{text:?} not applied within 20 s; log:\n{}",
            log.text()
        );
    };

    // 1. In place, in several writes 30-100 ms apart, each cut mid-line (a pause at a line
    //    end longer than two polls would look finished: see the labels module).
    let second = "cat\ndog\nhorse\nbicycle\npizza\n";
    write_in_parts(
        &labels,
        &[
            ("cat\ndo", 40),
            ("g\nhor", 100),
            ("se\nbicy", 30),
            ("cle\npiz", 70),
            ("za\n", 0),
        ],
    );
    applied(second);
    // 2. A writer that truncates, stalls, writes half a line and stalls again, each for
    //    longer than two polls: the empty file and `cat dog roc` must not be applied.
    let third = "cat\ndog\nrocket\n";
    write_in_parts(&labels, &[("", 700), ("cat\ndog\nroc", 900), ("ket\n", 0)]);
    applied(third);
    // 3. Replaced by rename: a temporary file written slowly, then moved over the name.
    let fourth = "cat\ndog\nastronaut\nperson: a photo of a person\n";
    let tmp = home.path().join(".labels.txt.tmp");
    std::fs::write(&tmp, "").unwrap();
    write_in_parts(
        &tmp,
        &[
            ("cat\ndog\nastro", 600),
            ("naut\nperson: a photo ", 600),
            ("of a person\n", 0),
        ],
    );
    std::fs::rename(&tmp, &labels).unwrap();
    applied(fourth);

    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let status = healthz_labels(port).unwrap();
    common::sigterm(&child);
    child.wait().unwrap();
    let seen = seen.lock().unwrap().clone();
    let good: Vec<String> = [first, second, third, fourth]
        .iter()
        .map(|t| format!("{:?}", label_sha(t)))
        .collect();
    let expected: Vec<(u64, String)> = (1..=4).zip(good.iter().cloned()).collect();
    assert_eq!(
        seen, expected,
        "only complete label sets, each once, in order"
    );
    assert_eq!(status["reloads"], 3, "{status}");
    assert_eq!(status["reload_errors"], 0, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(log.text().matches("ready (").count(), 3, "{}", log.text());
}

/// `edgeclip -v classify` of one photo with `labels` (and `--model model`, if given).
fn classify(home: &Path, labels: &Path, model: Option<&Path>) -> std::process::Output {
    let mut args = vec!["-v", "classify", "--labels", labels.to_str().unwrap()];
    if let Some(m) = model {
        args.extend_from_slice(&["--model", m.to_str().unwrap()]);
    }
    args.push("examples/images/chelsea.png");
    common::edgeclip(home, &args)
}

/// Asserts `edgeclip` succeeded and its log says all of `needles`; returns the top label.
fn classified(out: &std::process::Output, needles: &[&str]) -> String {
    let log = common::stderr(out);
    assert!(out.status.success(), "{log}");
    for n in needles {
        assert!(log.contains(n), "no {n:?} in:\n{log}");
    }
    common::lines(out)[0]["label"].as_str().unwrap().to_string()
}

#[test]
fn a_corrupt_or_foreign_embedding_cache_is_detected_and_rebuilt() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let labels = home.path().join("labels.txt");
    std::fs::write(&labels, "@templates none\ncat\ndog\n").unwrap();
    let label = classified(
        &classify(home.path(), &labels, None),
        &["0 cached, 2 embedded"],
    );
    let dir = home.path().join("cache/text");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();

    // Another program's file under the cache's name.
    std::fs::write(&file, b"not an embedding cache at all").unwrap();
    let out = classify(home.path(), &labels, None);
    let rebuilt = [
        "written for another model or format; rebuilding",
        "0 cached, 2 embedded",
    ];
    assert_eq!(classified(&out, &rebuilt), label);
    assert_eq!(
        std::fs::read(&file).unwrap().len(),
        good.len(),
        "rebuilt whole"
    );
    classified(
        &classify(home.path(), &labels, None),
        &["2 cached, 0 embedded"],
    );

    // Cut inside the header: also not ours any more.
    std::fs::write(&file, &good[..10]).unwrap();
    assert_eq!(
        classified(&classify(home.path(), &labels, None), &rebuilt),
        label
    );

    // Cut inside the last record (a crash mid-append): the first record is kept.
    std::fs::write(&file, &good[..good.len() - 100]).unwrap();
    let out = classify(home.path(), &labels, None);
    let cut = [
        "damaged after 1 good entries; cut there",
        "1 cached, 1 embedded",
    ];
    assert_eq!(classified(&out, &cut), label);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "repaired to the same bytes"
    );
}

/// Copies the directory tree `src` to `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// Asserts `edgeclip` failed and its error says all of `needles`.
fn refused(out: &std::process::Output, needles: &[&str]) {
    let log = common::stderr(out);
    assert!(!out.status.success(), "ran on a damaged model:\n{log}");
    for n in needles {
        assert!(log.contains(n), "no {n:?} in:\n{log}");
    }
}

#[test]
fn a_truncated_or_altered_model_file_is_refused_with_its_name() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let labels = common::repo().join("examples/labels.txt");
    let bundle = work.path().join("edgeclip-demo");
    copy_dir(&common::repo().join("models/edgeclip-demo"), &bundle);
    let visual = bundle.join("visual.int8.onnx");
    let textual = bundle.join("textual.int8.onnx");
    let (visual_bytes, textual_bytes) = (
        std::fs::read(&visual).unwrap(),
        std::fs::read(&textual).unwrap(),
    );
    // Each case on a fresh home: no memo of an earlier check, no cached text embeddings.
    let run = || classify(tempfile::tempdir().unwrap().path(), &labels, Some(&bundle));
    classified(&run(), &[]);

    // Truncated, with the manifest's sha256 to compare.
    std::fs::write(&visual, &visual_bytes[..visual_bytes.len() / 2]).unwrap();
    refused(&run(), &["visual.int8.onnx: sha256 mismatch", "truncated"]);
    std::fs::write(&visual, &visual_bytes).unwrap();

    // Same size, one byte changed.
    let mut altered = textual_bytes.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x01;
    std::fs::write(&textual, &altered).unwrap();
    refused(&run(), &["textual.int8.onnx: sha256 mismatch"]);
    std::fs::write(&textual, &textual_bytes).unwrap();
    classified(&run(), &[]);

    // A layout without checksums (open_clip export): the truncated graph itself does
    // not load, and the error names the file.
    let Some(openclip) = common::bundle_dir("clip-tiny-seeded-openclip") else {
        return;
    };
    let copy = work.path().join("openclip");
    copy_dir(&openclip, &copy);
    let graph = copy.join("visual/model.onnx");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let out = classify(tempfile::tempdir().unwrap().path(), &labels, Some(&copy));
    refused(&out, &["visual/model.onnx"]);
    eprintln!(
        "truncated graph without a checksum: {}",
        common::stderr(&out).trim()
    );
}
