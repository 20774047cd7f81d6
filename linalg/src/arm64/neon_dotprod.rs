//! NEON dot product micro-kernel (Cortex-A76 / Raspberry Pi 5): `sdot` by lane, 4 i8 × i8
//! products summed into each i32 lane.
//!
//! `vdotq_laneq_s32` is still unstable in Rust (feature `stdarch_neon_dotprod`), so the
//! instruction is written with `asm!` inside functions compiled with the `dotprod` target
//! feature. Exact: both operands are signed, products go straight into i32.
//!
//! Layout: A stays i8, 16 k of a row per register (4 groups of 4, used by lane); B panels
//! hold 16 columns × 4 k (the panel's `KG` = 4, the same layout as `vpdpbusd`), one
//! register = 4 columns × 4 k. Register blocking: 4 rows × 16 columns = 16 accumulators + 4
//! A + 4 B; per 4 k: 4 loads of B, 16 `sdot`.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The NEON dotprod kernel (needs the `dotprod` extension).
pub(crate) struct NeonDotprodKernel;

const MR: usize = 4;
const NR: usize = 16;

impl I8Kernel for NeonDotprodKernel {
    const ISA: Isa = Isa::NeonDotprod;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = 16;
    const KG: usize = 4;
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

    crate::frame::kernel_target_features!("neon,dotprod");
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn kernel(mr: usize, t: TileArgs<i8>) {
    match mr {
        1 => tile::<1>(t),
        2 => tile::<2>(t),
        3 => tile::<3>(t),
        _ => tile::<MR>(t),
    }
}

/// `acc.s[i] += Σ_t b.b[4i + t] · a.b[4L + t]`: `sdot acc.4s, b.16b, a.4b[L]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot<const L: i32>(mut acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{l}]",
        acc = inout(vreg) acc,
        b = in(vreg) b,
        a = in(vreg) a,
        l = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// One group of 4 k (lane `L` of the A registers): `acc[r][v] += a[r][4L..4L+4] · b`.
#[inline(always)]
unsafe fn group<const L: i32, const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    a: &[int8x16_t; R],
    bp: *const i8,
) {
    let b = [
        vld1q_s8(bp),
        vld1q_s8(bp.add(16)),
        vld1q_s8(bp.add(32)),
        vld1q_s8(bp.add(48)),
    ];
    for (acc, &a) in acc.iter_mut().zip(a) {
        for (acc, &b) in acc.iter_mut().zip(&b) {
            *acc = sdot::<L>(*acc, b, a);
        }
    }
}

#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize>(t: TileArgs<i8>) {
    let TileArgs {
        kp,
        a,
        a_stride,
        b,
        c,
        ..
    } = t;
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let mut bp = b;
    let blocks = kp / 16;
    // Four prefetch slots per 16 k (this kernel eats 256 bytes of B per 16 k).
    let mut pfc = t.prefetch_cursor(4 * blocks);
    for blk in 0..blocks {
        for _ in 0..4 {
            super::prefetch_l2(pfc.next());
        }
        let mut av = [vdupq_n_s8(0); R];
        for (r, av) in av.iter_mut().enumerate() {
            *av = vld1q_s8(a.add(r * a_stride + blk * 16));
        }
        group::<0, R>(&mut acc, &av, bp);
        group::<1, R>(&mut acc, &av, bp.add(64));
        group::<2, R>(&mut acc, &av, bp.add(128));
        group::<3, R>(&mut acc, &av, bp.add(192));
        bp = bp.add(256);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            vst1q_s32(c.add(r * NR + 4 * v), acc);
        }
    }
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::arm64::neon_dotprod::NeonDotprodKernel);
