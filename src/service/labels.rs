//! The live label set: loaded at start, watched, rebuilt on edit, swapped between frames.
//!
//! The watcher owns its own [`Engine`] (tokenizer, text tower, embedding cache), so embedding
//! the prompts of an edited file never stalls inference; only prompts the cache has not seen
//! go through the text tower. A broken edit is logged with its file:line and reported by
//! `/healthz`, and the last good label set keeps running.
//!
//! # When an edit counts as finished
//!
//! The file is read every [`POLL`]. Nothing tells a reader that a writer is done, so a
//! changed file is applied only when
//!
//! 1. two reads in a row, [`POLL`] apart, give the same bytes: a writer that saves in
//!    several writes with pauses shorter than [`POLL`] is still writing at one of them; and
//! 2. if it is empty or its last line has no newline (the state of a file truncated and
//!    not yet written, or caught mid-line), those bytes have been there for
//!    [`INCOMPLETE_SETTLE`]: a writer paused mid-line is waited for, and a file saved
//!    without a final newline (some editors do) still applies, later.
//!
//! A writer that stops for longer than [`POLL`] exactly at a line end leaves a file that
//! looks finished, and it is applied; anything slower than a person saving should write a
//! temporary file and rename it over the label file, which is atomic: the watcher reads
//! the old file or the new one, never a mix (a moment without the name is logged once
//! and the running set kept).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::classify::Classifier;
use crate::encoder::BackendInfo;
use crate::engine::Engine;
use crate::labels::LabelSet;

/// How often the label file is read. Edits apply after two equal reads (so a file caught
/// half-written is not applied), i.e. within 2 × this plus the embedding time.
pub const POLL: Duration = Duration::from_millis(250);

/// How long an empty file, or one whose last line has no newline, must stay unchanged
/// before it is applied (see the [module documentation](self)).
pub const INCOMPLETE_SETTLE: Duration = Duration::from_secs(2);

/// What `/healthz` shows about the labels.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LabelStatus {
    /// The label file.
    pub file: String,
    /// Increments with every label set applied (1 = the one loaded at start).
    pub version: u64,
    /// Labels in the running set.
    pub count: usize,
    /// First 8 bytes of the running file's SHA-256, hex.
    pub sha256: String,
    /// Error of the latest edit that could not be applied; `None` once a good edit lands.
    pub last_error: Option<String>,
    /// Edits applied.
    pub reloads: u64,
    /// Edits rejected.
    pub reload_errors: u64,
}

struct Shared {
    status: Mutex<LabelStatus>,
    pending: Mutex<Option<Arc<Classifier>>>,
    /// What runs the text tower, once the watcher has loaded it.
    text_backend: Mutex<Option<BackendInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle the service keeps: status for `/healthz`, new classifiers for inference.
#[derive(Clone)]
pub struct LiveLabels {
    shared: Arc<Shared>,
}

impl LiveLabels {
    /// The current status.
    pub fn status(&self) -> LabelStatus {
        lock(&self.shared.status).clone()
    }

    /// What runs the text tower (`None` until the watcher has loaded it).
    pub fn text_backend(&self) -> Option<BackendInfo> {
        *lock(&self.shared.text_backend)
    }

    /// A classifier built since the last call, if any (inference swaps it in between frames).
    pub fn take_new(&self) -> Option<Arc<Classifier>> {
        lock(&self.shared.pending).take()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `bytes` may be a writer's unfinished work: empty, or ending mid-line.
fn looks_unfinished(bytes: &[u8]) -> bool {
    !bytes.ends_with(b"\n")
}

fn build(engine: &mut Engine, bytes: &[u8], path: &Path) -> Result<Classifier, String> {
    let set = LabelSet::parse(bytes, &path.display().to_string()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (classifier, stats) = engine.classifier(&set).map_err(|e| e.to_string())?;
    log::info!(
        "labels {}: {} labels, {} prompts ({} embedded, {} from cache) in {:.0} ms",
        path.display(),
        set.labels.len(),
        stats.cached + stats.computed,
        stats.computed,
        stats.cached,
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(classifier)
}

/// Loads the label file once (an error here stops the start: there is no last good set
/// yet), then watches it from a thread until `stop` is set.
pub fn start(
    mut engine: Engine,
    path: PathBuf,
    stop: Arc<AtomicBool>,
) -> Result<(Classifier, LiveLabels, JoinHandle<()>), String> {
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let classifier = build(&mut engine, &bytes, &path)?;
    let mut applied = digest(&bytes);
    let shared = Arc::new(Shared {
        status: Mutex::new(LabelStatus {
            file: path.display().to_string(),
            version: 1,
            count: classifier.matrix().len(),
            sha256: hex::encode(&applied[..8]),
            ..LabelStatus::default()
        }),
        pending: Mutex::new(None),
        text_backend: Mutex::new(engine.text_backend()),
    });
    let live = LiveLabels {
        shared: shared.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("labels".into())
        .spawn(move || {
            // Loaded ahead of the first edit so that an edit costs only its new prompts.
            match engine.load_text_tower() {
                Ok(()) => *lock(&shared.text_backend) = engine.text_backend(),
                Err(e) => log::warn!("text tower: {e}; label edits will fail until it loads"),
            }
            // A content not yet applied, and when it was first read.
            let mut seen: Option<([u8; 32], Instant)> = None;
            let mut last_read_error: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        // Editors that save by rename leave the name missing for a moment:
                        // keep the running set, say so once.
                        let msg = format!("{}: {e}", path.display());
                        if last_read_error.as_deref() != Some(msg.as_str()) {
                            log::warn!("label file unreadable, keeping the running labels: {msg}");
                            last_read_error = Some(msg);
                        }
                        continue;
                    }
                };
                last_read_error = None;
                let d = digest(&bytes);
                if d == applied {
                    seen = None;
                    continue;
                }
                let since = match seen {
                    Some((s, since)) if s == d => since,
                    _ => {
                        // Changed since the last read: wait one more poll for the writer to finish.
                        seen = Some((d, Instant::now()));
                        continue;
                    }
                };
                if looks_unfinished(&bytes) && since.elapsed() < INCOMPLETE_SETTLE {
                    continue;
                }
                seen = None;
                applied = d;
                match build(&mut engine, &bytes, &path) {
                    Ok(c) => {
                        let count = c.matrix().len();
                        *lock(&shared.pending) = Some(Arc::new(c));
                        let mut st = lock(&shared.status);
                        st.version += 1;
                        st.count = count;
                        st.sha256 = hex::encode(&d[..8]);
                        st.last_error = None;
                        st.reloads += 1;
                        log::info!("labels version {} ready ({count} labels)", st.version);
                    }
                    Err(e) => {
                        log::error!("label file edit rejected, keeping the running labels: {e}");
                        let mut st = lock(&shared.status);
                        st.last_error = Some(e);
                        st.reload_errors += 1;
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the label watcher: {e}"))?;
    Ok((classifier, live, handle))
}
