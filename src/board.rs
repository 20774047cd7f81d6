//! Board profiles (`boards/NAME.toml`): per-device defaults, and detection of the board
//! edgeclip runs on (`--board auto`).
//!
//! A profile sets threads, precision, backend, the inference rate and the capture mode,
//! states the memory it needs, and says how to recognise its board in a `[detect]` table,
//! so a technician adds a board by dropping a file next to the others — no code change.
//! Detection reads what the kernel and vendor images publish: the device-tree model
//! (`/proc/device-tree/model`, e.g. `Raspberry Pi 5 Model B Rev 1.0`), the CPU cores in
//! `/proc/cpuinfo`, the memory in `/proc/meminfo` and NVIDIA's `/etc/nv_tegra_release`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bundle::{edgeclip_home, Precision};
use crate::encoder::{Backend, OrtOptions};
use crate::limits::{read_text_capped, MAX_CONFIG_BYTES};
use crate::source::SourceOptions;

/// Why a board profile is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// Reading a profile.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key (the message names line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// `--board NAME` names no profile.
    #[error("board '{name}': no such profile; looked in {searched}; available: {available}")]
    Unknown {
        /// The name.
        name: String,
        /// Where it looked.
        searched: String,
        /// Profiles found.
        available: String,
    },
}

/// `[detect]`: how a profile recognises its board. Every rule given must hold; a profile
/// without rules is never picked by `--board auto`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectRule {
    /// CPU architectures (`aarch64`, `arm`, `x86_64`), as Rust names them; any of them.
    #[serde(default)]
    pub arch: Vec<String>,
    /// Substrings of the device-tree model; any of them. The longest match wins between
    /// profiles, so `Raspberry Pi Zero 2` beats `Raspberry Pi`.
    #[serde(default)]
    pub model: Vec<String>,
    /// Whether `/etc/nv_tegra_release` must exist (NVIDIA Jetson images).
    pub tegra: Option<bool>,
}

/// A board profile: defaults for one kind of device. Precedence, lowest first: built-in
/// defaults, the board profile, the config file, the command line.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// What the board is.
    pub description: Option<String>,
    /// Memory the profile's settings need with the default bundle, in MiB (peak RSS of
    /// `edgeclip run` plus headroom); `edgeclip boards` warns when the board has less.
    pub memory_mb: Option<u64>,
    /// Threads for matrix products.
    pub threads: Option<usize>,
    /// Tower precision.
    pub precision: Option<Precision>,
    /// Backend of the towers.
    pub backend: Option<Backend>,
    /// Inference rate cap per camera.
    pub fps: Option<f32>,
    /// Capture mode defaults for every camera.
    #[serde(default)]
    pub capture: SourceOptions,
    /// onnxruntime settings for `backend = "ort"`; `dylib` may be a glob (the highest
    /// match is used), since the library's file name carries its version.
    pub ort: Option<OrtOptions>,
    /// How `--board auto` recognises this board.
    #[serde(default)]
    pub detect: DetectRule,
}

impl BoardProfile {
    /// The profile's onnxruntime settings with a `dylib` glob resolved to a file (the
    /// highest-sorting match: versioned names sort by version for equal digit counts).
    /// A glob that matches nothing is kept as written, so the load error names it.
    pub fn ort_options(&self) -> Option<OrtOptions> {
        let mut ort = self.ort.clone()?;
        if let Some(pattern) = ort.dylib.as_ref().and_then(|p| p.to_str()) {
            if pattern.contains(['*', '?', '[']) {
                if let Some(found) = glob::glob(pattern)
                    .ok()
                    .and_then(|paths| paths.filter_map(Result::ok).max())
                {
                    ort.dylib = Some(found);
                }
            }
        }
        Some(ort)
    }
}

/// A profile found on disk.
#[derive(Debug, Clone)]
pub struct NamedProfile {
    /// File stem: what `--board` takes.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub profile: BoardProfile,
}

/// Directories searched for `boards/NAME.toml`, first match wins: beside the config file,
/// `$EDGECLIP_HOME/boards`, `<prefix>/share/edgeclip/boards` (installed binaries), the
/// source checkout's `boards/`.
pub fn board_dirs(config_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = config_dir {
        dirs.push(d.join("boards"));
    }
    dirs.push(edgeclip_home().join("boards"));
    if let Some(prefix) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
    {
        dirs.push(prefix.join("share/edgeclip/boards"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"));
    dirs
}

fn read_profile(path: &Path) -> Result<BoardProfile, BoardError> {
    let text = read_text_capped(path, MAX_CONFIG_BYTES).map_err(|source| BoardError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_profile(&text, &path.display().to_string())
}

/// Parses a board profile; `origin` names it in errors.
pub(crate) fn parse_profile(text: &str, origin: &str) -> Result<BoardProfile, BoardError> {
    toml::from_str(text).map_err(|e| BoardError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })
}

/// Every profile in `dirs`, by name (a name in an earlier directory hides later ones).
/// A profile that does not parse is an error: a typo must not silently drop a board.
pub fn list_profiles(dirs: &[PathBuf]) -> Result<Vec<NamedProfile>, BoardError> {
    let mut found: Vec<NamedProfile> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            if found.iter().any(|p| p.name == name) {
                continue;
            }
            let profile = read_profile(&path)?;
            found.push(NamedProfile {
                name,
                path,
                profile,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Loads a board profile by name (or by path to a `.toml`). `auto` is resolved by the
/// caller with [`detect`] first.
pub fn load_board(name: &str, config_dir: Option<&Path>) -> Result<BoardProfile, BoardError> {
    if name.ends_with(".toml") {
        return read_profile(Path::new(name));
    }
    let dirs = board_dirs(config_dir);
    for d in &dirs {
        let p = d.join(format!("{name}.toml"));
        if p.is_file() {
            return read_profile(&p);
        }
    }
    let available: Vec<String> = list_profiles(&dirs)
        .map(|v| v.into_iter().map(|p| p.name).collect())
        .unwrap_or_default();
    Err(BoardError::Unknown {
        name: name.to_string(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// What this machine says about itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Detected {
    /// CPU architecture of this build (`aarch64`, `arm`, `x86_64`).
    pub arch: String,
    /// Device-tree model, e.g. `Raspberry Pi 4 Model B Rev 1.4`.
    pub model: Option<String>,
    /// CPU core type(s), e.g. `Cortex-A72`, or the x86 model name.
    pub cpu: Option<String>,
    /// Online CPU cores.
    pub cores: usize,
    /// Total memory in MiB.
    pub memory_mb: Option<u64>,
    /// First line of `/etc/nv_tegra_release` (Jetson: `# R36 (release), REVISION: 4.0, …`).
    pub tegra_release: Option<String>,
}

impl Detected {
    /// Reads this machine.
    pub fn probe() -> Detected {
        Detected::probe_root(Path::new("/"), std::env::consts::ARCH)
    }

    /// Reads a machine whose `/proc` and `/etc` are under `root` (tests use fake trees).
    pub fn probe_root(root: &Path, arch: &str) -> Detected {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        let model = read("proc/device-tree/model")
            .map(|m| {
                m.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string()
            })
            .filter(|m| !m.is_empty());
        let cpuinfo = read("proc/cpuinfo").unwrap_or_default();
        let cores_in_cpuinfo = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cores = if root == Path::new("/") {
            crate::encoder::default_threads()
        } else {
            cores_in_cpuinfo.max(1)
        };
        Detected {
            arch: arch.to_string(),
            model,
            cpu: cpu_name(&cpuinfo),
            cores,
            memory_mb: read("proc/meminfo").and_then(|m| mem_total_mb(&m)),
            tegra_release: read("etc/nv_tegra_release")
                .map(|t| t.lines().next().unwrap_or_default().trim().to_string()),
        }
    }

    /// One line for logs: `Raspberry Pi 5 Model B Rev 1.0 (aarch64, 4 × Cortex-A76, 8063 MiB)`.
    pub fn summary(&self) -> String {
        let mut parts = vec![self.arch.clone()];
        parts.push(match &self.cpu {
            Some(cpu) => format!("{} × {cpu}", self.cores),
            None => format!("{} cores", self.cores),
        });
        if let Some(mb) = self.memory_mb {
            parts.push(format!("{mb} MiB"));
        }
        if let Some(t) = &self.tegra_release {
            parts.push(format!("L4T {t}"));
        }
        format!(
            "{} ({})",
            self.model.as_deref().unwrap_or("no device-tree model"),
            parts.join(", ")
        )
    }
}

/// ARM's part numbers (`CPU part` in /proc/cpuinfo, implementer 0x41) of the cores the
/// supported boards use, plus their neighbours.
const ARM_PARTS: [(&str, &str); 12] = [
    ("0xd03", "Cortex-A53"),
    ("0xd04", "Cortex-A35"),
    ("0xd05", "Cortex-A55"),
    ("0xd07", "Cortex-A57"),
    ("0xd08", "Cortex-A72"),
    ("0xd09", "Cortex-A73"),
    ("0xd0a", "Cortex-A75"),
    ("0xd0b", "Cortex-A76"),
    ("0xd0c", "Neoverse-N1"),
    ("0xd0d", "Cortex-A77"),
    ("0xd41", "Cortex-A78"),
    ("0xd42", "Cortex-A78AE"),
];

fn cpuinfo_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once(':')?;
    (k.trim() == key).then(|| v.trim())
}

fn cpu_name(cpuinfo: &str) -> Option<String> {
    if let Some(name) = cpuinfo.lines().find_map(|l| cpuinfo_value(l, "model name")) {
        // x86 and some ARM kernels (`ARMv7 Processor rev 3 (v7l)`): only x86's is useful.
        if !name.starts_with("ARMv") {
            return Some(name.to_string());
        }
    }
    let mut parts: Vec<&str> = Vec::new();
    for line in cpuinfo.lines() {
        if let Some(part) = cpuinfo_value(line, "CPU part") {
            let name = ARM_PARTS
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(part))
                .map_or(part, |(_, n)| n);
            if !parts.contains(&name) {
                parts.push(name);
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(" + "))
}

fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| cpuinfo_value(l, "MemTotal"))?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// How well a profile's `[detect]` fits: `None` when a rule fails or it has none.
/// Ordered: the longest model match first, then the number of rules that held.
fn fit(rule: &DetectRule, d: &Detected) -> Option<(usize, usize)> {
    let mut held = 0;
    if !rule.arch.is_empty() {
        if !rule.arch.contains(&d.arch) {
            return None;
        }
        held += 1;
    }
    let mut model_len = 0;
    if !rule.model.is_empty() {
        let model = d.model.as_deref()?;
        model_len = rule
            .model
            .iter()
            .filter(|m| model.contains(m.as_str()))
            .map(String::len)
            .max()?;
        held += 1;
    }
    if let Some(tegra) = rule.tegra {
        if tegra != d.tegra_release.is_some() {
            return None;
        }
        held += 1;
    }
    (held > 0).then_some((model_len, held))
}

/// The profile `--board auto` picks for `d`: the best [`DetectRule`] fit; ties go to the
/// first by name. `None` when no profile's rules hold.
pub fn detect<'a>(profiles: &'a [NamedProfile], d: &Detected) -> Option<&'a NamedProfile> {
    let mut best: Option<(&NamedProfile, (usize, usize))> = None;
    for p in profiles {
        if let Some(score) = fit(&p.profile.detect, d) {
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((p, score));
            }
        }
    }
    best.map(|(p, _)| p)
}

/// Resolves `--board NAME`: `auto` detects (logging what was seen and chosen; no match is
/// the built-in defaults), anything else loads that profile.
pub fn resolve(
    name: &str,
    config_dir: Option<&Path>,
) -> Result<(Option<String>, BoardProfile), BoardError> {
    if name != "auto" {
        return Ok((Some(name.to_string()), load_board(name, config_dir)?));
    }
    let profiles = list_profiles(&board_dirs(config_dir))?;
    let seen = Detected::probe();
    match detect(&profiles, &seen) {
        Some(p) => {
            log::info!(
                "board auto: {} -> profile {} ({})",
                seen.summary(),
                p.name,
                p.path.display()
            );
            if let (Some(need), Some(have)) = (p.profile.memory_mb, seen.memory_mb) {
                if have < need {
                    log::warn!(
                        "board {}: this device has {have} MiB of memory, the profile needs {need} MiB",
                        p.name
                    );
                }
            }
            Ok((Some(p.name.clone()), p.profile.clone()))
        }
        None => {
            log::info!(
                "board auto: {} matches no profile; using the built-in defaults",
                seen.summary()
            );
            Ok((None, BoardProfile::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(model: Option<&str>, cpuinfo: &str, tegra: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/device-tree")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        if let Some(m) = model {
            // The kernel writes the model NUL-terminated.
            std::fs::write(dir.path().join("proc/device-tree/model"), format!("{m}\0")).unwrap();
        }
        std::fs::write(dir.path().join("proc/cpuinfo"), cpuinfo).unwrap();
        std::fs::write(
            dir.path().join("proc/meminfo"),
            "MemTotal:        8256116 kB\nMemFree:  1 kB\n",
        )
        .unwrap();
        if tegra {
            std::fs::write(
                dir.path().join("etc/nv_tegra_release"),
                "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n",
            )
            .unwrap();
        }
        dir
    }

    fn arm_cpuinfo(part: &str, cores: usize) -> String {
        (0..cores)
            .map(|i| {
                format!(
                    "processor\t: {i}\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
                )
            })
            .collect()
    }

    fn repo_profiles() -> Vec<NamedProfile> {
        list_profiles(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")]).unwrap()
    }

    fn pick(model: Option<&str>, cpuinfo: &str, tegra: bool, arch: &str) -> Option<String> {
        let root = fake_root(model, cpuinfo, tegra);
        let d = Detected::probe_root(root.path(), arch);
        detect(&repo_profiles(), &d).map(|p| p.name.clone())
    }

    #[test]
    fn every_committed_profile_parses_and_states_what_the_issue_asks() {
        let profiles = repo_profiles();
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "pi4",
            "pi5",
            "pi-zero-2w",
            "pi-32bit",
            "jetson-orin-nano",
            "x86-64",
        ] {
            assert!(
                names.contains(&want),
                "boards/{want}.toml missing: {names:?}"
            );
        }
        for p in &profiles {
            let b = &p.profile;
            assert!(b.description.is_some(), "{}: description", p.name);
            assert!(b.memory_mb.is_some(), "{}: memory_mb", p.name);
            assert!(b.precision.is_some(), "{}: precision", p.name);
            assert!(b.backend.is_some(), "{}: backend", p.name);
            assert!(b.capture.format.is_some(), "{}: capture format", p.name);
            assert!(b.capture.width.is_some(), "{}: capture size", p.name);
            assert!(b.capture.fps.is_some(), "{}: capture fps", p.name);
            assert!(
                !b.detect.arch.is_empty() || !b.detect.model.is_empty(),
                "{}: [detect]",
                p.name
            );
        }
    }

    #[test]
    fn detection_picks_the_right_profile_from_proc_files() {
        let a72 = arm_cpuinfo("0xd08", 4);
        let a76 = arm_cpuinfo("0xd0b", 4);
        let a53 = arm_cpuinfo("0xd03", 4);
        let a78 = arm_cpuinfo("0xd42", 6);
        let pi4 = Some("Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(pick(pi4, &a72, false, "aarch64").as_deref(), Some("pi4"));
        assert_eq!(
            pick(Some("Raspberry Pi 400 Rev 1.0"), &a72, false, "aarch64").as_deref(),
            Some("pi4")
        );
        assert_eq!(
            pick(
                Some("Raspberry Pi 5 Model B Rev 1.0"),
                &a76,
                false,
                "aarch64"
            )
            .as_deref(),
            Some("pi5")
        );
        // A 32-bit OS on a Pi 4 gets the armv7 profile, whatever the board.
        assert_eq!(pick(pi4, &a72, false, "arm").as_deref(), Some("pi-32bit"));
        // The Zero 2 W's memory matters more than its OS: it wins on either.
        let zero = Some("Raspberry Pi Zero 2 W Rev 1.0");
        assert_eq!(
            pick(zero, &a53, false, "aarch64").as_deref(),
            Some("pi-zero-2w")
        );
        assert_eq!(
            pick(zero, &a53, false, "arm").as_deref(),
            Some("pi-zero-2w")
        );
        let orin = Some("NVIDIA Jetson Orin Nano Developer Kit");
        assert_eq!(
            pick(orin, &a78, true, "aarch64").as_deref(),
            Some("jetson-orin-nano")
        );
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(pick(None, x86, false, "x86_64").as_deref(), Some("x86-64"));
        // An unknown ARM board matches nothing: built-in defaults.
        assert_eq!(pick(Some("Pine64 RockPro64"), &a72, false, "aarch64"), None);
    }

    #[test]
    fn probe_reads_model_cores_and_memory() {
        let root = fake_root(
            Some("Raspberry Pi 5 Model B Rev 1.0"),
            &arm_cpuinfo("0xd0b", 4),
            false,
        );
        let d = Detected::probe_root(root.path(), "aarch64");
        assert_eq!(d.model.as_deref(), Some("Raspberry Pi 5 Model B Rev 1.0"));
        assert_eq!(d.cpu.as_deref(), Some("Cortex-A76"));
        assert_eq!(d.cores, 4);
        assert_eq!(d.memory_mb, Some(8062));
        assert_eq!(d.tegra_release, None);
        assert_eq!(
            d.summary(),
            "Raspberry Pi 5 Model B Rev 1.0 (aarch64, 4 × Cortex-A76, 8062 MiB)"
        );
        let big_little = format!("{}{}", arm_cpuinfo("0xd03", 1), arm_cpuinfo("0xd08", 1));
        assert_eq!(
            cpu_name(&big_little).as_deref(),
            Some("Cortex-A53 + Cortex-A72")
        );
        assert_eq!(cpu_name("processor : 0\n"), None);
    }

    #[test]
    fn unknown_names_list_what_exists_and_bad_profiles_name_the_line() {
        let err = load_board("no-such-board", None).unwrap_err().to_string();
        assert!(
            err.contains("no-such-board") && err.contains("pi5"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "threads = 2\nthredas = 3\n").unwrap();
        let err = load_board(bad.to_str().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
        assert!(list_profiles(&[dir.path().to_path_buf()]).is_err());
    }

    #[test]
    fn ort_dylib_globs_resolve_to_the_highest_match() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["1.18.0", "1.20.1"] {
            std::fs::write(dir.path().join(format!("libonnxruntime.so.{v}")), b"").unwrap();
        }
        let profile = BoardProfile {
            ort: Some(OrtOptions {
                dylib: Some(dir.path().join("libonnxruntime.so.*")),
                ..OrtOptions::default()
            }),
            ..BoardProfile::default()
        };
        let ort = profile.ort_options().unwrap();
        assert_eq!(ort.dylib, Some(dir.path().join("libonnxruntime.so.1.20.1")));
        let none = BoardProfile {
            ort: Some(OrtOptions {
                dylib: Some(dir.path().join("nothing.so.*")),
                ..OrtOptions::default()
            }),
            ..BoardProfile::default()
        };
        assert_eq!(
            none.ort_options().unwrap().dylib,
            Some(dir.path().join("nothing.so.*"))
        );
    }
}
