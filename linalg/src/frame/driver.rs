//! The one generic driver: B packing, row quantisation, the tile loop with its edge tiles
//! and epilogue, and the split over threads. Kernels only supply the micro-kernel.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::epilogue::apply_row;
use super::{AlignedBuf, Epilogue, I8Kernel, I8Scratch, PackedI8, TileArgs, MAX_TILE};
use crate::LinalgError;

/// Below this many multiply-accumulates a call stays on the calling thread even with a
/// pool: waking a second thread costs more than it saves.
const MIN_MACS_PER_THREAD: usize = 1 << 16;

/// Parts a threaded call is cut into, per thread (see `run`).
const PARTS_PER_THREAD: usize = 4;

/// Packs row-major `w[k][n]` into `K`'s panel layout (see [`I8Kernel`]) and precomputes the
/// per-column correction for the kernel's activation offset.
pub(crate) fn pack<K: I8Kernel>(
    w: &[i8],
    k: usize,
    n: usize,
    scales: &[f32],
    bias: Option<&[f32]>,
) -> PackedI8 {
    const { assert!(K::KU % K::KG == 0 && K::MR * K::NR <= MAX_TILE) };
    let kp = k.next_multiple_of(K::KU);
    let panels = n.div_ceil(K::NR);
    let mut buf = AlignedBuf::default();
    let b = buf.slice_mut::<i8>(panels * kp * K::NR);
    b.fill(0);
    // Group by group of each panel: KG rows × NR columns of W (KG short contiguous reads)
    // interleaved into one contiguous group. Padding stays 0.
    for (p, panel) in b.chunks_exact_mut(kp * K::NR).enumerate() {
        let j0 = p * K::NR;
        let nr = K::NR.min(n - j0);
        for (g, group) in panel.chunks_exact_mut(K::NR * K::KG).enumerate() {
            for t in 0..K::KG.min(k.saturating_sub(g * K::KG)) {
                let kk = g * K::KG + t;
                let src = &w[kk * n + j0..kk * n + j0 + nr];
                for (dst, &v) in group[t..].iter_mut().step_by(K::KG).zip(src) {
                    *dst = v;
                }
            }
        }
    }
    let mut colsum = vec![0i32; n];
    for row in w.chunks_exact(n) {
        for (sum, &v) in colsum.iter_mut().zip(row) {
            *sum += v as i32;
        }
    }
    let corr = colsum
        .into_iter()
        .map(|s| s.wrapping_mul(K::A_OFFSET).wrapping_neg())
        .collect();
    PackedI8 {
        isa: K::ISA,
        k,
        n,
        kp,
        nr: K::NR,
        b: buf,
        corr,
        scales: scales.to_vec(),
        bias: bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec),
    }
}

/// Quantises one activation: `clamp(round_half_to_even(v / s), -127, 127)`, the ONNX
/// graph's Div → Round → Clip.
#[inline(always)]
pub(crate) fn quantize_one(v: f32, s: f32) -> i8 {
    // 1.5·2²³: an integer-valued float t in [-127, 127] added to it is exact and leaves t
    // in the low mantissa bits. Reading it back with integer ops replaces the saturating
    // `as` conversion, which LLVM scalarises (per-element NaN checks) on x86.
    const MAGIC: f32 = 12_582_912.0;
    let t = (v / s).round_ties_even().clamp(-127.0, 127.0);
    // A NaN (only in a row whose scale is NaN, so its output is NaN anyway) gives garbage.
    (t + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i8
}

/// The row scale `max(max_j |x_j|, 1e-12) / 127`.
///
/// The maximum is taken over the bit patterns of `|x_j|`: for non-negative floats their
/// integer order is the float order, and an integer max reduction vectorises where a float
/// one (with its NaN rules) does not. A NaN compares above everything, so it yields a NaN
/// scale (and a NaN output row) rather than being silently skipped.
#[inline(always)]
pub(crate) fn row_scale(row: &[f32]) -> f32 {
    let bits = row
        .iter()
        .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    let max = f32::from_bits(bits);
    // `if` rather than f32::max: keeps the NaN.
    let max = if max < 1e-12 { 1e-12 } else { max };
    max / 127.0
}

/// Quantises rows of `x` (`k` wide) into `a` (`kp` wide, zero padded) as `K::A` values.
///
/// # Safety
/// None beyond the caller's promise that the CPU runs what the caller compiled this into.
#[inline(always)]
pub(crate) unsafe fn quantize<K: I8Kernel>(
    x: &[f32],
    k: usize,
    kp: usize,
    a: &mut [K::A],
    row_scales: &mut [f32],
) {
    let zero = K::to_a(0);
    for ((row, dst), rs) in x
        .chunks_exact(k)
        .zip(a.chunks_exact_mut(kp))
        .zip(row_scales.iter_mut())
    {
        let s = row_scale(row);
        *rs = s;
        let (head, tail) = dst.split_at_mut(k);
        for (d, &v) in head.iter_mut().zip(row) {
            *d = K::to_a(quantize_one(v, s));
        }
        tail.fill(zero);
    }
}

/// One call's operands, shared by the threads.
pub(crate) struct Job<'a, A> {
    x: &'a [f32],
    /// The quantised rows (`m · kp`), written once per row by `quantize_shared`.
    a: *mut A,
    m: usize,
    /// Per-row scales (`m`), written with their row.
    row_scales: *mut f32,
    w: &'a PackedI8,
    y: *mut f32,
    epilogue: Epilogue,
    /// Next row to quantise (rows are claimed one at a time by the threads).
    next_row: AtomicUsize,
    /// Rows quantised so far; the tile loop starts when it reaches `m`.
    done_rows: AtomicUsize,
}

// SAFETY: each row of `a` / `row_scales` is written by the one thread that claimed it and
// read only after `done_rows` (Release/Acquire) says all rows are written; `y` is written by
// `work` calls on disjoint (panel, tile) rectangles, which `run` guarantees.
unsafe impl<A: Sync> Sync for Job<'_, A> {}

/// Quantises the rows of `job` together with the other threads working on it: claim a
/// row, quantise it, repeat; then wait for rows other threads still hold. Only rows a
/// running thread has claimed are waited for, so this cannot deadlock however the pool
/// schedules the parts (a part that starts late finds every row done).
///
/// # Safety
/// `job` comes from `run`; the CPU supports `K::ISA`.
unsafe fn quantize_shared<K: I8Kernel>(job: &Job<'_, K::A>) {
    let (k, kp, m) = (job.w.k, job.w.kp, job.m);
    loop {
        let r = job.next_row.fetch_add(1, Ordering::Relaxed);
        if r >= m {
            break;
        }
        // SAFETY: row r is claimed by this thread alone; in bounds (r < m).
        let a = std::slice::from_raw_parts_mut(job.a.add(r * kp), kp);
        let rs = std::slice::from_raw_parts_mut(job.row_scales.add(r), 1);
        K::quantize(&job.x[r * k..(r + 1) * k], k, kp, a, rs);
        job.done_rows.fetch_add(1, Ordering::Release);
    }
    let mut spins = 0u32;
    while job.done_rows.load(Ordering::Acquire) < m {
        // Another running thread is finishing a row (microseconds); yield if it was
        // preempted.
        spins += 1;
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The tile loop: every NR-column panel in `panels` × every MR-row tile in `tiles`,
/// panels outermost so one panel of B stays in L1 while the row tiles stream past it.
///
/// # Safety
/// `job` comes from `run` (buffers sized for `K`, weights packed for `K`); no other thread
/// works on the same panels × tiles; the CPU supports `K::ISA`.
#[inline(always)]
pub(crate) unsafe fn work<K: I8Kernel>(
    job: &Job<'_, K::A>,
    panels: Range<usize>,
    tiles: Range<usize>,
) {
    #[repr(C, align(64))]
    struct Tile([i32; MAX_TILE]);
    let mut tile = Tile([0; MAX_TILE]);
    let w = job.w;
    let (kp, n) = (w.kp, w.n);
    let b = w.b.slice::<i8>();
    let panel_bytes = kp * K::NR;
    // Each row tile prefetches an equal share of the next panel.
    let pf_iters = panel_bytes.div_ceil(128 * tiles.len().max(1)).max(1);
    let last_panel = panels.end.saturating_sub(1);
    for p in panels {
        let j0 = p * K::NR;
        let nr = K::NR.min(n - j0);
        let panel = b.as_ptr().add(p * panel_bytes);
        // The next panel of this thread (for the last one, this panel again: harmless).
        let next = b
            .as_ptr()
            .add(if p < last_panel { p + 1 } else { p } * panel_bytes);
        let (corr, scales, bias) = (
            &w.corr[j0..j0 + nr],
            &w.scales[j0..j0 + nr],
            &w.bias[j0..j0 + nr],
        );
        for t in tiles.clone() {
            let i0 = t * K::MR;
            let mr = K::MR.min(job.m - i0);
            let args = TileArgs {
                kp,
                a: job.a.add(i0 * kp),
                a_stride: kp,
                b: panel,
                c: tile.0.as_mut_ptr(),
                pf: next.wrapping_add((t - tiles.start) * pf_iters * 128),
                pf_iters,
            };
            K::kernel(mr, args);
            for r in 0..mr {
                let i = i0 + r;
                // SAFETY: row i, columns j0..j0+nr of y: inside y (i < m, j0 + nr ≤ n) and
                // owned by this call alone.
                let y = std::slice::from_raw_parts_mut(job.y.add(i * n + j0), nr);
                let acc = &tile.0[r * K::NR..r * K::NR + nr];
                let rs = *job.row_scales.add(i);
                apply_row(acc, corr, rs, scales, bias, y, job.epilogue);
            }
        }
    }
}

/// `matmul_i8` for kernel `K` (shapes already checked against `w`).
pub(crate) fn run<K: I8Kernel>(
    x: &[f32],
    m: usize,
    w: &PackedI8,
    y: &mut [f32],
    epilogue: Epilogue,
    scratch: &mut I8Scratch,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), LinalgError> {
    if w.isa != K::ISA || w.nr != K::NR || !w.kp.is_multiple_of(K::KU) {
        // Unreachable through the public API (dispatch follows w.isa); kept as an error
        // rather than a panic.
        return Err(LinalgError::Unsupported(w.isa));
    }
    let (k, kp, n) = (w.k, w.kp, w.n);
    let a = scratch.a.slice_mut::<K::A>(m * kp);
    scratch.row_scales.resize(m, 0.0);
    let job = Job {
        x,
        a: a.as_mut_ptr(),
        m,
        row_scales: scratch.row_scales.as_mut_ptr(),
        w,
        y: y.as_mut_ptr(),
        epilogue,
        next_row: AtomicUsize::new(0),
        done_rows: AtomicUsize::new(0),
    };
    let panels = n.div_ceil(K::NR);
    let tiles = m.div_ceil(K::MR);
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = match pool {
        Some(p) => p
            .current_num_threads()
            .min((macs / MIN_MACS_PER_THREAD).max(1)),
        None => 1,
    };
    let (pool, threads) = match pool {
        Some(p) if threads > 1 => (p, threads),
        // SAFETY (both): PackedI8::new only packs for an ISA this CPU supports; the whole
        // problem on this thread, buffers sized above.
        _ => {
            unsafe {
                quantize_shared::<K>(&job);
                K::work(&job, 0..panels, 0..tiles);
            }
            return Ok(());
        }
    };
    // Column blocks first (each thread streams its own part of W, the big operand); only
    // when there are fewer panels than parts are the rows split as well. Every part first
    // helps quantise the rows (all parts need all of them).
    //
    // PARTS_PER_THREAD parts per thread rather than one: waking a sleeping worker can take
    // tens of microseconds, a good part of a 100 µs GEMM. With one part each, the calling
    // worker either waits for the late one or runs its part too; with smaller parts a late
    // worker still finds some to steal and nobody idles. (On the 2-vCPU development VM,
    // 1, 2 and 4 parts per thread measured the same within its noise.)
    let target = threads * PARTS_PER_THREAD;
    let pc = panels.min(target);
    let tc = tiles.min(target / pc).max(1);
    let part =
        |i: usize, parts: usize, total: usize| (i * total / parts)..((i + 1) * total / parts);
    let job = &job;
    pool.scope(|s| {
        for c in 0..pc * tc {
            let (pr, tr) = (part(c / tc, pc, panels), part(c % tc, tc, tiles));
            // SAFETY: the parts are disjoint rectangles of panels × tiles.
            let task = move || unsafe {
                quantize_shared::<K>(job);
                K::work(job, pr, tr)
            };
            if c + 1 == pc * tc {
                // The last part on this (pool) thread instead of idling in the scope.
                task();
            } else {
                s.spawn(move |_| task());
            }
        }
    });
    Ok(())
}

/// Test hook: the corrected i32 accumulators `quantise_rows(x) · W` as kernel `K` computes
/// them, for the suite's exactness checks (the public API only shows f32 results, which
/// hide low-order bits of large sums).
#[cfg(test)]
pub(crate) fn accumulators<K: I8Kernel>(x: &[f32], m: usize, w: &PackedI8) -> Vec<i32> {
    let (k, kp, n) = (w.k, w.kp, w.n);
    let mut abuf = AlignedBuf::default();
    let a = abuf.slice_mut::<K::A>(m * kp);
    let mut rs = vec![0.0; m];
    let mut out = vec![0i32; m * n];
    let mut tile = vec![0i32; MAX_TILE];
    unsafe {
        K::quantize(x, k, kp, a, &mut rs);
        let b = w.b.slice::<i8>();
        for p in 0..n.div_ceil(K::NR) {
            let j0 = p * K::NR;
            let nr = K::NR.min(n - j0);
            for t in 0..m.div_ceil(K::MR) {
                let i0 = t * K::MR;
                let mr = K::MR.min(m - i0);
                let panel = b.as_ptr().add(p * kp * K::NR);
                let args = TileArgs {
                    kp,
                    a: a.as_ptr().add(i0 * kp),
                    a_stride: kp,
                    b: panel,
                    c: tile.as_mut_ptr(),
                    pf: panel,
                    pf_iters: 1,
                };
                K::kernel(mr, args);
                for r in 0..mr {
                    for jj in 0..nr {
                        out[(i0 + r) * n + j0 + jj] =
                            tile[r * K::NR + jj].wrapping_add(w.corr[j0 + jj]);
                    }
                }
            }
        }
    }
    out
}
