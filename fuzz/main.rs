//! libFuzzer entry point for every target in `edgeclip::fuzz`: the target is named by
//! `EDGECLIP_FUZZ_TARGET` (one binary, one build, for all targets). Run it through
//! `scripts/fuzz`, which builds it with coverage instrumentation and sets the corpus,
//! `-max_len` and memory limit per target.
#![no_main]

use std::sync::OnceLock;

use edgeclip::fuzz::{Target, TARGETS};
use libfuzzer_sys::fuzz_target;

fn chosen() -> &'static Target {
    static T: OnceLock<&'static Target> = OnceLock::new();
    T.get_or_init(|| {
        // Wraps libFuzzer's abort-on-panic hook: a codec panic that decode() catches
        // and reports as an error is not a crash; every other panic still aborts.
        edgeclip::preprocess::quiet_contained_panics();
        let name = std::env::var("EDGECLIP_FUZZ_TARGET").unwrap_or_default();
        edgeclip::fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            eprintln!(
                "set EDGECLIP_FUZZ_TARGET to one of: {} (scripts/fuzz does)",
                names.join(", ")
            );
            std::process::exit(2)
        })
    })
}

fuzz_target!(|data: &[u8]| (chosen().run)(data));
