//! The native forward pass of a CLIP ViT image tower.
//!
//! tract runs any ONNX graph; this runs the one architecture the product ships (CLIP's
//! ViT, read from the same ONNX file by [`super::vit_onnx`]) with the work arranged for
//! batch 1: weights packed once at load for the CPU's best int8 kernel
//! ([`edgeclip_linalg`]), q/k/v fused into one GEMM, bias + QuickGELU and the residual adds
//! fused into the GEMM epilogues, attention heads spread over the threads, and every
//! buffer allocated once. tract stays the generic path and the reference this is tested
//! against (`tests/native_vit.rs`).

use std::sync::Mutex;

use edgeclip_linalg::{matmul_i8, Epilogue, I8Scratch, Isa, PackedI8};

use super::vit_math::{attention_head, attention_scratch_len, HeadLayout};
use super::vit_onnx::{LinearWeights, NormWeights, VitWeights};

/// Errors preparing or running the native path.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// The kernels refused the weights (shape, ISA).
    #[error("packing weights: {0}")]
    Pack(String),
    /// The worker threads could not be started.
    #[error("starting {0} worker threads: {1}")]
    Threads(usize, String),
    /// The input is not one preprocessed image.
    #[error("input of {got} values, the image tower takes {want}")]
    Input {
        /// Values given.
        got: usize,
        /// Values expected.
        want: usize,
    },
}

/// A linear layer ready to run.
enum Linear {
    F32 {
        w: Vec<f32>,
        k: usize,
        n: usize,
        bias: Option<Vec<f32>>,
    },
    I8(PackedI8),
}

/// Concatenates linear layers of the same input along their outputs (q | k | v).
fn concat_columns(parts: &[&LinearWeights]) -> Option<LinearWeights> {
    let k = parts.first()?.shape().0;
    let n: usize = parts.iter().map(|p| p.shape().1).sum();
    let bias_of = |parts: &[&LinearWeights]| -> Option<Vec<f32>> {
        if parts.iter().all(|p| bias(p).is_none()) {
            return None;
        }
        Some(
            parts
                .iter()
                .flat_map(|p| bias(p).cloned().unwrap_or_else(|| vec![0.0; p.shape().1]))
                .collect(),
        )
    };
    fn bias(l: &LinearWeights) -> Option<&Vec<f32>> {
        match l {
            LinearWeights::F32 { bias, .. } | LinearWeights::I8 { bias, .. } => bias.as_ref(),
        }
    }
    fn interleave<T: Copy>(k: usize, parts: &[(&[T], usize)]) -> Vec<T> {
        let mut out = Vec::with_capacity(k * parts.iter().map(|p| p.1).sum::<usize>());
        for r in 0..k {
            for (w, n) in parts {
                out.extend_from_slice(&w[r * n..(r + 1) * n]);
            }
        }
        out
    }
    if parts.iter().any(|p| p.shape().0 != k) {
        return None;
    }
    match parts[0] {
        LinearWeights::F32 { .. } => {
            let mut ws = Vec::new();
            for p in parts {
                match p {
                    LinearWeights::F32 { w, n, .. } => ws.push((w.as_slice(), *n)),
                    LinearWeights::I8 { .. } => return None,
                }
            }
            Some(LinearWeights::F32 {
                w: interleave(k, &ws),
                k,
                n,
                bias: bias_of(parts),
            })
        }
        LinearWeights::I8 { .. } => {
            let mut ws = Vec::new();
            let mut scales = Vec::with_capacity(n);
            for p in parts {
                match p {
                    LinearWeights::I8 {
                        w, n, scales: s, ..
                    } => {
                        ws.push((w.as_slice(), *n));
                        scales.extend_from_slice(s);
                    }
                    LinearWeights::F32 { .. } => return None,
                }
            }
            Some(LinearWeights::I8 {
                w: interleave(k, &ws),
                k,
                n,
                scales,
                bias: bias_of(parts),
            })
        }
    }
}

impl Linear {
    fn new(l: LinearWeights, isa: Isa) -> Result<Linear, VitError> {
        Ok(match l {
            LinearWeights::F32 { w, k, n, bias } => Linear::F32 { w, k, n, bias },
            LinearWeights::I8 {
                w,
                k,
                n,
                scales,
                bias,
            } => Linear::I8(
                PackedI8::new(isa, &w, k, n, &scales, bias.as_deref())
                    .map_err(|e| VitError::Pack(e.to_string()))?,
            ),
        })
    }

    fn n(&self) -> usize {
        match self {
            Linear::F32 { n, .. } => *n,
            Linear::I8(p) => p.n(),
        }
    }

    /// `y[m×n] = epilogue(x[m×k]·W + b)`.
    fn apply(&self, x: &[f32], m: usize, y: &mut [f32], epilogue: Epilogue, cx: &mut Context) {
        match self {
            Linear::I8(p) => {
                // Shapes are fixed at load time and checked there; a failure here is a bug.
                if let Err(e) = matmul_i8(x, m, p, y, epilogue, cx.i8, cx.pool) {
                    log::error!("int8 matmul: {e}");
                }
            }
            Linear::F32 { w, k, n, bias } => {
                let (k, n) = (*k, *n);
                let accumulate = epilogue == Epilogue::Accumulate;
                let y_ptr = SendPtr(y.as_mut_ptr());
                // Columns j0..j1 of y = x·W[:, j0..j1] (+ y when accumulating).
                let block = move |j0: usize, j1: usize| {
                    let y_ptr = y_ptr;
                    // SAFETY: x is m×k, w is k×n and y is m×n, row-major and in bounds (sizes
                    // fixed at load time); blocks write disjoint columns of y and read only x
                    // and w, which y does not overlap.
                    unsafe {
                        gemm::gemm(
                            m,
                            j1 - j0,
                            k,
                            y_ptr.0.add(j0),
                            1,
                            n as isize,
                            accumulate,
                            x.as_ptr(),
                            1,
                            k as isize,
                            w.as_ptr().add(j0),
                            1,
                            n as isize,
                            if accumulate { 1.0 } else { 0.0 },
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                };
                // Threads split the columns (gemm's own threading measured slower than one
                // thread at batch 1: m = 50 rows leave it little to split).
                match cx.pool.filter(|_| n >= 64) {
                    Some(pool) => {
                        let parts = pool.current_num_threads();
                        let width = n.div_ceil(parts).div_ceil(32) * 32;
                        pool.scope(|sc| {
                            for j0 in (0..n).step_by(width) {
                                sc.spawn(move |_| block(j0, (j0 + width).min(n)));
                            }
                        });
                    }
                    None => block(0, n),
                }
                let y = &mut y[..m * n];
                if let Some(b) = bias {
                    for row in y.chunks_exact_mut(n) {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                }
                if epilogue == Epilogue::QuickGelu {
                    super::vit_math::quick_gelu(y);
                }
            }
        }
    }
}

/// Per-call execution context: threads and kernel scratch.
struct Context<'a> {
    pool: Option<&'a rayon::ThreadPool>,
    i8: &'a mut I8Scratch,
}

/// A pointer handed to the tasks that write disjoint column blocks of one output.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each task writes only its own columns (see `Linear::apply`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(n: NormWeights) -> Norm {
        Norm {
            gamma: n.gamma,
            beta: n.beta,
            eps: n.eps,
        }
    }

    /// LayerNorm of each row of `x` into `y` (two-pass mean/variance, as ONNX defines it).
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let d = self.gamma.len();
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let mean = xr.iter().sum::<f32>() / d as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (((o, &v), g), b) in yr.iter_mut().zip(xr).zip(&self.gamma).zip(&self.beta) {
                *o = (v - mean) * inv * g + b;
            }
        }
    }
}

struct Block {
    ln1: Norm,
    qkv: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// Buffers of one forward pass, allocated once.
struct Buffers {
    patches: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    scores: Vec<f32>,
    heads_out: Vec<f32>,
    attn: Vec<f32>,
    mlp: Vec<f32>,
    pooled: Vec<f32>,
    out: Vec<f32>,
    i8: I8Scratch,
}

/// A CLIP ViT image tower ready to run natively.
pub struct NativeVit {
    image_size: usize,
    patch: usize,
    width: usize,
    heads: usize,
    attn_scale: f32,
    patch_embed: Linear,
    class_emb: Vec<f32>,
    pos_emb: Vec<f32>,
    pre_ln: Norm,
    blocks: Vec<Block>,
    post_ln: Norm,
    proj: Linear,
    int8: bool,
    isa: Isa,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    buffers: Mutex<Buffers>,
}

impl NativeVit {
    /// Packs `weights` for `isa` and starts `threads` workers (1 = the calling thread only).
    pub fn new(weights: VitWeights, isa: Isa, threads: usize) -> Result<NativeVit, VitError> {
        let int8 = weights.is_int8();
        let tokens = weights.tokens();
        let (d, patch) = (weights.width, weights.patch);
        let mut blocks = Vec::with_capacity(weights.blocks.len());
        let mut hidden = 0;
        for b in weights.blocks {
            let qkv = concat_columns(&[&b.q, &b.k, &b.v])
                .ok_or_else(|| VitError::Pack("q, k and v differ in type or input".into()))?;
            hidden = hidden.max(b.fc1.shape().1);
            blocks.push(Block {
                ln1: Norm::new(b.ln1),
                qkv: Linear::new(qkv, isa)?,
                out: Linear::new(b.out, isa)?,
                ln2: Norm::new(b.ln2),
                fc1: Linear::new(b.fc1, isa)?,
                fc2: Linear::new(b.fc2, isa)?,
            });
        }
        let kk = 3 * patch * patch;
        let patch_embed = Linear::F32 {
            w: weights.patch_w,
            k: kk,
            n: d,
            bias: weights.patch_b,
        };
        let proj = Linear::new(weights.proj, isa)?;
        let embed = proj.n();
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("edgeclip-vit-{i}"))
                    .build()
                    .map_err(|e| VitError::Threads(threads, e.to_string()))?,
            )
        } else {
            None
        };
        let heads = weights.heads;
        let buffers = Buffers {
            patches: vec![0.0; (tokens - 1) * kk],
            x: vec![0.0; tokens * d],
            h: vec![0.0; tokens * d],
            qkv: vec![0.0; tokens * 3 * d],
            scores: vec![0.0; heads * attention_scratch_len(tokens, d / heads)],
            heads_out: vec![0.0; tokens * d],
            attn: vec![0.0; tokens * d],
            mlp: vec![0.0; tokens * hidden],
            pooled: vec![0.0; d],
            out: vec![0.0; embed],
            i8: I8Scratch::default(),
        };
        Ok(NativeVit {
            image_size: weights.image_size,
            patch,
            width: d,
            heads,
            attn_scale: weights.attn_scale,
            patch_embed,
            class_emb: weights.class_emb,
            pos_emb: weights.pos_emb,
            pre_ln: Norm::new(weights.pre_ln),
            blocks,
            post_ln: Norm::new(weights.post_ln),
            proj,
            int8,
            isa,
            threads,
            pool,
            buffers: Mutex::new(buffers),
        })
    }

    /// What runs, for the start-up log: kernels, precision, threads.
    pub fn describe(&self) -> String {
        format!(
            "native ViT ({} layers, {}, {} kernels, {} thread(s))",
            self.blocks.len(),
            if self.int8 { "int8" } else { "fp32" },
            if self.int8 {
                self.isa.name()
            } else {
                "gemm fp32"
            },
            self.threads
        )
    }

    /// The image embedding (not normalised) of one preprocessed CHW image.
    pub fn forward(&self, pixels: &[f32]) -> Result<Vec<f32>, VitError> {
        let s = self.image_size;
        if pixels.len() != 3 * s * s {
            return Err(VitError::Input {
                got: pixels.len(),
                want: 3 * s * s,
            });
        }
        // A poisoned lock only means an earlier call panicked mid-way; every buffer is
        // overwritten before it is read, so carrying on is safe.
        let mut guard = self
            .buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bufs = &mut *guard;
        match &self.pool {
            Some(pool) => pool.install(|| self.run(pixels, bufs, Some(pool))),
            None => self.run(pixels, bufs, None),
        }
        Ok(bufs.out.clone())
    }

    fn run(&self, pixels: &[f32], b: &mut Buffers, pool: Option<&rayon::ThreadPool>) {
        let (d, p, s) = (self.width, self.patch, self.image_size);
        let grid = s / p;
        let tokens = 1 + grid * grid;
        let kk = 3 * p * p;
        let Buffers {
            patches,
            x,
            h,
            qkv,
            scores,
            heads_out,
            attn,
            mlp,
            pooled,
            out,
            i8,
        } = b;
        let mut cx = Context { pool, i8 };

        // Patches in (channel, y, x) order, one row per patch, row-major over the grid:
        // the Conv with stride = kernel as a matrix product.
        for gy in 0..grid {
            for gx in 0..grid {
                let row = &mut patches[(gy * grid + gx) * kk..][..kk];
                for c in 0..3 {
                    for ky in 0..p {
                        let src = &pixels[c * s * s + (gy * p + ky) * s + gx * p..][..p];
                        row[c * p * p + ky * p..][..p].copy_from_slice(src);
                    }
                }
            }
        }
        self.patch_embed.apply(
            patches,
            tokens - 1,
            &mut x[d..tokens * d],
            Epilogue::Store,
            &mut cx,
        );
        x[..d].copy_from_slice(&self.class_emb);
        x.iter_mut().zip(&self.pos_emb).for_each(|(v, e)| *v += e);
        self.pre_ln.apply(&x[..], h);
        std::mem::swap(x, h);

        let hd = d / self.heads;
        for blk in &self.blocks {
            blk.ln1.apply(x, h);
            blk.qkv.apply(h, tokens, qkv, Epilogue::Store, &mut cx);
            self.attention(qkv, scores, heads_out, attn, tokens, hd, pool);
            blk.out
                .apply(attn, tokens, x, Epilogue::Accumulate, &mut cx);
            blk.ln2.apply(x, h);
            let f = blk.fc1.n();
            blk.fc1.apply(
                h,
                tokens,
                &mut mlp[..tokens * f],
                Epilogue::QuickGelu,
                &mut cx,
            );
            blk.fc2
                .apply(&mlp[..tokens * f], tokens, x, Epilogue::Accumulate, &mut cx);
        }
        self.post_ln.apply(&x[..d], pooled);
        self.proj.apply(pooled, 1, out, Epilogue::Store, &mut cx);
    }

    /// Multi-head self-attention over `qkv` (`[T][q | k | v]`) into `attn` (`[T][D]`),
    /// one head per task (`heads_out` holds each head's `[T][head]` block).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        qkv: &[f32],
        scores: &mut [f32],
        heads_out: &mut [f32],
        attn: &mut [f32],
        t: usize,
        hd: usize,
        pool: Option<&rayon::ThreadPool>,
    ) {
        let d = self.width;
        let layout = |head: usize| HeadLayout {
            tokens: t,
            row: 3 * d,
            q: head * hd,
            k: d + head * hd,
            v: 2 * d + head * hd,
            dim: hd,
            scale: self.attn_scale,
        };
        let per = attention_scratch_len(t, hd);
        let per_head = scores
            .chunks_exact_mut(per)
            .zip(heads_out.chunks_exact_mut(t * hd))
            .take(self.heads);
        match pool {
            Some(_) => {
                use rayon::prelude::*;
                scores
                    .par_chunks_exact_mut(per)
                    .zip(heads_out.par_chunks_exact_mut(t * hd))
                    .take(self.heads)
                    .enumerate()
                    .for_each(|(h, (sc, out))| attention_head(qkv, layout(h), sc, out));
            }
            None => per_head
                .enumerate()
                .for_each(|(h, (sc, out))| attention_head(qkv, layout(h), sc, out)),
        }
        for (h, out) in heads_out.chunks_exact(t * hd).take(self.heads).enumerate() {
            for (row, src) in out.chunks_exact(hd).enumerate() {
                attn[row * d + h * hd..][..hd].copy_from_slice(src);
            }
        }
    }
}
