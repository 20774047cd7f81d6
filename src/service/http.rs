//! The operations endpoint: `/healthz` (JSON), `/metrics` (Prometheus text), `/snapshot.jpg`.
//!
//! Read-only and bound to loopback by default: it shows what the device sees, so exposing
//! it beyond the host is the operator's explicit choice (`--http 0.0.0.0:9464`), logged as a
//! warning unless a bearer token guards it (`--http-token-file`). With a token, every route
//! answers 401 (`WWW-Authenticate: Bearer`) to a request without `Authorization: Bearer
//! TOKEN`.
//!
//! The four routes are fixed strings: no part of a request names a file, so no request can
//! read the filesystem (`/../../etc/passwd` is just an unknown route, 404).

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::json;
use sha2::{Digest, Sha256};
use tiny_http::{Header, Request, Response, Server};

use super::metrics::{header, label_value};
use super::{lock, ServiceError, ServiceState};
use crate::encoder::BackendInfo;

/// A running endpoint.
pub(super) struct HttpServer {
    server: Arc<Server>,
    thread: JoinHandle<()>,
}

impl HttpServer {
    /// Stops accepting requests and waits for the serving thread.
    pub(super) fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

/// The bearer token requests must carry. Only its SHA-256 is kept: comparing digests takes
/// the same time whatever the guess and whatever its length, so timing tells an attacker
/// nothing about the token.
pub(super) struct Token {
    digest: [u8; 32],
}

impl Token {
    /// Reads the token from `path`: the file's text without surrounding white space; empty,
    /// unreadable or not a valid token (printable ASCII, no spaces) is an error naming the
    /// file.
    pub(super) fn read(path: &Path) -> Result<Token, String> {
        let fail = |why: String| format!("token file {}: {why}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail("empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            ));
        }
        Ok(Token::new(token))
    }

    fn new(token: &str) -> Token {
        Token {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether an `Authorization` header value is `Bearer` with this token.
    fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some((scheme, given)) = authorization.and_then(|v| v.trim().split_once(' ')) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        let differing = given
            .iter()
            .zip(&self.digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Both halves always evaluated: no early exit on the scheme either.
        scheme.eq_ignore_ascii_case("bearer") & (differing == 0)
    }
}

/// The routes. Fixed strings only: a request path never reaches the filesystem.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Index,
    Healthz,
    Metrics,
    Snapshot,
    NotFound,
}

fn route(path: &str) -> Route {
    match path {
        "/" => Route::Index,
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        "/snapshot.jpg" => Route::Snapshot,
        _ => Route::NotFound,
    }
}

/// Starts serving `state` on `addr`; with a `token`, only to requests that carry it.
pub(super) fn serve(
    addr: SocketAddr,
    token: Option<Token>,
    state: Arc<ServiceState>,
) -> Result<HttpServer, ServiceError> {
    let server = Arc::new(Server::http(addr).map_err(|e| ServiceError::Http {
        addr: addr.to_string(),
        reason: format!("{e} (another edgeclip running? pick a port with --http, or --no-http)"),
    })?);
    // With port 0 the system picks the port: log the one bound, so it can be found.
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    log::info!("health and metrics on http://{bound}/healthz and /metrics");
    if token.is_none() && !addr.ip().is_loopback() {
        log::warn!(
            "http endpoint {addr} is reachable beyond this host and has no token: anyone who \
             can reach it sees the cameras (/snapshot.jpg); set --http-token-file"
        );
    }
    let thread = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    let response = match &token {
                        Some(token) if !token.accepts(authorization(&request)) => unauthorized(),
                        _ => respond(&request, &state),
                    };
                    if let Err(e) = request.respond(response) {
                        log::debug!("http: {e}");
                    }
                }
            })
            .map_err(ServiceError::Thread)?
    };
    Ok(HttpServer { server, thread })
}

type Body = Response<std::io::Cursor<Vec<u8>>>;

/// The answer to an authorised request.
fn respond(request: &Request, state: &ServiceState) -> Body {
    let url = request.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match route(path) {
        Route::Healthz => json_response(&healthz(state)),
        Route::Metrics => text_response(
            metrics(state),
            "text/plain; version=0.0.4; charset=utf-8",
            200,
        ),
        Route::Snapshot => snapshot(state, query),
        Route::Index => text_response(
            "edgeclip: /healthz /metrics /snapshot.jpg?camera=NAME\n".into(),
            "text/plain; charset=utf-8",
            200,
        ),
        Route::NotFound => text_response("not found\n".into(), "text/plain", 404),
    }
}

/// The request's `Authorization` header, if any.
fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str())
}

/// 401, telling the client which scheme to use (RFC 6750).
fn unauthorized() -> Body {
    let body = text_response(
        "a bearer token is required (Authorization: Bearer TOKEN)\n".into(),
        "text/plain; charset=utf-8",
        401,
    );
    match Header::from_bytes("WWW-Authenticate", r#"Bearer realm="edgeclip""#) {
        Ok(h) => body.with_header(h),
        Err(()) => body,
    }
}

fn with_type(r: Body, content_type: &str) -> Body {
    match Header::from_bytes("Content-Type", content_type) {
        Ok(h) => r.with_header(h),
        Err(()) => r,
    }
}

fn text_response(body: String, content_type: &str, status: u16) -> Body {
    with_type(
        Response::from_data(body.into_bytes()).with_status_code(status),
        content_type,
    )
}

fn json_response(v: &serde_json::Value) -> Body {
    text_response(format!("{v}\n"), "application/json", 200)
}

/// `running`, `reconnecting` (lost, being reopened with backoff), `starting`, `ended`
/// or `failed: …`.
fn camera_state(c: &super::CameraStatus) -> String {
    let state = lock(&c.state).clone();
    if state == "running" && !c.capture.connected.load(Ordering::Relaxed) {
        "reconnecting".into()
    } else {
        state
    }
}

/// The `/healthz` document.
pub(super) fn healthz(state: &ServiceState) -> serde_json::Value {
    let labels = state.labels.status();
    let cameras: Vec<_> = state
        .cameras
        .iter()
        .map(|c| {
            let slot = c.slot.stats();
            json!({
                "name": c.name,
                "source": c.source,
                "state": camera_state(c),
                "frames_captured": slot.captured,
                "frames_dropped": slot.dropped,
                "frames_classified": c.classified.load(Ordering::Relaxed),
                "frames_failed": c.failed.load(Ordering::Relaxed) + c.capture.corrupt.load(Ordering::Relaxed),
                "reconnects": c.capture.reconnects.load(Ordering::Relaxed),
                "last": *lock(&c.last),
                "last_error": c.capture.last_error(),
            })
        })
        .collect();
    let sinks: Vec<_> = state
        .sinks
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "sent": s.sent.load(Ordering::Relaxed),
                "errors": s.errors.load(Ordering::Relaxed),
                "backlog": s.backlog.load(Ordering::Relaxed),
            })
        })
        .collect();
    let all_running = state.cameras.iter().all(|c| camera_state(c) == "running");
    let status = if labels.last_error.is_none() && all_running {
        "ok"
    } else {
        "degraded"
    };
    json!({
        "status": status,
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "model": state.model,
        "precision": state.precision.to_string(),
        "backend": state.backend.to_string(),
        "provider": state.image_backend.provider_label(),
        "towers": {
            "visual": backend_json(Some(state.image_backend)),
            "textual": backend_json(state.labels.text_backend()),
        },
        "cameras": cameras,
        "labels": labels,
        "sinks": sinks,
        "last_error": *lock(&state.last_error),
    })
}

/// A tower's backend for `/healthz` (`null` while the tower is not loaded).
fn backend_json(info: Option<BackendInfo>) -> serde_json::Value {
    match info {
        Some(b) => json!({"backend": b.backend.to_string(), "provider": b.provider_label()}),
        None => serde_json::Value::Null,
    }
}

/// One metric family with one line per item, labelled `key="name"`.
#[allow(clippy::too_many_arguments)]
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    key: &str,
    items: &[&T],
    item_name: impl Fn(&T) -> &str,
    value: &dyn Fn(&T) -> u64,
) {
    header(out, name, kind, help);
    for item in items {
        let _ = writeln!(
            out,
            "{name}{{{key}=\"{}\"}} {}",
            label_value(item_name(item)),
            value(item)
        );
    }
}

/// The `/metrics` text.
pub(super) fn metrics(state: &ServiceState) -> String {
    let mut out = String::new();
    let cameras: Vec<&super::CameraStatus> = state.cameras.iter().map(|c| &**c).collect();
    let per_camera =
        |out: &mut String, name: &str, help: &str, f: &dyn Fn(&super::CameraStatus) -> u64| {
            family(
                out,
                name,
                "counter",
                help,
                "camera",
                &cameras,
                |c| &c.name,
                f,
            );
        };
    per_camera(
        &mut out,
        "edgeclip_frames_captured_total",
        "Frames captured.",
        &|c| c.slot.stats().captured,
    );
    per_camera(
        &mut out,
        "edgeclip_frames_dropped_total",
        "Frames replaced by a newer one before inference took them.",
        &|c| c.slot.stats().dropped,
    );
    per_camera(
        &mut out,
        "edgeclip_frames_failed_total",
        "Frames that could not be read, decoded or classified.",
        &|c| c.failed.load(Ordering::Relaxed) + c.capture.corrupt.load(Ordering::Relaxed),
    );
    per_camera(
        &mut out,
        "edgeclip_frames_classified_total",
        "Frames classified.",
        &|c| c.classified.load(Ordering::Relaxed),
    );
    per_camera(
        &mut out,
        "edgeclip_reconnects_total",
        "Reconnections after the source was lost.",
        &|c| c.capture.reconnects.load(Ordering::Relaxed),
    );

    let name = "edgeclip_stage_seconds";
    header(&mut out, name, "histogram", "Latency per pipeline stage.");
    let s = &state.stages;
    for (stage, h) in [
        ("queue", &s.queue),
        ("decode", &s.decode),
        ("preprocess", &s.preprocess),
        ("image", &s.image),
        ("classify", &s.classify),
        ("sink", &s.sink),
        ("total", &s.total),
    ] {
        h.write(&mut out, name, &format!("stage=\"{stage}\""));
    }

    let name = "edgeclip_events_total";
    header(
        &mut out,
        name,
        "counter",
        "Events emitted, per camera and label.",
    );
    for ((camera, label), n) in lock(&state.events).iter() {
        let _ = writeln!(
            out,
            "{name}{{camera=\"{}\",label=\"{}\"}} {n}",
            label_value(camera),
            label_value(label)
        );
    }

    let labels = state.labels.status();
    let name = "edgeclip_label_reloads_total";
    header(
        &mut out,
        name,
        "counter",
        "Label-file edits applied (ok) or rejected (error).",
    );
    let _ = writeln!(out, "{name}{{result=\"ok\"}} {}", labels.reloads);
    let _ = writeln!(out, "{name}{{result=\"error\"}} {}", labels.reload_errors);
    let name = "edgeclip_labels";
    header(&mut out, name, "gauge", "Labels in the running set.");
    let _ = writeln!(out, "{name} {}", labels.count);
    let name = "edgeclip_labels_version";
    header(
        &mut out,
        name,
        "gauge",
        "Version of the running label set (1 at start).",
    );
    let _ = writeln!(out, "{name} {}", labels.version);

    let sinks: Vec<&super::SinkStatus> = state.sinks.iter().map(|s| &**s).collect();
    let per_sink = |out: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    f: &dyn Fn(&super::SinkStatus) -> u64| {
        family(out, name, kind, help, "sink", &sinks, |s| &s.name, f);
    };
    per_sink(
        &mut out,
        "edgeclip_sink_backlog",
        "gauge",
        "Events held by a sink, not yet delivered.",
        &|s| s.backlog.load(Ordering::Relaxed),
    );
    per_sink(
        &mut out,
        "edgeclip_sink_errors_total",
        "counter",
        "Events a sink refused.",
        &|s| s.errors.load(Ordering::Relaxed),
    );
    let name = "edgeclip_backend_info";
    header(
        &mut out,
        name,
        "gauge",
        "What runs each tower: backend (tract, native, ort) and device (CPU, CUDA, TensorRT, TensorRT fp16); always 1.",
    );
    let towers = [
        ("visual", Some(state.image_backend)),
        ("textual", state.labels.text_backend()),
    ];
    for (tower, info) in towers {
        if let Some(b) = info {
            let _ = writeln!(
                out,
                "{name}{{tower=\"{tower}\",backend=\"{}\",provider=\"{}\"}} 1",
                b.backend,
                label_value(&b.provider_label())
            );
        }
    }
    let name = "edgeclip_uptime_seconds";
    header(
        &mut out,
        name,
        "gauge",
        "Seconds since the pipeline started.",
    );
    let _ = writeln!(out, "{name} {}", state.started.elapsed().as_secs_f64());
    out
}

fn snapshot(state: &ServiceState, query: &str) -> Body {
    let wanted = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("camera="))
        .map(|v| v.to_string());
    let camera = match &wanted {
        Some(name) => state.cameras.iter().find(|c| &c.name == name),
        None => state.cameras.first(),
    };
    let Some(camera) = camera else {
        let names: Vec<_> = state.cameras.iter().map(|c| c.name.as_str()).collect();
        return text_response(
            format!(
                "no camera '{}'; cameras: {}\n",
                wanted.unwrap_or_default(),
                names.join(", ")
            ),
            "text/plain; charset=utf-8",
            404,
        );
    };
    let Some(img) = lock(&camera.latest).clone() else {
        return text_response(
            format!("camera '{}' has no frame yet\n", camera.name),
            "text/plain; charset=utf-8",
            503,
        );
    };
    match super::encode_jpeg(&img) {
        Ok(bytes) => with_type(Response::from_data(bytes), "image/jpeg"),
        Err(e) => text_response(format!("{e}\n"), "text/plain", 500),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_a_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-Token_1\n").unwrap();
        let token = Token::read(&file).unwrap();
        assert!(token.accepts(Some("Bearer s3cret-Token_1")));
        assert!(token.accepts(Some("bearer s3cret-Token_1")));
        for wrong in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cret-Token_"),
            Some("Bearer s3cret-Token_12"),
            Some("Basic s3cret-Token_1"),
            Some("s3cret-Token_1"),
        ] {
            assert!(!token.accepts(wrong), "{wrong:?} accepted");
        }

        for (text, why) in [
            ("", "empty"),
            (" \n\t", "empty"),
            ("two words", "printable ASCII"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Token::read(&file).err().expect("bad token file accepted");
            assert!(
                err.contains(&file.display().to_string()) && err.contains(why),
                "{err}"
            );
        }
        let missing = dir.path().join("missing");
        let err = Token::read(&missing).err().expect("missing file accepted");
        assert!(
            err.contains("token file") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn only_fixed_paths_are_routes() {
        assert_eq!(route("/healthz"), Route::Healthz);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/snapshot.jpg"), Route::Snapshot);
        assert_eq!(route("/"), Route::Index);
        for path in [
            "/../../etc/passwd",
            "/..%2f..%2fetc%2fpasswd",
            "//etc/passwd",
            "/healthz/../../etc/passwd",
            "/healthz/",
            "/snapshot.jpg/../x",
            "",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
    }
}
