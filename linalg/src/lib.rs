//! int8 GEMM kernels for edgeclip's native ViT forward pass.
//!
//! One linear layer is `y = epilogue(quantise_rows(x) · W)`: the weights `W` are int8,
//! symmetric per output column, packed once at load time ([`PackedI8`]); the activations are
//! quantised on the fly, symmetric per row, exactly like the model's ONNX graph
//! ([`matmul_i8`]). The accumulation is exact i32 on every instruction set, so all
//! implementations give bit-identical results.
//!
//! The crate follows tract-linalg's layout:
//! - `frame/`: the kernel contract (`I8Kernel`), the one generic driver (quantisation, tile
//!   loop, edge tiles, epilogue, threading) and the one test suite every kernel runs;
//! - `generic/`: the portable scalar twin, the reference the others are tested against;
//! - `x86_64/`: AMX-INT8 (`tdpbssd` tiles), AVX-512 VNNI (`vpdpbusd`) and AVX2 (`vpmaddwd`)
//!   micro-kernels;
//! - `arm64/`: NEON (`smull`/`sadalp`, Cortex-A72 / Raspberry Pi 4) and NEON dotprod (`sdot`,
//!   Cortex-A76 / Raspberry Pi 5) micro-kernels.
#![warn(missing_docs)]

mod frame;
mod generic;

#[cfg(target_arch = "aarch64")]
mod arm64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::fmt;

pub use frame::{matmul_i8, Epilogue, I8Scratch, PackedI8};

/// The element-wise maths of the epilogues, for callers that need the same numbers outside
/// a GEMM (the native ViT's fp32 layers and softmax). Scalar functions written to
/// vectorise when inlined into a loop compiled with wider target features.
pub mod math {
    pub use crate::frame::epilogue::{exp, quick_gelu};
}

/// Instruction set of a kernel implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD: the reference twin, runs everywhere.
    Scalar,
    /// x86-64 AVX2: int8 widened to i16, `vpmaddwd` (exact; not `vpmaddubsw`, which saturates).
    Avx2,
    /// x86-64 AVX-512 with VNNI: `vpdpbusd` on 512-bit registers.
    Avx512Vnni,
    /// x86-64 Advanced Matrix Extensions (AMX-INT8, Sapphire Rapids and later Xeons):
    /// `tdpbssd` on 16 × 64-byte tiles; Linux must grant the tile state, asked once.
    Amx,
    /// aarch64 Advanced SIMD without the dot product extension (Cortex-A72, Raspberry Pi 4).
    Neon,
    /// aarch64 Advanced SIMD with `sdot` (Cortex-A76, Raspberry Pi 5).
    NeonDotprod,
}

impl Isa {
    /// Every variant, in order of preference (worst first); `supported` filters it.
    const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Amx,
        Isa::Neon,
        Isa::NeonDotprod,
    ];

    /// Best implementation this CPU runs (runtime feature detection).
    pub fn detect() -> Isa {
        // `supported` lists from worst to best, Scalar first, so the last one wins.
        Isa::supported().last().copied().unwrap_or(Isa::Scalar)
    }

    /// Every implementation this CPU can run, Scalar always included (tests and benches
    /// iterate over it), worst first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// Whether this CPU can run `self` (and this build contains it).
    pub(crate) fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => crate::x86_64::amx::os_enabled(),
            // NEON is part of the aarch64 baseline, but ask anyway: it costs nothing and a
            // soft-float build would say no.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Short stable name: "scalar", "avx2", "avx512vnni", "amx", "neon", "neon-dotprod".
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }

    /// Parses a name (for an `--isa` override / env var); `None` if unknown.
    /// Case-insensitive, and `_` is accepted for `-` (shells and env vars mangle both).
    pub fn from_name(s: &str) -> Option<Isa> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for bad shapes / unsupported ISA.
#[derive(Debug, Clone, PartialEq)]
pub enum LinalgError {
    /// An argument's length or a dimension does not fit the others; the text says which.
    Shape(String),
    /// The instruction set is not available on this CPU (or not compiled for this target).
    Unsupported(Isa),
}

impl fmt::Display for LinalgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinalgError::Shape(s) => write!(f, "int8 GEMM shape error: {s}"),
            LinalgError::Unsupported(isa) => {
                write!(
                    f,
                    "instruction set {isa} is not supported by this CPU or build"
                )
            }
        }
    }
}

impl std::error::Error for LinalgError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("NEON_DOTPROD"), Some(Isa::NeonDotprod));
        assert_eq!(Isa::from_name("sse2"), None);
    }

    #[test]
    fn detection_is_consistent() {
        let s = Isa::supported();
        // The qemu script greps this line to report which ISAs actually ran.
        println!(
            "supported ISAs on this CPU: {}",
            s.iter().map(|i| i.name()).collect::<Vec<_>>().join(" ")
        );
        assert_eq!(s[0], Isa::Scalar);
        assert!(s.contains(&Isa::detect()));
        assert_eq!(*s.last().unwrap(), Isa::detect());
    }
}
