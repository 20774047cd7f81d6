//! The two towers: pixels → image embedding, token ids → text embedding.
//!
//! Two CPU backends, both pure Rust:
//! - tract runs any ONNX graph. Each graph is loaded once with fixed batch-1 shapes and
//!   optimised at load time, so a run does no shape inference or graph rewriting.
//! - the native ViT ([`vit`]) runs the CLIP ViT image tower read from the same ONNX file
//!   with int8 kernels of our own ([`edgeclip_linalg`]); it is chosen automatically when
//!   the graph is recognised ([`Backend::Auto`]) and tested against tract.
//!
//! and, with the cargo feature `ort`, onnxruntime loaded at run time ([`Backend::Ort`], module
//! `ort`): both towers on the device's execution providers (TensorRT, CUDA on Jetson boards).
//!
//! Which one runs is always logged, and [`BackendInfo`] says so to `/healthz`, `/metrics` and
//! `bench`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

#[cfg(feature = "ort")]
pub mod ort;
pub mod vit;
mod vit_math;
pub mod vit_onnx;

use tract_onnx::prelude::*;

use crate::bundle::{Bundle, BundleError, Precision};
use crate::tokenizer::Tokens;

/// Errors loading or running a tower.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The bundle could not provide the graph.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// tract could not load, type or optimise the graph.
    #[error("{path}: cannot load the {tower} tower: {message}")]
    Load {
        /// The ONNX file.
        path: String,
        /// `visual` or `textual`.
        tower: &'static str,
        /// tract's explanation (the whole cause chain).
        message: String,
    },
    /// Running the graph failed.
    #[error("{tower} tower failed: {message}")]
    Run {
        /// `visual` or `textual`.
        tower: &'static str,
        /// tract's explanation.
        message: String,
    },
    /// The output is not a usable embedding.
    #[error("{tower} tower gave {what}")]
    BadOutput {
        /// `visual` or `textual`.
        tower: &'static str,
        /// What was wrong with it.
        what: String,
    },
    /// The onnxruntime shared library could not be loaded ([`Backend::Ort`]).
    #[error(
        "cannot load onnxruntime from {path} ({origin}): {message}. Install onnxruntime \
         (on Jetson: JetPack's onnxruntime-gpu, version {min_version} or newer) or point to its \
         libonnxruntime.so with --ort-dylib PATH or ORT_DYLIB_PATH"
    )]
    OrtLibrary {
        /// The library path or name that was tried.
        path: String,
        /// Where that path came from (`--ort-dylib`, `ORT_DYLIB_PATH`, the default name).
        origin: &'static str,
        /// What went wrong (the loader's message, or the version found).
        message: String,
        /// Oldest onnxruntime release edgeclip works with.
        min_version: &'static str,
    },
    /// A GPU was required ([`OrtOptions::require_gpu`]) and no GPU provider could be used.
    #[error(
        "{path}: the {tower} tower would run on the CPU, but a GPU is required (--require-gpu); \
         {providers}"
    )]
    GpuRequired {
        /// The ONNX file.
        path: String,
        /// `visual` or `textual`.
        tower: &'static str,
        /// Why each GPU provider could not be used (`TensorRT: …; CUDA: …`).
        providers: String,
    },
}

/// An L2-normalised embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// Normalises `v` to unit length; `None` when it has no direction (zero, NaN, inf).
    pub fn normalised(mut v: Vec<f32>) -> Option<Embedding> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm <= f32::MIN_POSITIVE {
            return None;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        Some(Embedding(v))
    }

    /// Wraps values that are already unit length (e.g. read back from the cache).
    pub fn from_unit(v: Vec<f32>) -> Embedding {
        Embedding(v)
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Cosine similarity with another unit embedding.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }

    /// Mean of unit embeddings, renormalised: CLIP's prompt ensembling.
    pub fn mean(items: &[Embedding]) -> Option<Embedding> {
        let dim = items.first()?.0.len();
        let mut acc = vec![0f32; dim];
        for e in items {
            acc.iter_mut().zip(&e.0).for_each(|(a, b)| *a += b);
        }
        Embedding::normalised(acc)
    }
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads matrix products use (process-wide: tract's executor and the
/// native path's workers). Call once at start.
pub fn set_threads(n: usize) {
    static ONCE: Once = Once::new();
    THREADS.store(n.max(1), Ordering::Relaxed);
    ONCE.call_once(|| {
        if n > 1 {
            tract_linalg::multithread::set_default_executor(
                tract_linalg::multithread::Executor::multithread(n),
            );
        }
    });
}

/// Threads set by [`set_threads`], or all cores.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// The int8 kernels the native path uses: the best this CPU runs, or the one named by
/// `EDGECLIP_ISA` (`scalar`, `avx2`, `avx512vnni`, …) to compare them on the whole model.
fn kernel_isa() -> edgeclip_linalg::Isa {
    use edgeclip_linalg::Isa;
    let best = Isa::detect();
    let Ok(name) = std::env::var("EDGECLIP_ISA") else {
        return best;
    };
    match Isa::from_name(&name) {
        Some(isa) if Isa::supported().contains(&isa) => isa,
        _ => {
            let runnable: Vec<&str> = Isa::supported().into_iter().map(Isa::name).collect();
            log::warn!(
                "EDGECLIP_ISA={name}: not a kernel this CPU runs ({}); using {best}",
                runnable.join(", ")
            );
            best
        }
    }
}

/// Which implementation runs the towers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The native ViT when the graph is a CLIP ViT it recognises, tract otherwise.
    #[default]
    Auto,
    /// tract, for any graph.
    Tract,
    /// The native ViT; an error when the graph is not one it recognises.
    Native,
    /// onnxruntime, loaded at run time from the device's `libonnxruntime.so` (cargo feature
    /// `ort`), for both towers, on the execution providers of [`OrtOptions`] (Jetson GPUs).
    Ort,
}

/// An onnxruntime execution provider, tried in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrtProvider {
    /// NVIDIA TensorRT (fp16 when [`OrtOptions::trt_fp16`]; engines cached on disk).
    Tensorrt,
    /// NVIDIA CUDA.
    Cuda,
    /// onnxruntime's own CPU kernels.
    Cpu,
}

impl std::fmt::Display for OrtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: tables align on it (`{p:<10}`).
        f.pad(match self {
            OrtProvider::Tensorrt => "TensorRT",
            OrtProvider::Cuda => "CUDA",
            OrtProvider::Cpu => "CPU",
        })
    }
}

/// Settings of the [`Backend::Ort`] backend (plain data: also read from board profiles).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrtOptions {
    /// `libonnxruntime.so` to load; `None`: `$ORT_DYLIB_PATH`, else the loader's search path.
    pub dylib: Option<std::path::PathBuf>,
    /// Execution providers in order of preference; the CPU takes what the others cannot.
    pub providers: Vec<OrtProvider>,
    /// Let TensorRT build fp16 engines.
    pub trt_fp16: bool,
    /// Where TensorRT engines are cached (the second start skips the engine build);
    /// `None`: `$EDGECLIP_HOME/cache/tensorrt`.
    pub trt_cache_dir: Option<std::path::PathBuf>,
    /// A start on the CPU provider alone is an error instead of a logged fallback.
    pub require_gpu: bool,
}

impl OrtOptions {
    /// These settings (a board profile's, or the defaults) with the command line's over them:
    /// a library path or a provider list replaces this one's; `require_gpu` only adds.
    pub fn with_overrides(
        self,
        dylib: Option<std::path::PathBuf>,
        providers: Option<Vec<OrtProvider>>,
        require_gpu: bool,
    ) -> OrtOptions {
        OrtOptions {
            dylib: dylib.or(self.dylib),
            providers: providers.unwrap_or(self.providers),
            require_gpu: require_gpu || self.require_gpu,
            ..self
        }
    }
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            dylib: None,
            providers: vec![OrtProvider::Tensorrt, OrtProvider::Cuda, OrtProvider::Cpu],
            trt_fp16: true,
            trt_cache_dir: None,
            require_gpu: false,
        }
    }
}

impl OrtProvider {
    /// Whether the provider runs on a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, OrtProvider::Tensorrt | OrtProvider::Cuda)
    }

    /// Parses a comma-separated list (`tensorrt,cuda,cpu`): at least one, none twice.
    pub fn parse_list(text: &str) -> Result<Vec<OrtProvider>, String> {
        let mut list = Vec::new();
        for item in text.split(',').map(str::trim) {
            let p: OrtProvider = item.parse()?;
            if list.contains(&p) {
                return Err(format!("'{text}': {item} is listed twice"));
            }
            list.push(p);
        }
        Ok(list)
    }
}

impl std::str::FromStr for OrtProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(OrtProvider::Tensorrt),
            "cuda" => Ok(OrtProvider::Cuda),
            "cpu" => Ok(OrtProvider::Cpu),
            "" => Err("an empty execution provider name (expected tensorrt, cuda or cpu)".into()),
            other => Err(format!(
                "unknown execution provider '{other}' (expected tensorrt, cuda or cpu)"
            )),
        }
    }
}

/// What runs a tower: the backend and the device it computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendInfo {
    /// tract, native or ort.
    pub backend: Backend,
    /// `CPU` for tract and the native ViT; for onnxruntime the first execution provider
    /// that registered (it takes every node it supports; the rest fall to later ones).
    pub provider: OrtProvider,
    /// TensorRT builds fp16 engines.
    pub fp16: bool,
}

impl BackendInfo {
    /// A backend that runs on the CPU in fp32 (tract, native).
    pub fn cpu(backend: Backend) -> BackendInfo {
        BackendInfo {
            backend,
            provider: OrtProvider::Cpu,
            fp16: false,
        }
    }

    /// The provider as shown in logs and metrics: `CPU`, `CUDA`, `TensorRT`, `TensorRT fp16`.
    pub fn provider_label(&self) -> String {
        if self.fp16 {
            format!("{} fp16", self.provider)
        } else {
            self.provider.to_string()
        }
    }

    /// What the text-embedding cache key records about how embeddings were computed:
    /// `None` for the CPU (tract, the native path and onnxruntime's CPU provider all compute
    /// in fp32 and agree to a cosine of 0.9999, so their embeddings are interchangeable and an
    /// existing cache stays valid when the backend changes); the provider for a GPU, whose
    /// fp16 (TensorRT) or TF32 (CUDA on Ampere, the default there) arithmetic gives
    /// embeddings that differ in the third decimal, which must not be mixed with CPU ones.
    pub fn compute_tag(&self) -> Option<String> {
        self.provider.is_gpu().then(|| self.provider_label())
    }
}

impl std::fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.backend, self.provider_label())
    }
}

/// How the text tower of `backend` will compute, known before it loads: the embedding cache
/// is keyed by it and a warm cache never loads the tower. For onnxruntime this loads the
/// library and registers the providers on a throwaway session (as the tower will);
/// without the `ort` feature it is the load error the towers would give.
/// `textual` is the text tower's file, for error messages.
pub fn planned_text_backend(
    backend: Backend,
    ort_options: &OrtOptions,
    textual: &Path,
) -> Result<BackendInfo, EncoderError> {
    match backend {
        #[cfg(feature = "ort")]
        Backend::Ort => ort::probe(ort_options, textual),
        #[cfg(not(feature = "ort"))]
        Backend::Ort => {
            let _ = ort_options;
            Err(ort_feature_missing(
                textual.display().to_string(),
                "textual",
            ))
        }
        // The text tower runs on tract for every other backend.
        _ => Ok(BackendInfo::cpu(Backend::Tract)),
    }
}

/// The error of [`Backend::Ort`] in a build without the `ort` feature.
#[cfg(not(feature = "ort"))]
fn ort_feature_missing(path: String, tower: &'static str) -> EncoderError {
    EncoderError::Load {
        path,
        tower,
        message: "the ort backend needs edgeclip built with the `ort` cargo feature \
                  (cargo build --release --features ort)"
            .into(),
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Tract => "tract",
            Backend::Native => "native",
            Backend::Ort => "ort",
        })
    }
}

/// Number of threads to use by default: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One optimised graph with a single embedding output.
struct Graph {
    plan: std::sync::Arc<TypedSimplePlan>,
    tower: &'static str,
}

/// What one graph input is fed with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feed {
    Pixels,
    TokenIds,
    AttentionMask,
    TokenTypeIds,
}

impl Feed {
    /// Assigns a feed to each graph input (in the graph's order). An image tower takes one
    /// input, the pixels; a text tower takes the token ids (the input the bundle names, else
    /// the first) and optionally BERT-style `attention_mask` / `token_type_ids`. Shared by
    /// every backend so that they feed a graph alike.
    fn assign(
        tower: &'static str,
        names: &[String],
        ids_input: Option<&str>,
    ) -> Result<Vec<Feed>, String> {
        if tower == "visual" {
            return match names.len() {
                1 => Ok(vec![Feed::Pixels]),
                n => Err(format!(
                    "an image tower takes one input, this one takes {n}"
                )),
            };
        }
        names
            .iter()
            .enumerate()
            .map(|(ix, name)| {
                if ids_input == Some(name.as_str()) || (ids_input.is_none() && ix == 0) {
                    Ok(Feed::TokenIds)
                } else if name.contains("attention_mask") {
                    Ok(Feed::AttentionMask)
                } else if name.contains("token_type") {
                    Ok(Feed::TokenTypeIds)
                } else {
                    Err(format!(
                        "unexpected graph input '{name}' (inputs: {})",
                        names.join(", ")
                    ))
                }
            })
            .collect()
    }

    /// The values a text-tower input gets for `tokens` (`n` = context length, checked).
    fn text_values(self, tokens: &Tokens) -> Vec<i64> {
        match self {
            Feed::TokenIds => tokens.ids.clone(),
            Feed::AttentionMask => tokens.attention_mask.clone(),
            Feed::TokenTypeIds | Feed::Pixels => vec![0; tokens.ids.len()],
        }
    }
}

/// Checks that `tokens` has the tower's context length (every backend's first step).
fn check_tokens(tokens: &Tokens, n: usize) -> Result<(), EncoderError> {
    if tokens.ids.len() != n || tokens.attention_mask.len() != n {
        return Err(EncoderError::Run {
            tower: "textual",
            message: format!("{} token ids where the tower takes {n}", tokens.ids.len()),
        });
    }
    Ok(())
}

/// A tower's raw output as an embedding: `dim` values with a direction.
fn checked_embedding(
    tower: &'static str,
    v: Vec<f32>,
    dim: usize,
) -> Result<Embedding, EncoderError> {
    if v.len() != dim {
        return Err(EncoderError::BadOutput {
            tower,
            what: format!(
                "{} values where the bundle says the embedding has {dim}",
                v.len()
            ),
        });
    }
    Embedding::normalised(v).ok_or(EncoderError::BadOutput {
        tower,
        what: "a zero or non-finite vector".into(),
    })
}

impl Graph {
    /// Loads `path`, fixes input shapes, keeps only the embedding output and optimises.
    fn load(
        path: &Path,
        tower: &'static str,
        input_name: Option<&str>,
        output_name: Option<&str>,
        fact_for: impl Fn(Feed) -> InferenceFact,
    ) -> Result<(Graph, Vec<Feed>), EncoderError> {
        let err = |e: TractError| EncoderError::Load {
            path: path.display().to_string(),
            tower,
            message: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(|e| {
            // A protobuf that does not decode is a file cut short by a copy or a full disk,
            // or not a model at all; say so, and how to get a good one.
            let mut e = err(e);
            if let EncoderError::Load { message, .. } = &mut e {
                if message.contains("Protobuf") || message.contains("protobuf") {
                    message.push_str(
                        " (the file is truncated or not an ONNX model: restore the bundle or \
                         re-run `models/prepare`)",
                    );
                }
            }
            e
        })?;
        let names: Vec<String> = model
            .input_outlets()
            .map_err(err)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let feeds =
            Feed::assign(tower, &names, input_name).map_err(|message| EncoderError::Load {
                path: path.display().to_string(),
                tower,
                message,
            })?;
        for (ix, feed) in feeds.iter().enumerate() {
            model.set_input_fact(ix, fact_for(*feed)).map_err(err)?;
        }
        match output_name {
            Some(name) => model.select_outputs_by_name([name]).map_err(err)?,
            None => {
                let first = *model
                    .output_outlets()
                    .map_err(err)?
                    .first()
                    .ok_or_else(|| EncoderError::Load {
                        path: path.display().to_string(),
                        tower,
                        message: "graph has no output".into(),
                    })?;
                model.select_output_outlets(&[first]).map_err(err)?;
            }
        }
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok((Graph { plan, tower }, feeds))
    }

    fn run(&self, inputs: TVec<TValue>) -> Result<Vec<f32>, EncoderError> {
        let out = self.plan.run(inputs).map_err(|e| EncoderError::Run {
            tower: self.tower,
            message: format!("{e:#}"),
        })?;
        let t = out.first().ok_or_else(|| EncoderError::BadOutput {
            tower: self.tower,
            what: "no output".into(),
        })?;
        let view = t
            .to_plain_array_view::<f32>()
            .map_err(|e| EncoderError::BadOutput {
                tower: self.tower,
                what: format!("a non-f32 output: {e}"),
            })?;
        Ok(view.iter().copied().collect())
    }

    fn embedding(&self, inputs: TVec<TValue>, dim: usize) -> Result<Embedding, EncoderError> {
        checked_embedding(self.tower, self.run(inputs)?, dim)
    }
}

/// The image tower: a preprocessed CHW tensor → embedding.
pub struct ImageEncoder {
    runner: ImageRunner,
    size: usize,
    dim: usize,
}

enum ImageRunner {
    Tract(Graph),
    Native(Box<vit::NativeVit>),
    #[cfg(feature = "ort")]
    Ort(Box<ort::OrtTower>),
}

impl ImageEncoder {
    /// Loads the bundle's image tower at `precision` with `backend` (onnxruntime with its
    /// default options; see [`ImageEncoder::load_with`]).
    pub fn load(
        bundle: &Bundle,
        precision: Precision,
        backend: Backend,
    ) -> Result<ImageEncoder, EncoderError> {
        ImageEncoder::load_with(bundle, precision, backend, &OrtOptions::default())
    }

    /// Loads the bundle's image tower at `precision` with `backend`; `ort_options` apply to
    /// [`Backend::Ort`].
    pub fn load_with(
        bundle: &Bundle,
        precision: Precision,
        backend: Backend,
        ort_options: &OrtOptions,
    ) -> Result<ImageEncoder, EncoderError> {
        let spec = &bundle.spec;
        let file = bundle.visual_file(precision)?;
        let size = spec.preprocess.image_size as usize;
        let load_err = |message: String| EncoderError::Load {
            path: file.path.display().to_string(),
            tower: "visual",
            message,
        };
        let native = match backend {
            #[cfg(feature = "ort")]
            Backend::Ort => {
                let tower = ort::OrtTower::load(
                    file,
                    precision,
                    "visual",
                    spec.visual.input.as_deref(),
                    spec.visual.output.as_deref(),
                    ort_options,
                )?;
                return Ok(ImageEncoder {
                    runner: ImageRunner::Ort(Box::new(tower)),
                    size,
                    dim: spec.embedding_dim,
                });
            }
            #[cfg(not(feature = "ort"))]
            Backend::Ort => {
                let _ = ort_options;
                return Err(ort_feature_missing(
                    file.path.display().to_string(),
                    "visual",
                ));
            }
            Backend::Tract => None,
            // Without SIMD int8 kernels (32-bit ARM, pre-AVX2 x86) the native path would run
            // its scalar twin; tract's own SIMD kernels are faster there.
            Backend::Auto if edgeclip_linalg::Isa::detect() == edgeclip_linalg::Isa::Scalar => {
                log::info!("visual tower: native path not used (no SIMD int8 kernels on this CPU)");
                None
            }
            Backend::Auto | Backend::Native => match vit_onnx::load(&file.path, size) {
                Ok(w) if w.embed_dim() == spec.embedding_dim => Some(w),
                Ok(w) => {
                    let why = format!(
                        "the graph gives {} values, the bundle says {}",
                        w.embed_dim(),
                        spec.embedding_dim
                    );
                    if backend == Backend::Native {
                        return Err(load_err(why));
                    }
                    log::info!("visual tower: native path not used ({why})");
                    None
                }
                Err(e) if backend == Backend::Native => return Err(load_err(e.to_string())),
                Err(e) => {
                    log::info!("visual tower: native path not used ({e})");
                    None
                }
            },
        };
        let runner = match native {
            Some(w) => {
                let isa = kernel_isa();
                let v =
                    vit::NativeVit::new(w, isa, threads()).map_err(|e| load_err(e.to_string()))?;
                log::info!(
                    "visual tower: {} ({precision}, {})",
                    file.path.display(),
                    v.describe()
                );
                ImageRunner::Native(Box::new(v))
            }
            None => {
                let (graph, _) = Graph::load(
                    &file.path,
                    "visual",
                    spec.visual.input.as_deref(),
                    spec.visual.output.as_deref(),
                    |_| f32::fact([1, 3, size, size]).into(),
                )?;
                log::info!(
                    "visual tower: {} ({precision}, tract CPU, {} thread(s))",
                    file.path.display(),
                    threads()
                );
                ImageRunner::Tract(graph)
            }
        };
        Ok(ImageEncoder {
            runner,
            size,
            dim: spec.embedding_dim,
        })
    }

    /// Which backend runs: `tract`, `native` or `ort`.
    pub fn backend(&self) -> Backend {
        self.info().backend
    }

    /// Which backend runs, and on which device ([`BackendInfo`]).
    pub fn info(&self) -> BackendInfo {
        match &self.runner {
            ImageRunner::Tract(_) => BackendInfo::cpu(Backend::Tract),
            ImageRunner::Native(_) => BackendInfo::cpu(Backend::Native),
            #[cfg(feature = "ort")]
            ImageRunner::Ort(t) => t.info(),
        }
    }

    /// Number of f32 values [`ImageEncoder::encode`] takes (3 × size × size).
    pub fn input_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Embeds one preprocessed image (CHW, normalised as the bundle says).
    pub fn encode(&self, pixels: &[f32]) -> Result<Embedding, EncoderError> {
        match &self.runner {
            ImageRunner::Tract(graph) => {
                let t = Tensor::from_shape(&[1, 3, self.size, self.size], pixels).map_err(|e| {
                    EncoderError::Run {
                        tower: "visual",
                        message: format!("input of {} values: {e}", pixels.len()),
                    }
                })?;
                graph.embedding(tvec!(t.into()), self.dim)
            }
            ImageRunner::Native(v) => {
                let out = v.forward(pixels).map_err(|e| EncoderError::Run {
                    tower: "visual",
                    message: e.to_string(),
                })?;
                Embedding::normalised(out).ok_or(EncoderError::BadOutput {
                    tower: "visual",
                    what: "a zero or non-finite vector".into(),
                })
            }
            #[cfg(feature = "ort")]
            ImageRunner::Ort(t) => {
                if pixels.len() != self.input_len() {
                    return Err(EncoderError::Run {
                        tower: "visual",
                        message: format!(
                            "input of {} values where the tower takes {}",
                            pixels.len(),
                            self.input_len()
                        ),
                    });
                }
                t.encode_pixels(pixels, self.size, self.dim)
            }
        }
    }
}

/// The text tower: token ids → embedding.
pub struct TextEncoder {
    runner: TextRunner,
    context_length: usize,
    dim: usize,
}

enum TextRunner {
    Tract {
        graph: Graph,
        feeds: Vec<Feed>,
    },
    #[cfg(feature = "ort")]
    Ort(Box<ort::OrtTower>),
}

impl TextEncoder {
    /// Loads the bundle's text tower at `precision` for sequences of `context_length`, on
    /// tract.
    pub fn load(
        bundle: &Bundle,
        precision: Precision,
        context_length: usize,
    ) -> Result<TextEncoder, EncoderError> {
        TextEncoder::load_with(
            bundle,
            precision,
            context_length,
            Backend::Tract,
            &OrtOptions::default(),
        )
    }

    /// Loads the bundle's text tower: on onnxruntime for [`Backend::Ort`] (with
    /// `ort_options`), on tract for every other backend (the native path is image-only).
    pub fn load_with(
        bundle: &Bundle,
        precision: Precision,
        context_length: usize,
        backend: Backend,
        ort_options: &OrtOptions,
    ) -> Result<TextEncoder, EncoderError> {
        let spec = &bundle.spec;
        let file = bundle.textual_file(precision)?;
        let runner = match backend {
            #[cfg(feature = "ort")]
            Backend::Ort => TextRunner::Ort(Box::new(ort::OrtTower::load(
                file,
                precision,
                "textual",
                spec.textual.input.as_deref(),
                spec.textual.output.as_deref(),
                ort_options,
            )?)),
            #[cfg(not(feature = "ort"))]
            Backend::Ort => {
                let _ = ort_options;
                return Err(ort_feature_missing(
                    file.path.display().to_string(),
                    "textual",
                ));
            }
            Backend::Auto | Backend::Tract | Backend::Native => {
                let (graph, feeds) = Graph::load(
                    &file.path,
                    "textual",
                    spec.textual.input.as_deref(),
                    spec.textual.output.as_deref(),
                    |_| i64::fact([1, context_length]).into(),
                )?;
                log::info!(
                    "textual tower: {} ({precision}, tract CPU)",
                    file.path.display()
                );
                TextRunner::Tract { graph, feeds }
            }
        };
        Ok(TextEncoder {
            runner,
            context_length,
            dim: spec.embedding_dim,
        })
    }

    /// Which backend runs, and on which device.
    pub fn info(&self) -> BackendInfo {
        match &self.runner {
            TextRunner::Tract { .. } => BackendInfo::cpu(Backend::Tract),
            #[cfg(feature = "ort")]
            TextRunner::Ort(t) => t.info(),
        }
    }

    /// Embeds one tokenised text.
    pub fn encode(&self, tokens: &Tokens) -> Result<Embedding, EncoderError> {
        let n = self.context_length;
        check_tokens(tokens, n)?;
        match &self.runner {
            TextRunner::Tract { graph, feeds } => {
                let mut inputs = TVec::new();
                for feed in feeds {
                    let values = feed.text_values(tokens);
                    let t =
                        Tensor::from_shape(&[1, n], &values).map_err(|e| EncoderError::Run {
                            tower: "textual",
                            message: e.to_string(),
                        })?;
                    inputs.push(t.into());
                }
                graph.embedding(inputs, self.dim)
            }
            #[cfg(feature = "ort")]
            TextRunner::Ort(t) => t.encode_tokens(tokens, self.dim),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_normalise_and_average() {
        let a = Embedding::normalised(vec![3.0, 4.0]).unwrap();
        assert_eq!(a.as_slice(), &[0.6, 0.8]);
        assert!(Embedding::normalised(vec![0.0, 0.0]).is_none());
        assert!(Embedding::normalised(vec![f32::NAN, 1.0]).is_none());
        let b = Embedding::normalised(vec![0.0, 1.0]).unwrap();
        let m = Embedding::mean(&[a.clone(), b.clone()]).unwrap();
        assert!((m.as_slice().iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((a.cosine(&a) - 1.0).abs() < 1e-6);
        assert!(Embedding::mean(&[]).is_none());
    }

    #[test]
    fn provider_lists_parse() {
        use OrtProvider::*;
        assert_eq!(
            OrtProvider::parse_list("tensorrt,cuda,cpu"),
            Ok(vec![Tensorrt, Cuda, Cpu])
        );
        assert_eq!(OrtProvider::parse_list(" CUDA , cpu"), Ok(vec![Cuda, Cpu]));
        assert_eq!(OrtProvider::parse_list("trt"), Ok(vec![Tensorrt]));
        let dup = OrtProvider::parse_list("cuda,cpu,cuda").unwrap_err();
        assert!(dup.contains("twice"), "{dup}");
        let bad = OrtProvider::parse_list("cuda,rocm").unwrap_err();
        assert!(
            bad.contains("'rocm'") && bad.contains("tensorrt, cuda or cpu"),
            "{bad}"
        );
        assert!(OrtProvider::parse_list("").is_err());
        assert!(OrtProvider::parse_list("cuda,").is_err());
        assert_eq!(OrtOptions::default().providers, vec![Tensorrt, Cuda, Cpu]);
        assert!(Tensorrt.is_gpu() && Cuda.is_gpu() && !Cpu.is_gpu());
        assert_eq!(format!("[{:<8}]", Cuda), "[CUDA    ]");
    }

    #[test]
    fn backend_info_labels_and_cache_tags() {
        let tract = BackendInfo::cpu(Backend::Tract);
        assert_eq!(tract.to_string(), "tract (CPU)");
        assert_eq!(tract.compute_tag(), None);
        let ort_cpu = BackendInfo {
            backend: Backend::Ort,
            provider: OrtProvider::Cpu,
            fp16: false,
        };
        // The CPU provider shares the CPU backends' cache.
        assert_eq!(ort_cpu.compute_tag(), None);
        let trt = BackendInfo {
            backend: Backend::Ort,
            provider: OrtProvider::Tensorrt,
            fp16: true,
        };
        assert_eq!(trt.to_string(), "ort (TensorRT fp16)");
        assert_eq!(trt.compute_tag().as_deref(), Some("TensorRT fp16"));
        let cuda = BackendInfo {
            provider: OrtProvider::Cuda,
            fp16: false,
            ..trt
        };
        assert_eq!(cuda.compute_tag().as_deref(), Some("CUDA"));
    }

    #[test]
    fn feeds_are_assigned_alike_for_every_backend() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Feed::assign("visual", &names(&["pixel_values"]), None),
            Ok(vec![Feed::Pixels])
        );
        assert!(Feed::assign("visual", &names(&["a", "b"]), None).is_err());
        assert_eq!(
            Feed::assign(
                "textual",
                &names(&["attention_mask", "input_ids", "token_type_ids"]),
                Some("input_ids")
            ),
            Ok(vec![
                Feed::AttentionMask,
                Feed::TokenIds,
                Feed::TokenTypeIds
            ])
        );
        assert_eq!(
            Feed::assign("textual", &names(&["text"]), None),
            Ok(vec![Feed::TokenIds])
        );
        let e = Feed::assign("textual", &names(&["input_ids", "position"]), None).unwrap_err();
        assert!(e.contains("'position'"), "{e}");
    }
}
