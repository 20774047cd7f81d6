//! The two towers: pixels → image embedding, token ids → text embedding.
//!
//! Two CPU backends, both pure Rust:
//! - tract runs any ONNX graph. Each graph is loaded once with fixed batch-1 shapes and
//!   optimised at load time, so a run does no shape inference or graph rewriting.
//! - the native ViT ([`vit`]) runs the CLIP ViT image tower read from the same ONNX file
//!   with int8 kernels of our own ([`edgeclip_linalg`]); it is chosen automatically when
//!   the graph is recognised ([`Backend::Auto`]) and tested against tract.
//!
//! Which one runs is always logged.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

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
        f.write_str(match self {
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
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
        let names: Vec<String> = model
            .input_outlets()
            .map_err(err)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let mut feeds = Vec::with_capacity(names.len());
        for (ix, name) in names.iter().enumerate() {
            let feed = if tower == "visual" {
                Feed::Pixels
            } else if input_name == Some(name.as_str()) || (input_name.is_none() && ix == 0) {
                Feed::TokenIds
            } else if name.contains("attention_mask") {
                Feed::AttentionMask
            } else if name.contains("token_type") {
                Feed::TokenTypeIds
            } else {
                return Err(EncoderError::Load {
                    path: path.display().to_string(),
                    tower,
                    message: format!(
                        "unexpected graph input '{name}' (inputs: {})",
                        names.join(", ")
                    ),
                });
            };
            model.set_input_fact(ix, fact_for(feed)).map_err(err)?;
            feeds.push(feed);
        }
        if tower == "visual" && feeds.len() != 1 {
            return Err(EncoderError::Load {
                path: path.display().to_string(),
                tower,
                message: format!(
                    "an image tower takes one input, this one takes {}",
                    feeds.len()
                ),
            });
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
        let v = self.run(inputs)?;
        if v.len() != dim {
            return Err(EncoderError::BadOutput {
                tower: self.tower,
                what: format!(
                    "{} values where the bundle says the embedding has {dim}",
                    v.len()
                ),
            });
        }
        Embedding::normalised(v).ok_or(EncoderError::BadOutput {
            tower: self.tower,
            what: "a zero or non-finite vector".into(),
        })
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
}

impl ImageEncoder {
    /// Loads the bundle's image tower at `precision` with `backend`.
    pub fn load(
        bundle: &Bundle,
        precision: Precision,
        backend: Backend,
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
            Backend::Ort => {
                return Err(load_err(
                    "the ort backend needs edgeclip built with the `ort` cargo feature".into(),
                ))
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

    /// Which backend runs: `tract` or `native`.
    pub fn backend(&self) -> Backend {
        match self.runner {
            ImageRunner::Tract(_) => Backend::Tract,
            ImageRunner::Native(_) => Backend::Native,
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
        }
    }
}

/// The text tower: token ids → embedding.
pub struct TextEncoder {
    graph: Graph,
    feeds: Vec<Feed>,
    context_length: usize,
    dim: usize,
}

impl TextEncoder {
    /// Loads the bundle's text tower at `precision` for sequences of `context_length`.
    pub fn load(
        bundle: &Bundle,
        precision: Precision,
        context_length: usize,
    ) -> Result<TextEncoder, EncoderError> {
        let spec = &bundle.spec;
        let file = bundle.textual_file(precision)?;
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
        Ok(TextEncoder {
            graph,
            feeds,
            context_length,
            dim: spec.embedding_dim,
        })
    }

    /// Embeds one tokenised text.
    pub fn encode(&self, tokens: &Tokens) -> Result<Embedding, EncoderError> {
        let n = self.context_length;
        if tokens.ids.len() != n || tokens.attention_mask.len() != n {
            return Err(EncoderError::Run {
                tower: "textual",
                message: format!("{} token ids where the tower takes {n}", tokens.ids.len()),
            });
        }
        let mut inputs = TVec::new();
        for feed in &self.feeds {
            let values: Vec<i64> = match feed {
                Feed::TokenIds => tokens.ids.clone(),
                Feed::AttentionMask => tokens.attention_mask.clone(),
                Feed::TokenTypeIds | Feed::Pixels => vec![0; n],
            };
            let t = Tensor::from_shape(&[1, n], &values).map_err(|e| EncoderError::Run {
                tower: "textual",
                message: e.to_string(),
            })?;
            inputs.push(t.into());
        }
        self.graph.embedding(inputs, self.dim)
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
}
