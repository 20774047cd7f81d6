//! aarch64 micro-kernels: plain NEON for the Raspberry Pi 4 (Cortex-A72, no dot product
//! instructions) and NEON with `sdot` for the Raspberry Pi 5 (Cortex-A76).

pub(crate) mod neon;
pub(crate) mod neon_dotprod;

/// Prefetches the cache line at `p` into L2 (`prfm pldl2keep`). `core::arch`'s
/// `_prefetch` is unstable, hence the one-instruction asm; a prefetch never faults, so
/// `p` may point anywhere.
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const i8) {
    // SAFETY: prfm is a hint: no memory is accessed architecturally, no fault is raised.
    unsafe {
        core::arch::asm!(
            "prfm pldl2keep, [{p}]",
            p = in(reg) p,
            options(nostack, readonly, preserves_flags)
        )
    }
}
