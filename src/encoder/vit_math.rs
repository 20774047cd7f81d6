//! Element-wise maths of the native ViT (softmax, QuickGELU) with a polynomial exp that
//! vectorises, compiled for the best vector width the CPU has.
//!
//! `f32::exp` is a libm call per element: 1.8 M of them per ViT-B/32 image in QuickGELU
//! alone, several milliseconds. The Cephes polynomial below is within 2 ulp of `expf` on
//! the range that matters, and is written branch-free so the loops vectorise.

/// exp(x) for x in f32 range; branch-free (Cephes expf polynomial, Cody–Waite reduction).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((k as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn quick_gelu_body(y: &mut [f32]) {
    for v in y.iter_mut() {
        *v /= 1.0 + exp(-1.702 * *v);
    }
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
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
dispatch!(softmax, softmax_body, "Softmax of one row in place.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!((0.0..1e-37).contains(&exp(-200.0)));
        assert!(exp(200.0).is_finite());
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
        softmax(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
