//! `edgeclip run`: arguments, help text, and the reload loop around the service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use edgeclip::config::{self, EventsSection, Overrides, RunConfig};
use edgeclip::encoder;
use edgeclip::events::EmitMode;
use edgeclip::service::{self, Control, Outcome};

use crate::cli::Global;

/// Long description of `run`.
pub const RUN_ABOUT: &str = "\
Watch one or more cameras or streams and emit an event when what they see changes.

Each camera's frames are captured on their own thread; inference takes the newest frame of \
each camera in turn (at most --fps per second; older frames are dropped and counted, never \
queued), classifies it against the label file, and an event policy (K of the last N frames \
agreeing, dwell, cooldown) decides when to emit. Events go to every --sink.

The label file is watched: edit it on the device and the new labels apply within about 2 \
seconds (only new prompts are embedded). A broken edit is logged with its line, shown by \
/healthz, and the last good labels keep running. SIGHUP re-reads --config; SIGINT/SIGTERM \
finish the frame in flight, flush the sinks (undelivered webhook events stay in the spool \
for the next start) and exit 0.";

/// Text after the options of `run`.
pub const RUN_AFTER: &str = "\
SOURCES (--source [NAME=]SOURCE, repeatable; NAME defaults to stdin, videoN or camN)
  /dev/video0, v4l:/dev/video0   V4L2 camera (MJPEG or YUYV; --capture-format/--capture-size/--capture-fps)
  -                              concatenated JPEGs (MJPEG) on stdin, e.g.
                                 ffmpeg -i URL -f mjpeg - | edgeclip run --source -
                                 rpicam-vid -t 0 --codec mjpeg -o - | edgeclip run --source -
  http://host/stream             HTTP MJPEG (multipart/x-mixed-replace)
  rtsp://…, rtmp://…             through an ffmpeg subprocess (ffmpeg must be installed)
  ffmpeg:ARGS                    ffmpeg with these input arguments
  DIR, 'GLOB'                    image files replayed at --capture-fps (--loop to repeat)
  pattern:                       a synthetic moving test pattern

SINKS (--sink, repeatable; default jsonl:-)
  jsonl:-, jsonl:PATH            JSON Lines to stdout / appended to PATH (rotated at 10 MiB)
  mqtt://[user:pass@]host[:port]/prefix
                                 MQTT (QoS 1): PREFIX/CAMERA/event, retained PREFIX/CAMERA/state,
                                 PREFIX/status online/offline, Home Assistant discovery
  mqtts://[user:pass@]host[:8883]/prefix[?ca=FILE]
                                 the same over TLS
  http(s)://…[?ca=FILE]          webhook POST; undelivered events are spooled on disk
                                 ($EDGECLIP_HOME/spool) and sent in order when it is back
  TLS always verifies the server's certificate, against Mozilla's roots or, with ca=FILE,
  only against the CA certificates in that PEM file (a private CA; taken out of the URL)
  gpio:PIN=LABEL[,MS]            Raspberry Pi pin high while LABEL is seen, or a MS pulse
                                 per event (build with --features gpio)

EVENT JSON
  {\"id\", \"ts\" (RFC 3339), \"camera\", \"frame\", \"label\", \"score\", \"top\": [{\"label\", \"score\"}],
   \"latency_ms\", \"snapshot\" (with --snapshot-dir)}

ENDPOINT (--http, default 127.0.0.1:9464; --no-http; --http-token-file FILE: every request
          needs Authorization: Bearer TOKEN, else 401)
  /healthz  JSON: cameras, counters, labels version, last error
  /metrics  Prometheus: frames captured/dropped/failed, stage latency histograms, events per
            label, reloads, sink backlog
  /snapshot.jpg?camera=NAME   the latest frame

CONFIG FILE (--config edgeclip.toml; see examples/edgeclip.toml). Flags override it;
--board NAME applies boards/NAME.toml (threads, precision, backend, capture mode) under it;
--board auto picks the profile of the board it runs on (see `edgeclip boards`).

EXAMPLES
  edgeclip run --labels labels.txt --source /dev/video0 --board auto
  ffmpeg -re -i clip.mp4 -f mjpeg - | edgeclip run -l labels.txt --source - --emit every
  edgeclip run --config /etc/edgeclip/edgeclip.toml --check-config";

/// Arguments of `run`.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (TOML); flags given here override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Label file (watched; edits apply live).
    #[arg(long, short = 'l')]
    pub labels: Option<PathBuf>,
    /// A camera: [NAME=]SOURCE (see SOURCES below). Repeatable; replaces the config's cameras.
    #[arg(long = "source", short = 's')]
    pub sources: Vec<String>,
    /// Most frames per second classified per camera [default: as fast as possible].
    #[arg(long)]
    pub fps: Option<f32>,
    /// Stop each camera after N classified frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// When to emit events.
    #[arg(long, value_enum)]
    pub emit: Option<EmitMode>,
    /// Probability below which a frame counts as 'unknown' [default: 0].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// K/N: a label must be the top one in K of the last N frames [default: 2/3].
    #[arg(long)]
    pub consensus: Option<String>,
    /// Milliseconds a new label must hold before it is reported [default: 0].
    #[arg(long)]
    pub dwell: Option<u64>,
    /// Seconds before the same label is reported again [default: 0].
    #[arg(long)]
    pub cooldown: Option<f64>,
    /// Labels listed in each event's "top" [default: 3].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Region of interest x,y,w,h as fractions of the frame (e.g. 0.25,0,0.5,1).
    #[arg(long, value_parser = parse_roi)]
    pub roi: Option<[f32; 4]>,
    /// Save a JPEG of the frame with each event under DIR/CAMERA/.
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// Where events go (see SINKS below). Repeatable; replaces the config's sinks.
    #[arg(long = "sink")]
    pub sinks: Vec<String>,
    /// Capture pixel format for V4L2 cameras.
    #[arg(long, value_parser = ["mjpeg", "yuyv"])]
    pub capture_format: Option<String>,
    /// Capture size WxH for V4L2 cameras (e.g. 640x480).
    #[arg(long, value_parser = parse_size)]
    pub capture_size: Option<(u32, u32)>,
    /// Capture rate: V4L2 frame rate, replay pace.
    #[arg(long)]
    pub capture_fps: Option<f32>,
    /// Replay sources start over when they reach the end.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Health and metrics endpoint address [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// No health/metrics endpoint.
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// File holding a bearer token the endpoint requires of every request.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Validate the configuration (model, labels, sources, sinks) and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn parse_roi(s: &str) -> Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}': expected x,y,w,h (four numbers)"))?;
    <[f32; 4]>::try_from(v).map_err(|_| format!("'{s}': expected x,y,w,h (four numbers)"))
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}': expected WxH, e.g. 640x480"))?;
    let n = |t: &str| {
        t.parse::<u32>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("'{s}': expected WxH, e.g. 640x480"))
    };
    Ok((n(w)?, n(h)?))
}

fn overrides(g: &Global, a: &RunArgs) -> Result<Overrides> {
    let format = match a.capture_format.as_deref() {
        None => None,
        Some(f) => Some(
            f.parse()
                .map_err(|e| anyhow::anyhow!("--capture-format {f}: {e}"))?,
        ),
    };
    Ok(Overrides {
        model: g.model.clone(),
        precision: g.precision.map(Into::into),
        threads: g.threads,
        backend: g.backend.map(Into::into),
        ort_dylib: g.ort_dylib.clone(),
        ort_providers: g.ort_providers.as_ref().map(|p| p.0.clone()),
        require_gpu: g.require_gpu,
        board: g.board.clone(),
        labels: a.labels.clone(),
        sources: a.sources.clone(),
        fps: a.fps,
        max_frames: a.max_frames,
        sinks: a.sinks.clone(),
        roi: a.roi,
        events: EventsSection {
            emit: a.emit,
            threshold: a.threshold,
            consensus: a.consensus.clone(),
            dwell_ms: a.dwell,
            cooldown_s: a.cooldown,
            top_k: a.top_k,
            snapshot_dir: a.snapshot_dir.clone(),
        },
        capture: edgeclip::source::SourceOptions {
            format,
            width: a.capture_size.map(|s| s.0),
            height: a.capture_size.map(|s| s.1),
            fps: a.capture_fps,
            looping: a.looping,
        },
        http: a.http.clone(),
        no_http: a.no_http,
        http_token_file: a.http_token_file.clone(),
        no_cache: g.no_cache,
    })
}

/// Runs `edgeclip run`.
pub fn run(g: &Global, a: &RunArgs) -> Result<ExitCode> {
    let cli = overrides(g, a)?;
    let file = a.config.clone();
    let resolve = || config::resolve(file.as_deref(), &cli);
    let mut config: RunConfig = resolve()?;
    if a.check_config {
        for line in service::check(&config)? {
            println!("ok  {line}");
        }
        println!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    encoder::set_threads(
        config
            .threads
            .unwrap_or_else(encoder::default_threads)
            .max(1),
    );
    if let Some(board) = &config.board {
        log::info!("board profile {board}");
    }
    let control = Control::with_signals()?;
    let reconfigure = || resolve().map_err(|e| e.to_string());
    loop {
        match service::run(&config, &control, &reconfigure)? {
            Outcome::Finished | Outcome::Stopped => return Ok(ExitCode::SUCCESS),
            Outcome::Reload(new) => config = *new,
        }
    }
}
