//! The fuzz targets' short pass (CI): every committed seed (`fuzz/seeds/<target>/`) and
//! regression input (`fuzz/regressions/<target>/`, one file per bug a fuzzer found), then
//! `EDGECLIP_FUZZ_ITERS` (default 2000) mutants per target, each input under a memory
//! bound. The long, coverage-guided runs are `scripts/fuzz` (libFuzzer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use edgeclip::fuzz::{Mutator, Target, TARGETS};

/// Counts live heap bytes and their high-water mark, so each input's peak can be checked.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The targets run one at a time: the allocation counter is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap one input may take beyond what was live before it. The image decoders are allowed
/// what `preprocess::decode` grants a 100-megapixel photo (a hostile header may claim
/// one); every other parser must stay far below.
fn memory_bound(target: &Target) -> usize {
    match target.name {
        "image" | "mjpeg" | "multipart" | "yuyv" => 1 << 30,
        _ => 64 << 20,
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs one input, failing with the input's origin on a panic or on too much memory.
fn run_one(target: &Target, origin: &str, input: &[u8]) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    if outcome.is_err() {
        let saved = std::env::temp_dir().join(format!("edgeclip-fuzz-{}-crash", target.name));
        std::fs::write(&saved, input).unwrap();
        panic!(
            "target {}: {origin} panicked (input saved to {}; add it to fuzz/regressions/{}/)",
            target.name,
            saved.display(),
            target.name
        );
    }
    assert!(
        used <= memory_bound(target),
        "target {}: {origin} took {used} bytes of heap (bound {})",
        target.name,
        memory_bound(target)
    );
}

fn short_pass(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Scratch files (a cache file, a manifest) go under target/, reused run after run.
    std::env::set_var(
        edgeclip::fuzz::SCRATCH_ENV,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-scratch"),
    );
    let target = edgeclip::fuzz::target(name).unwrap();
    let seeds = files_in(&fuzz_dir().join("seeds").join(name));
    assert!(!seeds.is_empty(), "no seeds for target {name}");
    let regressions = files_in(&fuzz_dir().join("regressions").join(name));
    for (origin, input) in seeds.iter().chain(&regressions) {
        run_one(target, origin, input);
    }
    let iters: usize = std::env::var("EDGECLIP_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    // The seed is fixed so a failure reproduces; the target's name varies it per target.
    let mut mutator = Mutator::new(name.bytes().fold(0u64, |h, b| h * 31 + u64::from(b)));
    let mut current = seeds[0].1.clone();
    for i in 0..iters {
        let other = &seeds[i % seeds.len()].1;
        // Half the time mutate a seed afresh, half the time keep stacking edits.
        if i % 2 == 0 {
            current = seeds[(i / 2) % seeds.len()].1.clone();
        }
        current = mutator.mutate(&current, other, target.max_len);
        run_one(target, &format!("mutant {i}"), &current);
    }
    println!(
        "{name}: {} seeds, {} regressions, {iters} mutants, no panic, memory bounded",
        seeds.len(),
        regressions.len()
    );
}

#[test]
fn every_target_has_a_test_here() {
    let here = include_str!("fuzz.rs");
    for t in TARGETS {
        assert!(
            here.contains(&format!("short_pass(\"{}\")", t.name)),
            "target {} has no short-pass test",
            t.name
        );
    }
}

#[test]
fn labels() {
    short_pass("labels");
}

#[test]
fn config() {
    short_pass("config");
}

#[test]
fn board() {
    short_pass("board");
}

#[test]
fn manifest() {
    short_pass("manifest");
}

#[test]
fn image() {
    short_pass("image");
}

#[test]
fn mjpeg() {
    short_pass("mjpeg");
}

#[test]
fn multipart() {
    short_pass("multipart");
}

#[test]
fn yuyv() {
    short_pass("yuyv");
}

#[test]
fn cache() {
    short_pass("cache");
}

#[test]
fn spool() {
    short_pass("spool");
}
