//! The kernel contract, the one generic driver and the public entry points.
//!
//! A kernel (one per instruction set) only provides a register-blocked micro-kernel over
//! packed panels and says how it wants its operands laid out ([`I8Kernel`]); everything
//! else — checking shapes, packing the weights, quantising the activations, the tile loop,
//! edge tiles, the epilogue and threading — lives here once, so every instruction set
//! behaves the same and is tested by the same suite (`suite`).

pub(crate) mod driver;
pub(crate) mod epilogue;
#[cfg(test)]
pub(crate) mod suite;

use std::ops::Range;

use crate::{Isa, LinalgError};

/// Expands `$mac!(KernelType)` for the kernel of `$isa` compiled into this build, or
/// returns `Err(Unsupported)`.
macro_rules! dispatch {
    ($isa:expr, $mac:ident) => {
        match $isa {
            Isa::Scalar => $mac!(crate::generic::ScalarKernel),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => $mac!(crate::x86_64::avx2::Avx2Kernel),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => $mac!(crate::x86_64::avx512vnni::Avx512VnniKernel),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => $mac!(crate::x86_64::amx::AmxKernel),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => $mac!(crate::arm64::neon::NeonKernel),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => $mac!(crate::arm64::neon_dotprod::NeonDotprodKernel),
            #[allow(unreachable_patterns)]
            other => Err(LinalgError::Unsupported(other)),
        }
    };
}

/// Largest k accepted: above it the exact i32 accumulator could overflow
/// (|q| ≤ 127, |w| ≤ 128, so |acc| ≤ 16256·k < 2³¹ for k ≤ 131072). Intermediate sums
/// of the u8 trick may wrap, but wrapping arithmetic makes the corrected result exact as
/// long as the true sum fits.
pub(crate) const MAX_K: usize = 131_072;

/// Largest MR×NR tile a kernel may declare (the driver's per-tile i32 buffer lives on the
/// stack).
pub(crate) const MAX_TILE: usize = 1024;

/// Element types the driver may store in its byte buffers and hand to kernels as raw
/// pointers: plain integers, valid for every bit pattern.
pub(crate) trait Pod: Copy + Send + Sync + 'static {}
impl Pod for i8 {}
impl Pod for u8 {}
impl Pod for i16 {}

/// The operands of one micro-kernel call.
#[derive(Clone, Copy)]
pub(crate) struct TileArgs<A> {
    /// Padded depth, a multiple of the kernel's `KU`.
    pub kp: usize,
    /// First of `mr` rows of `kp` quantised activations, `a_stride` elements apart.
    pub a: *const A,
    /// Distance between rows of `a`, in elements.
    pub a_stride: usize,
    /// One packed B panel (`kp · NR` bytes).
    pub b: *const i8,
    /// `MR · NR` writable i32 (row stride `NR`) for the accumulators.
    pub c: *mut i32,
    /// Prefetch hint: while it works, the kernel should prefetch (into L2) the 128-byte
    /// blocks `pf + 128·i` for `i < pf_iters`, spread over its k loop
    /// ([`TileArgs::prefetch_cursor`]); the driver points it at this tile's share of the
    /// *next* panel, so the weights, which are streamed from L3/DRAM once per call, arrive
    /// before they are needed. Only ever used as a prefetch address (never dereferenced),
    /// so it may point anywhere.
    pub pf: *const i8,
    /// Number of 128-byte blocks at `pf` (at least 1).
    pub pf_iters: usize,
}

impl<A> TileArgs<A> {
    /// Hands out this tile's prefetch addresses (`2 · pf_iters` lines of 64 bytes) spread
    /// evenly over `slots` calls of [`PrefetchCursor::next`] — the kernel's k loop times its
    /// prefetches per iteration. A steady trickle keeps enough lines in flight without the
    /// burst of issuing them all at the start, which overflows the L2 miss queue (measured
    /// on the ViT's 72 GEMMs with cold weights: ~195 → ~230 GMAC/s for AVX-512 VNNI).
    #[inline(always)]
    pub fn prefetch_cursor(&self, slots: usize) -> PrefetchCursor {
        PrefetchCursor {
            base: self.pf,
            pos: 0,
            // 16.16 fixed point: lines per slot.
            step: ((2 * self.pf_iters) << 16) / slots.max(1),
        }
    }
}

/// See [`TileArgs::prefetch_cursor`].
pub(crate) struct PrefetchCursor {
    base: *const i8,
    pos: usize,
    step: usize,
}

impl PrefetchCursor {
    /// The next address to prefetch (a slot that lands on the previous slot's line only
    /// costs a load slot). Never dereference it: it is a hint address only.
    #[inline(always)]
    pub fn next(&mut self) -> *const i8 {
        let p = self.base.wrapping_add(64 * (self.pos >> 16));
        self.pos += self.step;
        p
    }
}

/// The contract between the generic driver and one instruction set's micro-kernel.
///
/// Layouts (all zero padded, so a kernel never needs edge cases along k or n):
/// - k is padded to `kp`, a multiple of `KU`;
/// - B (the weights) is packed in panels of `NR` columns, one after the other; a panel is
///   `kp / KG` groups, a group is `NR` columns × `KG` consecutive k values of one column
///   (i8), so one SIMD load fetches the `KG`-deep slices of several columns at once
///   (`KG` = 4 for `vpdpbusd`/`sdot`, 2 for `vpmaddwd`, 16 for `smull`/`sadalp`, 1 for the
///   scalar twin);
/// - A (the quantised activations) is row-major, `kp` elements per row, each element
///   `to_a(q)`: i8 as is, +128 as u8 for `vpdpbusd`, widened to i16 for `vpmaddwd`.
///   The driver subtracts `A_OFFSET · colsum(W)[j]` (precomputed at pack time) from every
///   accumulator, which makes the u8 trick exact.
///
/// Value ranges kernels may rely on: quantised activations are in -127..=127 (never -128:
/// the quantiser clamps), weights in -128..=127. The plain NEON kernel needs the former to
/// sum two products in an i16 lane exactly.
pub(crate) trait I8Kernel: Sized + 'static {
    /// The instruction set this kernel needs.
    const ISA: Isa;
    /// Rows per micro-tile.
    const MR: usize;
    /// Columns per micro-tile (and per packed panel).
    const NR: usize;
    /// k is padded to a multiple of this (a multiple of `KG`).
    const KU: usize;
    /// Consecutive k values of one column stored together in a B panel.
    const KG: usize;
    /// Offset the kernel's A representation adds to every activation.
    const A_OFFSET: i32;
    /// Element type of the quantised activations as the kernel reads them.
    type A: Pod;

    /// The kernel's representation of one quantised activation.
    fn to_a(q: i8) -> Self::A;

    /// Micro-kernel: `c[r][j] = Σ_k a[r][k] · b[k][j]` (wrapping i32) for `r < mr`, `j < NR`.
    ///
    /// # Safety
    /// `1 ≤ mr ≤ MR` and `t` as documented on [`TileArgs`]; the CPU supports `ISA`.
    unsafe fn kernel(mr: usize, t: TileArgs<Self::A>);

    /// Quantises `x` (rows of `k`) into `a` (rows of `kp`) and `row_scales`.
    /// Kernels override this only to compile the generic code with their target features
    /// (so the division and rounding vectorise); the arithmetic must stay the driver's.
    ///
    /// # Safety
    /// The CPU supports `ISA`.
    #[inline(always)]
    unsafe fn quantize(x: &[f32], k: usize, kp: usize, a: &mut [Self::A], row_scales: &mut [f32]) {
        driver::quantize::<Self>(x, k, kp, a, row_scales)
    }

    /// Runs the tile loop over `panels` × `tiles` (indices of NR-column panels and MR-row
    /// tiles). Overridden, like `quantize`, only to enable target features.
    ///
    /// # Safety
    /// As `driver::work`; the CPU supports `ISA`.
    #[inline(always)]
    unsafe fn work(job: &driver::Job<'_, Self::A>, panels: Range<usize>, tiles: Range<usize>) {
        driver::work::<Self>(job, panels, tiles)
    }
}

/// Implements `I8Kernel::quantize` and `I8Kernel::work` as trampolines into copies of the
/// generic driver code compiled with `$features` enabled (inside an `impl I8Kernel` block).
#[allow(unused_macros)]
macro_rules! kernel_target_features {
    ($features:literal) => {
        #[inline(always)]
        unsafe fn quantize(
            x: &[f32],
            k: usize,
            kp: usize,
            a: &mut [Self::A],
            row_scales: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn tf<K: $crate::frame::I8Kernel>(
                x: &[f32],
                k: usize,
                kp: usize,
                a: &mut [K::A],
                row_scales: &mut [f32],
            ) {
                $crate::frame::driver::quantize::<K>(x, k, kp, a, row_scales)
            }
            tf::<Self>(x, k, kp, a, row_scales)
        }

        #[inline(always)]
        unsafe fn work(
            job: &$crate::frame::driver::Job<'_, Self::A>,
            panels: std::ops::Range<usize>,
            tiles: std::ops::Range<usize>,
        ) {
            #[target_feature(enable = $features)]
            unsafe fn tf<K: $crate::frame::I8Kernel>(
                job: &$crate::frame::driver::Job<'_, K::A>,
                panels: std::ops::Range<usize>,
                tiles: std::ops::Range<usize>,
            ) {
                $crate::frame::driver::work::<K>(job, panels, tiles)
            }
            tf::<Self>(job, panels, tiles)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use kernel_target_features;

/// A 64-byte aligned byte buffer: packed panels and quantised rows start on a cache line,
/// so the kernels' full-width loads never split one.
#[derive(Default, Clone)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

impl AlignedBuf {
    /// Makes room for `len` elements of `T`, growing (never shrinking) the allocation, and
    /// returns them (contents unspecified but initialised).
    pub(crate) fn slice_mut<T: Pod>(&mut self, len: usize) -> &mut [T] {
        let bytes = len * std::mem::size_of::<T>();
        let lines = bytes.div_ceil(64);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0; 64]));
        }
        self.len = bytes;
        // SAFETY: the allocation holds at least `bytes` initialised bytes, aligned to 64
        // (≥ align_of::<T>() for the Pod integers), and every bit pattern is a valid T.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), len) }
    }

    /// The first `len()` bytes as `T`.
    pub(crate) fn slice<T: Pod>(&self) -> &[T] {
        let len = self.len / std::mem::size_of::<T>();
        // SAFETY: as in `slice_mut`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), len) }
    }
}

/// Weights of one linear layer y = x·W + bias, int8 symmetric per output column (zero point
/// 0), packed once at load time for one ISA (panel layout, k padded, column sums etc.
/// precomputed here, never per run).
#[derive(Clone)]
pub struct PackedI8 {
    pub(crate) isa: Isa,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// k padded to the kernel's `KU`.
    pub(crate) kp: usize,
    /// Panel width (the kernel's `NR`), kept to check the dispatch.
    pub(crate) nr: usize,
    /// The packed panels (i8).
    pub(crate) b: AlignedBuf,
    /// `-A_OFFSET · colsum(W)[j]`, added to every accumulator of column j (n entries).
    pub(crate) corr: Vec<i32>,
    /// Per-column scales (n).
    pub(crate) scales: Vec<f32>,
    /// Per-column bias, zeros when none was given (n): one branch-free epilogue for both.
    pub(crate) bias: Vec<f32>,
}

impl std::fmt::Debug for PackedI8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedI8")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl PackedI8 {
    /// `w`: row-major `[k][n]` int8 (the ONNX MatMulInteger B layout; values may be
    /// -128..=127), `scales`: n per-column f32 scales, `bias`: optional n f32. Errors on
    /// length mismatch, on k or n of 0, on k above 131072 (the i32 accumulator could
    /// overflow) or if `isa` isn't supported by this CPU.
    pub fn new(
        isa: Isa,
        w: &[i8],
        k: usize,
        n: usize,
        scales: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedI8, LinalgError> {
        if k == 0 || n == 0 {
            return Err(LinalgError::Shape(format!(
                "weights must have k > 0 and n > 0, got k={k}, n={n}"
            )));
        }
        if k > MAX_K {
            return Err(LinalgError::Shape(format!(
                "k={k} exceeds {MAX_K}: the i32 accumulator could overflow"
            )));
        }
        if Some(w.len()) != k.checked_mul(n) {
            return Err(LinalgError::Shape(format!(
                "weights have {} values, expected k·n = {k}·{n}",
                w.len()
            )));
        }
        if scales.len() != n {
            return Err(LinalgError::Shape(format!(
                "{} scales for n={n} columns",
                scales.len()
            )));
        }
        if let Some(b) = bias {
            if b.len() != n {
                return Err(LinalgError::Shape(format!(
                    "{} bias values for n={n} columns",
                    b.len()
                )));
            }
        }
        if !isa.is_supported() {
            return Err(LinalgError::Unsupported(isa));
        }
        macro_rules! pack {
            ($kernel:ty) => {
                Ok(driver::pack::<$kernel>(w, k, n, scales, bias))
            };
        }
        dispatch!(isa, pack)
    }

    /// Depth (rows of W, columns of x).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The instruction set the weights were packed for (and `matmul_i8` will run).
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// What the GEMM does with its result
/// `r[i][j] = acc_i32[i][j] as f32 * row_scale[i] * scales[j] + bias[j]`
/// (evaluated in this order, without fused multiply-add, on every instruction set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `y = r`.
    Store,
    /// `y += r` (residual add).
    Accumulate,
    /// `y = r * sigmoid(1.702 r)`, computed as `r / (1 + exp(-1.702 r))` with this crate's
    /// own `exp` (Cephes polynomial, ~1 ulp), identical on every instruction set.
    QuickGelu,
}

/// Reusable buffers (quantised activations etc.) so the hot path allocates nothing after
/// the first call.
#[derive(Default)]
pub struct I8Scratch {
    pub(crate) a: AlignedBuf,
    pub(crate) row_scales: Vec<f32>,
}

impl std::fmt::Debug for I8Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8Scratch").finish_non_exhaustive()
    }
}

/// `y[m×n]` (row-major) = `epilogue(quantise_rows(x[m×k]) · W)`.
///
/// Activations are quantised dynamically, symmetric per row, exactly like the model's ONNX
/// graph: `s_i = max(max_j |x[i][j]|, 1e-12) / 127`;
/// `q = clamp(round_half_to_even(x / s_i), -127, 127)`. A NaN in a row makes that row's
/// output NaN.
///
/// `pool`: `None` runs on the calling thread; `Some(p)` splits the work (column blocks of n,
/// rows when n is small) over p's threads; the output is bit-identical either way.
pub fn matmul_i8(
    x: &[f32],
    m: usize,
    w: &PackedI8,
    y: &mut [f32],
    epilogue: Epilogue,
    scratch: &mut I8Scratch,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), LinalgError> {
    let (k, n) = (w.k, w.n);
    if Some(x.len()) != m.checked_mul(k) {
        return Err(LinalgError::Shape(format!(
            "x has {} values, expected m·k = {m}·{k}",
            x.len()
        )));
    }
    if Some(y.len()) != m.checked_mul(n) {
        return Err(LinalgError::Shape(format!(
            "y has {} values, expected m·n = {m}·{n}",
            y.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    macro_rules! run {
        ($kernel:ty) => {
            driver::run::<$kernel>(x, m, w, y, epilogue, scratch, pool)
        };
    }
    dispatch!(w.isa, run)
}
