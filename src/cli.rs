//! Command-line interface: argument definitions and the commands' output.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use edgeclip::board::{self, BoardProfile, Detected};
use edgeclip::bundle::{Bundle, Precision, TokenizerSpec, DEFAULT_MODEL};
use edgeclip::classify::Classifier;
use edgeclip::encoder::{self, Backend, OrtOptions, OrtProvider};
use edgeclip::engine::{default_cache_dir, Engine, EngineOptions};
use edgeclip::eval::{read_label_map, Dataset, Selection, Tally};
use edgeclip::labels::{LabelSet, TemplateSet};
use edgeclip::preprocess::ResizeMode;
use edgeclip::source::PathSource;
use edgeclip::tokenizer::HfTokenizer;

const ABOUT: &str = "Zero-shot image classification with CLIP-style models, on the device.";

const LONG_ABOUT: &str = "\
edgeclip labels images with whatever labels you write in a text file, using a CLIP-style \
image-text model (an image tower and a text tower in ONNX) run on the CPU by tract. \
No Python and no network are needed at run time.

The label file has one label per line; see `edgeclip help classify` for its syntax. Label \
texts are embedded once per model and cached on disk ($EDGECLIP_HOME/cache/text), so later \
runs with the same labels start fast.

Models are bundle directories found by name under $EDGECLIP_HOME (default \
~/.cache/edgeclip) or given by path. Prepare the reference bundle with `models/prepare`.";

const LABELS_HELP: &str = "\
Label file (UTF-8). One label per line; '#' starts a comment line; blank lines are ignored.
  cat                         a label; its prompts are the templates applied to it
  dog: a photo of a dog | a {} on a lawn
                              explicit prompts, '|'-separated; {} is replaced by the label
  @templates imagenet80       built-in template set: imagenet7 (default), imagenet80, none
  @template a cctv photo of a {}.
                              own templates (replace the built-in set)
A label's embedding is the mean of its prompts' embeddings (CLIP prompt ensembling).";

/// Top-level arguments.
#[derive(Parser, Debug)]
#[command(name = "edgeclip", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Model bundle: a directory path, or a name looked up in $EDGECLIP_HOME, then
    /// <prefix>/share/edgeclip/models, then the source checkout's models/ (where the default
    /// edgeclip-demo bundle is committed).
    /// [default: edgeclip-demo]
    #[arg(long, short = 'm', global = true, env = "EDGECLIP_MODEL")]
    pub model: Option<String>,
    /// Numeric precision of the towers [default: fp32 when the bundle has it, else int8].
    #[arg(long, global = true, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Threads for matrix products (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Image tower backend: native (CLIP ViT graphs, int8 kernels of edgeclip's own),
    /// tract (any graph), or auto: native when the graph is a CLIP ViT it recognises,
    /// tract otherwise; ort runs both towers on onnxruntime (GPU offload on Jetson). The
    /// choice is logged. [default: the board profile's, else auto]
    #[arg(long, global = true, value_enum)]
    pub backend: Option<BackendArg>,
    /// Board profile: boards/NAME.toml (pi4, pi5, pi-zero-2w, pi-32bit, jetson-orin-nano,
    /// x86-64), a path to a .toml, or `auto` to detect the board (`edgeclip boards` shows
    /// what is detected). Sets threads, precision, backend and capture defaults under the
    /// flags and the config file.
    #[arg(long, global = true, env = "EDGECLIP_BOARD")]
    pub board: Option<String>,
    /// The profile `--board` resolved to (filled in before a one-shot command runs).
    #[arg(skip)]
    pub board_profile: BoardProfile,
    /// With --backend ort: fail at start instead of running on the CPU when no GPU
    /// provider (TensorRT, CUDA) can be used.
    #[arg(long, global = true)]
    pub require_gpu: bool,
    /// With --backend ort: the libonnxruntime.so to load [default: libonnxruntime.so on the
    /// loader's search path].
    #[arg(long, global = true, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// With --backend ort: execution providers in order of preference, comma-separated
    /// (tensorrt, cuda, cpu) [default: tensorrt,cuda,cpu].
    #[arg(long, global = true, value_name = "LIST", value_parser = parse_providers)]
    pub ort_providers: Option<ProviderList>,
    /// Do not read or write the text-embedding cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// `--model`, or the default bundle.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }

    /// The onnxruntime settings of `--require-gpu`, `--ort-dylib`, `--ort-providers`.
    pub fn ort_options(&self, board: Option<OrtOptions>) -> OrtOptions {
        board.unwrap_or_default().with_overrides(
            self.ort_dylib.clone(),
            self.ort_providers.as_ref().map(|p| p.0.clone()),
            self.require_gpu,
        )
    }
}

/// `--ort-providers` values: a list in order of preference.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderList(pub Vec<OrtProvider>);

fn parse_providers(text: &str) -> Result<ProviderList, String> {
    OrtProvider::parse_list(text).map(ProviderList)
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    /// Native ViT when recognised, else tract.
    Auto,
    /// tract for every graph.
    Tract,
    /// Native ViT (an error for other graphs).
    Native,
    /// onnxruntime loaded at run time, both towers (Jetson GPUs: TensorRT, CUDA); needs
    /// edgeclip built with the `ort` cargo feature.
    Ort,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Tract => Backend::Tract,
            BackendArg::Native => Backend::Native,
            BackendArg::Ort => Backend::Ort,
        }
    }
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    /// Float graphs as exported.
    Fp32,
    /// int8-weight graphs (smaller, see `inspect` for their measured fidelity).
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

/// Output format of `classify`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum Format {
    /// One JSON object per image.
    Jsonl,
    /// One human-readable line per image.
    Text,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Label images: files, directories (recursive) or '-' for one image on stdin.
    #[command(after_long_help = LABELS_HELP)]
    Classify {
        /// Label file.
        #[arg(long, short = 'l')]
        labels: PathBuf,
        /// Number of best labels listed per image.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Probability below which the answer is 'unknown'.
        #[arg(long, default_value_t = 0.0)]
        threshold: f32,
        /// Output format (JSON Lines: source, label, score, top, ms).
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Images or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Measure accuracy on an ImageFolder data set (DIR/<class>/<image>).
    Eval {
        /// Data set root; folder names are the classes ('_' reads as a space).
        dir: PathBuf,
        /// Only files listed here (paths relative to DIR, e.g. a test split).
        #[arg(long)]
        split: Option<PathBuf>,
        /// At most N images per class.
        #[arg(long)]
        per_class: Option<usize>,
        /// Only these classes (comma-separated folder names).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
        /// Leave these classes out (comma-separated folder names).
        #[arg(long, value_delimiter = ',')]
        exclude_classes: Vec<String>,
        /// Label texts for folders: lines 'folder = label text'.
        #[arg(long)]
        label_map: Option<PathBuf>,
        /// Prompt templates for the class names.
        #[arg(long, value_enum, default_value_t = TemplatesArg::Imagenet7)]
        templates: TemplatesArg,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of texts as JSON Lines {text, ids}.
    Tokenize {
        /// Texts.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Print text embeddings as JSON Lines {text, embedding}.
    EmbedText {
        /// Texts.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Print image embeddings as JSON Lines {source, embedding}.
    EmbedImage {
        /// Images or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Time the towers and the whole path (JPEG bytes → scores): cold start (bundle → first
    /// result, with the label file's embeddings from the cache), load time, latency
    /// percentiles, frames per second, peak memory. Use --model, --precision, --threads and
    /// --backend to compare variants.
    Bench {
        /// Timed runs per measurement (after 3 warm-up runs).
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Image for the end-to-end measurement.
        #[arg(long, default_value = "examples/images/chelsea.png")]
        image: PathBuf,
        /// Label file classified against [default: examples/labels.txt]. Its prompts are
        /// embedded (and cached) before the clock starts, so the cold start is that of a
        /// device restarting with an unchanged label file.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Watch cameras and streams; emit events when what they see changes (a service).
    #[command(long_about = crate::run_cmd::RUN_ABOUT, after_long_help = crate::run_cmd::RUN_AFTER)]
    Run(Box<crate::run_cmd::RunArgs>),
    /// List the board profiles (boards/*.toml), what this machine is, and the profile
    /// `--board auto` picks for it.
    Boards {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle holds, what was inferred, and check its files; with --providers
    /// (or --backend ort), also the onnxruntime library: version and execution providers.
    Inspect {
        /// Bundle name or path (default: --model).
        model: Option<String>,
        /// Load onnxruntime (--ort-dylib) and list its execution providers and which of
        /// --ort-providers register.
        #[arg(long)]
        providers: bool,
    },
}

/// `--templates` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TemplatesArg {
    /// CLIP's 7-template ensemble.
    Imagenet7,
    /// CLIP's 80-template ensemble.
    Imagenet80,
    /// The class name alone.
    None,
}

impl From<TemplatesArg> for TemplateSet {
    fn from(t: TemplatesArg) -> TemplateSet {
        match t {
            TemplatesArg::Imagenet7 => TemplateSet::Imagenet7,
            TemplatesArg::Imagenet80 => TemplateSet::Imagenet80,
            TemplatesArg::None => TemplateSet::None,
        }
    }
}

/// Whether the command is the long-running service.
pub fn is_run(command: &Command) -> bool {
    matches!(command, Command::Run(_))
}

/// Runs a parsed command line; the exit code says whether anything was done.
pub fn run(mut cli: Cli) -> Result<ExitCode> {
    match cli.command {
        // Threads may come from the config file or the board profile: run sets them.
        Command::Run(ref args) => crate::run_cmd::run(&cli.global, args),
        Command::Boards { json } => boards(cli.global.board.as_deref(), json),
        command => {
            if let Some(name) = &cli.global.board {
                cli.global.board_profile = board::resolve(name, None)?.1;
            }
            let g = &cli.global;
            let threads = g.threads.or(g.board_profile.threads);
            encoder::set_threads(threads.unwrap_or_else(encoder::default_threads).max(1));
            one_shot(g, command)
        }
    }
}

fn one_shot(g: &Global, command: Command) -> Result<ExitCode> {
    match command {
        Command::Run(ref args) => crate::run_cmd::run(g, args),
        Command::Boards { json } => boards(g.board.as_deref(), json),
        Command::Bench {
            iterations,
            ref image,
            ref labels,
            json,
        } => bench(g, iterations.max(1), image, labels.as_deref(), json),
        Command::Inspect { model, providers } => {
            let code = inspect(model.as_deref().unwrap_or(g.model()))?;
            if providers
                || matches!(g.backend, Some(BackendArg::Ort))
                || g.board_profile.backend == Some(Backend::Ort)
            {
                inspect_onnxruntime(g)?;
            }
            Ok(code)
        }
        Command::Tokenize { texts } => {
            let engine = open_engine(g)?;
            let mut out = std::io::stdout().lock();
            for text in texts {
                let t = engine.tokenize(&text)?;
                writeln!(out, "{}", json!({"text": text, "ids": t.ids}))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::EmbedText { texts } => {
            let mut engine = open_engine(g)?;
            let mut out = std::io::stdout().lock();
            for text in texts {
                let (e, _) = engine.embed_text(&text)?;
                writeln!(out, "{}", json!({"text": text, "embedding": e.as_slice()}))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::EmbedImage { paths } => {
            let mut engine = open_engine(g)?;
            engine.load_image_tower()?;
            let mut out = std::io::stdout().lock();
            let (mut done, mut skipped) = (0usize, 0usize);
            for frame in PathSource::new(&paths) {
                let result = frame.map_err(anyhow::Error::from).and_then(|f| {
                    let e = engine
                        .embed_image_bytes(&f.bytes)
                        .with_context(|| f.source.clone())?;
                    Ok((f.source, e))
                });
                match result {
                    Ok((source, e)) => {
                        writeln!(
                            out,
                            "{}",
                            json!({"source": source, "embedding": e.as_slice()})
                        )?;
                        done += 1;
                    }
                    Err(e) => {
                        eprintln!("skipping {e:#}");
                        skipped += 1;
                    }
                }
            }
            eprintln!("embedded {done}, skipped {skipped}");
            Ok(if done > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Classify {
            ref labels,
            top_k,
            threshold,
            format,
            ref paths,
        } => classify(g, labels, top_k, threshold, format, paths),
        Command::Eval {
            ref dir,
            ref split,
            per_class,
            ref classes,
            ref exclude_classes,
            ref label_map,
            templates,
            json,
        } => {
            let sel = Selection {
                split: split.clone(),
                per_class,
                classes: classes.clone(),
                exclude: exclude_classes.clone(),
                label_map: match label_map {
                    Some(p) => read_label_map(p)?,
                    None => Default::default(),
                },
            };
            eval(g, dir, &sel, templates.into(), json)
        }
    }
}

fn open_engine(g: &Global) -> Result<Engine> {
    let bundle = Bundle::open(g.model())?;
    let board = &g.board_profile;
    let precision = g
        .precision
        .map(Precision::from)
        .or(board.precision)
        .unwrap_or_else(|| bundle.default_precision());
    log::info!(
        "model {} ({}), {precision} towers",
        bundle.spec.name,
        bundle.root.display()
    );
    let options = EngineOptions {
        precision,
        cache_dir: if g.no_cache {
            None
        } else {
            Some(default_cache_dir())
        },
        backend: g
            .backend
            .map(Backend::from)
            .or(board.backend)
            .unwrap_or_default(),
        ort: g.ort_options(board.ort_options()),
    };
    Ok(Engine::open(bundle, &options)?)
}

/// Builds the classifier for a label set, with a progress bar when prompts must be embedded.
fn build_classifier(engine: &mut Engine, labels: &LabelSet) -> Result<Classifier> {
    let start = Instant::now();
    let bar = ProgressBar::hidden();
    let show = std::io::stderr().is_terminal();
    let (matrix, stats) = engine.label_matrix(labels, |done, total| {
        if show && bar.is_hidden() && done < total {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total as u64);
            bar.set_style(
                ProgressStyle::with_template("embedding prompts {bar:30} {pos}/{len} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    log::info!(
        "{labels}: {} cached, {} embedded, in {:.0} ms",
        stats.cached,
        stats.computed,
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(Classifier::new(matrix, engine.bundle().spec.scoring))
}

fn classify(
    g: &Global,
    labels: &std::path::Path,
    top_k: usize,
    threshold: f32,
    format: Format,
    paths: &[PathBuf],
) -> Result<ExitCode> {
    let label_set = LabelSet::load(labels)?;
    let mut engine = open_engine(g)?;
    let classifier = build_classifier(&mut engine, &label_set)?;
    engine.load_image_tower()?;
    let mut out = std::io::stdout().lock();
    let (mut done, mut skipped) = (0usize, 0usize);
    for frame in PathSource::new(paths) {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipping {e}");
                skipped += 1;
                continue;
            }
        };
        let start = Instant::now();
        let embedding = match engine.embed_image_bytes(&frame.bytes) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipping {}: {e}", frame.source);
                skipped += 1;
                continue;
            }
        };
        let p = classifier.predict(&embedding, top_k, threshold);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match format {
            Format::Jsonl => {
                writeln!(
                    out,
                    "{}",
                    json!({"source": frame.source, "label": p.label, "score": p.score, "top": p.top, "ms": (ms * 10.0).round() / 10.0})
                )?;
            }
            Format::Text => {
                let others: Vec<String> = p
                    .top
                    .iter()
                    .skip(1)
                    .map(|s| format!("{} {:.3}", s.label, s.score))
                    .collect();
                writeln!(
                    out,
                    "{}: {} ({:.3})  [{}]  {:.0} ms",
                    frame.source,
                    p.label,
                    p.score,
                    others.join(", "),
                    ms
                )?;
            }
        }
        done += 1;
    }
    out.flush()?;
    eprintln!("classified {done}, skipped {skipped}");
    Ok(if done > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn eval(
    g: &Global,
    dir: &std::path::Path,
    sel: &Selection,
    templates: TemplateSet,
    as_json: bool,
) -> Result<ExitCode> {
    let data = Dataset::scan(dir, sel)?;
    let labels = LabelSet::from_names(data.labels.clone(), templates, &dir.display().to_string());
    let mut engine = open_engine(g)?;
    let classifier = build_classifier(&mut engine, &labels)?;
    engine.load_image_tower()?;
    let bar = ProgressBar::new(data.samples.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tally = Tally::new(data.labels.clone());
    let start = Instant::now();
    for sample in &data.samples {
        let result = std::fs::read(&sample.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(engine.embed_image_bytes(&bytes)?));
        match result {
            Ok(e) => tally.add(sample.class, &classifier.scores(&e).ranking()),
            Err(e) => {
                bar.suspend(|| eprintln!("skipping {}: {e:#}", sample.path.display()));
                tally.skip();
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = tally.report();
    if report.images == 0 {
        bail!("{}: no image could be classified", dir.display());
    }
    let secs = start.elapsed().as_secs_f64();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} images, {} classes, model {} ({})",
            dir.display(),
            report.images,
            report.classes.len(),
            engine.bundle().spec.name,
            engine.precision()
        );
        println!(
            "top-1 {:.2} %   top-5 {:.2} %   balanced top-1 {:.2} %   skipped {}   {:.1} images/s",
            100.0 * report.top1,
            100.0 * report.top5,
            100.0 * report.balanced_top1,
            report.skipped,
            report.images as f64 / secs
        );
        let mut by_acc: Vec<_> = report.classes.iter().filter(|c| c.count > 0).collect();
        by_acc.sort_by(|a, b| a.top1.total_cmp(&b.top1));
        println!("\nper class (worst first):");
        for c in &by_acc {
            let confused = c
                .most_confused_with
                .as_ref()
                .map(|(l, n)| format!("  → {l} ×{n}"))
                .unwrap_or_default();
            println!(
                "  {:>6.1} %  {:>5}  {}{}",
                100.0 * c.top1,
                c.count,
                c.label,
                confused
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `edgeclip boards`: the profiles, this machine, the pick.
fn boards(asked: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let dirs = board::board_dirs(None);
    let profiles = board::list_profiles(&dirs)?;
    let seen = Detected::probe();
    let picked = board::detect(&profiles, &seen);
    let fmt_opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    if as_json {
        let list: Vec<_> = profiles
            .iter()
            .map(|p| {
                let b = &p.profile;
                json!({
                    "name": p.name, "path": p.path.display().to_string(),
                    "description": b.description, "memory_mb": b.memory_mb,
                    "threads": b.threads, "precision": b.precision.map(|x| x.to_string()),
                    "backend": b.backend.map(|x| x.to_string()), "fps": b.fps,
                    "capture": b.capture,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"profiles": list, "detected": seen, "auto": picked.map(|p| &p.name),
                   "board": asked})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:>7} {:>7} {:>6} {:>7} {:>5}  {:<18} description",
        "profile", "memory", "threads", "prec", "backend", "fps", "capture"
    );
    for p in &profiles {
        let b = &p.profile;
        let c = &b.capture;
        let capture = match (c.format, c.width, c.height, c.fps) {
            (Some(f), Some(w), Some(h), Some(fps)) => format!("{f} {w}x{h}@{fps}"),
            _ => "-".into(),
        };
        println!(
            "{:<18} {:>7} {:>7} {:>6} {:>7} {:>5}  {:<18} {}",
            p.name,
            fmt_opt(b.memory_mb.map(|m| format!("{m} MB"))),
            fmt_opt(b.threads.map(|t| t.to_string())),
            fmt_opt(b.precision.map(|x| x.to_string())),
            fmt_opt(b.backend.map(|x| x.to_string())),
            fmt_opt(b.fps.map(|x| x.to_string())),
            capture,
            b.description.as_deref().unwrap_or("")
        );
    }
    println!("\nthis machine: {}", seen.summary());
    match picked {
        Some(p) => {
            println!("--board auto: {} ({})", p.name, p.path.display());
            if let (Some(need), Some(have)) = (p.profile.memory_mb, seen.memory_mb) {
                if have < need {
                    println!("warning: {have} MiB of memory here, the profile needs {need} MiB");
                }
            }
        }
        None => println!("--board auto: no profile matches; built-in defaults apply"),
    }
    println!(
        "profiles are read from (first match wins): {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(model: &str) -> Result<ExitCode> {
    let bundle = Bundle::open(model)?;
    let s = &bundle.spec;
    println!("bundle        {}", bundle.root.display());
    println!("layout        {}", s.layout);
    println!("name          {}", s.name);
    println!("architecture  {}", s.architecture);
    println!("embedding     {}", s.embedding_dim);
    println!(
        "family        {}{}",
        s.family,
        if s.multilingual {
            " (multilingual)"
        } else {
            ""
        }
    );
    println!("scoring       {}", s.scoring);
    let p = &s.preprocess;
    let geometry = match p.resize {
        ResizeMode::ShortestSide => format!(
            "shortest side to {} then {}x{} centre crop",
            p.resize_to, p.image_size, p.image_size
        ),
        ResizeMode::Squash if p.resize_to > p.image_size => format!(
            "squashed to {}x{} then {}x{} centre crop",
            p.resize_to, p.resize_to, p.image_size, p.image_size
        ),
        ResizeMode::Squash => format!("squashed to {}x{}, no crop", p.image_size, p.image_size),
        ResizeMode::CenterSquare => format!(
            "centre square of the shortest side, resized to {}x{}",
            p.image_size, p.image_size
        ),
    };
    println!(
        "preprocess    {geometry}, {:?}, mean {:?}, std {:?}",
        p.interpolation, p.mean, p.std
    );
    match &s.tokenizer {
        TokenizerSpec::ClipBpe {
            file,
            context_length,
        } => {
            println!(
                "tokenizer     CLIP BPE {} (context {context_length})",
                file.display()
            )
        }
        TokenizerSpec::HfJson {
            file,
            context_length,
            pad_id,
        } => {
            let kind = match HfTokenizer::from_file(file, *context_length, *pad_id) {
                Ok(t) => {
                    let (kind, vocab) = t.model_kind();
                    format!("{kind}, {vocab} tokens")
                }
                Err(e) => format!("unreadable: {e}"),
            };
            println!(
                "tokenizer     tokenizer.json {} ({kind}; context {context_length})",
                file.display()
            )
        }
    }
    let mut ok = true;
    for (tower, spec) in [("visual", &s.visual), ("textual", &s.textual)] {
        for (precision, f) in &spec.files {
            let size = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
            let check = match if tower == "visual" {
                bundle.visual_file(*precision)
            } else {
                bundle.textual_file(*precision)
            } {
                Ok(_) if f.sha256.is_some() => "sha256 ok".to_string(),
                Ok(_) => "no checksum recorded".to_string(),
                Err(e) => {
                    ok = false;
                    format!("ERROR: {e}")
                }
            };
            println!(
                "{tower:<8} {precision:<4} {} ({:.1} MB) {check}",
                f.path.display(),
                size as f64 / 1e6
            );
            for (k, v) in &f.notes {
                println!("              {k} = {v}");
            }
        }
    }
    for note in &s.inferred {
        println!("inferred      {note}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The onnxruntime part of `inspect`: the library, its providers, which of ours register.
#[cfg(feature = "ort")]
fn inspect_onnxruntime(g: &Global) -> Result<()> {
    let options = g.ort_options(g.board_profile.ort_options());
    let r = encoder::ort::library_report(&options)?;
    println!("onnxruntime   {} ({})", r.version, r.path.display());
    println!("providers     {}", r.available.join(", "));
    for (p, outcome) in &r.registration {
        match outcome {
            Ok(()) => println!("  {p:<10}  registers"),
            Err(why) => println!("  {p:<10}  cannot be used: {why}"),
        }
    }
    match r.registration.iter().find(|(_, o)| o.is_ok()) {
        Some((p, _)) => println!("towers would run on {p}"),
        None => println!("towers cannot run: no provider of --ort-providers registers"),
    }
    Ok(())
}

#[cfg(not(feature = "ort"))]
fn inspect_onnxruntime(_: &Global) -> Result<()> {
    bail!("listing onnxruntime's providers needs edgeclip built with the `ort` cargo feature (cargo build --release --features ort)")
}

/// min / median / p90 of `n` timed runs of `f` after 3 warm-up runs, in milliseconds.
/// Latency percentiles of repeated runs, in milliseconds.
#[derive(Debug, serde::Serialize)]
struct Timing {
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
    runs: usize,
}

/// Runs `f` 3 times to warm up, then `n` times timed.
fn time_runs(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Timing {
        min: at(0.0),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        runs: n,
    })
}

/// Peak resident memory of this process (Linux: VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Restarts the kernel's peak-RSS count (VmHWM) at the current RSS, so the peak read later
/// covers only what follows. Best effort: Linux ≥ 4.0; elsewhere the peak spans the process.
fn reset_peak_rss() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        log::debug!("cannot reset the peak RSS count; it covers the whole process");
    }
}

fn bench(
    g: &Global,
    iterations: usize,
    image: &std::path::Path,
    labels: Option<&std::path::Path>,
    as_json: bool,
) -> Result<ExitCode> {
    let labels = match labels {
        Some(p) => LabelSet::load(p)?,
        None => LabelSet::load(std::path::Path::new("examples/labels.txt"))
            .or_else(|_| LabelSet::parse(b"cat\ndog\ncoffee mug\n", "<bench labels>"))?,
    };
    let bytes = std::fs::read(image).with_context(|| image.display().to_string())?;
    if !g.no_cache {
        // Fill the cache first (a no-op when warm) so the cold start below reads it.
        let mut warm = open_engine(g)?;
        build_classifier(&mut warm, &labels)?;
    }
    reset_peak_rss();
    // Cold start: what a restarting device pays before its first result.
    let cold = Instant::now();
    let mut engine = open_engine(g)?;
    let load = Instant::now();
    let tower = engine.load_image_tower()?;
    let (len, backend) = (tower.input_len(), tower.info());
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    let classifier = build_classifier(&mut engine, &labels)?;
    let first = engine.embed_image_bytes(&bytes)?;
    classifier.predict(&first, 5, 0.0);
    let cold_start_ms = cold.elapsed().as_secs_f64() * 1e3;
    // Deterministic image-like values: the cost of a run does not depend on them.
    let pixels: Vec<f32> = (0..len).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    let image_ms = time_runs(iterations, || {
        engine.embed_pixels(&pixels)?;
        Ok(())
    })?;
    let end_to_end_ms = time_runs(iterations, || {
        let e = engine.embed_image_bytes(&bytes)?;
        classifier.predict(&e, 5, 0.0);
        Ok(())
    })?;
    // What a device serving frames holds: image tower, label matrix, buffers (the text
    // tower is not loaded while the cache is warm).
    let serving_rss = peak_rss_bytes();
    let text_ms = time_runs(iterations, || {
        engine.embed_text_uncached("a photo of the large coffee mug.")?;
        Ok(())
    })?;
    let text_backend = engine
        .text_backend()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let threads = encoder::threads();
    let fps = 1e3 / end_to_end_ms.p50;
    let rss = peak_rss_bytes();
    if as_json {
        println!(
            "{}",
            json!({
                "model": engine.bundle().spec.name, "precision": engine.precision().to_string(), "threads": threads, "backend": backend.backend.to_string(),
                "provider": backend.provider_label(), "text_backend": text_backend,
                "cold_start_ms": cold_start_ms, "labels": labels.labels.len(),
                "image_tower_load_ms": load_ms, "image_ms": image_ms, "text_ms": text_ms,
                "end_to_end_ms": end_to_end_ms, "end_to_end_image": image.display().to_string(),
                "end_to_end_fps": fps, "peak_rss_bytes": rss, "serving_peak_rss_bytes": serving_rss,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "model {}, {} towers, image tower on {backend}, text tower on {text_backend}, {threads} thread(s); {iterations} timed runs after 3 warm-up runs",
        engine.bundle().spec.name,
        engine.precision()
    );
    let image_label = format!("JPEG bytes → scores ({})", image.display());
    let rows = [
        ("image tower (preprocessed input)", &image_ms),
        ("text tower (one prompt)", &text_ms),
        (image_label.as_str(), &end_to_end_ms),
    ];
    let w = rows
        .iter()
        .map(|(what, _)| what.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<w$} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)", "min", "p50", "p90", "p99", "mean"
    );
    for (what, t) in rows {
        let pad = w - what.chars().count();
        println!(
            "{what}{:pad$} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            "", t.min, t.p50, t.p90, t.p99, t.mean
        );
    }
    println!(
        "cold start (bundle → first result, {} labels from the cache): {cold_start_ms:.0} ms; image tower load: {load_ms:.0} ms",
        labels.labels.len()
    );
    println!("end to end: {fps:.1} images/s (1 / p50)");
    match (serving_rss, rss) {
        (Some(s), Some(b)) => println!(
            "peak RSS: {:.0} MB serving (image tower + {} labels), {:.0} MB with the text tower loaded",
            s as f64 / 1e6,
            labels.labels.len(),
            b as f64 / 1e6
        ),
        _ => println!("peak RSS: unknown on this system"),
    }
    Ok(ExitCode::SUCCESS)
}
