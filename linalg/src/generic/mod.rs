//! The portable scalar twin: plain Rust loops, no explicit SIMD. It is the reference every
//! other kernel is tested against, and the fallback on a CPU with none of them.

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// Scalar kernel: a 4×16 tile of i32 accumulators over i8 × i8 products, k one at a time.
pub(crate) struct ScalarKernel;

const MR: usize = 4;
const NR: usize = 16;

impl I8Kernel for ScalarKernel {
    const ISA: Isa = Isa::Scalar;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 1;
    const KG: usize = 1;
    const A_OFFSET: i32 = 0;
    type A = i8;

    #[inline(always)]
    fn to_a(q: i8) -> i8 {
        q
    }

    unsafe fn kernel(mr: usize, t: TileArgs<i8>) {
        let TileArgs {
            kp,
            a,
            a_stride,
            b,
            c,
            ..
        } = t;
        let mut acc = [[0i32; NR]; MR];
        let b = std::slice::from_raw_parts(b, kp * NR);
        for (kk, brow) in b.chunks_exact(NR).enumerate() {
            for (r, acc) in acc.iter_mut().enumerate().take(mr) {
                let av = *a.add(r * a_stride + kk) as i32;
                for (c, &bv) in acc.iter_mut().zip(brow) {
                    // i8·i8 fits easily; the sum is exact for k ≤ MAX_K (wrapping only to
                    // skip debug overflow checks).
                    *c = c.wrapping_add(av * bv as i32);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(mr) {
            std::ptr::copy_nonoverlapping(acc.as_ptr(), c.add(r * NR), NR);
        }
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::generic::ScalarKernel);

#[cfg(test)]
mod tests {
    use crate::frame::suite::{ref_quantize, Rng};
    use crate::{matmul_i8, Epilogue, I8Scratch, Isa, PackedI8};

    /// Quantisation follows the documented formula to the bit, ties to even included.
    #[test]
    fn quantisation_rounds_half_to_even() {
        // max 127 → s = 1 exactly, so x / s = x and the ties are real ties.
        let x = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.0, 3.49];
        let w: Vec<i8> = (0..x.len() * x.len())
            .map(|i| (i % (x.len() + 1) == 0) as i8)
            .collect(); // identity
        let packed = PackedI8::new(Isa::Scalar, &w, x.len(), x.len(), &[1.0; 10], None).unwrap();
        let mut y = [0.0; 10];
        let mut sc = I8Scratch::default();
        matmul_i8(&x, 1, &packed, &mut y, Epilogue::Store, &mut sc, None).unwrap();
        assert_eq!(
            y,
            [127.0, 0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 126.0, -127.0, 3.0]
        );
        // An all-zero row: scale 1e-12 / 127, all q = 0, no NaN.
        matmul_i8(
            &[0.0; 10],
            1,
            &packed,
            &mut y,
            Epilogue::Store,
            &mut sc,
            None,
        )
        .unwrap();
        assert_eq!(y, [0.0; 10]);
        // A NaN poisons its row only.
        let mut x2 = [1.0f32; 20];
        x2[3] = f32::NAN;
        let mut y2 = [0.0; 20];
        matmul_i8(&x2, 2, &packed, &mut y2, Epilogue::Store, &mut sc, None).unwrap();
        assert!(y2[..10].iter().all(|v| v.is_nan()));
        // Row 1 is all 1.0: q = 127, scale 1/127.
        assert!(y2[10..].iter().all(|&v| v == 127.0 * (1.0f32 / 127.0)));
    }

    /// The scalar twin against an f64 evaluation of the documented formula.
    #[test]
    fn scalar_matches_f64_reference() {
        let mut rng = Rng::new(7);
        let mut scratch = I8Scratch::default();
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 17),
            (7, 64, 33),
            (50, 768, 40),
            (2, 3072, 16),
        ] {
            let x = rng.activations(m * k);
            let w = rng.weights(k * n);
            let scales = rng.scales(n);
            let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let y0 = rng.activations(m * n);
            let (q, rs) = ref_quantize(&x, m, k);
            for ep in [Epilogue::Store, Epilogue::Accumulate, Epilogue::QuickGelu] {
                for with_bias in [false, true] {
                    let bias = with_bias.then_some(&bias[..]);
                    let packed = PackedI8::new(Isa::Scalar, &w, k, n, &scales, bias).unwrap();
                    let mut y = y0.clone();
                    matmul_i8(&x, m, &packed, &mut y, ep, &mut scratch, None).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let acc: i64 = (0..k)
                                .map(|kk| q[i * k + kk] as i64 * w[kk * n + j] as i64)
                                .sum();
                            let prod = acc as f64 * rs[i] as f64 * scales[j] as f64;
                            let b = bias.map_or(0.0, |b| b[j] as f64);
                            let r = prod + b;
                            let y0 = y0[i * n + j] as f64;
                            let (want, mag) = match ep {
                                Epilogue::Store => (r, prod.abs() + b.abs()),
                                Epilogue::Accumulate => (y0 + r, prod.abs() + b.abs() + y0.abs()),
                                Epilogue::QuickGelu => {
                                    (r / (1.0 + (-1.702 * r).exp()), 1.2 * (prod.abs() + b.abs()))
                                }
                            };
                            let got = y[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 2e-6 * mag + 1e-30,
                                "{m}x{k}x{n} {ep:?} bias={with_bias} [{i}][{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
