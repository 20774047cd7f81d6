//! Intel AMX micro-kernel (AMX-INT8: Sapphire Rapids and later Xeons): `tdpbssd` adds the
//! product of a 16 × 64 i8 tile and a 64 × 16 i8 tile into a 16 × 16 i32 tile, 16 384
//! multiply-adds per instruction (about 1024 per cycle, against 64–128 for `vpdpbusd`).
//!
//! Signed × signed, so the activations are used as they are (`A_OFFSET` 0). With `KG` = 4
//! and `NR` = 16 the contract's B panel is already AMX's "VNNI" layout: one 64-byte panel
//! row per group of 4 k, so the B tile of one 64-deep k step is 1 KB of consecutive bytes.
//!
//! A tile is up to `MR` = 64 rows: four 16-row accumulator tiles (tmm0–tmm3) over one
//! 16-column panel. Per 64-deep k step the B tile (tmm5) is loaded once and each 16-row
//! block of A is loaded (full blocks alternately into tmm4 and tmm6, a last partial block
//! into tmm7) and multiplied into its accumulator. ViT-B/32's m = 50 is a single row tile,
//! so every GEMM of the model runs under one tile configuration: each thread loads it
//! (`ldtilecfg`) once and again only when the row count changes.
//!
//! Linux grants AMX's 8 KB of tile state to a process only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): [`os_enabled`] asks once; the
//! kernel is supported only when the CPU has AMX-INT8 and the kernel said yes.

use std::arch::asm;
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
use std::cell::Cell;
use std::sync::OnceLock;

use crate::frame::{I8Kernel, TileArgs};
use crate::Isa;

/// The AMX-INT8 kernel.
pub(crate) struct AmxKernel;

const MR: usize = 64;
const NR: usize = 16;
/// k per step: the 64 bytes of a tile row.
const KB: usize = 64;

impl I8Kernel for AmxKernel {
    const ISA: Isa = Isa::Amx;
    const MR: usize = MR;
    const NR: usize = NR;
    const KU: usize = KB;
    const KG: usize = 4;
    const A_OFFSET: i32 = 0;
    type A = i8;

    #[inline(always)]
    fn to_a(q: i8) -> i8 {
        q
    }

    unsafe fn kernel(mr: usize, t: TileArgs<i8>) {
        configure(mr);
        let full = mr / 16;
        let rest = mr % 16;
        // Only configured tiles may be touched: an accumulator beyond `mr` has 0 rows.
        macro_rules! zero {
            ($i:literal, $c:literal) => {
                if $i * 16 < mr {
                    asm!(concat!("tilezero ", $c), options(nostack, preserves_flags));
                }
            };
        }
        zero!(0, "tmm0");
        zero!(1, "tmm1");
        zero!(2, "tmm2");
        zero!(3, "tmm3");
        let a_stride = t.a_stride;
        let steps = t.kp / KB;
        // The weights stream from L3/DRAM once per call and the tiles consume them faster
        // than the hardware prefetcher fetches (profiled: most of the kernel's time sat on
        // the B tile load): pull this tile's share of the next panel into L2 as we go.
        let pf_per_step = t.pf_iters.div_ceil(steps.max(1));
        let pf_last = t.pf_iters - 1;
        for kb in 0..steps {
            for i in kb * pf_per_step..(kb + 1) * pf_per_step {
                let p = t.pf.wrapping_add(128 * i.min(pf_last));
                _mm_prefetch::<_MM_HINT_T1>(p);
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64));
            }
            let bk = t.b.add(kb * KB * NR);
            let ak = t.a.add(kb * KB);
            asm!(
                "tileloadd tmm5, [{b} + {sb}]",
                b = in(reg) bk,
                sb = in(reg) NR * 4,
                options(nostack, preserves_flags, readonly),
            );
            // One asm block per accumulator: tile registers are not operands, so the
            // accumulator is chosen by the instruction text. Full 16-row blocks of A
            // alternate between tmm4 and tmm6, so loading the next block does not wait for
            // the previous multiply to finish reading its tile; a partial block uses tmm7.
            macro_rules! block {
                ($i:literal, $c:literal, $a:literal) => {
                    if $i < full {
                        asm!(
                            concat!("tileloadd ", $a, ", [{a} + {sa}]"),
                            concat!("tdpbssd ", $c, ", ", $a, ", tmm5"),
                            a = in(reg) ak.add($i * 16 * a_stride),
                            sa = in(reg) a_stride,
                            options(nostack, preserves_flags, readonly),
                        );
                    } else if $i == full && rest > 0 {
                        asm!(
                            "tileloadd tmm7, [{a} + {sa}]",
                            concat!("tdpbssd ", $c, ", tmm7, tmm5"),
                            a = in(reg) ak.add($i * 16 * a_stride),
                            sa = in(reg) a_stride,
                            options(nostack, preserves_flags, readonly),
                        );
                    }
                };
            }
            block!(0, "tmm0", "tmm4");
            block!(1, "tmm1", "tmm6");
            block!(2, "tmm2", "tmm4");
            block!(3, "tmm3", "tmm6");
        }
        macro_rules! store {
            ($i:literal, $c:literal) => {
                if $i * 16 < mr {
                    asm!(
                        concat!("tilestored [{c} + {sc}], ", $c),
                        c = in(reg) t.c.add($i * 16 * NR),
                        sc = in(reg) NR * 4,
                        options(nostack, preserves_flags),
                    );
                }
            };
        }
        store!(0, "tmm0");
        store!(1, "tmm1");
        store!(2, "tmm2");
        store!(3, "tmm3");
    }

    crate::frame::kernel_target_features!("avx512f,avx512bw");
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// Row count of the tile shapes this thread has loaded (0: none yet).
    static CONFIGURED: Cell<usize> = const { Cell::new(0) };
}

/// Loads the tile shapes for a tile of `mr` rows, unless this thread already has them.
///
/// # Safety
/// The CPU supports AMX-INT8 and the OS enabled it ([`os_enabled`]); `1 ≤ mr ≤ 64`.
unsafe fn configure(mr: usize) {
    if CONFIGURED.with(Cell::get) == mr {
        return;
    }
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    let mut set = |tile: usize, rows: usize| {
        cfg.rows[tile] = rows as u8;
        cfg.colsb[tile] = if rows > 0 { 64 } else { 0 };
    };
    // tmm0–3: accumulators of rows 16i.., 16 i32 (64 bytes) each.
    for i in 0..4 {
        set(i, mr.saturating_sub(16 * i).min(16));
    }
    set(4, if mr >= 16 { 16 } else { 0 }); // full A blocks 0 and 2
    set(5, 16); // B: 16 groups of 4 k × 16 columns
    set(6, if mr >= 32 { 16 } else { 0 }); // full A blocks 1 and 3
    set(7, mr % 16); // the last, partial A block
    asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, preserves_flags, readonly));
    CONFIGURED.with(|c| c.set(mr));
}

/// Whether the CPU has AMX-INT8 and Linux lets this process use it (asked once).
pub(crate) fn os_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            return false;
        }
        // CPUID.(EAX=7, ECX=0):EDX bit 24 = AMX-TILE, bit 25 = AMX-INT8.
        // Leaf 7 exists on every CPU with AVX-512 (checked above).
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        edx & (1 << 24) != 0 && edx & (1 << 25) != 0 && request_tile_permission()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a plain system call; it only widens this process's permitted xstate.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

#[cfg(test)]
crate::frame::suite::i8_kernel_tests!(crate::x86_64::amx::AmxKernel);
