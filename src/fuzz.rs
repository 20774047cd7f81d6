//! Fuzz targets: every parser that reads bytes from outside, as a `fn(&[u8])` that must
//! neither panic nor run away with memory, whatever the bytes.
//!
//! Two drivers run the same targets (so a crash found by one is a regression test in the
//! other):
//! * `fuzz/` — libFuzzer through `libfuzzer-sys`, coverage-guided, built on the stable
//!   toolchain with LLVM's sanitizer-coverage flags (`scripts/fuzz`, by hand, millions of
//!   inputs per target);
//! * `tests/fuzz.rs` — every committed seed and regression input, then a fixed number of
//!   inputs from [`Mutator`], under a counting allocator that bounds memory per input: the
//!   short pass CI runs.
//!
//! Besides "no panic", targets check properties that must hold for any input: a split
//! frame is one whole JPEG within the size cap; a cache repaired once opens intact the
//! second time with the same entries; a spool file name round-trips.
//!
//! Not part of the public API (hidden from the docs); it is `pub` only for the drivers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bundle::Bundle;
use crate::cache::{CacheKey, CacheState, EmbeddingCache};
use crate::config::{parse_toml, resolve_parsed, ConfigFile, Overrides};
use crate::labels::LabelSet;
use crate::preprocess::{Interpolation, PreprocessSpec, Preprocessor, ResizeMode};
use crate::source::{decode_encoded, JpegSplitter};

/// One fuzz target.
pub struct Target {
    /// Name used by `scripts/fuzz` and the corpus directories (`fuzz/seeds/<name>/`).
    pub name: &'static str,
    /// What it parses.
    pub what: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// Longest input worth trying (libFuzzer's `-max_len`).
    pub max_len: usize,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "labels",
        what: "label file (labels, synonyms, @templates, comments)",
        run: labels,
        max_len: 8 << 10,
    },
    Target {
        name: "config",
        what: "run config file (TOML) resolved into a run configuration",
        run: config,
        max_len: 8 << 10,
    },
    Target {
        name: "board",
        what: "board profile (TOML)",
        run: board,
        max_len: 4 << 10,
    },
    Target {
        name: "manifest",
        what: "bundle manifest.toml, opened as a bundle",
        run: manifest,
        max_len: 8 << 10,
    },
    Target {
        name: "image",
        what: "image decode (JPEG, PNG, GIF, BMP, TIFF, WebP, PNM) + resize/crop/normalise",
        run: image,
        max_len: 64 << 10,
    },
    Target {
        name: "mjpeg",
        what: "MJPEG stream splitter (stdin, files), each frame decoded with its DHT fix-up",
        run: mjpeg,
        max_len: 64 << 10,
    },
    Target {
        name: "multipart",
        what: "HTTP multipart/x-mixed-replace reader (first line: Content-Type)",
        run: multipart,
        max_len: 64 << 10,
    },
    Target {
        name: "yuyv",
        what: "YUYV 4:2:2 to RGB (first 6 bytes: width, height, stride)",
        run: yuyv,
        max_len: 64 << 10,
    },
    Target {
        name: "cache",
        what: "embedding cache file (raw, or records with valid CRCs)",
        run: cache,
        max_len: 16 << 10,
    },
    Target {
        name: "spool",
        what: "webhook spool directory scan (one file name per line)",
        run: spool,
        max_len: 4 << 10,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Environment variable naming the scratch directory of the targets that go through the
/// file system; by default `/dev/shm/edgeclip-fuzz-<pid>` (tmpfs: the fuzzer writes it
/// thousands of times a second; the pid keeps parallel fuzzers apart; `scripts/fuzz`
/// removes it afterwards).
pub const SCRATCH_ENV: &str = "EDGECLIP_FUZZ_SCRATCH";

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os(SCRATCH_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                let base = if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                base.join(format!("edgeclip-fuzz-{}", std::process::id()))
            });
        // A target without its scratch directory cannot run at all: failing loudly is right.
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
        dir
    })
}

fn labels(data: &[u8]) {
    if let Ok(set) = LabelSet::parse(data, "fuzz") {
        assert!(set.labels.len() <= crate::limits::MAX_LABELS);
        for label in &set.labels {
            assert!(!label.name.trim().is_empty(), "a blank label name");
            assert!(
                !label.prompts.is_empty(),
                "label {:?} has no prompt",
                label.name
            );
        }
        let _ = set.to_string();
    }
}

fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_toml::<ConfigFile>(text, "fuzz.toml") {
        let _ = resolve_parsed(
            parsed,
            Some(&scratch().join("fuzz.toml")),
            &Overrides::default(),
        );
    }
}

fn board(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::board::parse_profile(text, "fuzz.toml");
    }
}

/// The bundle directory [`manifest`] writes into, with empty files under the names the
/// seed manifests use, so a manifest that parses gets past the file checks to validation.
fn manifest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("bundle");
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz bundle directory");
        for f in [
            "tokenizer.json",
            "bpe_simple_vocab_16e6.txt.gz",
            "visual.int8.onnx",
            "visual.fp32.onnx",
            "textual.int8.onnx",
            "textual.fp32.onnx",
            "visual.onnx",
            "textual.onnx",
        ] {
            std::fs::write(dir.join(f), b"").expect("cannot write a fuzz bundle file");
        }
        dir
    })
}

fn manifest(data: &[u8]) {
    let dir = manifest_dir();
    if std::fs::write(dir.join("manifest.toml"), data).is_ok() {
        if let Ok(bundle) = Bundle::open_dir(dir) {
            assert!(bundle.spec.preprocess.validate().is_ok());
        }
    }
}

/// The preprocessing spec an input asks for, from its last byte (so the leading magic
/// bytes stay free for the decoder): small sizes keep the fuzzer fast, every resize mode
/// and both kernels are reached.
fn spec_from(byte: u8) -> PreprocessSpec {
    let size = 8 + u32::from(byte % 32);
    PreprocessSpec {
        image_size: size,
        resize: match (byte & 0x40 == 0, byte & 0x10 == 0) {
            (true, _) => ResizeMode::ShortestSide,
            (false, true) => ResizeMode::Squash,
            (false, false) => ResizeMode::CenterSquare,
        },
        resize_to: size + u32::from(byte >> 7) * 3,
        interpolation: if byte & 0x20 == 0 {
            Interpolation::Bicubic
        } else {
            Interpolation::Bilinear
        },
        ..PreprocessSpec::openai_clip(size)
    }
}

fn image(data: &[u8]) {
    let Ok(img) = crate::preprocess::decode(data) else {
        return;
    };
    let spec = spec_from(data.last().copied().unwrap_or(0));
    let mut out = vec![0f32; spec.tensor_len()];
    let mut pre = Preprocessor::new(spec);
    if pre.run_into(&img, &mut out).is_ok() {
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

/// Hands out its bytes in chunks of varying size, as a pipe or socket does, so frame and
/// boundary searches meet every split point.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
    n: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.n += 1;
        let want = 1 + (self.n * self.step) % 97;
        let k = want.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

/// Frame cap for the stream targets: small, so the "frame too large" path is reached.
const FUZZ_MAX_FRAME: usize = 16 << 10;

fn check_frame(frame: &[u8]) {
    assert!(frame.len() <= FUZZ_MAX_FRAME, "frame over the cap");
    assert!(frame.starts_with(&[0xFF, 0xD8]), "frame without SOI");
    if let Ok(img) = decode_encoded(frame) {
        assert!(img.width() > 0 && img.height() > 0);
    }
}

fn mjpeg(data: &[u8]) {
    let step = data.first().map_or(1, |&b| usize::from(b) + 1);
    let reader = Chunked { data, step, n: 0 };
    let mut split = JpegSplitter::with_max_frame(reader, FUZZ_MAX_FRAME);
    // Every call consumes input or ends the stream, so this many calls always suffice;
    // running out means the splitter stopped making progress.
    for _ in 0..data.len() + 2 {
        match split.next_jpeg() {
            Ok(Some(frame)) => {
                assert!(frame.ends_with(&[0xFF, 0xD9]), "frame without EOI");
                check_frame(&frame);
            }
            Ok(None) => return,
            Err(_) => {}
        }
    }
    panic!("the MJPEG splitter made no progress");
}

fn multipart(data: &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Some(boundary) = std::str::from_utf8(head)
        .ok()
        .and_then(crate::source::http::multipart_boundary)
    else {
        return;
    };
    let step = boundary.len();
    let reader = Chunked {
        data: body,
        step,
        n: 0,
    };
    let mut parts = crate::source::http::MultipartReader::new(reader, &boundary, FUZZ_MAX_FRAME);
    for _ in 0..body.len() + 2 {
        match parts.next_part() {
            Ok(Some(frame)) => check_frame(&frame),
            Ok(None) => return,
            Err(_) => {}
        }
    }
    panic!("the multipart reader made no progress");
}

fn yuyv(data: &[u8]) {
    let Some((dims, frame)) = data.split_first_chunk::<6>() else {
        return;
    };
    let [w0, w1, h0, h1, s0, s1] = *dims;
    let (w, h, stride) = (
        u32::from(u16::from_le_bytes([w0, w1])),
        u32::from(u16::from_le_bytes([h0, h1])),
        u32::from(u16::from_le_bytes([s0, s1])),
    );
    if let Ok(img) = crate::source::yuyv_to_rgb(w, h, stride, frame) {
        assert_eq!((img.width(), img.height()), (w, h));
    }
}

/// Embedding length of the fuzzed cache: short, so records are cheap to form.
const CACHE_DIM: usize = 4;

/// Mode 0 appends the input to a valid header as is (the CRC rejects nearly everything:
/// the tail-cutting path); mode 1 reads the input as (prompt length, prompt, values)
/// records and gives them valid CRCs, so the decoder behind the CRC is reached too; mode 2
/// is the raw input as the whole file (foreign files).
fn cache(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = CacheKey {
        model_sha256: "fuzz".into(),
        tokenizer: "fuzz".into(),
        dim: CACHE_DIM,
        compute: None,
    };
    let mut file = crate::cache::header(&key);
    match mode % 3 {
        0 => file.extend_from_slice(rest),
        1 => {
            let mut r = rest;
            while let Some((&len, tail)) = r.split_first() {
                let len = usize::from(len % 64).min(tail.len());
                let (prompt, tail) = tail.split_at(len);
                let prompt = String::from_utf8_lossy(prompt);
                let mut values = [0f32; CACHE_DIM];
                for (v, c) in values.iter_mut().zip(tail.chunks(4)) {
                    let mut b = [0u8; 4];
                    b[..c.len()].copy_from_slice(c);
                    *v = f32::from_le_bytes(b);
                }
                file.extend_from_slice(&crate::cache::record(&prompt, &values));
                r = &tail[tail.len().min(4 * CACHE_DIM)..];
            }
        }
        _ => file = rest.to_vec(),
    }
    let dir = scratch().join("cache");
    let path = dir.join(key.file_name());
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(&path, &file).is_err() {
        return;
    }
    let first = EmbeddingCache::open(&dir, key.clone());
    // Opening repairs (cuts a damaged tail); the repaired file must then read back whole.
    let again = EmbeddingCache::open(&dir, key);
    if first.state() != CacheState::Foreign {
        assert!(
            matches!(again.state(), CacheState::Intact | CacheState::New),
            "a repaired cache did not read back intact: {:?}",
            again.state()
        );
        assert_eq!(first.len(), again.len());
    }
}

/// Spool file names: each input line becomes a file (any bytes a Linux name may hold) in
/// an empty directory, which is then scanned as at start-up: exactly the names that parse
/// must come back, in sequence order, and each must round-trip.
fn spool(data: &[u8]) {
    use std::os::unix::ffi::OsStrExt;

    use crate::sink::webhook::{file_name, parse_file_name, scan};
    let dir = scratch().join("spool");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut expected = Vec::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        let name = std::ffi::OsStr::from_bytes(line);
        if line.is_empty() || line.contains(&b'/') || line.contains(&0) || line.len() > 255 {
            continue;
        }
        if std::fs::write(dir.join(name), b"{}").is_err() {
            continue;
        }
        if let Some(seq) = std::str::from_utf8(line).ok().and_then(parse_file_name) {
            assert_eq!(
                file_name(seq).as_bytes(),
                line,
                "spool name does not round-trip"
            );
            expected.push(seq);
        }
    }
    expected.sort_unstable();
    expected.dedup();
    let found = scan(&dir).expect("scanning the fuzz spool directory");
    assert_eq!(
        found, expected,
        "spool scan disagrees with the names written"
    );
}

/// A small, deterministic mutator for the short pass in `cargo test` (libFuzzer brings its
/// own): bit flips, interesting bytes, insertions, deletions, duplicated runs, truncation
/// and splices with another input.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// `input` with 1–8 random edits; `other` is spliced in by one of them.
    pub fn mutate(&mut self, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
        const INTERESTING: [u8; 10] = [0x00, 0xFF, 0x7F, 0x80, 0xD8, 0xD9, 0xDA, b'\n', b'=', b'"'];
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = self.below(v.len() + 1);
            match self.below(8) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = INTERESTING[self.below(INTERESTING.len())];
                }
                2 => {
                    let b = self.next() as u8;
                    v.insert(at, b);
                }
                3 if at < v.len() => {
                    let n = 1 + self.below((v.len() - at).min(64));
                    v.drain(at..at + n);
                }
                4 if at < v.len() => {
                    let n = 1 + self.below((v.len() - at).min(64));
                    let run: Vec<u8> = v[at..at + n].to_vec();
                    let to = self.below(v.len() + 1);
                    v.splice(to..to, run);
                }
                5 => v.truncate(at),
                6 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let n = 1 + self.below((other.len() - from).min(256));
                    v.splice(at..at, other[from..from + n].iter().copied());
                }
                _ => {
                    // A 16- or 32-bit field set to an edge value (sizes, lengths, counts).
                    let edge: u32 = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0xFFFF_FFFF][self.below(6)];
                    let bytes = edge.to_le_bytes();
                    let n = if self.below(2) == 0 { 2 } else { 4 };
                    for (k, b) in bytes[..n].iter().enumerate() {
                        if let Some(slot) = v.get_mut(at + k) {
                            *slot = *b;
                        }
                    }
                }
            }
        }
        v.truncate(max_len);
        v
    }
}
