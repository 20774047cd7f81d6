//! Plain NEON micro-kernel (Cortex-A72 / Raspberry Pi 4): `smlal`/`smlal2` by lane, i16 ×
//! i16 products widened into i32 accumulators.
//!
//! Exact: every product is accumulated straight into i32 (no i16 partial sums, so no
//! saturation or wrap). A is stored as i16 (`to_a`), 8 k of a row per register, used lane
//! by lane; B panels hold 16 columns per k as i8 (the panel's `KG` = 1), widened with
//! `sxtl`/`sxtl2` once per k and shared by all rows.
//!
//! Register blocking: 4 rows × 16 columns = 16 `int32x4` accumulators + 4 A + 3 B of the 32
//! vector registers; per k: one 16-byte load of B, 2 widenings, 16 `smlal`.

use std::arch::aarch64::*;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The plain NEON kernel.
pub(crate) struct NeonKernel;

const MR: usize = 4;
const NR: usize = 16;

impl I8Kernel for NeonKernel {
    const ISA: Isa = Isa::Neon;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 8;
    const KG: usize = 1;
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

    crate::frame::kernel_target_features!("neon");
}

#[target_feature(enable = "neon")]
unsafe fn kernel(mr: usize, t: TileArgs<i16>) {
    match mr {
        1 => tile::<1>(t),
        2 => tile::<2>(t),
        3 => tile::<3>(t),
        _ => tile::<MR>(t),
    }
}

/// One k: `acc[r][·] += a[r][L] · b[k][0..16]`.
#[inline(always)]
unsafe fn step<const L: i32, const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    a: &[int16x8_t; R],
    bp: *const i8,
) {
    let b = vld1q_s8(bp);
    let lo = vmovl_s8(vget_low_s8(b));
    let hi = vmovl_high_s8(b);
    for (acc, &a) in acc.iter_mut().zip(a) {
        acc[0] = vmlal_laneq_s16::<L>(acc[0], vget_low_s16(lo), a);
        acc[1] = vmlal_high_laneq_s16::<L>(acc[1], lo, a);
        acc[2] = vmlal_laneq_s16::<L>(acc[2], vget_low_s16(hi), a);
        acc[3] = vmlal_high_laneq_s16::<L>(acc[3], hi, a);
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize>(t: TileArgs<i16>) {
    let TileArgs {
        kp,
        a,
        a_stride,
        b,
        c,
        pf,
        pf_iters,
    } = t;
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let mut bp = b;
    let pf_last = pf_iters - 1;
    for blk in 0..kp / 8 {
        // This block eats 128 bytes of B: fetch as much of the next panel.
        let pfb = pf.wrapping_add(128 * blk.min(pf_last));
        super::prefetch_l2(pfb);
        super::prefetch_l2(pfb.wrapping_add(64));
        let mut av = [vdupq_n_s16(0); R];
        for (r, av) in av.iter_mut().enumerate() {
            *av = vld1q_s16(a.add(r * a_stride + blk * 8));
        }
        step::<0, R>(&mut acc, &av, bp);
        step::<1, R>(&mut acc, &av, bp.add(16));
        step::<2, R>(&mut acc, &av, bp.add(32));
        step::<3, R>(&mut acc, &av, bp.add(48));
        step::<4, R>(&mut acc, &av, bp.add(64));
        step::<5, R>(&mut acc, &av, bp.add(80));
        step::<6, R>(&mut acc, &av, bp.add(96));
        step::<7, R>(&mut acc, &av, bp.add(112));
        bp = bp.add(128);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            vst1q_s32(c.add(r * NR + 4 * v), acc);
        }
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::arm64::neon::NeonKernel);
