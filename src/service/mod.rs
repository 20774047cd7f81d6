//! `edgeclip run`: cameras in, events out, for as long as the device is up.
//!
//! Threads: one capture loop per camera (reconnecting on its own) writes into that
//! camera's [`LatestSlot`]; one inference loop (this module, the caller's thread) takes the
//! newest frame of each camera in turn, at most `fps` times a second, and hands events to
//! the sinks; the label watcher rebuilds the label matrix when the file changes; the HTTP
//! endpoint reads the shared [`ServiceState`]. Nothing is queued without bound: a frame
//! that inference cannot keep up with is replaced in its slot and counted as dropped.

mod http;
pub mod labels;
pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;

use crate::bundle::{Bundle, Precision};
use crate::classify::Classifier;
use crate::config::{CameraConfig, RunConfig};
use crate::encoder::{Backend, BackendInfo};
use crate::engine::{default_cache_dir, Engine, EngineError, EngineOptions};
use crate::events::{Debouncer, Event};
use crate::sink::{self, Sink, SinkError, SinkOptions};
use crate::source::{
    run_capture, Backoff, CaptureError, CaptureStats, CapturedFrame, LatestSlot, SourceSpec,
};

use metrics::Histogram;

/// How long shutdown waits for sinks to deliver what they hold.
pub const SINK_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the service could not start (once running, failures are counted and logged, not
/// returned).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The model.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The label file at start (no last good set exists yet).
    #[error("labels: {0}")]
    Labels(String),
    /// A camera's source text or device.
    #[error("camera '{camera}': {error}")]
    Source {
        /// The camera.
        camera: String,
        /// The cause.
        error: CaptureError,
    },
    /// A sink.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The health/metrics endpoint.
    #[error("http endpoint {addr}: {reason}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Every camera failed (their errors were logged and are listed here).
    #[error("no camera is running: {0}")]
    NoCamera(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Stop and reload requests, from signals or from the embedding program.
#[derive(Clone, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Control {
    /// A control nothing but [`Control::stop`] triggers.
    pub fn new() -> Control {
        Control::default()
    }

    /// A control wired to SIGINT/SIGTERM (stop: finish the frame in flight, flush sinks; a
    /// second one exits at once with status 1, for a shutdown stuck on a sink) and SIGHUP
    /// (reload the config).
    pub fn with_signals() -> std::io::Result<Control> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let c = Control::new();
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(sig, 1, c.stop.clone())?;
            signal_hook::flag::register(sig, c.stop.clone())?;
        }
        signal_hook::flag::register(SIGHUP, c.reload.clone())?;
        Ok(c)
    }

    /// Asks the service to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Asks the service to re-read its configuration.
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every camera ended (stream closed, replay done, `--max-frames` reached).
    Finished,
    /// Stopped by a signal or [`Control::stop`].
    Stopped,
    /// SIGHUP brought a new, valid configuration: run again with it.
    Reload(Box<RunConfig>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The latest result of one camera, for `/healthz` and MQTT-less polling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastSeen {
    /// Label of the latest classified frame (not necessarily an event).
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// Its capture time.
    pub ts: String,
    /// Its sequence number.
    pub frame: u64,
}

/// One camera as the endpoint sees it.
pub struct CameraStatus {
    /// Name.
    pub name: String,
    /// The source as configured.
    pub source: String,
    /// Its capture counters.
    pub capture: Arc<CaptureStats>,
    /// Its frame slot (captured/dropped counters).
    pub slot: Arc<LatestSlot>,
    /// Frames that could not be decoded or classified.
    pub failed: AtomicU64,
    /// Frames classified.
    pub classified: AtomicU64,
    /// `running`, `ended`, `failed: …`.
    pub state: Mutex<String>,
    /// The latest result.
    pub last: Mutex<Option<LastSeen>>,
    /// The latest decoded frame (whole, before the region-of-interest crop).
    pub latest: Mutex<Option<Arc<RgbImage>>>,
}

/// Per-stage latency histograms.
#[derive(Debug, Default)]
pub struct Stages {
    /// Capture → inference start (time spent waiting in the slot).
    pub queue: Histogram,
    /// Frame → RGB (JPEG decode, YUYV conversion, crop).
    pub decode: Histogram,
    /// Resize, crop, normalise.
    pub preprocess: Histogram,
    /// Image tower.
    pub image: Histogram,
    /// Cosine, softmax, policy.
    pub classify: Histogram,
    /// Handing events to the sinks.
    pub sink: Histogram,
    /// Capture → result (the `latency_ms` of events).
    pub total: Histogram,
}

/// One sink as the endpoint sees it.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Its name.
    pub name: String,
    /// Events handed over.
    pub sent: AtomicU64,
    /// Events it refused.
    pub errors: AtomicU64,
    /// Events it holds undelivered.
    pub backlog: AtomicU64,
}

/// Everything the HTTP endpoint reports.
pub struct ServiceState {
    /// Start time.
    pub started: Instant,
    /// Model name, precision and backend, as logged at start.
    pub model: String,
    /// Tower precision.
    pub precision: Precision,
    /// Image tower backend that runs.
    pub backend: Backend,
    /// Image tower backend and the device it runs on.
    pub image_backend: BackendInfo,
    /// Cameras.
    pub cameras: Vec<Arc<CameraStatus>>,
    /// Labels.
    pub labels: labels::LiveLabels,
    /// Latencies.
    pub stages: Stages,
    /// Events per (camera, label).
    pub events: Mutex<BTreeMap<(String, String), u64>>,
    /// Sinks.
    pub sinks: Vec<Arc<SinkStatus>>,
    /// The latest error anywhere (config reload, sink, camera).
    pub last_error: Mutex<Option<String>>,
}

impl ServiceState {
    fn note_error(&self, e: String) {
        *lock(&self.last_error) = Some(e);
    }
}

struct Camera {
    cfg: CameraConfig,
    status: Arc<CameraStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), CaptureError>>>,
    debouncer: Debouncer,
    next_due: Instant,
    done: bool,
}

/// Checks everything that can be checked without opening devices: the bundle, the label
/// file's syntax, source texts, sink texts, the HTTP address (`--check-config`).
pub fn check(config: &RunConfig) -> Result<Vec<String>, ServiceError> {
    let mut report = Vec::new();
    let bundle = Bundle::open(&config.model).map_err(EngineError::from)?;
    let precision = config
        .precision
        .unwrap_or_else(|| bundle.default_precision());
    bundle
        .visual_file(precision)
        .and_then(|_| bundle.textual_file(precision))
        .map_err(EngineError::from)?;
    report.push(format!(
        "model {} ({}), {precision}",
        bundle.spec.name,
        bundle.root.display()
    ));
    let bytes = std::fs::read(&config.labels)
        .map_err(|e| ServiceError::Labels(format!("{}: {e}", config.labels.display())))?;
    let set = crate::labels::LabelSet::parse(&bytes, &config.labels.display().to_string())
        .map_err(|e| ServiceError::Labels(e.to_string()))?;
    report.push(format!(
        "labels {}: {} labels",
        config.labels.display(),
        set.labels.len()
    ));
    for cam in &config.cameras {
        let spec =
            SourceSpec::parse(&cam.source, cam.capture).map_err(|error| ServiceError::Source {
                camera: cam.name.clone(),
                error,
            })?;
        report.push(format!("camera {}: {spec}", cam.name));
    }
    for s in &config.sinks {
        report.push(format!("sink {}", sink::check(s)?));
    }
    if let Some(addr) = config.http {
        let guard = match (http_token(config)?, &config.http_token_file) {
            (Some(_), Some(file)) => format!(" (bearer token from {})", file.display()),
            _ => String::new(),
        };
        report.push(format!("http http://{addr}/healthz{guard}"));
    }
    Ok(report)
}

/// The endpoint's bearer token, read from its file; `None` without a file or endpoint.
fn http_token(config: &RunConfig) -> Result<Option<http::Token>, ServiceError> {
    let (Some(addr), Some(file)) = (config.http, &config.http_token_file) else {
        return Ok(None);
    };
    http::Token::read(file)
        .map(Some)
        .map_err(|reason| ServiceError::Http {
            addr: addr.to_string(),
            reason,
        })
}

fn open_engine(config: &RunConfig) -> Result<(Engine, Bundle, Precision), ServiceError> {
    let bundle = Bundle::open(&config.model).map_err(EngineError::from)?;
    let precision = config
        .precision
        .unwrap_or_else(|| bundle.default_precision());
    // The inference engine only embeds images; the label watcher's engine owns the cache.
    let options = EngineOptions {
        precision,
        cache_dir: None,
        backend: config.backend,
        ort: config.ort.clone(),
    };
    let engine = Engine::open(bundle.clone(), &options)?;
    Ok((engine, bundle, precision))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The region of interest of `img` (fractions → pixels, at least 1 × 1).
fn crop(img: &RgbImage, roi: [f32; 4]) -> RgbImage {
    let (w, h) = img.dimensions();
    let px = |f: f32, n: u32| ((f * n as f32).round() as u32).min(n);
    let x = px(roi[0], w).min(w.saturating_sub(1));
    let y = px(roi[1], h).min(h.saturating_sub(1));
    let cw = px(roi[2], w).clamp(1, w - x);
    let ch = px(roi[3], h).clamp(1, h - y);
    image::imageops::crop_imm(img, x, y, cw, ch).to_image()
}

/// Encodes `img` as a JPEG (snapshots, `/snapshot.jpg`).
pub fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(img)?;
    Ok(out)
}

fn save_snapshot(dir: &Path, event: &Event, img: &RgbImage) -> Result<PathBuf, String> {
    let dir = dir.join(&event.camera);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp: String = event
        .ts
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let path = dir.join(format!(
        "{stamp}-{}-{}.jpg",
        event.frame,
        event.label.replace(['/', ' '], "_")
    ));
    let bytes = encode_jpeg(img).map_err(|e| e.to_string())?;
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Logs the first few occurrences of a recurring problem, then every 100th.
fn worth_logging(n: u64) -> bool {
    n <= 5 || n.is_multiple_of(100)
}

/// Counts and (rate-limited) logs a frame that could not be decoded or classified.
fn skip_frame(cam: &Camera, seq: u64, e: &dyn std::fmt::Display) {
    let n = cam.status.failed.fetch_add(1, Ordering::Relaxed) + 1;
    if worth_logging(n) {
        log::warn!(
            "camera {} frame {seq}: {e} (skipped; {n} so far)",
            cam.cfg.name
        );
    }
}

struct Inference {
    engine: Engine,
    classifier: Arc<Classifier>,
    sinks: Vec<Box<dyn Sink>>,
    state: Arc<ServiceState>,
}

impl Inference {
    /// Classifies one frame of `cam`; hands an event to the sinks when the policy says so.
    fn process(&mut self, cam: &mut Camera, frame: CapturedFrame) {
        let st = self.state.clone();
        let started = Instant::now();
        st.stages.queue.observe(started - frame.instant);
        let img = match frame.data.into_rgb() {
            Ok(img) => Arc::new(img),
            Err(e) => return skip_frame(cam, frame.seq, &e),
        };
        let cropped;
        let input: &RgbImage = match cam.cfg.roi {
            Some(roi) => {
                cropped = crop(&img, roi);
                &cropped
            }
            None => &img,
        };
        *lock(&cam.status.latest) = Some(img.clone());
        let decoded = Instant::now();
        st.stages.decode.observe(decoded - started);
        let (embedding, timings) = match self.engine.embed_image_timed(input) {
            Ok(r) => r,
            Err(e) => return skip_frame(cam, frame.seq, &e),
        };
        st.stages.preprocess.observe(timings.preprocess);
        st.stages.image.observe(timings.encode);
        let t = Instant::now();
        let prediction = self.classifier.predict(&embedding, cam.cfg.top_k, 0.0);
        let emitted = cam
            .debouncer
            .observe(&prediction.label, prediction.score, frame.instant);
        st.stages.classify.observe(t.elapsed());
        let latency = frame.instant.elapsed();
        st.stages.total.observe(latency);
        cam.status.classified.fetch_add(1, Ordering::Relaxed);
        let ts = rfc3339(frame.captured_at);
        let shown = if prediction.score >= cam.cfg.policy.threshold {
            prediction.label.clone()
        } else {
            crate::classify::UNKNOWN.to_string()
        };
        *lock(&cam.status.last) = Some(LastSeen {
            label: shown,
            score: prediction.score,
            ts: ts.clone(),
            frame: frame.seq,
        });
        let Some(label) = emitted else { return };
        let mut event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            ts,
            camera: cam.cfg.name.clone(),
            frame: frame.seq,
            label,
            score: prediction.score,
            top: prediction.top,
            latency_ms: latency.as_secs_f64() * 1e3,
            snapshot: None,
        };
        if let Some(dir) = &cam.cfg.snapshot_dir {
            match save_snapshot(dir, &event, &img) {
                Ok(p) => event.snapshot = Some(p.display().to_string()),
                Err(e) => {
                    log::warn!("camera {}: snapshot not saved: {e}", cam.cfg.name);
                    st.note_error(format!("snapshot: {e}"));
                }
            }
        }
        *lock(&st.events)
            .entry((event.camera.clone(), event.label.clone()))
            .or_default() += 1;
        let t = Instant::now();
        self.dispatch(&event);
        st.stages.sink.observe(t.elapsed());
    }

    fn dispatch(&mut self, event: &Event) {
        for (sink, status) in self.sinks.iter_mut().zip(&self.state.sinks) {
            match sink.send(event) {
                Ok(()) => {
                    status.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let n = status.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if worth_logging(n) {
                        log::warn!("event {} not taken: {e}", event.id);
                    }
                    self.state.note_error(e.to_string());
                }
            }
            status.backlog.store(sink.backlog(), Ordering::Relaxed);
        }
    }

    fn announce(&mut self, cameras: &[String]) {
        let names = self.classifier.matrix().names().to_vec();
        for sink in &mut self.sinks {
            if let Err(e) = sink.announce(cameras, &names) {
                log::warn!("{e}");
                self.state.note_error(e.to_string());
            }
        }
    }

    fn refresh_backlogs(&self) {
        for (sink, status) in self.sinks.iter().zip(&self.state.sinks) {
            status.backlog.store(sink.backlog(), Ordering::Relaxed);
        }
    }
}

/// Runs the service until every camera ends, a stop is requested, or SIGHUP brings a new
/// valid configuration (`reconfigure` re-reads it; an invalid one is logged and ignored).
pub fn run(
    config: &RunConfig,
    control: &Control,
    reconfigure: &dyn Fn() -> Result<RunConfig, String>,
) -> Result<Outcome, ServiceError> {
    // Validate every source text before opening anything.
    let mut specs = Vec::with_capacity(config.cameras.len());
    for cam in &config.cameras {
        specs.push(
            SourceSpec::parse(&cam.source, cam.capture).map_err(|error| ServiceError::Source {
                camera: cam.name.clone(),
                error,
            })?,
        );
    }
    // Before the model loads: a bad token file fails at once.
    let http_token = http_token(config)?;
    let sink_options = SinkOptions::default();
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for s in &config.sinks {
        sinks.push(sink::open(s, &sink_options)?);
    }

    let (mut engine, bundle, precision) = open_engine(config)?;
    let t = Instant::now();
    let image_backend = engine.load_image_tower()?.info();
    let backend = image_backend.backend;
    log::info!(
        "model {} ({}), {precision} towers, image tower on {image_backend} loaded in {:.0} ms",
        bundle.spec.name,
        bundle.root.display(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let text_engine = Engine::open(
        bundle.clone(),
        &EngineOptions {
            precision,
            cache_dir: config.cache.then(default_cache_dir),
            backend: config.backend,
            ort: config.ort.clone(),
        },
    )?;
    let labels_stop = Arc::new(AtomicBool::new(false));
    let (classifier, live, labels_thread) =
        labels::start(text_engine, config.labels.clone(), labels_stop.clone())
            .map_err(ServiceError::Labels)?;

    let mut cameras = Vec::with_capacity(config.cameras.len());
    for (cfg, spec) in config.cameras.iter().zip(specs) {
        let status = Arc::new(CameraStatus {
            name: cfg.name.clone(),
            source: spec.to_string(),
            capture: Arc::new(CaptureStats::default()),
            slot: Arc::new(LatestSlot::new()),
            failed: AtomicU64::new(0),
            classified: AtomicU64::new(0),
            state: Mutex::new("starting".into()),
            last: Mutex::new(None),
            latest: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, stop, name) = (status.clone(), stop.clone(), cfg.name.clone());
            std::thread::Builder::new()
                .name(format!("capture-{name}"))
                .spawn(move || {
                    let result = spec.open().and_then(|source| {
                        log::info!("camera {name}: {}", source.describe());
                        *lock(&status.state) = "running".into();
                        run_capture(
                            source,
                            &status.slot,
                            &stop,
                            &status.capture,
                            Backoff::default(),
                        )
                    });
                    // The slot may already be closed by the loop; closing twice is harmless
                    // and guarantees inference sees the end on every path.
                    status.slot.close();
                    *lock(&status.state) = match &result {
                        Ok(()) => "ended".into(),
                        Err(e) => format!("failed: {e}"),
                    };
                    result
                })
                .map_err(ServiceError::Thread)?
        };
        cameras.push(Camera {
            debouncer: Debouncer::new(cfg.policy.clone()),
            cfg: cfg.clone(),
            status,
            stop,
            thread: Some(thread),
            next_due: Instant::now(),
            done: false,
        });
    }

    let state = Arc::new(ServiceState {
        started: Instant::now(),
        model: bundle.spec.name.clone(),
        precision,
        backend,
        image_backend,
        cameras: cameras.iter().map(|c| c.status.clone()).collect(),
        labels: live.clone(),
        stages: Stages::default(),
        events: Mutex::new(BTreeMap::new()),
        sinks: sinks
            .iter()
            .map(|s| {
                Arc::new(SinkStatus {
                    name: s.name(),
                    ..SinkStatus::default()
                })
            })
            .collect(),
        last_error: Mutex::new(None),
    });
    let server = match config.http {
        Some(addr) => Some(http::serve(addr, http_token, state.clone())?),
        None => None,
    };

    let camera_names: Vec<String> = cameras.iter().map(|c| c.cfg.name.clone()).collect();
    let mut inference = Inference {
        engine,
        classifier: Arc::new(classifier),
        sinks,
        state: state.clone(),
    };
    inference.announce(&camera_names);

    let mut next = 0usize;
    let outcome = loop {
        if control.stopping() {
            log::info!("stopping: finishing up");
            break Outcome::Stopped;
        }
        if control.reload.swap(false, Ordering::Relaxed) {
            match reconfigure() {
                Ok(new) if new == *config => log::info!("SIGHUP: configuration unchanged"),
                Ok(new) => {
                    log::info!("SIGHUP: configuration changed, restarting the pipeline");
                    break Outcome::Reload(Box::new(new));
                }
                Err(e) => {
                    log::error!("SIGHUP: new configuration rejected, keeping the running one: {e}");
                    state.note_error(format!("config reload: {e}"));
                }
            }
        }
        if let Some(c) = live.take_new() {
            inference.classifier = c;
            // The old labels' history means nothing for the new set.
            for cam in &mut cameras {
                cam.debouncer.reset();
            }
            inference.announce(&camera_names);
        }

        // Round-robin over the cameras that are due; the first with a frame is served.
        let now = Instant::now();
        let mut served = false;
        let mut active = 0;
        for k in 0..cameras.len() {
            let i = (next + k) % cameras.len();
            let cam = &mut cameras[i];
            if cam.done {
                continue;
            }
            if cam.status.slot.is_finished() {
                cam.done = true;
                continue;
            }
            active += 1;
            if served || now < cam.next_due {
                continue;
            }
            let Some(frame) = cam.status.slot.try_take() else {
                continue;
            };
            if let Some(fps) = cam.cfg.fps {
                cam.next_due = now + Duration::from_secs_f64(1.0 / fps as f64);
            }
            inference.process(cam, frame);
            if let Some(max) = config.max_frames {
                if cam.status.classified.load(Ordering::Relaxed) >= max {
                    log::info!("camera {}: {max} frames classified, done", cam.cfg.name);
                    cam.stop.store(true, Ordering::Relaxed);
                    cam.done = true;
                }
            }
            next = i + 1;
            served = true;
        }
        if active == 0 {
            break Outcome::Finished;
        }
        if !served {
            inference.refresh_backlogs();
            // Wait for a frame: block on the slot when one camera is due, else nap briefly
            // until the next one is.
            let now = Instant::now();
            let due: Vec<&Camera> = cameras.iter().filter(|c| !c.done).collect();
            match due.as_slice() {
                [one] if now >= one.next_due => {
                    one.status.slot.wait_for_frame(Duration::from_millis(100));
                }
                _ => {
                    let wait = due
                        .iter()
                        .map(|c| c.next_due.saturating_duration_since(now))
                        .min()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(2), Duration::from_millis(20));
                    std::thread::sleep(wait);
                }
            }
        }
    };

    // Shutdown: stop capture, deliver what the sinks hold, stop the endpoint and watcher.
    for cam in &cameras {
        cam.stop.store(true, Ordering::Relaxed);
    }
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    for cam in &mut cameras {
        // A capture thread blocked in a read (stdin, a stalled stream) cannot be
        // interrupted; it is left to end with the process rather than hang shutdown.
        while cam.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(t) = cam.thread.take_if(|t| t.is_finished()) {
            match t.join() {
                Ok(Err(e)) => failures.push(format!("{}: {e}", cam.cfg.name)),
                Err(_) => failures.push(format!("{}: capture thread panicked", cam.cfg.name)),
                Ok(Ok(())) => {}
            }
        }
    }
    for (sink, status) in inference.sinks.iter_mut().zip(&state.sinks) {
        if let Err(e) = sink.close(SINK_CLOSE_TIMEOUT) {
            log::warn!("{e}");
        }
        let left = sink.backlog();
        status.backlog.store(left, Ordering::Relaxed);
        if left > 0 {
            log::warn!(
                "{}: {left} events not delivered yet (kept for the next start)",
                status.name
            );
        }
    }
    if let Some(s) = server {
        s.stop();
    }
    labels_stop.store(true, Ordering::Relaxed);
    let _ = labels_thread.join();
    log_summary(&state);

    let classified: u64 = state
        .cameras
        .iter()
        .map(|c| c.classified.load(Ordering::Relaxed))
        .sum();
    if matches!(outcome, Outcome::Finished) && classified == 0 && failures.len() == cameras.len() {
        return Err(ServiceError::NoCamera(failures.join("; ")));
    }
    for f in &failures {
        log::error!("camera {f}");
    }
    Ok(outcome)
}

fn log_summary(state: &ServiceState) {
    let secs = state.started.elapsed().as_secs_f64();
    for c in &state.cameras {
        let slot = c.slot.stats();
        let classified = c.classified.load(Ordering::Relaxed);
        log::info!(
            "camera {}: {} captured, {} dropped, {classified} classified ({:.2}/s over {secs:.1} s), {} failed, {} corrupt, {} reconnects",
            c.name,
            slot.captured,
            slot.dropped,
            classified as f64 / secs.max(1e-9),
            c.failed.load(Ordering::Relaxed),
            c.capture.corrupt.load(Ordering::Relaxed),
            c.capture.reconnects.load(Ordering::Relaxed),
        );
    }
    let s = &state.stages;
    log::info!(
        "mean latency (ms): queue {:.1}, decode {:.1}, preprocess {:.1}, image {:.1}, classify {:.2}, sinks {:.2}, capture→result {:.1}",
        s.queue.mean_ms(),
        s.decode.mean_ms(),
        s.preprocess.mean_ms(),
        s.image.mean_ms(),
        s.classify.mean_ms(),
        s.sink.mean_ms(),
        s.total.mean_ms()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_crop_is_clamped_to_the_frame() {
        let img = RgbImage::from_fn(100, 50, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop(&img, [0.5, 0.0, 0.5, 1.0]);
        assert_eq!(c.dimensions(), (50, 50));
        assert_eq!(c.get_pixel(0, 0).0, [50, 0, 0]);
        let tiny = crop(&img, [0.999, 0.999, 0.0001, 0.0001]);
        assert_eq!(tiny.dimensions(), (1, 1));
    }
}
