//! The epilogue: i32 accumulators → f32 output, shared by every kernel.
//!
//! Written as plain scalar loops over slices on purpose: the driver is compiled once per
//! kernel with that kernel's target features, LLVM vectorises these loops to the native
//! width, and since IEEE `+ - * /` are exact-rounded and Rust never fuses a multiply and an
//! add on its own, every width gives the same bits. That is what lets the test suite demand
//! bit-identical outputs across instruction sets (and between 1 and N threads). For the
//! same reason QuickGelu uses our own `exp` (no libm call, which would not vectorise and
//! could differ between platforms).

use super::Epilogue;

/// `r = acc as f32 * row_scale * scale + bias`, in that order (the documented formula);
/// `corr` is the kernel's activation-offset correction (exact, wrapping i32).
#[inline(always)]
pub(crate) fn dequant(acc: i32, corr: i32, row_scale: f32, scale: f32, bias: f32) -> f32 {
    (acc.wrapping_add(corr) as f32 * row_scale) * scale + bias
}

/// QuickGelu: `r * sigmoid(1.702 r)`, computed as `r / (1 + exp(-1.702 r))`.
#[inline(always)]
pub fn quick_gelu(r: f32) -> f32 {
    r / (1.0 + exp(-1.702 * r))
}

/// `exp(x)` in f32 with Cephes' `expf` polynomial (≈1 ulp), branch-free so it vectorises.
///
/// The argument is clamped to [-87, 88], where the result stays a normal float, so the
/// power of two can be built straight into the exponent bits. Callers only need it for a
/// sigmoid, where the clamp changes nothing visible (1 + e⁸⁸ is already 1.65e38).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer (ties to even, the FPU's mode) and leaves that
    // integer in the low mantissa bits, read back below without a float→int conversion
    // (whose saturating `as` semantics cost extra instructions when vectorised).
    const MAGIC: f32 = 12_582_912.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and a remainder (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // `if` rather than min/max: compiles to vminps/vmaxps and lets a NaN through.
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    // n ∈ [-126, 127] after the clamp, so n + 127 is a valid normal exponent.
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    e * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// Applies the epilogue to one row segment: `y[j] ⊕= f(acc[j], …)` for `j < y.len()`.
#[inline(always)]
pub(crate) fn apply_row(
    acc: &[i32],
    corr: &[i32],
    row_scale: f32,
    scales: &[f32],
    bias: &[f32],
    y: &mut [f32],
    epilogue: Epilogue,
) {
    let n = y.len();
    // Equal lengths up front: the loops below then carry no bounds checks and vectorise.
    let (acc, corr, scales, bias) = (&acc[..n], &corr[..n], &scales[..n], &bias[..n]);
    let it = acc.iter().zip(corr).zip(scales).zip(bias);
    match epilogue {
        Epilogue::Store => {
            for (d, (((&a, &c), &s), &b)) in y.iter_mut().zip(it) {
                *d = dequant(a, c, row_scale, s, b);
            }
        }
        Epilogue::Accumulate => {
            for (d, (((&a, &c), &s), &b)) in y.iter_mut().zip(it) {
                *d += dequant(a, c, row_scale, s, b);
            }
        }
        Epilogue::QuickGelu => {
            for (d, (((&a, &c), &s), &b)) in y.iter_mut().zip(it) {
                *d = quick_gelu(dequant(a, c, row_scale, s, b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn quick_gelu_matches_f64() {
        let mut x = -60.0f32;
        while x <= 60.0 {
            let xd = x as f64;
            let want = xd / (1.0 + (-1.702 * xd).exp());
            let got = quick_gelu(x) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "x={x}: {got} vs {want}"
            );
            x += 0.0071;
        }
        assert_eq!(quick_gelu(0.0), 0.0);
        // Far left the clamped exp leaves a denormal-sized value, not an exact 0.
        assert!(quick_gelu(-1e30).abs() < 1e-8 && quick_gelu(-1e30) <= 0.0);
        assert_eq!(quick_gelu(1e30), 1e30);
    }
}
