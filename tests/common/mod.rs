//! Helpers shared by the integration tests: where the prepared model bundles,
//! fixtures and shared datasets live, and one policy for when they are absent.
//!
//! Fixtures are produced outside `cargo test` (by `models/prepare`) and the
//! datasets live in `../shared`, so a fresh checkout may lack them. A test that
//! needs them should skip with a clear message rather than fail obscurely —
//! except on CI, which sets `EDGECLIP_REQUIRE_FIXTURES=1` so that a missing
//! fixture can never turn into a silently green run.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The CIFAR-10 class names, in the data set's order (its folder names under `cifar10/test`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// One reference photo of a fixture set (`images.jsonl`): its path under the shared
/// datasets and the reference embeddings at both precisions.
#[derive(serde::Deserialize)]
pub struct ImageRef {
    /// Path relative to `../shared/datasets`.
    pub path: String,
    /// PyTorch / onnxruntime fp32 embedding.
    pub fp32: Vec<f32>,
    /// onnxruntime int8 embedding.
    pub int8: Vec<f32>,
}

/// One reference text of a fixture set (`texts.jsonl`): its token ids and embeddings.
#[derive(serde::Deserialize)]
pub struct TextRef {
    /// The text as written.
    pub text: String,
    /// Token ids from the family's reference tokenizer, padded to the context.
    pub ids: Vec<i64>,
    /// Reference fp32 embedding.
    pub fp32: Vec<f32>,
    /// Reference int8 embedding.
    pub int8: Vec<f32>,
}

/// Environment variable that turns "fixture missing" from a skip into a failure.
pub const REQUIRE_FIXTURES_ENV: &str = "EDGECLIP_REQUIRE_FIXTURES";

/// Root of edgeclip's data: `$EDGECLIP_HOME`, or `$HOME/.cache/edgeclip`.
///
/// Mirrors what the binary uses, so tests read the same bundles a user would.
pub fn edgeclip_home() -> PathBuf {
    if let Some(home) = std::env::var_os("EDGECLIP_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    user_home.join(".cache").join("edgeclip")
}

/// True when `EDGECLIP_REQUIRE_FIXTURES` is set to something other than
/// empty / `0` / `false`.
pub fn fixtures_required() -> bool {
    match std::env::var(REQUIRE_FIXTURES_ENV) {
        Ok(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
        Err(_) => false,
    }
}

/// Applies the skip-or-fail policy to a path that a test needs.
///
/// Returns `Some(path)` when it exists. Otherwise prints a `skipping: …`
/// line (visible with `--nocapture`, and in the summary of a failing run) and
/// returns `None`, or panics when fixtures are required.
pub fn require_path(path: &Path, what: &str, how_to_get: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let msg = format!("{what} not found at {} — {how_to_get}", path.display());
    if fixtures_required() {
        panic!("{msg} ({REQUIRE_FIXTURES_ENV} is set, so this is a failure)");
    }
    eprintln!("skipping: {msg}");
    None
}

/// Environment variable naming the seeded CLIP bundle the parity tests compare against.
pub const PARITY_BUNDLE_ENV: &str = "EDGECLIP_PARITY_BUNDLE";

/// Environment variable limiting how many fixture images and texts a parity test embeds.
pub const PARITY_LIMIT_ENV: &str = "EDGECLIP_PARITY_LIMIT";

/// The bundle whose fixtures the parity tests read: `$EDGECLIP_PARITY_BUNDLE`, by default
/// `clip-vit-b-32-seeded`. `clip-tiny-seeded` (`models/prepare clip-tiny-seeded`) has the
/// same graph structure, tokenizer and preprocessing at a fraction of the arithmetic, for
/// machines where the full model is too slow (aarch64 under qemu).
pub fn parity_bundle() -> String {
    std::env::var(PARITY_BUNDLE_ENV)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "clip-vit-b-32-seeded".into())
}

/// `$EDGECLIP_PARITY_LIMIT` as a count (`None` when unset or empty: use everything).
/// Anything but a positive integer is a mistake in the test setup, so it panics.
pub fn parity_limit() -> Option<usize> {
    let v = std::env::var(PARITY_LIMIT_ENV).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{PARITY_LIMIT_ENV}={v:?}: want a positive number of images and texts"),
    }
}

/// `<edgeclip_home>/fixtures/<bundle>` when it exists (see [`require_path`]
/// for what happens when it does not).
pub fn fixture_dir(bundle: &str) -> Option<PathBuf> {
    let dir = edgeclip_home().join("fixtures").join(bundle);
    require_path(
        &dir,
        &format!("fixtures for bundle `{bundle}`"),
        "run models/prepare to create them",
    )
}

/// `<edgeclip_home>/<bundle>`: the prepared model bundle itself (vocabulary,
/// ONNX towers), with the same skip-or-fail policy.
pub fn bundle_dir(bundle: &str) -> Option<PathBuf> {
    let dir = edgeclip_home().join(bundle);
    require_path(
        &dir,
        &format!("model bundle `{bundle}`"),
        "run models/prepare to create it",
    )
}

/// `../shared/datasets` relative to the crate root, with the same
/// skip-or-fail policy (CI always has it; a laptop may not).
pub fn shared_datasets() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("datasets");
    require_path(
        &dir,
        "shared datasets",
        "they live in ../shared/datasets next to the checkout (see ../shared/README.md)",
    )
}

/// The repository root (examples/, models/ are read relative to it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `edgeclip` binary in the repository root with a private EDGECLIP_HOME (so caches start empty and are isolated).
pub fn edgeclip(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeclip"))
        .args(args)
        .env("EDGECLIP_HOME", home)
        .env_remove("EDGECLIP_MODEL")
        .env_remove("RUST_LOG")
        .current_dir(repo())
        .output()
        .expect("edgeclip runs")
}

/// The output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The error output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout parsed as JSON Lines.
pub fn lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every record of a JSON Lines fixture (blank lines skipped); panics naming `file:line`.
pub fn read_jsonl<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Lowest and mean cosine of (item, cosine) pairs, and the item with the lowest.
pub struct Stats {
    /// Lowest cosine.
    pub min: f32,
    /// Mean cosine.
    pub mean: f32,
    /// The item with the lowest.
    pub worst: String,
}

/// [`Stats`] of (item, cosine) pairs (zeros and an empty name when there are none).
pub fn stats(pairs: &[(String, f32)]) -> Stats {
    let (worst, min) = pairs
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .unwrap_or_default();
    let mean = pairs.iter().map(|p| p.1).sum::<f32>() / pairs.len().max(1) as f32;
    Stats { min, mean, worst }
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `edgeclip run ARGS` in the repository root with EDGECLIP_HOME set to `home`, logging at
/// info, all three standard streams piped; the caller may change them before spawning.
pub fn run_command(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeclip"));
    cmd.arg("run")
        .args(args)
        .env("EDGECLIP_HOME", home)
        .env_remove("EDGECLIP_MODEL")
        .env("RUST_LOG", "edgeclip=info")
        .current_dir(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Reads a child's stderr (the log) in the background; the text comes back when it ends.
pub fn collect_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    })
}

/// Calls `done` every 20 ms until it returns true (true) or `limit` passes (false).
pub fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends SIGTERM to a child (a clean stop: sinks drain, files are synced).
pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {}", child.id());
}
