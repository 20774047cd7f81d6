//! AVX-512 VNNI micro-kernel: `vpdpbusd` (4 u8 × i8 products summed into each i32 lane).
//!
//! `vpdpbusd` wants one unsigned operand. The activations are symmetric int8, so the
//! driver stores them as `q + 128` (u8, via `to_a`) and subtracts `128 · colsum(W)[j]`
//! (precomputed at pack time) from every accumulator: `Σ (q+128)·w − 128·Σ w = Σ q·w`,
//! exact in wrapping i32. Unlike `vpmaddubsw` there is no i16 intermediate to saturate.
//!
//! Register blocking: a tile is `MR` rows × `NR` = 32 columns, i.e. `MR × 2` zmm
//! accumulators. Per group of 4 k: 2 zmm loads of B (32 columns × 4 k, the panel layout),
//! one 4-byte broadcast of A per row, `MR × 2` `vpdpbusd`. With MR = 10 that is 20
//! accumulators + 2 B + 1 broadcast = 23 of 32 registers, 20 independent dependency chains
//! (enough to cover the 5-cycle latency at 2 per cycle), and 12 loads per 20 `vpdpbusd`.
//! ViT-B/32's m = 50 is exactly 5 tiles of 10; a 32-column panel of a 768-deep W is 24 KB
//! and stays in L1 while the 5 row tiles pass over it.

use std::arch::x86_64::*;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The AVX-512 VNNI kernel (needs avx512f, avx512bw, avx512vnni).
pub(crate) struct Avx512VnniKernel;

const MR: usize = 10;
/// zmm registers per row of a tile.
const NV: usize = 2;
const NR: usize = 16 * NV;

impl I8Kernel for Avx512VnniKernel {
    const ISA: Isa = Isa::Avx512Vnni;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 4;
    const KG: usize = 4;
    const A_OFFSET: i32 = 128;
    type A = u8;

    #[inline(always)]
    fn to_a(q: i8) -> u8 {
        // q + 128 as u8, as a bit flip (vectorises to one vpxor).
        (q as u8) ^ 0x80
    }

    #[inline(always)]
    unsafe fn kernel(mr: usize, t: TileArgs<u8>) {
        kernel(mr, t)
    }

    crate::frame::kernel_target_features!("avx512f,avx512bw,avx512vnni");
}

/// One instantiation of the tile per row count, so edge tiles (m not a multiple of MR) run
/// as fast per row as full ones instead of computing padding rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel(mr: usize, t: TileArgs<u8>) {
    match mr {
        1 => tile::<1>(t),
        2 => tile::<2>(t),
        3 => tile::<3>(t),
        4 => tile::<4>(t),
        5 => tile::<5>(t),
        6 => tile::<6>(t),
        7 => tile::<7>(t),
        8 => tile::<8>(t),
        9 => tile::<9>(t),
        _ => tile::<MR>(t),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize>(t: TileArgs<u8>) {
    let TileArgs {
        kp,
        a,
        a_stride,
        b,
        c,
        ..
    } = t;
    let mut acc = [[_mm512_setzero_si512(); NV]; R];
    let mut bp = b;
    let mut ap = a;
    let groups = kp / 4;
    // Two prefetch slots per group for this tile's share of the next panel.
    let mut pfc = t.prefetch_cursor(2 * groups);
    for _ in 0..groups {
        _mm_prefetch::<_MM_HINT_T1>(pfc.next());
        _mm_prefetch::<_MM_HINT_T1>(pfc.next());
        let mut bv = [_mm512_setzero_si512(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = _mm512_loadu_si512(bp.add(64 * v).cast());
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // 4 consecutive k of row r (u8), the same in all 16 lanes.
            let av = _mm512_set1_epi32(ap.add(r * a_stride).cast::<i32>().read_unaligned());
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm512_dpbusd_epi32(*acc, av, bv);
            }
        }
        bp = bp.add(NR * 4);
        ap = ap.add(4);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            _mm512_storeu_si512(c.add(r * NR + 16 * v).cast(), acc);
        }
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::x86_64::avx512vnni::Avx512VnniKernel);
