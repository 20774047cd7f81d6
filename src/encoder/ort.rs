//! The onnxruntime backend ([`Backend::Ort`], cargo feature `ort`): both towers on
//! onnxruntime's execution providers, for GPU offload on NVIDIA Jetson boards.
//!
//! **The library is loaded at run time** (`dlopen`), never linked: the device's own
//! `libonnxruntime.so` runs (on Jetson the `onnxruntime-gpu` build that matches JetPack's
//! CUDA and TensorRT), nothing from CUDA or onnxruntime is needed to build edgeclip, and one
//! aarch64 binary serves boards with and without a GPU. Which library: [`OrtOptions::dylib`]
//! (`--ort-dylib`), else `$ORT_DYLIB_PATH`, else `libonnxruntime.so` on the loader's search
//! path. It is loaded once per process; asking for another one later is an error rather than
//! a silent mix. onnxruntime [`MIN_VERSION`] or newer is needed (the C API level the `ort`
//! crate is built against; JetPack 6 ships 1.18 to 1.20).
//!
//! **Execution providers** are registered one by one in the order of
//! [`OrtOptions::providers`], so the log can say which ones took and why the others did not
//! (not in this library, or the library's own error, e.g. a missing `libcudnn.so`):
//!
//! ```text
//! visual tower: …/visual.onnx (fp32, onnxruntime 1.32.0 from …/libonnxruntime.so.1.32.0, provider CPU, 2 thread(s); TensorRT: not available in this library, CUDA: not available in this library)
//! ```
//!
//! The first provider that registers takes every node it supports, later ones the rest (the
//! CPU always takes what no GPU provider can). TensorRT builds engines when a session is
//! created (minutes on a Jetson, the first time); they are cached in
//! [`OrtOptions::trt_cache_dir`] (default `$EDGECLIP_HOME/cache/tensorrt`), one subdirectory
//! per model file, because onnxruntime names cached engines after the model's path and graph,
//! not its weights, and would otherwise reuse a stale engine after a bundle update in place.
//! If creating the session fails on the first provider (out of GPU memory, an engine build
//! error), the tower is loaded again without it. [`OrtOptions::require_gpu`] makes a start on
//! the CPU alone an error instead of a logged fallback.
//!
//! Inputs are fed as the tract path feeds them (shared [`Feed`] logic): pixels `[1, 3, S, S]`
//! f32; token ids `[1, context]` i64 plus `attention_mask` / `token_type_ids` when the graph
//! has them. Only the embedding output is fetched (the bundle's named output, else the
//! first).

use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ort::environment::Environment;
use ort::ep::{ExecutionProvider, TensorRT, CPU, CUDA};
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, TensorRef};

use super::{
    checked_embedding, threads, Backend, BackendInfo, Embedding, EncoderError, Feed, OrtOptions,
    OrtProvider,
};
use crate::bundle::{edgeclip_home, ModelFile, Precision};
use crate::tokenizer::Tokens;

/// Oldest onnxruntime release that loads: the C API level (`ORT_API_VERSION` 17) the `ort`
/// crate is built against without any `api-N` feature.
pub const MIN_VERSION: &str = "1.17";

/// The default library name, found through the dynamic loader's search path.
const DEFAULT_DYLIB: &str = "libonnxruntime.so";

/// The onnxruntime library this process loaded, and its environment.
pub struct OrtRuntime {
    /// Where the library was loaded from (the file the loader picked for a bare name).
    path: PathBuf,
    /// What the library says its version is (`1.32.0`).
    version: String,
    /// The execution providers the library was built with (`CPUExecutionProvider`, …).
    providers: Vec<String>,
    env: Environment,
    /// Our own handle keeps the library mapped for the life of the process, whatever `ort`
    /// does with its handle.
    _library: libloading::Library,
}

impl OrtRuntime {
    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The library's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The execution providers the library was built with, as onnxruntime names them.
    pub fn available_providers(&self) -> &[String] {
        &self.providers
    }
}

/// The loaded runtime; `None` until a load succeeds (a failed load can be retried with
/// another path).
static RUNTIME: Mutex<Option<Arc<OrtRuntime>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which library to load and where that choice came from.
fn dylib_choice(options: &OrtOptions) -> (PathBuf, &'static str) {
    if let Some(p) = &options.dylib {
        return (p.clone(), "--ort-dylib");
    }
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), "ORT_DYLIB_PATH"),
        None => (PathBuf::from(DEFAULT_DYLIB), "the default name"),
    }
}

/// Whether `path` names a file (has a directory part) rather than a name for the loader to
/// search for.
fn is_file_path(path: &Path) -> bool {
    path.components().count() > 1 || path.is_absolute()
}

/// The file a loaded library with this file name was mapped from (Linux: `/proc/self/maps`),
/// so that a bare name is reported, and handed to `ort`, as the file that actually loaded.
fn mapped_path(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(file_name))
        })
        .map(PathBuf::from)
}

/// Parses the minor version of `1.MINOR.PATCH`.
fn minor_version(version: &str) -> Option<u32> {
    let mut parts = version.trim().split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Maps onnxruntime's log messages into ours (target `onnxruntime`). Its INFO level is a
/// running commentary of graph transformations, so it goes to debug.
fn forward_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    let level = match level {
        LogLevel::Verbose => log::Level::Trace,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Warning => log::Level::Warn,
        LogLevel::Error | LogLevel::Fatal => log::Level::Error,
    };
    log::log!(target: "onnxruntime", level, "[{category}] {message} ({location})");
}

/// The least severe onnxruntime messages worth producing at our log level: asking
/// onnxruntime for verbose messages nobody shows would only cost time.
fn ort_log_level() -> LogLevel {
    match log::max_level() {
        log::LevelFilter::Trace => LogLevel::Verbose,
        log::LevelFilter::Debug => LogLevel::Info,
        _ => LogLevel::Warning,
    }
}

/// Loads onnxruntime (once per process) as `options` say: `--ort-dylib`, else
/// `$ORT_DYLIB_PATH`, else `libonnxruntime.so`.
pub fn runtime(options: &OrtOptions) -> Result<Arc<OrtRuntime>, EncoderError> {
    let (wanted, origin) = dylib_choice(options);
    let lib_err = |path: &Path, message: String| EncoderError::OrtLibrary {
        path: path.display().to_string(),
        origin,
        message,
        min_version: MIN_VERSION,
    };
    // A relative path means the working directory (`ort` alone would try the executable's
    // directory first), and so does a bare name of a file there (what someone typing it
    // means); any other bare name is left to the loader's search path.
    let wanted = if is_file_path(&wanted) || wanted.is_file() {
        std::path::absolute(&wanted).map_err(|e| lib_err(&wanted, e.to_string()))?
    } else {
        wanted
    };
    let mut slot = lock(&RUNTIME);
    if is_file_path(&wanted) && !wanted.exists() {
        return Err(lib_err(&wanted, "no such file".into()));
    }
    if let Some(rt) = slot.as_ref() {
        let same = if is_file_path(&wanted) {
            same_file(&wanted, &rt.path)
        } else {
            rt.path
                .file_name()
                .and_then(|n| n.to_str())
                .zip(wanted.to_str())
                .is_some_and(|(loaded, name)| loaded.starts_with(name))
        };
        if same {
            return Ok(rt.clone());
        }
        return Err(lib_err(
            &wanted,
            format!(
                "this process already runs onnxruntime {} from {}, and one process can load only one",
                rt.version,
                rt.path.display()
            ),
        ));
    }

    // Our own dlopen first: it gives the loader's own message for a missing or broken file,
    // and the version, before `ort` (which would panic on a library it cannot use) sees it.
    // SAFETY: loading a shared library runs its initialisers; onnxruntime's are sound, and
    // the path is what the user (or the default) chose to run.
    let library = unsafe { libloading::Library::new(&wanted) }
        .map_err(|e| lib_err(&wanted, with_causes(&e)))?;
    let path = if is_file_path(&wanted) {
        wanted.clone()
    } else {
        wanted
            .to_str()
            .and_then(mapped_path)
            .unwrap_or_else(|| wanted.clone())
    };
    let version = {
        type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
        // SAFETY: `OrtGetApiBase` has this signature in every onnxruntime release; the
        // pointer it returns is static, checked for null before use.
        let base = unsafe {
            let get: libloading::Symbol<GetApiBase> =
                library.get(b"OrtGetApiBase\0").map_err(|_| {
                    lib_err(
                        &path,
                        "not an onnxruntime library (no OrtGetApiBase symbol)".into(),
                    )
                })?;
            get()
        };
        if base.is_null() {
            return Err(lib_err(&path, "OrtGetApiBase returned nothing".into()));
        }
        // SAFETY: `base` is a valid OrtApiBase; the version string is static and
        // NUL-terminated.
        let raw = unsafe { ((*base).GetVersionString)() };
        if raw.is_null() {
            return Err(lib_err(&path, "the library reports no version".into()));
        }
        // SAFETY: checked non-null above; onnxruntime returns a static C string.
        unsafe { CStr::from_ptr(raw) }
            .to_string_lossy()
            .into_owned()
    };
    match minor_version(&version) {
        Some(minor) if minor >= ort::MINOR_VERSION => {}
        _ => {
            return Err(lib_err(
                &path,
                format!("it is onnxruntime {version}, edgeclip needs {MIN_VERSION} or newer"),
            ))
        }
    }
    // `ort` loads the same file (the loader hands back the handle we already hold).
    let builder = ort::init_from(&path).map_err(|e| lib_err(&path, e.to_string()))?;
    let env = builder
        .with_name("edgeclip")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| lib_err(&path, format!("cannot create its environment: {e}")))?;
    env.set_log_level(ort_log_level());
    let providers = available_providers().map_err(|e| lib_err(&path, e))?;
    log::info!(
        "onnxruntime {version} from {} ({origin}); providers in this library: {}",
        path.display(),
        providers.join(", ")
    );
    let rt = Arc::new(OrtRuntime {
        path,
        version,
        providers,
        env,
        _library: library,
    });
    *slot = Some(rt.clone());
    Ok(rt)
}

/// An error and its causes, `: `-separated (libloading keeps the loader's message, the
/// useful part, in the cause).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `GetAvailableProviders`: what the library was built with. `ort` only asks about one
/// provider at a time, and `inspect` lists them all.
fn available_providers() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: the out-pointers are valid; on success onnxruntime allocates `n` C strings
    // that `ReleaseAvailableProviders` frees below.
    unsafe { ort::Error::result_from_status((api.GetAvailableProviders)(&mut list, &mut n)) }
        .map_err(|e| format!("cannot list its execution providers: {e}"))?;
    if list.is_null() {
        return Ok(Vec::new());
    }
    let names = (0..n.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: `list` holds `n` entries, each a C string or null.
            let p = unsafe { *list.add(i) };
            // SAFETY: non-null entries are NUL-terminated strings owned by `list`.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect();
    // SAFETY: releases exactly what GetAvailableProviders returned.
    let released =
        unsafe { ort::Error::result_from_status((api.ReleaseAvailableProviders)(list, n)) };
    if let Err(e) = released {
        log::debug!("onnxruntime: releasing the provider list: {e}");
    }
    Ok(names)
}

/// onnxruntime's name of a provider.
fn ort_name(p: OrtProvider) -> &'static str {
    match p {
        OrtProvider::Tensorrt => <TensorRT as ExecutionProvider>::NAME,
        OrtProvider::Cuda => <CUDA as ExecutionProvider>::NAME,
        OrtProvider::Cpu => <CPU as ExecutionProvider>::NAME,
    }
}

/// Registers one provider on `builder`; `Err` says why it cannot be used.
fn register(
    builder: &mut SessionBuilder,
    rt: &OrtRuntime,
    provider: OrtProvider,
    options: &OrtOptions,
    trt_cache: Option<&Path>,
) -> Result<(), String> {
    if !rt.providers.iter().any(|p| p == ort_name(provider)) {
        return Err("not available in this library".into());
    }
    let result = match provider {
        OrtProvider::Tensorrt => {
            let mut ep = TensorRT::default().with_fp16(options.trt_fp16);
            if let Some(dir) = trt_cache.and_then(Path::to_str) {
                // The timing cache shortens the builds of later engines (other models,
                // other precisions) too.
                ep = ep
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir);
            }
            ep.register(builder)
        }
        OrtProvider::Cuda => CUDA::default().register(builder),
        // The CPU provider is always there; registering it only sets its allocator.
        OrtProvider::Cpu => CPU::default().with_arena_allocator(true).register(builder),
    };
    result.map_err(|e| e.message().to_string())
}

/// The outcome of registering the providers of `options`, in order.
struct Registration {
    /// Those that registered, in order of preference.
    registered: Vec<OrtProvider>,
    /// Those that did not, and why.
    refused: Vec<(OrtProvider, String)>,
}

impl Registration {
    fn run(
        builder: &mut SessionBuilder,
        rt: &OrtRuntime,
        candidates: &[OrtProvider],
        options: &OrtOptions,
        trt_cache: Option<&Path>,
    ) -> Registration {
        let mut r = Registration {
            registered: Vec::new(),
            refused: Vec::new(),
        };
        for &p in candidates {
            match register(builder, rt, p, options, trt_cache) {
                Ok(()) => r.registered.push(p),
                Err(why) => r.refused.push((p, why)),
            }
        }
        r
    }
}

/// `TensorRT: why; CUDA: why` for the providers in `notes`.
fn reasons(notes: &[(OrtProvider, String)]) -> String {
    notes
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// [`OrtOptions::require_gpu`]: an error naming why each GPU provider could not be used
/// when none registered.
fn check_gpu(
    options: &OrtOptions,
    registered: &[OrtProvider],
    refused: &[(OrtProvider, String)],
    tower: &'static str,
    path: &Path,
) -> Result<(), EncoderError> {
    if !options.require_gpu || registered.iter().any(|p| p.is_gpu()) {
        return Ok(());
    }
    let gpu: Vec<_> = refused
        .iter()
        .filter(|(p, _)| p.is_gpu())
        .cloned()
        .collect();
    Err(EncoderError::GpuRequired {
        path: path.display().to_string(),
        tower,
        providers: if gpu.is_empty() {
            "no GPU provider (tensorrt, cuda) is in --ort-providers".into()
        } else {
            reasons(&gpu)
        },
    })
}

/// The [`BackendInfo`] of a tower whose preferred registered provider is `primary`.
fn info_for(primary: OrtProvider, options: &OrtOptions) -> BackendInfo {
    BackendInfo {
        backend: Backend::Ort,
        provider: primary,
        fp16: primary == OrtProvider::Tensorrt && options.trt_fp16,
    }
}

/// Which provider a tower would run on, without loading one: loads the library and
/// registers the providers of `options` on a session that is never created (registration
/// does not depend on the model). The text-embedding cache is keyed by it.
pub fn probe(options: &OrtOptions, textual: &Path) -> Result<BackendInfo, EncoderError> {
    let rt = runtime(options)?;
    let mut builder = new_builder(&rt, "textual", textual)?;
    let reg = Registration::run(&mut builder, &rt, &options.providers, options, None);
    check_gpu(options, &reg.registered, &reg.refused, "textual", textual)?;
    match reg.registered.first() {
        Some(&p) => Ok(info_for(p, options)),
        None => Err(EncoderError::Load {
            path: textual.display().to_string(),
            tower: "textual",
            message: format!(
                "none of the execution providers asked for could be used: {}",
                reasons(&reg.refused)
            ),
        }),
    }
}

fn new_builder(
    rt: &OrtRuntime,
    tower: &'static str,
    path: &Path,
) -> Result<SessionBuilder, EncoderError> {
    let err = |e: String| EncoderError::Load {
        path: path.display().to_string(),
        tower,
        message: e,
    };
    Session::builder(&rt.env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| err(e.to_string()))?
        // This fusion (MatMulInteger → Cast → Mul into MatMulIntegerToFloat) mishandles the
        // per-row activation scales of our symmetric int8 graphs in onnxruntime 1.32: the
        // coca-tiny-seeded image tower came out at cos 0.94 to tract's and to onnxruntime's
        // own unfused result (ruclip-tiny-seeded 0.994). fp32 graphs have no MatMulInteger.
        .with_disabled_optimizers("MatMulIntegerToFloatFusion")
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(threads())
        .map_err(|e| err(e.to_string()))
}

/// Where TensorRT engines of `file` are cached: a subdirectory of the cache root per model
/// file (its recorded sha256, else its path, size and modification time), created. `None`
/// (engines rebuilt at every start) when it cannot be created.
fn trt_cache_dir(options: &OrtOptions, file: &ModelFile) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let root = options
        .trt_cache_dir
        .clone()
        .unwrap_or_else(|| edgeclip_home().join("cache").join("tensorrt"));
    let id = match &file.sha256 {
        Some(s) => s.to_ascii_lowercase(),
        None => {
            let meta = std::fs::metadata(&file.path).ok();
            let mtime = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let len = meta.map(|m| m.len()).unwrap_or(0);
            let text = format!("{} {len} {mtime}", file.path.display());
            hex::encode(Sha256::digest(text.as_bytes()))
        }
    };
    let stem = file
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let dir = root.join(format!("{stem}-{}", &id[..id.len().min(16)]));
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            log::warn!(
                "TensorRT engine cache {}: {e}; engines will be rebuilt at every start",
                dir.display()
            );
            None
        }
    }
}

/// One tower as an onnxruntime session.
pub(crate) struct OrtTower {
    tower: &'static str,
    /// Runs take `&mut Session`; towers are shared behind `&self` (batch 1, one run at a
    /// time per tower, as with tract).
    run: Mutex<(Session, RunOptions<HasSelectedOutputs>)>,
    /// Graph input names and what each is fed with.
    inputs: Vec<(String, Feed)>,
    output: String,
    info: BackendInfo,
}

impl OrtTower {
    /// Creates the session for `file` on the first providers of `options` that work.
    pub(crate) fn load(
        file: &ModelFile,
        precision: Precision,
        tower: &'static str,
        input_name: Option<&str>,
        output_name: Option<&str>,
        options: &OrtOptions,
    ) -> Result<OrtTower, EncoderError> {
        let path = &file.path;
        let load_err = |message: String| EncoderError::Load {
            path: path.display().to_string(),
            tower,
            message,
        };
        let rt = runtime(options)?;
        let trt_cache = options
            .providers
            .contains(&OrtProvider::Tensorrt)
            .then(|| trt_cache_dir(options, file))
            .flatten();
        let mut candidates = options.providers.clone();
        // Providers given up on after session creation failed with them.
        let mut dropped: Vec<(OrtProvider, String)> = Vec::new();
        let (session, reg) = loop {
            let mut builder = new_builder(&rt, tower, path)?;
            let reg = Registration::run(
                &mut builder,
                &rt,
                &candidates,
                options,
                trt_cache.as_deref(),
            );
            let mut refused = dropped.clone();
            refused.extend(reg.refused.iter().cloned());
            let Some(&primary) = reg.registered.first() else {
                return Err(load_err(format!(
                    "none of the execution providers asked for could be used: {}",
                    reasons(&refused)
                )));
            };
            check_gpu(options, &reg.registered, &refused, tower, path)?;
            if primary == OrtProvider::Tensorrt {
                log::info!(
                    "{tower} tower: TensorRT builds its engines now unless cached (the first start can take minutes){}",
                    trt_cache
                        .as_ref()
                        .map(|d| format!("; cache {}", d.display()))
                        .unwrap_or_default()
                );
            }
            match builder.commit_from_file(path) {
                Ok(session) => break (session, reg),
                // Another provider may still work: a GPU out of memory, an engine build
                // that fails. The CPU is the last resort and has no one to fall back to.
                Err(e) if reg.registered.len() > 1 => {
                    log::warn!("{tower} tower: {primary} could not create the session ({e}); trying without it");
                    dropped.push((primary, format!("session creation failed: {e}")));
                    candidates.retain(|&p| p != primary);
                }
                Err(e) => return Err(load_err(e.to_string())),
            }
        };
        let primary = reg.registered[0];
        let info = info_for(primary, options);

        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let feeds = Feed::assign(tower, &names, input_name).map_err(&load_err)?;
        for (input, feed) in session.inputs().iter().zip(&feeds) {
            let want = match feed {
                Feed::Pixels => TensorElementType::Float32,
                _ => TensorElementType::Int64,
            };
            let got = input.dtype().tensor_type();
            if got != Some(want) {
                return Err(load_err(format!(
                    "graph input '{}' is {}, edgeclip feeds {want:?}",
                    input.name(),
                    got.map(|t| format!("{t:?}"))
                        .unwrap_or_else(|| "not a tensor".into())
                )));
            }
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let output = match output_name {
            Some(name) if outputs.contains(&name) => name.to_string(),
            Some(name) => {
                return Err(load_err(format!(
                    "no output '{name}' (outputs: {})",
                    outputs.join(", ")
                )))
            }
            None => outputs
                .first()
                .map(|s| s.to_string())
                .ok_or_else(|| load_err("graph has no output".into()))?,
        };
        let run_options = RunOptions::new()
            .map_err(|e| load_err(e.to_string()))?
            .with_outputs(OutputSelector::no_default().with(output.clone()));

        let mut notes = dropped;
        notes.extend(reg.refused);
        let others = if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", reasons(&notes).replace("; ", ", "))
        };
        let line = format!(
            "{tower} tower: {} ({precision}, onnxruntime {} from {}, provider {}{}, {} thread(s){others})",
            path.display(),
            rt.version,
            rt.path.display(),
            info.provider_label(),
            if reg.registered.len() > 1 {
                format!(
                    " then {}",
                    reg.registered[1..]
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            },
            threads()
        );
        // Falling back to the CPU when a GPU was asked for is worth a warning: it is a
        // different speed class, and usually a broken install.
        if !primary.is_gpu() && options.providers.iter().any(|p| p.is_gpu()) {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }

        Ok(OrtTower {
            tower,
            run: Mutex::new((session, run_options)),
            inputs: names.into_iter().zip(feeds).collect(),
            output,
            info,
        })
    }

    /// Backend and provider.
    pub(crate) fn info(&self) -> BackendInfo {
        self.info
    }

    /// Embeds preprocessed pixels (`3 × size × size`, checked by the caller).
    pub(crate) fn encode_pixels(
        &self,
        pixels: &[f32],
        size: usize,
        dim: usize,
    ) -> Result<Embedding, EncoderError> {
        // A view: the pixels are not copied on the way in.
        let t = TensorRef::from_array_view(([1usize, 3, size, size], pixels))
            .map_err(|e| self.run_err(e))?;
        self.run(
            vec![(Cow::Borrowed(self.inputs[0].0.as_str()), t.into())],
            dim,
        )
    }

    /// Embeds token ids (length checked by the caller).
    pub(crate) fn encode_tokens(
        &self,
        tokens: &Tokens,
        dim: usize,
    ) -> Result<Embedding, EncoderError> {
        let n = tokens.ids.len();
        let mut feeds = Vec::with_capacity(self.inputs.len());
        for (name, feed) in &self.inputs {
            let t = Tensor::from_array(([1usize, n], feed.text_values(tokens)))
                .map_err(|e| self.run_err(e))?;
            feeds.push((Cow::Borrowed(name.as_str()), SessionInputValue::from(t)));
        }
        self.run(feeds, dim)
    }

    fn run(
        &self,
        feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
        dim: usize,
    ) -> Result<Embedding, EncoderError> {
        let mut guard = lock(&self.run);
        let (session, run_options) = &mut *guard;
        let outputs = session
            .run_with_options(feeds, &*run_options)
            .map_err(|e| self.run_err(e))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| EncoderError::BadOutput {
                tower: self.tower,
                what: format!("no '{}' output", self.output),
            })?;
        let (_, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| EncoderError::BadOutput {
                tower: self.tower,
                what: format!("a non-f32 output: {e}"),
            })?;
        checked_embedding(self.tower, data.to_vec(), dim)
    }

    fn run_err(&self, e: impl std::fmt::Display) -> EncoderError {
        EncoderError::Run {
            tower: self.tower,
            message: e.to_string(),
        }
    }
}

/// What `edgeclip inspect --providers` shows about the library.
#[derive(Debug, Clone)]
pub struct LibraryReport {
    /// The library file.
    pub path: PathBuf,
    /// Its version.
    pub version: String,
    /// The execution providers it was built with (onnxruntime's names).
    pub available: Vec<String>,
    /// For each provider of the options, in order: `Ok` when it registers, else why not.
    pub registration: Vec<(OrtProvider, Result<(), String>)>,
}

/// Loads the library of `options` and tries each of its providers.
pub fn library_report(options: &OrtOptions) -> Result<LibraryReport, EncoderError> {
    let rt = runtime(options)?;
    let mut registration = Vec::new();
    for &p in &options.providers {
        // A builder per provider: each is tried on its own, not behind the others.
        let mut builder = new_builder(&rt, "visual", Path::new("(probe)"))?;
        registration.push((p, register(&mut builder, &rt, p, options, None)));
    }
    Ok(LibraryReport {
        path: rt.path.clone(),
        version: rt.version.clone(),
        available: rt.providers.clone(),
        registration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_version_is_the_api_level_ort_is_built_for() {
        assert_eq!(MIN_VERSION, format!("1.{}", ort::MINOR_VERSION));
        assert_eq!(minor_version("1.32.0"), Some(32));
        assert_eq!(minor_version("1.18.1"), Some(18));
        assert_eq!(minor_version("2.0.0"), None);
        assert_eq!(minor_version("garbage"), None);
    }

    #[test]
    fn library_choice_and_path_kinds() {
        let opts = OrtOptions {
            dylib: Some(PathBuf::from("/opt/ort/libonnxruntime.so")),
            ..OrtOptions::default()
        };
        assert_eq!(
            dylib_choice(&opts),
            (PathBuf::from("/opt/ort/libonnxruntime.so"), "--ort-dylib")
        );
        assert!(is_file_path(Path::new("/x/libonnxruntime.so")));
        assert!(is_file_path(Path::new("lib/libonnxruntime.so")));
        assert!(!is_file_path(Path::new("libonnxruntime.so")));
    }

    #[test]
    fn provider_names_are_onnxruntimes() {
        assert_eq!(ort_name(OrtProvider::Tensorrt), "TensorrtExecutionProvider");
        assert_eq!(ort_name(OrtProvider::Cuda), "CUDAExecutionProvider");
        assert_eq!(ort_name(OrtProvider::Cpu), "CPUExecutionProvider");
    }

    #[test]
    fn info_marks_fp16_only_for_tensorrt() {
        let opts = OrtOptions::default();
        assert!(info_for(OrtProvider::Tensorrt, &opts).fp16);
        assert!(!info_for(OrtProvider::Cuda, &opts).fp16);
        let no_fp16 = OrtOptions {
            trt_fp16: false,
            ..OrtOptions::default()
        };
        assert!(!info_for(OrtProvider::Tensorrt, &no_fp16).fp16);
    }
}
