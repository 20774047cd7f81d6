//! `http://…` and `https://…`: POST each event to a URL, with an on-disk spool.
//!
//! `send` only writes the event to the spool directory (one file per event, `seq.json`
//! with a zero-padded sequence number, so that name order is delivery order; written to a
//! temporary name, synced and renamed, so a crash never leaves half an event under a real
//! name). A delivery thread POSTs the files oldest first (`Content-Type: application/json`,
//! the event as body) and deletes each only after a 2xx answer, so events survive a
//! receiver outage, a network outage and a restart of edgeclip itself:
//!
//! - connection errors, time-outs, 5xx, 408 and 429 are retried, the same file again, with
//!   exponential backoff ([`SinkOptions::webhook_retry_min`] doubling up to
//!   [`SinkOptions::webhook_retry_max`], reset by a success): strictly in order, nothing
//!   skipped;
//! - any other 4xx (and a 3xx, which edgeclip does not follow, since a POST body cannot be
//!   replayed safely) is a permanent rejection: the file moves to `rejected/` in the spool
//!   and is logged, so that one bad event cannot block the queue forever;
//! - at start, files left by a previous run are delivered first and new sequence numbers
//!   continue after the largest one found.
//!
//! The spool is `SinkOptions::spool_dir/<first 16 hex digits of SHA-256(URL)>`, one per URL;
//! a lock file keeps two edgeclip processes from delivering the same spool twice.
//!
//! `https://` verifies the receiver's certificate against Mozilla's roots, or, with
//! `ca=FILE` in the query, only against the CA certificates in that PEM file
//! ([`super::tls`]). edgeclip takes `ca=FILE` out of the URL it posts to (and names the spool
//! after that URL); a certificate that is not trusted keeps events spooled and is logged,
//! like any other delivery failure.
//!
//! Delivery is at least once: if edgeclip stops (even by `kill -9`) between the receiver's
//! 2xx and the deletion of the file, that event is posted again on the next start. The
//! event's `id` is written into the spool file with it at `send`, so the repeat carries the
//! same `id` and body: receivers that care de-duplicate on `id`. Nothing else is repeated:
//! one event is in flight at a time, so a crash repeats at most one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::tls::{self, Trust};
use super::{spec_error, Sink, SinkError, SinkOptions};
use crate::events::Event;

/// Digits of a spool file's sequence number: enough for any `u64`, so that lexical order is
/// numeric order.
const SEQ_DIGITS: usize = 20;

/// The spool's subdirectory for permanently rejected events.
pub const REJECTED_DIR: &str = "rejected";

/// Name of the lock file inside a spool directory.
const LOCK_FILE: &str = ".lock";

/// The spool directory for `url` under `spool_root`: one per URL, so that two webhooks never
/// share (or steal) each other's events.
pub fn spool_dir_for(spool_root: &Path, url: &str) -> PathBuf {
    let digest = Sha256::digest(url.as_bytes());
    spool_root.join(&hex::encode(digest)[..16])
}

/// `00000000000000000042.json`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:0width$}.json", width = SEQ_DIGITS)
}

/// The sequence number of a spool file name, or `None` for anything else (temporary files,
/// the lock, `rejected/`, stray files).
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Sequence numbers of the spool files in `dir`, sorted.
pub(crate) fn scan(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
                    seqs.push(seq);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The URL without credentials or query string (which often carries a token), for logs.
fn redact(uri: &ureq::http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let query = if uri.query().is_some() { "?…" } else { "" };
    format!("{scheme}://{host}{port}{}{query}", uri.path())
}

/// A parsed webhook spec.
struct WebhookUrl {
    /// What is posted to: the spec without `ca=FILE`.
    url: String,
    /// The sink's name: the URL without credentials or query string.
    name: String,
    /// `https://`: the roots the receiver is verified against; `None` for `http://`.
    tls: Option<Trust>,
}

impl WebhookUrl {
    fn parse(spec: &str) -> Result<WebhookUrl, SinkError> {
        const FORM: &str = "expected http://HOST[:PORT]/PATH or https://…[?ca=FILE]";
        let (base, query) = match spec.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (spec, None),
        };
        let (ca, rest) = tls::take_ca(query.unwrap_or(""))
            .map_err(|why| spec_error(spec, &format!("{why}; {FORM}")))?;
        // Unchanged (even an empty `?`) unless `ca=` was taken out.
        let url = if ca.is_none() {
            spec.to_string()
        } else if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| spec_error(spec, &format!("not a valid URL ({e})")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(spec_error(spec, FORM)),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(spec_error(spec, FORM));
        }
        if ca.is_some() && !https {
            return Err(spec_error(
                spec,
                &format!("{}=FILE needs TLS: https://", tls::CA_PARAM),
            ));
        }
        Ok(WebhookUrl {
            name: redact(&uri),
            url,
            tls: https.then(|| Trust::from_ca(ca)),
        })
    }
}

/// Checks a webhook URL without opening anything (a CA file is not read); returns the
/// sink's name (the URL without credentials or query string).
pub fn check(url: &str) -> Result<String, SinkError> {
    Ok(WebhookUrl::parse(url)?.name)
}

/// What the sink and its delivery thread share.
struct Shared {
    state: Mutex<State>,
    /// Signals the delivery thread: a new file, or stop.
    wake: Condvar,
    /// Signals `close`: the queue shrank, or the thread ended.
    progress: Condvar,
    /// The spool's lock, held while the sink or its delivery thread lives.
    _lock: File,
}

struct State {
    /// Sequence numbers not yet delivered, oldest first (the front is being delivered).
    queue: VecDeque<u64>,
    /// Set by `close` and drop: the thread ends after its current attempt.
    stop: bool,
    /// Set by `close`: attempts and backoff waits are cut to end by then.
    deadline: Option<Instant>,
    /// The delivery thread has returned.
    finished: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a queue of numbers, consistent at every unlock: a panic elsewhere
        // cannot corrupt it, so keep going rather than propagate the poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The webhook sink. See the [module documentation](self).
pub struct WebhookSink {
    /// The URL without secrets.
    name: String,
    dir: PathBuf,
    next_seq: u64,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// How the delivery thread posts.
struct Delivery {
    name: String,
    url: String,
    dir: PathBuf,
    agent: ureq::Agent,
    timeout: Duration,
    retry_min: Duration,
    retry_max: Duration,
}

/// The outcome of one POST.
enum Outcome {
    /// 2xx: delete the file.
    Delivered,
    /// Never acceptable as is: move the file to `rejected/`.
    Rejected(String),
    /// Try the same file again later.
    Retry(String),
}

impl WebhookSink {
    /// Opens a webhook sink for `url` (`http://…` or `https://…[?ca=FILE]`), taking over
    /// what a previous run left in its spool. A CA file is read here: missing or without
    /// certificates, it is an error naming the file.
    pub fn open(url: &str, options: &SinkOptions) -> Result<WebhookSink, SinkError> {
        let WebhookUrl { url, name, tls } = WebhookUrl::parse(url)?;
        let tls_config = tls.map(|t| t.ureq_config(&name)).transpose()?;
        let dir = spool_dir_for(&options.spool_dir, &url);
        let io_error = |path: &Path, source| SinkError::Io {
            sink: name.clone(),
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SinkError::Failed {
                    sink: name,
                    reason: format!(
                        "spool {} is in use by another edgeclip (or another sink with the \
                         same URL in this one)",
                        dir.display()
                    ),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
        }

        // Temporary files were never renamed, so their `send` never returned: not events
        // anyone was promised. Remove them.
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let pending = scan(&dir).map_err(|e| io_error(&dir, e))?;
        let rejected_dir = dir.join(REJECTED_DIR);
        let rejected = scan(&rejected_dir).map_err(|e| io_error(&rejected_dir, e))?;
        // Continue after the largest number seen anywhere, so a new event can neither sort
        // before an old one nor overwrite a rejected one when it is rejected too.
        let next_seq = pending
            .last()
            .into_iter()
            .chain(rejected.last())
            .max()
            .map_or(1, |last| last + 1);
        if !pending.is_empty() {
            log::info!(
                "{name}: {} events spooled by a previous run in {}; delivering them first",
                pending.len(),
                dir.display()
            );
        }

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: pending.into_iter().collect(),
                stop: false,
                deadline: None,
                finished: false,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            _lock: lock,
        });
        let mut agent = ureq::Agent::config_builder()
            .timeout_global(Some(options.webhook_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("edgeclip/", env!("CARGO_PKG_VERSION")));
        if let Some(tls_config) = tls_config {
            agent = agent.tls_config(tls_config);
        }
        let delivery = Delivery {
            name: name.clone(),
            url,
            dir: dir.clone(),
            agent: agent.build().new_agent(),
            timeout: options.webhook_timeout,
            retry_min: options.webhook_retry_min,
            retry_max: options.webhook_retry_max.max(options.webhook_retry_min),
        };
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("sink {name}"))
            .spawn(move || {
                delivery.run(&thread_shared);
                thread_shared.state().finished = true;
                thread_shared.progress.notify_all();
            })
            .map_err(|e| SinkError::Failed {
                sink: name.clone(),
                reason: format!("cannot start the delivery thread: {e}"),
            })?;
        Ok(WebhookSink {
            name,
            dir,
            next_seq,
            shared,
            thread: Some(thread),
        })
    }

    /// The spool directory of this sink.
    pub fn spool_dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `body` as spool file `seq`: temporary name, data synced, renamed, directory
    /// synced. The real name only ever holds a complete event (a crash or `kill -9` leaves at
    /// most a `.tmp-` file, removed at the next start), and once `send` has returned the
    /// event is on disk, so not even a power cut loses it.
    fn write_spool_file(&self, seq: u64, body: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".tmp-{}", file_name(seq)));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(body)?;
            file.sync_data()?;
            fs::rename(&tmp, self.dir.join(file_name(seq)))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        // The rename is an entry in the directory: without this a power cut may forget an
        // event that `send` reports as taken. Failing here is not failing to spool (the
        // event is under its name and will be delivered), so it is only logged.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            log::warn!(
                "{}: cannot sync {} ({e}); a power cut may lose the newest events",
                self.name,
                self.dir.display()
            );
        }
        Ok(())
    }

    fn stop_thread(&mut self) {
        self.shared.state().stop = true;
        self.shared.wake.notify_all();
    }
}

impl Delivery {
    /// The delivery loop: one file at a time, oldest first, until stopped.
    fn run(&self, shared: &Shared) {
        let mut backoff = self.retry_min;
        // When the receiver became unreachable, while it is.
        let mut down_since: Option<Instant> = None;
        loop {
            let (seq, deadline) = {
                let mut state = shared.state();
                loop {
                    if state.stop || state.deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    if let Some(&seq) = state.queue.front() {
                        break (seq, state.deadline);
                    }
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let path = self.dir.join(file_name(seq));
            let outcome = match fs::read(&path) {
                Ok(body) => {
                    // While closing, an attempt must not outlast the close deadline.
                    let timeout = match deadline {
                        Some(d) => self
                            .timeout
                            .min(d.saturating_duration_since(Instant::now())),
                        None => self.timeout,
                    };
                    if timeout.is_zero() {
                        return; // closing, and out of time
                    }
                    self.post(body, timeout)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    log::warn!(
                        "{}: spooled event {} vanished; skipping it",
                        self.name,
                        path.display()
                    );
                    self.pop(shared, seq);
                    continue;
                }
                Err(e) => Outcome::Retry(format!("cannot read {}: {e}", path.display())),
            };
            match outcome {
                Outcome::Delivered | Outcome::Rejected(_) => {
                    if let Outcome::Rejected(why) = &outcome {
                        self.reject(&path, seq, why);
                    } else if let Err(e) = fs::remove_file(&path) {
                        if e.kind() != io::ErrorKind::NotFound {
                            log::warn!(
                                "{}: delivered {} but cannot delete it ({e}); it will be \
                                 posted again at the next start",
                                self.name,
                                path.display()
                            );
                        }
                    }
                    let left = self.pop(shared, seq);
                    backoff = self.retry_min;
                    if let Some(since) = down_since.take() {
                        log::info!(
                            "{}: receiver is back after {}; delivering {} spooled events",
                            self.name,
                            humantime::format_duration(Duration::from_secs(
                                since.elapsed().as_secs()
                            )),
                            left + 1
                        );
                    }
                }
                Outcome::Retry(why) => {
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        log::warn!(
                            "{}: cannot deliver ({why}); spooling events in {} and retrying",
                            self.name,
                            self.dir.display()
                        );
                    } else {
                        log::debug!("{}: retry failed: {why}", self.name);
                    }
                    let state = shared.state();
                    let wait = match state.deadline {
                        Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                        None => backoff,
                    };
                    if !state.stop {
                        // Woken early by stop, and by a `close` that began since this
                        // attempt did (`deadline` is as it was then): close wants one more
                        // attempt now, not after a backoff of up to `retry_max`. New
                        // events wait their turn.
                        let closing = deadline.is_some();
                        let _ = shared.wake.wait_timeout_while(state, wait, |s| {
                            !s.stop && s.deadline.is_some() == closing
                        });
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
    }

    /// POSTs one event.
    fn post(&self, body: Vec<u8>, timeout: Duration) -> Outcome {
        let result = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .send(&body[..]);
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                let tls_error = match &e {
                    ureq::Error::Rustls(tls_error) => Some(tls_error),
                    ureq::Error::Io(io) => tls::rustls_error_in(io),
                    _ => None,
                };
                return Outcome::Retry(tls::describe(&e, tls_error));
            }
        };
        let status = response.status().as_u16();
        // Read (a bounded part of) the body so the connection can be reused, and to quote
        // it when the receiver explains a rejection.
        let text = response
            .body_mut()
            .with_config()
            .limit(16 * 1024)
            .read_to_vec()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let mut why = if text.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", text.trim())
        };
        if let Some(location) = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .filter(|_| (300..400).contains(&status))
        {
            why.push_str(&format!(
                " (redirect to {location}: edgeclip does not follow redirects, use that URL)"
            ));
        }
        match status {
            200..=299 => Outcome::Delivered,
            408 | 429 | 500..=599 => Outcome::Retry(why),
            _ => Outcome::Rejected(why),
        }
    }

    /// Moves a rejected event to `rejected/`.
    fn reject(&self, path: &Path, seq: u64, why: &str) {
        let rejected = self.dir.join(REJECTED_DIR);
        let target = rejected.join(file_name(seq));
        match fs::create_dir_all(&rejected).and_then(|()| fs::rename(path, &target)) {
            Ok(()) => log::warn!(
                "{}: receiver rejected an event ({why}); kept as {}",
                self.name,
                target.display()
            ),
            Err(e) => {
                log::warn!(
                    "{}: receiver rejected an event ({why}); cannot move it to {} ({e}), \
                     deleting it",
                    self.name,
                    target.display()
                );
                let _ = fs::remove_file(path);
            }
        }
    }

    /// Removes `seq` from the front of the queue; returns how many are left.
    fn pop(&self, shared: &Shared, seq: u64) -> usize {
        let mut state = shared.state();
        if state.queue.front() == Some(&seq) {
            state.queue.pop_front();
        }
        let left = state.queue.len();
        drop(state);
        shared.progress.notify_all();
        left
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let body = serde_json::to_vec(event).map_err(|e| SinkError::Failed {
            sink: self.name.clone(),
            reason: format!("cannot serialise the event: {e}"),
        })?;
        let seq = self.next_seq;
        self.write_spool_file(seq, &body)
            .map_err(|source| SinkError::Io {
                sink: self.name.clone(),
                path: self.dir.join(file_name(seq)).display().to_string(),
                source,
            })?;
        self.next_seq += 1;
        self.shared.state().queue.push_back(seq);
        self.shared.wake.notify_all();
        Ok(())
    }

    fn backlog(&self) -> u64 {
        self.shared.state().queue.len() as u64
    }

    fn close(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        {
            let mut state = self.shared.state();
            state.deadline = Some(deadline);
            self.shared.wake.notify_all();
            // Wait for the queue to drain, or the deadline (the thread returns at the
            // deadline, ending any attempt then).
            while !state.queue.is_empty() && !state.finished {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = match self.shared.progress.wait_timeout(state, left) {
                    Ok((guard, _)) => guard,
                    Err(e) => e.into_inner().0,
                };
            }
        }
        self.stop_thread();
        // The thread's attempts are cut to the deadline, so this join is short; waiting for
        // it means no attempt of ours is still running when a new sink opens this spool.
        let _ = thread.join();
        let left = self.backlog();
        if left > 0 {
            log::warn!(
                "{}: {left} events not delivered; they stay in {} for the next start",
                self.name,
                self.dir.display()
            );
        }
        Ok(())
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        // Without `close`: stop after the current attempt, without waiting for it. The
        // spool keeps whatever is left.
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(frame: u64) -> Event {
        Event {
            id: format!("id-{frame}"),
            ts: "2025-01-01T00:00:00.000Z".to_string(),
            camera: "door".to_string(),
            frame,
            label: "cat".to_string(),
            score: 0.5,
            top: vec![],
            latency_ms: 1.0,
            snapshot: None,
        }
    }

    /// A URL nothing listens on: a port bound and released at once.
    fn dead_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        format!("http://127.0.0.1:{port}/hook?token=secret")
    }

    fn options(root: &Path) -> SinkOptions {
        SinkOptions {
            spool_dir: root.to_path_buf(),
            webhook_retry_min: Duration::from_millis(20),
            webhook_retry_max: Duration::from_millis(50),
            ..SinkOptions::default()
        }
    }

    fn spooled_frames(dir: &Path) -> Vec<u64> {
        scan(dir)
            .unwrap()
            .into_iter()
            .map(|seq| {
                let body = fs::read(dir.join(file_name(seq))).unwrap();
                serde_json::from_slice::<Event>(&body).unwrap().frame
            })
            .collect()
    }

    #[test]
    fn file_names_sort_in_sequence_order() {
        assert_eq!(file_name(42), "00000000000000000042.json");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name(".tmp-00000000000000000042.json"), None);
        assert_eq!(parse_file_name("42.json"), None);
        let mut names: Vec<String> = [10, 9, 100, 1].iter().map(|&s| file_name(s)).collect();
        names.sort();
        let seqs: Vec<u64> = names.iter().filter_map(|n| parse_file_name(n)).collect();
        assert_eq!(seqs, vec![1, 9, 10, 100]);
    }

    #[test]
    fn events_are_spooled_in_order_and_numbering_continues_after_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let url = dead_url();
        let mut sink = WebhookSink::open(&url, &options(root.path())).unwrap();
        assert_eq!(sink.name(), format!("{}?…", url.split('?').next().unwrap()));
        assert!(!sink.name().contains("secret"));
        let dir = sink.spool_dir().to_path_buf();
        assert_eq!(dir, spool_dir_for(root.path(), &url));
        for frame in 1..=3 {
            sink.send(&event(frame)).unwrap();
        }
        assert_eq!(sink.backlog(), 3);
        sink.close(Duration::from_millis(50)).unwrap();
        drop(sink);
        assert_eq!(scan(&dir).unwrap(), vec![1, 2, 3]);

        // A stale temporary file (a crash mid-write) is removed; a rejected file counts
        // for numbering.
        fs::write(dir.join(format!(".tmp-{}", file_name(4))), b"{").unwrap();
        fs::create_dir_all(dir.join(REJECTED_DIR)).unwrap();
        fs::write(dir.join(REJECTED_DIR).join(file_name(7)), b"{}").unwrap();

        let mut sink = WebhookSink::open(&url, &options(root.path())).unwrap();
        assert_eq!(sink.backlog(), 3, "the previous run's files are pending");
        sink.send(&event(4)).unwrap();
        assert_eq!(scan(&dir).unwrap(), vec![1, 2, 3, 8]);
        assert_eq!(spooled_frames(&dir), vec![1, 2, 3, 4]);
        assert!(!dir.join(format!(".tmp-{}", file_name(4))).exists());
        assert_eq!(sink.backlog(), 4);
        sink.close(Duration::ZERO).unwrap();
    }

    #[test]
    fn one_spool_cannot_be_opened_twice() {
        let root = tempfile::tempdir().unwrap();
        let url = dead_url();
        let mut first = WebhookSink::open(&url, &options(root.path())).unwrap();
        let err = WebhookSink::open(&url, &options(root.path()))
            .err()
            .expect("second sink on the same spool must fail");
        assert!(err.to_string().contains("in use"), "{err}");
        first.close(Duration::ZERO).unwrap();
        drop(first);
        let mut again = WebhookSink::open(&url, &options(root.path())).unwrap();
        again.close(Duration::ZERO).unwrap();
    }

    #[test]
    fn bad_urls_are_spec_errors() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["http://", "http:// spaces in host/x", "https:///path"] {
            let err = WebhookSink::open(bad, &options(root.path()))
                .err()
                .unwrap_or_else(|| panic!("{bad} opened"));
            assert!(matches!(err, SinkError::Spec { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("accepted:"), "{err}");
        }
    }
}
