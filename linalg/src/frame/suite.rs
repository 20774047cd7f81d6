//! The one test suite every kernel runs (`i8_kernel_tests!(Kernel)` in its module).
//!
//! Every kernel is checked against the scalar twin and against plain i32 sums; the scalar
//! twin itself is checked against an f64 evaluation of the documented formula
//! (`generic::tests`). A kernel whose ISA this CPU lacks prints that it skips.

use super::driver::accumulators;
use super::I8Kernel;
use crate::{matmul_i8, Epilogue, I8Scratch, Isa, LinalgError, PackedI8};

/// Odd and real shapes: tails in every dimension, and ViT-B/32's.
pub(crate) const MS: [usize; 5] = [1, 2, 3, 7, 50];
pub(crate) const KS: [usize; 7] = [1, 3, 4, 5, 64, 768, 3072];
pub(crate) const NS: [usize; 7] = [1, 5, 15, 16, 17, 33, 768];

/// Deterministic pseudo-random numbers (SplitMix64): reproducible failures, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn i8(&mut self) -> i8 {
        self.next_u64() as i8
    }
    /// Activations with a spread of magnitudes per row and occasional outliers, like a
    /// transformer's, so the per-row scales and rounding ties get exercised.
    pub(crate) fn activations(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                let v = self.f32() * 3.0;
                match self.next_u64() % 64 {
                    0 => v * 40.0,
                    1 => 0.0,
                    2 => v.round(),
                    _ => v,
                }
            })
            .collect()
    }
    pub(crate) fn weights(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| self.i8()).collect()
    }
    /// Positive per-column scales of a realistic size.
    pub(crate) fn scales(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.f32() + 1.5) * 0.004).collect()
    }
}

/// The documented quantisation, written as plainly as possible (independent of the
/// driver's vectorisable version).
pub(crate) fn ref_quantize(x: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(m * k);
    let mut scales = Vec::with_capacity(m);
    for row in x.chunks(k) {
        let max = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let s = max.max(1e-12) / 127.0;
        scales.push(s);
        q.extend(
            row.iter()
                .map(|v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// Plain i32 `q · w`.
pub(crate) fn ref_accumulators(q: &[i8], m: usize, w: &[i8], k: usize, n: usize) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    for i in 0..m {
        for kk in 0..k {
            let a = q[i * k + kk] as i32;
            for j in 0..n {
                out[i * n + j] += a * w[kk * n + j] as i32;
            }
        }
    }
    out
}

/// True (after printing why) when this CPU cannot run `K`.
pub(crate) fn skip<K: I8Kernel>() -> bool {
    if K::ISA.is_supported() {
        println!("running the suite on {}", K::ISA.name());
        false
    } else {
        println!("skipping {}: not supported by this CPU", K::ISA.name());
        true
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Runs `matmul_i8` with weights packed for `isa`, starting from `y0`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &[i8],
    k: usize,
    n: usize,
    scales: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y0: &[f32],
    pool: Option<&rayon::ThreadPool>,
) -> Vec<f32> {
    let packed = PackedI8::new(isa, w, k, n, scales, bias).unwrap();
    let mut y = y0.to_vec();
    let mut scratch = I8Scratch::default();
    matmul_i8(x, m, &packed, &mut y, epilogue, &mut scratch, pool).unwrap();
    y
}

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: {g:e} != {w:e}"
        );
    }
}

/// Every odd shape: the kernel's i32 accumulators equal plain i32 sums exactly.
pub(crate) fn accumulators_exact<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let mut rng = Rng::new(1);
    for &k in &KS {
        for &n in &NS {
            let w = rng.weights(k * n);
            let scales = rng.scales(n);
            let packed = PackedI8::new(K::ISA, &w, k, n, &scales, None).unwrap();
            for &m in &MS {
                let x = rng.activations(m * k);
                let (q, _) = ref_quantize(&x, m, k);
                let want = ref_accumulators(&q, m, &w, k, n);
                let got = accumulators::<K>(&x, m, &packed);
                assert!(got == want, "{}: m={m} k={k} n={n}", K::ISA.name());
            }
        }
    }
}

/// Every odd shape, the epilogue and bias rotating with the shape: f32 output bit-identical
/// to the scalar twin's.
pub(crate) fn matches_scalar_odd_shapes<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let mut rng = Rng::new(2);
    let epilogues = [Epilogue::Store, Epilogue::Accumulate, Epilogue::QuickGelu];
    let mut case = 0;
    for &k in &KS {
        for &n in &NS {
            for &m in &MS {
                case += 1;
                let (x, w, s) = (rng.activations(m * k), rng.weights(k * n), rng.scales(n));
                let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                let bias = (case % 2 == 0).then_some(&bias[..]);
                let ep = epilogues[case % 3];
                let y0 = rng.activations(m * n);
                let want = gemm(Isa::Scalar, &x, m, &w, k, n, &s, bias, ep, &y0, None);
                let got = gemm(K::ISA, &x, m, &w, k, n, &s, bias, ep, &y0, None);
                let what = format!(
                    "{}: m={m} k={k} n={n} {ep:?} bias={}",
                    K::ISA.name(),
                    bias.is_some()
                );
                assert_bits_eq(&got, &want, &what);
            }
        }
    }
}

/// All three epilogues × bias / no bias on a tile-tailed shape and a ViT shape.
pub(crate) fn epilogues_and_bias<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let mut rng = Rng::new(3);
    for (m, k, n) in [(7, 5, 33), (50, 768, 768)] {
        let (x, w, s) = (rng.activations(m * k), rng.weights(k * n), rng.scales(n));
        let bias: Vec<f32> = (0..n).map(|_| rng.f32() * 2.0).collect();
        let y0 = rng.activations(m * n);
        for ep in [Epilogue::Store, Epilogue::Accumulate, Epilogue::QuickGelu] {
            for bias in [None, Some(&bias[..])] {
                let want = gemm(Isa::Scalar, &x, m, &w, k, n, &s, bias, ep, &y0, None);
                let got = gemm(K::ISA, &x, m, &w, k, n, &s, bias, ep, &y0, None);
                let what = format!(
                    "{}: {m}x{k}x{n} {ep:?} bias={}",
                    K::ISA.name(),
                    bias.is_some()
                );
                assert_bits_eq(&got, &want, &what);
            }
        }
        // And the epilogues mean what they say (against Store on the same kernel).
        let r = gemm(
            K::ISA,
            &x,
            m,
            &w,
            k,
            n,
            &s,
            Some(&bias),
            Epilogue::Store,
            &y0,
            None,
        );
        let acc = gemm(
            K::ISA,
            &x,
            m,
            &w,
            k,
            n,
            &s,
            Some(&bias),
            Epilogue::Accumulate,
            &y0,
            None,
        );
        let gelu = gemm(
            K::ISA,
            &x,
            m,
            &w,
            k,
            n,
            &s,
            Some(&bias),
            Epilogue::QuickGelu,
            &y0,
            None,
        );
        for i in 0..m * n {
            assert_eq!(acc[i].to_bits(), (y0[i] + r[i]).to_bits());
            let want = r[i] as f64 / (1.0 + (-1.702 * r[i] as f64).exp());
            assert!((gelu[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3));
        }
    }
}

/// Extreme values: every weight -128 against activations quantised to ±127 (the largest
/// products, and -128 is exactly where i16 / `vpmaddubsw`-style shortcuts saturate).
pub(crate) fn extreme_values<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let mut rng = Rng::new(4);
    for (m, k, n) in [(3, 3072, 33), (50, 3072, 17), (7, 768, 768), (2, 5, 5)] {
        let w = vec![-128i8; k * n];
        let scales = vec![1.0; n];
        let packed = PackedI8::new(K::ISA, &w, k, n, &scales, None).unwrap();
        // Row 0 all +1, row 1 all -1 (q = ±127 everywhere), the rest random signs.
        let x: Vec<f32> = (0..m * k)
            .map(|i| match i / k {
                0 => 1.0,
                1 => -1.0,
                _ if rng.next_u64().is_multiple_of(2) => 1.0,
                _ => -1.0,
            })
            .collect();
        let (q, _) = ref_quantize(&x, m, k);
        assert!(q.iter().all(|v| v.abs() == 127));
        let want = ref_accumulators(&q, m, &w, k, n);
        assert_eq!(want[0], -128 * 127 * k as i32);
        let got = accumulators::<K>(&x, m, &packed);
        assert!(got == want, "{}: {m}x{k}x{n}", K::ISA.name());
        // The largest positive sums too: weights -128 against all -127.
        let neg: Vec<f32> = vec![-1.0; m * k];
        let got = accumulators::<K>(&neg, m, &packed);
        assert!(got.iter().all(|&v| v == 128 * 127 * k as i32));
        // Alternating ±128-ish weights (127 / -128) against ±127: mixed signs in one
        // group of 2 or 4, where pairwise shortcuts overflow.
        let w2: Vec<i8> = (0..k * n)
            .map(|i| if i % 2 == 0 { -128 } else { 127 })
            .collect();
        let packed2 = PackedI8::new(K::ISA, &w2, k, n, &scales, None).unwrap();
        let want = ref_accumulators(&q, m, &w2, k, n);
        let got = accumulators::<K>(&x, m, &packed2);
        assert!(got == want, "{}: alternating {m}x{k}x{n}", K::ISA.name());
    }
}

/// `pool: None` and 2- and 3-thread pools give identical output, whichever way the driver
/// splits (column blocks, rows when n is small).
pub(crate) fn threads_identical<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let (p2, p3) = (pool(2), pool(3));
    let mut rng = Rng::new(5);
    for (m, k, n) in [
        (50, 768, 768),
        (50, 768, 17),
        (7, 3072, 5),
        (50, 64, 1),
        (1, 768, 33),
    ] {
        let (x, w, s) = (rng.activations(m * k), rng.weights(k * n), rng.scales(n));
        let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let y0 = rng.activations(m * n);
        for ep in [Epilogue::Store, Epilogue::Accumulate, Epilogue::QuickGelu] {
            let one = gemm(K::ISA, &x, m, &w, k, n, &s, Some(&bias), ep, &y0, None);
            for p in [&p2, &p3] {
                let many = gemm(K::ISA, &x, m, &w, k, n, &s, Some(&bias), ep, &y0, Some(p));
                let what = format!("{}: {m}x{k}x{n} {ep:?} threads", K::ISA.name());
                assert_bits_eq(&many, &one, &what);
            }
        }
    }
}

/// One scratch reused across shapes and layers (the hot path's usage) changes nothing.
pub(crate) fn scratch_reuse<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let mut rng = Rng::new(6);
    let mut scratch = I8Scratch::default();
    let p2 = pool(2);
    for (m, k, n) in [
        (50, 3072, 33),
        (3, 5, 16),
        (50, 768, 768),
        (1, 1, 1),
        (50, 3072, 33),
    ] {
        let (x, w, s) = (rng.activations(m * k), rng.weights(k * n), rng.scales(n));
        let packed = PackedI8::new(K::ISA, &w, k, n, &s, None).unwrap();
        let want = gemm(
            K::ISA,
            &x,
            m,
            &w,
            k,
            n,
            &s,
            None,
            Epilogue::Store,
            &vec![0.0; m * n],
            None,
        );
        let mut y = vec![f32::NAN; m * n];
        matmul_i8(
            &x,
            m,
            &packed,
            &mut y,
            Epilogue::Store,
            &mut scratch,
            Some(&p2),
        )
        .unwrap();
        assert_bits_eq(&y, &want, "scratch reuse");
    }
}

/// Bad lengths and dimensions are errors, not panics.
pub(crate) fn errors<K: I8Kernel>() {
    if skip::<K>() {
        return;
    }
    let isa = K::ISA;
    let (k, n) = (5, 3);
    let w = vec![1i8; k * n];
    let s = vec![1.0; n];
    let shape = |r: Result<PackedI8, LinalgError>| matches!(r, Err(LinalgError::Shape(_)));
    assert!(shape(PackedI8::new(isa, &w[1..], k, n, &s, None)));
    assert!(shape(PackedI8::new(isa, &w, k, n, &s[1..], None)));
    assert!(shape(PackedI8::new(isa, &w, k, n, &s, Some(&[1.0]))));
    assert!(shape(PackedI8::new(isa, &[], 0, n, &s, None)));
    assert!(shape(PackedI8::new(isa, &[], k, 0, &[], None)));
    assert!(shape(PackedI8::new(isa, &w, usize::MAX, 2, &s, None)));
    assert!(shape(PackedI8::new(
        isa,
        &vec![0; 200_000],
        200_000,
        1,
        &[1.0],
        None
    )));
    let packed = PackedI8::new(isa, &w, k, n, &s, None).unwrap();
    assert_eq!((packed.k(), packed.n(), packed.isa()), (k, n, isa));
    let mut scratch = I8Scratch::default();
    let mut y = vec![0.0; 2 * n];
    let e = Epilogue::Store;
    let r = matmul_i8(&[0.0; 9], 2, &packed, &mut y, e, &mut scratch, None);
    assert!(matches!(r, Err(LinalgError::Shape(_))));
    let r = matmul_i8(&[0.0; 10], 2, &packed, &mut y[1..], e, &mut scratch, None);
    assert!(matches!(r, Err(LinalgError::Shape(_))));
    let r = matmul_i8(
        &[0.0; 10],
        usize::MAX,
        &packed,
        &mut y,
        e,
        &mut scratch,
        None,
    );
    assert!(matches!(r, Err(LinalgError::Shape(_))));
    // m = 0 is an empty product, not an error.
    assert_eq!(
        matmul_i8(&[], 0, &packed, &mut [], e, &mut scratch, None),
        Ok(())
    );
    assert!(matmul_i8(&[0.0; 10], 2, &packed, &mut y, e, &mut scratch, None).is_ok());
    assert!(y.iter().all(|&v| v == 0.0));
    // An instruction set this CPU lacks is refused at pack time.
    for other in [Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDotprod] {
        if !Isa::supported().contains(&other) {
            let r = PackedI8::new(other, &w, k, n, &s, None);
            assert_eq!(r.unwrap_err(), LinalgError::Unsupported(other));
        }
    }
}

/// Instantiates the suite for one kernel type, as `#[test]`s in a `suite` submodule.
macro_rules! i8_kernel_tests {
    ($kernel:ty) => {
        #[cfg(test)]
        mod suite {
            use $crate::frame::suite as s;
            #[test]
            fn accumulators_exact() {
                s::accumulators_exact::<$kernel>()
            }
            #[test]
            fn matches_scalar_odd_shapes() {
                s::matches_scalar_odd_shapes::<$kernel>()
            }
            #[test]
            fn epilogues_and_bias() {
                s::epilogues_and_bias::<$kernel>()
            }
            #[test]
            fn extreme_values() {
                s::extreme_values::<$kernel>()
            }
            #[test]
            fn threads_identical() {
                s::threads_identical::<$kernel>()
            }
            #[test]
            fn scratch_reuse() {
                s::scratch_reuse::<$kernel>()
            }
            #[test]
            fn errors() {
                s::errors::<$kernel>()
            }
        }
    };
}
pub(crate) use i8_kernel_tests;
