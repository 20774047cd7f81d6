//! Element-wise maths and attention of the native ViT, compiled for the best vector width
//! the CPU has.
//!
//! `f32::exp` is a libm call per element: 1.8 M of them per ViT-B/32 image in QuickGELU
//! alone, several milliseconds. The kernels' polynomial exp (`edgeclip_linalg::math`) is
//! within a few ulp of `expf` and branch-free, so these loops vectorise.

use edgeclip_linalg::math::exp;

#[inline(always)]
fn quick_gelu_body(y: &mut [f32]) {
    for v in y.iter_mut() {
        *v = edgeclip_linalg::math::quick_gelu(*v);
    }
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    // Max and sum in 16 lanes (one AVX-512 register): a single running value would be a
    // serial chain that keeps the whole loop, exp included, scalar.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for v in row.iter_mut() {
        // Below e⁻⁸⁷ the weight is exactly 0, not exp's clamped e⁻⁸⁷: that value, divided
        // by the sum and multiplied into v, makes subnormal floats, which cost the CPU
        // ~100 cycles each (profiled: attention took 40 % of the forward with random weights).
        let x = *v - max;
        *v = if x < -87.0 { 0.0 } else { exp(x) };
    }
    let mut sums = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Where one head's q, k and v live in the fused `[T][q | k | v]` buffer.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    /// Tokens T.
    pub tokens: usize,
    /// Values per token row of the buffer (3·D).
    pub row: usize,
    /// Offsets of this head's q, k and v within a row.
    pub q: usize,
    /// See `q`.
    pub k: usize,
    /// See `q`.
    pub v: usize,
    /// Head size.
    pub dim: usize,
    /// Scale of q·kᵀ.
    pub scale: f32,
}

/// `out[jb..jb+W] = Σ_d scale·q[d] · kt[d][jb..jb+W]`, the W sums held in registers.
#[inline(always)]
fn score_block<const W: usize>(
    q: &[f32],
    kt: &[f32],
    tp: usize,
    jb: usize,
    scale: f32,
    out: &mut [f32],
) {
    let mut acc = [0f32; W];
    for (d, &qv) in q.iter().enumerate() {
        let qv = qv * scale;
        let k = &kt[d * tp + jb..][..W];
        for l in 0..W {
            acc[l] += qv * k[l];
        }
    }
    out[jb..jb + W].copy_from_slice(&acc);
}

/// `out[db..db+W] = Σ_j p[j] · v_j[db..db+W]` (v_j at `j·row + v`), sums in registers.
#[inline(always)]
fn pv_block<const W: usize>(
    p: &[f32],
    qkv: &[f32],
    row: usize,
    v: usize,
    db: usize,
    out: &mut [f32],
) {
    let mut acc = [0f32; W];
    for (j, &pj) in p.iter().enumerate() {
        let vj = &qkv[j * row + v + db..][..W];
        for l in 0..W {
            acc[l] += pj * vj[l];
        }
    }
    out[db..db + W].copy_from_slice(&acc);
}

/// Calls `f(start, width)` over `0..len` in blocks of 64, then 16, then 1.
#[inline(always)]
fn blocks(len: usize, mut f: impl FnMut(usize, usize)) {
    let mut at = 0;
    for w in [64, 16, 1] {
        while len - at >= w {
            f(at, w);
            at += w;
        }
    }
}

#[inline(always)]
fn attention_head_body(qkv: &[f32], h: HeadLayout, scores: &mut [f32], out: &mut [f32]) {
    let t = h.tokens;
    let tp = padded_tokens(t);
    // kᵀ ([dim][tp], zero padded): a block of a score row is then `dim` multiply-adds into
    // registers over contiguous key positions, instead of T dot products that each end in
    // a horizontal sum.
    let (kt, srow) = scores.split_at_mut(h.dim * tp);
    let srow = &mut srow[..tp];
    for j in 0..t {
        let k = &qkv[j * h.row + h.k..][..h.dim];
        for (d, &v) in k.iter().enumerate() {
            kt[d * tp + j] = v;
        }
    }
    for d in 0..h.dim {
        kt[d * tp + t..(d + 1) * tp].fill(0.0);
    }
    for i in 0..t {
        let q = &qkv[i * h.row + h.q..][..h.dim];
        blocks(tp, |jb, w| match w {
            64 => score_block::<64>(q, kt, tp, jb, h.scale, srow),
            16 => score_block::<16>(q, kt, tp, jb, h.scale, srow),
            _ => score_block::<1>(q, kt, tp, jb, h.scale, srow),
        });
        softmax_body(&mut srow[..t]);
        let o = &mut out[i * h.dim..][..h.dim];
        let p = &srow[..t];
        blocks(h.dim, |db, w| match w {
            64 => pv_block::<64>(p, qkv, h.row, h.v, db, o),
            16 => pv_block::<16>(p, qkv, h.row, h.v, db, o),
            _ => pv_block::<1>(p, qkv, h.row, h.v, db, o),
        });
    }
}

/// Keys rounded up to a whole number of 16-lane vectors.
fn padded_tokens(t: usize) -> usize {
    t.div_ceil(16) * 16
}

/// Scratch values [`attention_head`] needs for one head.
pub fn attention_scratch_len(tokens: usize, dim: usize) -> usize {
    (dim + 1) * padded_tokens(tokens)
}

/// One attention head: `out[T][dim] = softmax(scale · q kᵀ) v`; `scores` is scratch of
/// [`attention_scratch_len`] values.
///
/// Small matrices (T = 50, dim = 64 for ViT-B/32) done directly: a general GEMM's packing
/// and dispatch cost more than the arithmetic at this size.
pub fn attention_head(qkv: &[f32], h: HeadLayout, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(qkv: &[f32], h: HeadLayout, scores: &mut [f32], out: &mut [f32]) {
            attention_head_body(qkv, h, scores, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(qkv: &[f32], h: HeadLayout, scores: &mut [f32], out: &mut [f32]) {
            attention_head_body(qkv, h, scores, out)
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(qkv, h, scores, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(qkv, h, scores, out) };
        }
    }
    attention_head_body(qkv, h, scores, out)
}

macro_rules! dispatch {
    ($name:ident, $body:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(y: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512(y: &mut [f32]) {
                    $body(y)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2(y: &mut [f32]) {
                    $body(y)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512(y) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2(y) };
                }
            }
            $body(y)
        }
    };
}

dispatch!(
    quick_gelu,
    quick_gelu_body,
    "`y = y · sigmoid(1.702 y)` in place (CLIP's QuickGELU)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_head_matches_the_definition() {
        let (t, d, heads) = (7, 20, 2);
        let row = 3 * d * heads;
        let qkv: Vec<f32> = (0..t * row)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        for head in 0..heads {
            let h = HeadLayout {
                tokens: t,
                row,
                q: head * d,
                k: heads * d + head * d,
                v: 2 * heads * d + head * d,
                dim: d,
                scale: 0.3,
            };
            let (mut sc, mut out) = (vec![0.0; attention_scratch_len(t, d)], vec![0.0; t * d]);
            attention_head(&qkv, h, &mut sc, &mut out);
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|x| qkv[i * row + h.q + x] as f64 * qkv[j * row + h.k + x] as f64)
                            .sum::<f64>()
                            * 0.3
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
                for x in 0..d {
                    let want: f64 = (0..t)
                        .map(|j| (s[j] - max).exp() / z * qkv[j * row + h.v + x] as f64)
                        .sum();
                    let got = out[i * d + x] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "head {head} [{i}][{x}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn quick_gelu_and_softmax_match_the_definitions() {
        let xs: Vec<f32> = (-300..300).map(|i| i as f32 * 0.037).collect();
        let mut y = xs.clone();
        quick_gelu(&mut y);
        for (x, y) in xs.iter().zip(&y) {
            let want = x / (1.0 + (-1.702 * x).exp());
            assert!(
                (y - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{x}: {y} vs {want}"
            );
        }
        let mut row: Vec<f32> = (0..50).map(|i| (i as f32 * 0.71).sin() * 9.0).collect();
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let want: Vec<f32> = row.iter().map(|v| (v - max).exp() / sum).collect();
        softmax_body(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
