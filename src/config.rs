//! `edgeclip run`'s configuration: `edgeclip.toml`, board profiles (`boards/NAME.toml`) and
//! command-line overrides, resolved into one typed [`RunConfig`].
//!
//! Precedence, lowest first: built-in defaults, the board profile, the config file, the
//! command line. Paths in a config file are relative to the file's directory, so a config
//! and its label file can move together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::board::{self, BoardError};
use crate::bundle::{Precision, DEFAULT_MODEL};
use crate::encoder::{Backend, OrtOptions};
use crate::events::{parse_consensus, EmitMode, EventPolicy};
use crate::limits::{read_text_capped, MAX_CONFIG_BYTES};
use crate::source::SourceOptions;

/// Default address of the health/metrics endpoint (Prometheus' node-exporter range).
pub const DEFAULT_HTTP: &str = "127.0.0.1:9464";

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key (the message names line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or `command line`.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The board profile.
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Event-policy keys, in `[events]`, `[camera.events]` and on the command line; unset keys
/// fall through to the next layer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// `change` or `every`.
    pub emit: Option<EmitMode>,
    /// Probability below which a frame counts as `unknown`.
    pub threshold: Option<f32>,
    /// `K/N`: K of the last N frames must agree.
    pub consensus: Option<String>,
    /// Milliseconds a new label must hold before it is reported.
    pub dwell_ms: Option<u64>,
    /// Seconds before the same label is reported again.
    pub cooldown_s: Option<f64>,
    /// Labels listed in each event's `top`.
    pub top_k: Option<usize>,
    /// Directory where a JPEG of the frame is saved with each event.
    pub snapshot_dir: Option<PathBuf>,
}

impl EventsSection {
    /// `self` with unset keys taken from `lower`.
    fn over(&self, lower: &EventsSection) -> EventsSection {
        EventsSection {
            emit: self.emit.or(lower.emit),
            threshold: self.threshold.or(lower.threshold),
            consensus: self.consensus.clone().or_else(|| lower.consensus.clone()),
            dwell_ms: self.dwell_ms.or(lower.dwell_ms),
            cooldown_s: self.cooldown_s.or(lower.cooldown_s),
            top_k: self.top_k.or(lower.top_k),
            snapshot_dir: self
                .snapshot_dir
                .clone()
                .or_else(|| lower.snapshot_dir.clone()),
        }
    }
}

/// One `[[camera]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraSection {
    /// Name used in events, topics and metrics (letters, digits, `-`, `_`).
    pub name: String,
    /// What to read: `/dev/video0`, `-`, `http://…`, `rtsp://…`, a directory, a glob,
    /// `pattern:` (see `edgeclip help run`).
    pub source: String,
    /// Most frames per second classified from this camera.
    pub fps: Option<f32>,
    /// Region of interest `[x, y, w, h]` as fractions of the frame.
    pub roi: Option<[f32; 4]>,
    /// Capture mode (V4L2 format/size/rate, replay pace).
    #[serde(default)]
    pub capture: SourceOptions,
    /// Event policy for this camera.
    #[serde(default)]
    pub events: EventsSection,
}

/// `[http]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `false` turns the endpoint off.
    pub enabled: Option<bool>,
    /// Address to listen on.
    pub listen: Option<String>,
    /// File holding the bearer token every request must carry (relative to this file).
    pub token_file: Option<PathBuf>,
}

/// The contents of `edgeclip.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Model bundle name or path.
    pub model: Option<String>,
    /// Tower precision.
    pub precision: Option<Precision>,
    /// Threads for matrix products.
    pub threads: Option<usize>,
    /// Board profile applied under this file.
    pub board: Option<String>,
    /// Label file.
    pub labels: Option<PathBuf>,
    /// Most frames per second classified per camera.
    pub fps: Option<f32>,
    /// Stop each camera after this many classified frames.
    pub max_frames: Option<u64>,
    /// Sinks (`jsonl:-`, `jsonl:PATH`, `mqtt://…`, `http(s)://…`, `gpio:PIN=LABEL[,MS]`).
    pub sinks: Option<Vec<String>>,
    /// Default event policy.
    #[serde(default)]
    pub events: EventsSection,
    /// Cameras.
    #[serde(default)]
    pub camera: Vec<CameraSection>,
    /// Health/metrics endpoint.
    #[serde(default)]
    pub http: HttpSection,
}

/// What the command line says (every field optional: unset falls through to the file).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--model`.
    pub model: Option<String>,
    /// `--precision`.
    pub precision: Option<Precision>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--backend`.
    pub backend: Option<Backend>,
    /// `--ort-dylib`, over the board's `[ort]`.
    pub ort_dylib: Option<PathBuf>,
    /// `--ort-providers`, over the board's `[ort]`.
    pub ort_providers: Option<Vec<crate::encoder::OrtProvider>>,
    /// `--require-gpu`.
    pub require_gpu: bool,
    /// `--board` (`auto` detects).
    pub board: Option<String>,
    /// `--labels`.
    pub labels: Option<PathBuf>,
    /// `--source` (each `[NAME=]SOURCE`); replaces the file's cameras when given.
    pub sources: Vec<String>,
    /// `--fps`.
    pub fps: Option<f32>,
    /// `--max-frames`.
    pub max_frames: Option<u64>,
    /// `--sink`; replaces the file's sinks when given.
    pub sinks: Vec<String>,
    /// `--roi` for every camera.
    pub roi: Option<[f32; 4]>,
    /// Event-policy flags.
    pub events: EventsSection,
    /// `--http ADDR`.
    pub http: Option<String>,
    /// `--no-http`.
    pub no_http: bool,
    /// `--http-token-file`, over `[http] token_file`.
    pub http_token_file: Option<PathBuf>,
    /// `--capture-*` and `--loop`, over every camera's capture mode.
    pub capture: SourceOptions,
    /// `--no-cache`: embed every prompt, read and write no text-embedding cache.
    pub no_cache: bool,
}

/// One camera, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Name.
    pub name: String,
    /// Source text.
    pub source: String,
    /// Capture mode.
    pub capture: SourceOptions,
    /// Inference rate cap.
    pub fps: Option<f32>,
    /// Region of interest (fractions).
    pub roi: Option<[f32; 4]>,
    /// Event policy.
    pub policy: EventPolicy,
    /// Labels listed per event.
    pub top_k: usize,
    /// Where event snapshots go.
    pub snapshot_dir: Option<PathBuf>,
}

/// Everything `edgeclip run` needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Config file, if one was read (SIGHUP re-reads it).
    pub file: Option<PathBuf>,
    /// Model bundle name or path.
    pub model: String,
    /// Precision (`None`: the bundle's default).
    pub precision: Option<Precision>,
    /// Threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Backend of the towers.
    pub backend: Backend,
    /// Settings of the onnxruntime backend.
    pub ort: OrtOptions,
    /// Board profile applied, if any.
    pub board: Option<String>,
    /// Label file.
    pub labels: PathBuf,
    /// Cameras.
    pub cameras: Vec<CameraConfig>,
    /// Stop each camera after this many classified frames.
    pub max_frames: Option<u64>,
    /// Sinks.
    pub sinks: Vec<String>,
    /// Health/metrics address; `None` when off.
    pub http: Option<SocketAddr>,
    /// File holding the endpoint's bearer token; `None`: no token.
    pub http_token_file: Option<PathBuf>,
    /// Whether the text-embedding cache is used.
    pub cache: bool,
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text_capped(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text; `origin` names it in errors.
pub(crate) fn parse_toml<T: for<'de> Deserialize<'de>>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })
}

/// Reads and checks the syntax of a config file.
pub fn read_config_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    read_toml(path)
}

/// Capture options: `high`'s set fields over `low`'s.
fn capture_over(high: &SourceOptions, low: &SourceOptions) -> SourceOptions {
    SourceOptions {
        format: high.format.or(low.format),
        width: high.width.or(low.width),
        height: high.height.or(low.height),
        fps: high.fps.or(low.fps),
        looping: high.looping || low.looping,
    }
}

fn is_camera_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Splits `--source [NAME=]SOURCE`; the name is derived from the source when absent.
pub fn split_source_arg(arg: &str, index: usize) -> (String, String) {
    if let Some((name, src)) = arg.split_once('=') {
        if is_camera_name(name) && !src.is_empty() {
            return (name.to_string(), src.to_string());
        }
    }
    let derived = if arg == "-" {
        "stdin".to_string()
    } else if let Some(dev) = arg.strip_prefix("/dev/") {
        dev.replace('/', "_")
    } else {
        format!("cam{index}")
    };
    (derived, arg.to_string())
}

fn policy_from(section: &EventsSection, origin: &str) -> Result<EventPolicy, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_string(),
        message,
    };
    let defaults = EventPolicy::default();
    let (consensus, window) = match &section.consensus {
        Some(text) => parse_consensus(text).map_err(|m| invalid(format!("consensus {m}")))?,
        None => (defaults.consensus, defaults.window),
    };
    let cooldown = match section.cooldown_s {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(invalid(format!("cooldown_s {s}: seconds, 0 or more")))
        }
        Some(s) => Duration::from_secs_f64(s),
        None => defaults.cooldown,
    };
    let policy = EventPolicy {
        emit: section.emit.unwrap_or(defaults.emit),
        threshold: section.threshold.unwrap_or(defaults.threshold),
        consensus,
        window,
        min_dwell: section
            .dwell_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.min_dwell),
        cooldown,
    };
    policy.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(policy)
}

fn check_roi(roi: [f32; 4], origin: &str) -> Result<[f32; 4], ConfigError> {
    let [x, y, w, h] = roi;
    let ok = roi.iter().all(|v| v.is_finite())
        && x >= 0.0
        && y >= 0.0
        && w > 0.0
        && h > 0.0
        && x + w <= 1.0 + 1e-6
        && y + h <= 1.0 + 1e-6;
    if ok {
        Ok(roi)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!(
                "roi {x},{y},{w},{h}: x,y,w,h as fractions of the frame, inside [0, 1]"
            ),
        })
    }
}

fn check_fps(fps: Option<f32>, origin: &str) -> Result<Option<f32>, ConfigError> {
    match fps {
        Some(f) if !(f.is_finite() && f > 0.0) => Err(ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!("fps {f}: frames per second, more than 0"),
        }),
        other => Ok(other),
    }
}

/// Resolves defaults, board, file (if any) and command line into a [`RunConfig`].
pub fn resolve(file: Option<&Path>, cli: &Overrides) -> Result<RunConfig, ConfigError> {
    let parsed = match file {
        Some(p) => read_config_file(p)?,
        None => ConfigFile::default(),
    };
    resolve_parsed(parsed, file, cli)
}

/// [`resolve`] for a config file already parsed; `file` names it (errors, relative paths).
pub(crate) fn resolve_parsed(
    parsed: ConfigFile,
    file: Option<&Path>,
    cli: &Overrides,
) -> Result<RunConfig, ConfigError> {
    let origin = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "command line".into());
    let base_dir = file.and_then(Path::parent).map(Path::to_path_buf);
    let relative = |p: &Path| match &base_dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    };
    let (board_name, board) = match cli.board.as_ref().or(parsed.board.as_ref()) {
        Some(name) => board::resolve(name, base_dir.as_deref())?,
        None => (None, board::BoardProfile::default()),
    };
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.clone(),
        message,
    };

    let labels = match (&cli.labels, &parsed.labels) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => relative(p),
        (None, None) => {
            return Err(invalid(
                "no label file: give --labels FILE or `labels = \"FILE\"` in the config".into(),
            ))
        }
    };
    let global_fps = check_fps(cli.fps.or(parsed.fps).or(board.fps), &origin)?;

    let sections: Vec<CameraSection> = if cli.sources.is_empty() {
        parsed.camera.clone()
    } else {
        cli.sources
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                let (name, source) = split_source_arg(arg, i);
                CameraSection {
                    name,
                    source,
                    fps: None,
                    roi: None,
                    capture: SourceOptions::default(),
                    events: EventsSection::default(),
                }
            })
            .collect()
    };
    if sections.is_empty() {
        return Err(invalid(
            "no camera: give --source SOURCE or a [[camera]] table in the config".into(),
        ));
    }
    let mut cameras = Vec::with_capacity(sections.len());
    for c in &sections {
        if !is_camera_name(&c.name) {
            return Err(invalid(format!(
                "camera name '{}': use letters, digits, '-' and '_' (at most 64)",
                c.name
            )));
        }
        if cameras.iter().any(|k: &CameraConfig| k.name == c.name) {
            return Err(invalid(format!("camera name '{}' is used twice", c.name)));
        }
        let cam_origin = format!("{origin}: camera '{}'", c.name);
        // The command line's event flags win over the camera's own table, which wins over
        // the file's [events].
        let events = cli.events.over(&c.events.over(&parsed.events));
        let policy = policy_from(&events, &cam_origin)?;
        let roi = match cli.roi.or(c.roi) {
            Some(r) => Some(check_roi(r, &cam_origin)?),
            None => None,
        };
        let source = if c.source.contains("://") || c.source.starts_with('-') {
            c.source.clone()
        } else if file.is_some() && !c.source.starts_with("/dev/") && !c.source.contains(':') {
            relative(Path::new(&c.source)).display().to_string()
        } else {
            c.source.clone()
        };
        cameras.push(CameraConfig {
            name: c.name.clone(),
            source,
            capture: capture_over(&cli.capture, &capture_over(&c.capture, &board.capture)),
            fps: check_fps(cli.fps.or(c.fps), &cam_origin)?.or(global_fps),
            roi,
            policy,
            top_k: events.top_k.unwrap_or(3).max(1),
            snapshot_dir: events.snapshot_dir.as_deref().map(|p| {
                if cli.events.snapshot_dir.is_some() {
                    p.to_path_buf()
                } else {
                    relative(p)
                }
            }),
        });
    }

    let http = if cli.no_http || parsed.http.enabled == Some(false) && cli.http.is_none() {
        None
    } else {
        let text = cli
            .http
            .clone()
            .or_else(|| parsed.http.listen.clone())
            .unwrap_or_else(|| DEFAULT_HTTP.to_string());
        Some(text.parse::<SocketAddr>().map_err(|e| {
            invalid(format!(
                "http listen address '{text}': {e} (expected HOST:PORT, e.g. {DEFAULT_HTTP})"
            ))
        })?)
    };
    let sinks = if !cli.sinks.is_empty() {
        cli.sinks.clone()
    } else {
        parsed
            .sinks
            .clone()
            .unwrap_or_else(|| vec!["jsonl:-".to_string()])
    };
    let threads = cli.threads.or(parsed.threads).or(board.threads);
    if threads == Some(0) {
        return Err(invalid("threads 0: at least 1".into()));
    }
    Ok(RunConfig {
        file: file.map(Path::to_path_buf),
        model: cli
            .model
            .clone()
            .or_else(|| parsed.model.clone())
            .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
        precision: cli.precision.or(parsed.precision).or(board.precision),
        threads,
        backend: cli.backend.or(board.backend).unwrap_or_default(),
        ort: board.ort_options().unwrap_or_default().with_overrides(
            cli.ort_dylib.clone(),
            cli.ort_providers.clone(),
            cli.require_gpu,
        ),
        board: board_name,
        labels,
        cameras,
        max_frames: cli.max_frames.or(parsed.max_frames),
        sinks,
        http,
        http_token_file: cli
            .http_token_file
            .clone()
            .or_else(|| parsed.http.token_file.as_deref().map(relative)),
        cache: !cli.no_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn layers_apply_in_order_and_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boards")).unwrap();
        write(
            &dir.path().join("boards"),
            "tiny.toml",
            "threads = 3\nprecision = \"int8\"\nfps = 1.5\n[capture]\nwidth = 320\nheight = 240\n",
        );
        let cfg = write(
            dir.path(),
            "edgeclip.toml",
            r#"
board = "tiny"
labels = "labels.txt"
threads = 2
sinks = ["jsonl:events.jsonl"]
[events]
threshold = 0.4
consensus = "3/5"
[[camera]]
name = "door"
source = "frames"
[camera.capture]
width = 640
[camera.events]
threshold = 0.6
[[camera]]
name = "yard"
source = "/dev/video2"
fps = 4
roi = [0.0, 0.5, 1.0, 0.5]
"#,
        );
        let cli = Overrides {
            events: EventsSection {
                cooldown_s: Some(30.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let rc = resolve(Some(&cfg), &cli).unwrap();
        assert_eq!(rc.labels, dir.path().join("labels.txt"));
        assert_eq!(rc.threads, Some(2)); // file over board
        assert_eq!(rc.precision, Some(Precision::Int8)); // board
        assert_eq!(rc.sinks, ["jsonl:events.jsonl"]);
        let door = &rc.cameras[0];
        assert_eq!(door.source, dir.path().join("frames").display().to_string());
        assert_eq!(door.capture.width, Some(640)); // camera over board
        assert_eq!(door.capture.height, Some(240)); // board
        assert_eq!(door.fps, Some(1.5)); // board
        assert_eq!(door.policy.threshold, 0.6); // camera over [events]
        assert_eq!((door.policy.consensus, door.policy.window), (3, 5));
        assert_eq!(door.policy.cooldown, Duration::from_secs(30)); // command line
        let yard = &rc.cameras[1];
        assert_eq!(yard.source, "/dev/video2");
        assert_eq!(yard.fps, Some(4.0));
        assert_eq!(yard.policy.threshold, 0.4);
        assert_eq!(yard.roi, Some([0.0, 0.5, 1.0, 0.5]));
        assert_eq!(rc.http, Some(DEFAULT_HTTP.parse().unwrap()));
    }

    #[test]
    fn command_line_sources_replace_the_files_cameras() {
        let cli = Overrides {
            labels: Some("l.txt".into()),
            sources: vec![
                "-".into(),
                "front=http://cam/video?x=1".into(),
                "/dev/video0".into(),
            ],
            no_http: true,
            ..Default::default()
        };
        let rc = resolve(None, &cli).unwrap();
        let names: Vec<_> = rc.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["stdin", "front", "video0"]);
        assert_eq!(rc.cameras[1].source, "http://cam/video?x=1");
        assert_eq!(rc.sinks, ["jsonl:-"]);
        assert_eq!(rc.http, None);
        assert_eq!(rc.model, DEFAULT_MODEL);
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let bad_key = write(dir.path(), "a.toml", "labels = \"l\"\nfpss = 3\n");
        let e = resolve(Some(&bad_key), &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("fpss") && e.to_string().contains("line 2"),
            "{e}"
        );

        let bad_policy = write(
            dir.path(),
            "b.toml",
            "labels = \"l\"\n[[camera]]\nname = \"c\"\nsource = \"-\"\n[camera.events]\nconsensus = \"6/5\"\n",
        );
        let e = resolve(Some(&bad_policy), &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("camera 'c'") && e.to_string().contains("6/5"),
            "{e}"
        );

        let no_camera = Overrides {
            labels: Some("l".into()),
            ..Default::default()
        };
        assert!(resolve(None, &no_camera)
            .unwrap_err()
            .to_string()
            .contains("--source"));

        let twice = Overrides {
            labels: Some("l".into()),
            sources: vec!["a=-".into(), "a=pattern:".into()],
            ..Default::default()
        };
        assert!(resolve(None, &twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));

        let roi = Overrides {
            labels: Some("l".into()),
            sources: vec!["-".into()],
            roi: Some([0.5, 0.0, 0.6, 1.0]),
            ..Default::default()
        };
        assert!(resolve(None, &roi).unwrap_err().to_string().contains("roi"));

        let board = Overrides {
            labels: Some("l".into()),
            sources: vec!["-".into()],
            board: Some("no-such-board".into()),
            ..Default::default()
        };
        let e = resolve(None, &board).unwrap_err().to_string();
        assert!(
            e.contains("no-such-board") && e.contains("available"),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edgeclip.toml");
        resolve(Some(&p), &Overrides::default()).unwrap();
    }

    #[test]
    fn the_endpoint_token_file_is_relative_to_the_config_and_the_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "edgeclip.toml",
            "labels = \"labels.txt\"\n[http]\ntoken_file = \"secrets/token\"\n\
             [[camera]]\nname = \"c\"\nsource = \"pattern:\"\n",
        );
        let rc = resolve(Some(&cfg), &Overrides::default()).unwrap();
        assert_eq!(rc.http_token_file, Some(dir.path().join("secrets/token")));
        let cli = Overrides {
            http_token_file: Some(PathBuf::from("/run/edgeclip/token")),
            ..Default::default()
        };
        let rc = resolve(Some(&cfg), &cli).unwrap();
        assert_eq!(
            rc.http_token_file,
            Some(PathBuf::from("/run/edgeclip/token"))
        );
    }
}
