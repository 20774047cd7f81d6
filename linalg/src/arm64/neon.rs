//! Plain NEON micro-kernel (Cortex-A72 / Raspberry Pi 4, no dot product instructions):
//! `smull` + `smlal2` + `sadalp`, the gemmlowp/ruy scheme for this core family.
//!
//! Per (row, column) pair and 16 k: `smull` multiplies the low 8 i8 of the row by the low 8
//! of the column into 8 i16, `smlal2` adds the products of the high 8 (so each i16 lane holds
//! the sum of two products), `sadalp` adds adjacent i16 pairs into the 4 i32 accumulator
//! lanes; the 4 lanes are summed once at the end. That is 16 MACs per 2 multiplies (the A72
//! has one multiply pipe) instead of 4 per `smlal` by lane.
//!
//! Exact: the quantised activations are clamped to -127..=127 and the weights are
//! -128..=127, so a sum of two products is at most 2 · 127 · 128 = 32512 < 2¹⁵ — no i16
//! overflow (this is why activations must never be -128; the extreme-value test checks
//! the bound). Everything after that is i32.
//!
//! Layout: A stays i8, row-major (16 k of a row per register); B panels hold 4 columns × 16
//! consecutive k (the panel's `KG` = 16). Register blocking: 4 rows × 4 columns = 16
//! accumulators + 4 A + 4 B + 2 products of the 32 vector registers.

use std::arch::aarch64::*;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The plain NEON kernel.
pub(crate) struct NeonKernel;

const MR: usize = 4;
const NR: usize = 4;

impl I8Kernel for NeonKernel {
    const ISA: Isa = Isa::Neon;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 16;
    const KG: usize = 16;
    const A_OFFSET: i32 = 0;
    type A = i8;

    #[inline(always)]
    fn to_a(q: i8) -> i8 {
        q
    }

    #[inline(always)]
    unsafe fn kernel(mr: usize, t: TileArgs<i8>) {
        kernel(mr, t)
    }

    crate::frame::kernel_target_features!("neon");
}

#[target_feature(enable = "neon")]
unsafe fn kernel(mr: usize, t: TileArgs<i8>) {
    match mr {
        1 => tile::<1>(t),
        2 => tile::<2>(t),
        3 => tile::<3>(t),
        _ => tile::<MR>(t),
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize>(t: TileArgs<i8>) {
    let TileArgs {
        kp,
        a,
        a_stride,
        b,
        c,
        ..
    } = t;
    let mut acc = [[vdupq_n_s32(0); NR]; R];
    let mut bp = b;
    let blocks = kp / 16;
    // One prefetch slot per 16 k (this kernel eats one line of B per 16 k).
    let mut pfc = t.prefetch_cursor(blocks);
    for blk in 0..blocks {
        super::prefetch_l2(pfc.next());
        let mut av = [vdupq_n_s8(0); R];
        for (r, av) in av.iter_mut().enumerate() {
            *av = vld1q_s8(a.add(r * a_stride + blk * 16));
        }
        let bv = [
            vld1q_s8(bp),
            vld1q_s8(bp.add(16)),
            vld1q_s8(bp.add(32)),
            vld1q_s8(bp.add(48)),
        ];
        for (acc, &a) in acc.iter_mut().zip(&av) {
            for (acc, &b) in acc.iter_mut().zip(&bv) {
                // Two products per i16 lane (|sum| ≤ 32512), then pairwise into i32.
                let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
                let p = vmlal_high_s8(p, a, b);
                *acc = vpadalq_s16(*acc, p);
            }
        }
        bp = bp.add(64);
    }
    for (r, acc) in acc.iter().enumerate() {
        // Lane sums of the 4 columns' accumulators, as one vector of 4 columns.
        let s01 = vpaddq_s32(acc[0], acc[1]);
        let s23 = vpaddq_s32(acc[2], acc[3]);
        vst1q_s32(c.add(r * NR), vpaddq_s32(s01, s23));
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::arm64::neon::NeonKernel);
