//! The stages wired together for one bundle: the object every command drives.
//!
//! The text tower is loaded only when a prompt misses the embedding cache, so a device
//! restarting with an unchanged label file never pays for it.

use std::path::PathBuf;
use std::time::Instant;

use crate::bundle::{edgeclip_home, Bundle, BundleError, Precision, TokenizerSpec};
use crate::cache::{CacheKey, EmbeddingCache};
use crate::classify::{Classifier, LabelMatrix};
use crate::encoder::{
    self, Backend, BackendInfo, Embedding, EncoderError, ImageEncoder, OrtOptions, TextEncoder,
};
use crate::labels::LabelSet;
use crate::preprocess::{self, PreprocessError, Preprocessor};
use crate::tokenizer::{ClipBpe, HfTokenizer, Tokenizer, TokenizerError, Tokens};

/// Errors of the assembled pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Finding or checking the bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Loading or running a tower.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// Loading the tokenizer or encoding text.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Decoding or preprocessing an image.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// A label's prompts produced no usable embedding.
    #[error("label '{label}': {reason}")]
    Label {
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
}

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Precision of both towers.
    pub precision: Precision,
    /// Directory of the text-embedding cache; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Image tower backend ([`Backend::Ort`] runs the text tower too).
    pub backend: Backend,
    /// Settings of the onnxruntime backend.
    pub ort: OrtOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            precision: Precision::Fp32,
            cache_dir: Some(default_cache_dir()),
            backend: Backend::Auto,
            ort: OrtOptions::default(),
        }
    }
}

/// `$EDGECLIP_HOME/cache/text`.
pub fn default_cache_dir() -> PathBuf {
    edgeclip_home().join("cache").join("text")
}

/// Counters from building a label matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbedStats {
    /// Prompts served by the cache.
    pub cached: usize,
    /// Prompts run through the text tower.
    pub computed: usize,
}

/// Time spent in each stage of [`Engine::embed_image_timed`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImageTimings {
    /// Resize, crop, normalise.
    pub preprocess: std::time::Duration,
    /// The image tower.
    pub encode: std::time::Duration,
}

/// One bundle's tokenizer, towers, preprocessing and text cache.
pub struct Engine {
    bundle: Bundle,
    precision: Precision,
    backend: Backend,
    ort: OrtOptions,
    /// Where the text cache lives (it is reopened under another key if the text tower turns
    /// out to compute differently from what was planned).
    cache_dir: Option<PathBuf>,
    /// How the text tower computes, as the cache key records it.
    text_plan: BackendInfo,
    tokenizer: Box<dyn Tokenizer>,
    text: Option<TextEncoder>,
    image: Option<ImageEncoder>,
    preprocessor: Preprocessor,
    pixels: Vec<f32>,
    cache: Option<EmbeddingCache>,
}

/// Builds the tokenizer a bundle asks for.
pub fn load_tokenizer(spec: &TokenizerSpec) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    Ok(match spec {
        TokenizerSpec::ClipBpe {
            file,
            context_length,
        } => Box::new(ClipBpe::from_file(file, *context_length)?),
        TokenizerSpec::HfJson {
            file,
            context_length,
            pad_id,
        } => Box::new(HfTokenizer::from_file(file, *context_length, *pad_id)?),
    })
}

impl Engine {
    /// Opens the tokenizer and the cache; towers load on first use.
    pub fn open(bundle: Bundle, options: &EngineOptions) -> Result<Engine, EngineError> {
        let tokenizer = load_tokenizer(&bundle.spec.tokenizer)?;
        // Only a cache needs to know ahead how the text tower will compute, and only
        // onnxruntime can differ from tract (finding out loads the library); without a
        // cache the tower says when it loads. Other backends leave the text tower's file
        // untouched here, so a warm cache starts without it.
        let text_plan = match (&options.cache_dir, options.backend) {
            (Some(_), Backend::Ort) => encoder::planned_text_backend(
                options.backend,
                &options.ort,
                &bundle.textual_file(options.precision)?.path,
            )?,
            _ => BackendInfo::cpu(Backend::Tract),
        };
        let cache = match &options.cache_dir {
            None => None,
            Some(dir) => Some(EmbeddingCache::open(
                dir,
                cache_key(&bundle, options.precision, tokenizer.as_ref(), &text_plan)?,
            )),
        };
        let preprocessor = Preprocessor::new(bundle.spec.preprocess.clone());
        Ok(Engine {
            bundle,
            precision: options.precision,
            backend: options.backend,
            ort: options.ort.clone(),
            cache_dir: options.cache_dir.clone(),
            text_plan,
            tokenizer,
            text: None,
            image: None,
            preprocessor,
            pixels: Vec::new(),
            cache,
        })
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Tower precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Token ids of `text` as the text tower receives them.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, EngineError> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// Loads the image tower now (otherwise it loads with the first image).
    pub fn load_image_tower(&mut self) -> Result<&ImageEncoder, EngineError> {
        if self.image.is_none() {
            let t = Instant::now();
            self.image = Some(ImageEncoder::load_with(
                &self.bundle,
                self.precision,
                self.backend,
                &self.ort,
            )?);
            log::debug!(
                "image tower ready in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        self.image
            .as_ref()
            .ok_or_else(|| unreachable_tower("visual"))
    }

    /// Loads the text tower now (otherwise it loads with the first prompt the cache lacks).
    pub fn load_text_tower(&mut self) -> Result<(), EngineError> {
        self.text_tower().map(|_| ())
    }

    fn text_tower(&mut self) -> Result<&TextEncoder, EngineError> {
        if self.text.is_none() {
            let t = Instant::now();
            let n = self.tokenizer.context_length();
            let text =
                TextEncoder::load_with(&self.bundle, self.precision, n, self.backend, &self.ort)?;
            log::debug!(
                "text tower ready in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            let runs = text.info();
            if let (Some(dir), true) = (
                &self.cache_dir,
                runs.compute_tag() != self.text_plan.compute_tag(),
            ) {
                // Planned on one provider, running on another (session creation failed on the
                // first): new embeddings go where that provider's belong.
                log::info!(
                    "text tower runs on {runs}, not {}: text cache switched to match",
                    self.text_plan
                );
                let key = cache_key(&self.bundle, self.precision, self.tokenizer.as_ref(), &runs)?;
                self.cache = Some(EmbeddingCache::open(dir, key));
                self.text_plan = runs;
            }
            self.text = Some(text);
        }
        self.text
            .as_ref()
            .ok_or_else(|| unreachable_tower("textual"))
    }

    /// What runs the text tower, once it is loaded.
    pub fn text_backend(&self) -> Option<BackendInfo> {
        self.text.as_ref().map(TextEncoder::info)
    }

    /// Embeds one text through the text tower, bypassing the cache.
    pub fn embed_text_uncached(&mut self, text: &str) -> Result<Embedding, EngineError> {
        let tokens = self.tokenizer.encode(text)?;
        Ok(self.text_tower()?.encode(&tokens)?)
    }

    /// Embeds one text, served from the cache when possible.
    pub fn embed_text(&mut self, text: &str) -> Result<(Embedding, bool), EngineError> {
        if let Some(e) = self.cache.as_ref().and_then(|c| c.get(text)) {
            return Ok((e.clone(), true));
        }
        let e = self.embed_text_uncached(text)?;
        if let Some(cache) = self.cache.as_mut() {
            if let Err(err) = cache.insert(text, e.clone()) {
                // The cache keeps the embedding in memory and writes it (with any others it
                // missed) once the disk takes writes again; see `cache`.
                log::warn!("{err}; text embeddings stay in memory until the cache can be written");
            }
        }
        Ok((e, false))
    }

    /// One embedding per label (prompt ensembling) as a matrix. `progress` is called
    /// after each prompt with (done, total).
    pub fn label_matrix(
        &mut self,
        labels: &LabelSet,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(LabelMatrix, EmbedStats), EngineError> {
        if !self.bundle.spec.multilingual {
            let foreign = labels.foreign_script_labels();
            if !foreign.is_empty() {
                log::warn!(
                    "{}: {} label(s) not in Latin script ({}{}); model {} was trained on \
                     English text and scores them poorly: use a multilingual bundle \
                     (README, Models)",
                    labels.origin,
                    foreign.len(),
                    foreign
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if foreign.len() > 3 { ", ..." } else { "" },
                    self.bundle.spec.name
                );
            }
        }
        let total: usize = labels.labels.iter().map(|l| l.prompts.len()).sum();
        let mut stats = EmbedStats::default();
        let mut rows = Vec::with_capacity(labels.labels.len());
        for label in &labels.labels {
            let mut embs = Vec::with_capacity(label.prompts.len());
            for prompt in &label.prompts {
                let (e, hit) = self.embed_text(prompt)?;
                if hit {
                    stats.cached += 1;
                } else {
                    stats.computed += 1;
                }
                embs.push(e);
                progress(stats.cached + stats.computed, total);
            }
            let mean = Embedding::mean(&embs).ok_or_else(|| EngineError::Label {
                label: label.name.clone(),
                reason: "its prompt embeddings cancel out".into(),
            })?;
            rows.push(mean);
        }
        let matrix = LabelMatrix::new(labels.names(), &rows, self.bundle.spec.embedding_dim)
            .ok_or_else(|| EngineError::Label {
                label: labels.origin.clone(),
                reason: "no labels or mismatched embedding sizes".into(),
            })?;
        Ok((matrix, stats))
    }

    /// A classifier for `labels` with the bundle's logit scale.
    pub fn classifier(
        &mut self,
        labels: &LabelSet,
    ) -> Result<(Classifier, EmbedStats), EngineError> {
        let (m, stats) = self.label_matrix(labels, |_, _| {})?;
        Ok((Classifier::new(m, self.bundle.spec.scoring), stats))
    }

    /// Decodes, preprocesses and embeds one encoded image.
    pub fn embed_image_bytes(&mut self, bytes: &[u8]) -> Result<Embedding, EngineError> {
        let img = preprocess::decode(bytes)?;
        self.embed_image(&img)
    }

    /// Preprocesses and embeds a decoded RGB image.
    pub fn embed_image(&mut self, img: &image::RgbImage) -> Result<Embedding, EngineError> {
        Ok(self.embed_image_timed(img)?.0)
    }

    /// [`Engine::embed_image`], also reporting how long each stage took.
    pub fn embed_image_timed(
        &mut self,
        img: &image::RgbImage,
    ) -> Result<(Embedding, ImageTimings), EngineError> {
        self.load_image_tower()?;
        let t0 = Instant::now();
        let n = 3 * (self.bundle.spec.preprocess.image_size as usize).pow(2);
        self.pixels.resize(n, 0.0);
        self.preprocessor.run_into(img, &mut self.pixels)?;
        let t1 = Instant::now();
        let tower = self
            .image
            .as_ref()
            .ok_or_else(|| unreachable_tower("visual"))?;
        let embedding = tower.encode(&self.pixels)?;
        let timings = ImageTimings {
            preprocess: t1 - t0,
            encode: t1.elapsed(),
        };
        Ok((embedding, timings))
    }

    /// Embeds an already preprocessed CHW tensor.
    pub fn embed_pixels(&mut self, pixels: &[f32]) -> Result<Embedding, EngineError> {
        Ok(self.load_image_tower()?.encode(pixels)?)
    }
}

/// The text cache key for `bundle` at `precision` computed as `text` says.
fn cache_key(
    bundle: &Bundle,
    precision: Precision,
    tokenizer: &dyn Tokenizer,
    text: &BackendInfo,
) -> Result<CacheKey, EngineError> {
    Ok(CacheKey {
        model_sha256: bundle.textual_digest(precision)?,
        tokenizer: tokenizer.fingerprint().to_string(),
        dim: bundle.spec.embedding_dim,
        compute: text.compute_tag(),
    })
}

/// Only reachable if a tower slot is emptied between load and use, which nothing does;
/// an error keeps that impossible case from being a panic.
fn unreachable_tower(tower: &'static str) -> EngineError {
    EngineError::Encoder(EncoderError::Run {
        tower,
        message: "tower not loaded".into(),
    })
}
