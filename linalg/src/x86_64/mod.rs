//! x86-64 micro-kernels, each compiled with its own `#[target_feature]`s and chosen at run
//! time, so one binary runs on any x86-64 and uses the best the CPU has.

pub(crate) mod amx;
pub(crate) mod avx2;
pub(crate) mod avx512vnni;
