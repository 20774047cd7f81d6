//! AVX2 micro-kernel: int8 widened to i16, `vpmaddwd` (2 i16 × i16 products summed into
//! each i32 lane), `vpaddd` into the accumulators.
//!
//! Exact: an i16 pair product sum is at most 2 · 128 · 127, far from i32 limits. The
//! shortcut `vpmaddubsw` (u8 × i8 pairs into *saturating* i16) is deliberately not used:
//! 2 · 255 · 128 overflows i16, and the extreme-value test would catch it.
//!
//! Layout: A is stored as i16 (`to_a`), so one 4-byte broadcast gives the (k, k+1) pair of
//! a row; B panels hold 16 columns × 2 k as i8 (the panel's `KG` = 2), sign-extended to
//! i16 after the load with `vpmovsxbw` (half the memory traffic of storing i16).
//! Register blocking: 6 rows × 16 columns = 12 ymm accumulators + 2 B + 1 A of the 16.

use std::arch::x86_64::*;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The AVX2 kernel.
pub(crate) struct Avx2Kernel;

const MR: usize = 6;
/// ymm registers per row of a tile.
const NV: usize = 2;
const NR: usize = 8 * NV;

impl I8Kernel for Avx2Kernel {
    const ISA: Isa = Isa::Avx2;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 2;
    const KG: usize = 2;
    const A_OFFSET: i32 = 0;
    type A = i16;

    #[inline(always)]
    fn to_a(q: i8) -> i16 {
        q as i16
    }

    #[inline(always)]
    unsafe fn kernel(mr: usize, t: TileArgs<i16>) {
        kernel(mr, t)
    }

    crate::frame::kernel_target_features!("avx2");
}

#[target_feature(enable = "avx2")]
unsafe fn kernel(mr: usize, t: TileArgs<i16>) {
    match mr {
        1 => tile::<1>(t),
        2 => tile::<2>(t),
        3 => tile::<3>(t),
        4 => tile::<4>(t),
        5 => tile::<5>(t),
        _ => tile::<MR>(t),
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize>(t: TileArgs<i16>) {
    let TileArgs {
        kp,
        a,
        a_stride,
        b,
        c,
        ..
    } = t;
    let mut acc = [[_mm256_setzero_si256(); NV]; R];
    let mut bp = b;
    let mut ap = a;
    let pairs = kp / 2;
    // One prefetch slot per pair of k for this tile's share of the next panel.
    let mut pfc = t.prefetch_cursor(pairs);
    for _ in 0..pairs {
        _mm_prefetch::<_MM_HINT_T1>(pfc.next());
        let mut bv = [_mm256_setzero_si256(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            // 8 columns × (k, k+1) as i8 → i16.
            *bv = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(16 * v).cast()));
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // The (k, k+1) pair of row r, as one i32, in all 8 lanes.
            let av = _mm256_set1_epi32(ap.add(r * a_stride).cast::<i32>().read_unaligned());
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, bv));
            }
        }
        bp = bp.add(NR * 2);
        ap = ap.add(2);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            _mm256_storeu_si256(c.add(r * NR + 8 * v).cast(), acc);
        }
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::x86_64::avx2::Avx2Kernel);
