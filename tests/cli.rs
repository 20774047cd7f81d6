//! The `edgeclip` binary end to end on real photos: output format, skipped inputs, exit
//! codes, error messages, the embedding cache, and the three bundle layouts.

mod common;

use common::{edgeclip, lines, repo, stderr, stdout};

use std::path::Path;

const BUNDLE: &str = "clip-vit-b-32-seeded";

fn bundle() -> Option<String> {
    Some(common::bundle_dir(BUNDLE)?.display().to_string())
}

#[test]
fn classify_prints_one_json_object_per_image() {
    let Some(model) = bundle() else { return };
    let home = tempfile::tempdir().unwrap();
    let o = edgeclip(
        home.path(),
        &[
            "classify",
            "--model",
            &model,
            "--labels",
            "examples/labels.txt",
            "--top-k",
            "3",
            "examples/images",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = lines(&o);
    assert_eq!(rows.len(), 4, "{}", stdout(&o));
    let labels = std::fs::read_to_string(repo().join("examples/labels.txt")).unwrap();
    for r in &rows {
        assert!(r["source"]
            .as_str()
            .unwrap()
            .starts_with("examples/images/"));
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-5);
        assert_eq!(r["label"], top[0]["label"]);
        assert_eq!(r["score"], top[0]["score"]);
        assert!(labels.contains(r["label"].as_str().unwrap()));
        assert!(r["ms"].as_f64().unwrap() > 0.0);
    }
    assert!(
        stderr(&o).contains("classified 4, skipped 0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_files_are_skipped_and_counted() {
    let Some(model) = bundle() else { return };
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(repo().join("examples/images/rocket.jpg")).unwrap();
    std::fs::write(dir.path().join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    std::fs::write(dir.path().join("text.jpg"), b"this is not an image").unwrap();
    std::fs::write(dir.path().join("good.jpg"), &jpeg).unwrap();
    let d = dir.path().to_str().unwrap();
    let o = edgeclip(
        home.path(),
        &[
            "classify",
            "--model",
            &model,
            "--labels",
            "examples/labels.txt",
            d,
            "/no/such/file.jpg",
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let rows = lines(&o);
    // A truncated JPEG may still decode (zune-jpeg fills the rest); what matters is that
    // the good file is classified and every bad one is either classified or reported.
    assert!(rows
        .iter()
        .any(|r| r["source"].as_str().unwrap().ends_with("good.jpg")));
    for bad in ["empty.png", "text.jpg", "/no/such/file.jpg"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("skipping") && l.contains(bad)),
            "{bad} not reported:\n{err}"
        );
    }
    let summary = format!("classified {}, skipped {}", rows.len(), 5 - rows.len());
    assert!(err.contains(&summary), "expected '{summary}' in:\n{err}");

    // Nothing classifiable: a failure exit code.
    let o = edgeclip(
        home.path(),
        &[
            "classify",
            "--model",
            &model,
            "--labels",
            "examples/labels.txt",
            "/no/such/file.jpg",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("classified 0, skipped 1"));
}

#[test]
fn unusable_model_or_labels_fail_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let o = edgeclip(
        home.path(),
        &[
            "classify",
            "--model",
            "nope",
            "--labels",
            "examples/labels.txt",
            "examples/images",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("model 'nope' not found"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("models/prepare nope"), "{}", stderr(&o));

    let Some(model) = bundle() else { return };
    let labels = home.path().join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n@colour red\n").unwrap();
    let o = edgeclip(
        home.path(),
        &[
            "classify",
            "--model",
            &model,
            "--labels",
            labels.to_str().unwrap(),
            "examples/images",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("labels.txt:3: unknown directive '@colour'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_text_cache_is_filled_once_and_reused() {
    let Some(model) = bundle() else { return };
    let home = tempfile::tempdir().unwrap();
    let labels = home.path().join("labels.txt");
    std::fs::write(&labels, "@templates none\ncat\ndog\n").unwrap();
    let args = [
        "-v",
        "classify",
        "--model",
        &model,
        "--labels",
        labels.to_str().unwrap(),
        "examples/images/chelsea.png",
    ];
    let first = edgeclip(home.path(), &args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("0 cached, 2 embedded"),
        "{}",
        stderr(&first)
    );
    assert!(stderr(&first).contains("textual tower:"));

    let second = edgeclip(home.path(), &args);
    assert!(
        stderr(&second).contains("2 cached, 0 embedded"),
        "{}",
        stderr(&second)
    );
    // A warm cache never loads the text tower.
    assert!(
        !stderr(&second).contains("textual tower:"),
        "{}",
        stderr(&second)
    );
    assert_eq!(lines(&first)[0]["top"], lines(&second)[0]["top"]);

    // One new label: only its prompt is embedded.
    std::fs::write(&labels, "@templates none\ncat\ndog\nbird\n").unwrap();
    let third = edgeclip(home.path(), &args);
    assert!(
        stderr(&third).contains("2 cached, 1 embedded"),
        "{}",
        stderr(&third)
    );

    // A damaged cache is repaired, not trusted.
    let cache_dir = home.path().join("cache/text");
    let file = std::fs::read_dir(&cache_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let fourth = edgeclip(home.path(), &args);
    assert!(
        stderr(&fourth).contains("2 cached, 1 embedded"),
        "{}",
        stderr(&fourth)
    );
    assert_eq!(lines(&third)[0]["top"], lines(&fourth)[0]["top"]);
}

#[test]
fn tokenize_and_inspect() {
    let Some(model) = bundle() else { return };
    let home = tempfile::tempdir().unwrap();
    let o = edgeclip(
        home.path(),
        &["tokenize", "--model", &model, "--", "a photo of a cat."],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row = &lines(&o)[0];
    let ids: Vec<i64> = row["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert!(ids.contains(&49407));

    let o = edgeclip(home.path(), &["inspect", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("layout        edgeclip manifest"), "{out}");
    // Seeded weights: the initial scale 1/0.07, as the manifest records it.
    assert!(
        out.contains("scoring       softmax over labels of 14.285714 x cosine"),
        "{out}"
    );
    assert_eq!(out.matches("sha256 ok").count(), 4, "{out}");
}

#[test]
fn the_three_layouts_give_the_same_answers() {
    let Some(model) = bundle() else { return };
    let home = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for layout in [
        model.clone(),
        format!("{model}-hf"),
        format!("{model}-openclip"),
    ] {
        if common::require_path(Path::new(&layout), "bundle layout", "run models/prepare").is_none()
        {
            return;
        }
        let o = edgeclip(home.path(), &["inspect", &layout]);
        assert!(o.status.success(), "{layout}: {}", stderr(&o));
        if layout != model {
            // CLIP's BPE as a tokenizer.json: 49,406 merges' vocabulary + 2 specials.
            assert!(stdout(&o).contains("(BPE, 49408 tokens;"), "{}", stdout(&o));
        }
        let o = edgeclip(
            home.path(),
            &[
                "classify",
                "--no-cache",
                "--model",
                &layout,
                "--labels",
                "examples/labels.txt",
                "--top-k",
                "9",
                "examples/images",
            ],
        );
        assert!(o.status.success(), "{layout}: {}", stderr(&o));
        results.push(lines(&o));
    }
    // Same ONNX graphs, same vocabulary: the labels must agree. Probabilities differ only
    // through the logit scale, which layouts without a manifest cannot know (they assume
    // OpenAI's 100); so compare rankings, not scores.
    let ranking = |rows: &Vec<serde_json::Value>| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                r["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["label"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        ranking(&results[0]),
        ranking(&results[1]),
        "manifest vs Hugging Face layout"
    );
    assert_eq!(
        ranking(&results[0]),
        ranking(&results[2]),
        "manifest vs open_clip layout"
    );
}

#[test]
fn eval_reports_accuracy_on_an_image_folder() {
    let Some(model) = bundle() else { return };
    let Some(data) = common::shared_datasets() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let cifar = data.join("cifar10/test");
    let o = edgeclip(
        home.path(),
        &[
            "eval",
            "--model",
            &model,
            "--per-class",
            "3",
            "--templates",
            "none",
            "--json",
            cifar.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["images"], 30);
    assert_eq!(report["classes"].as_array().unwrap().len(), 10);
    let top1 = report["top1"].as_f64().unwrap();
    let top5 = report["top5"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1) && top5 >= top1, "{report}");
    let hits: f64 = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["top1"].as_f64().unwrap() * 3.0)
        .sum();
    assert!((hits / 30.0 - top1).abs() < 1e-9);
}

#[test]
fn bench_reports_percentiles_throughput_and_memory() {
    let home = tempfile::tempdir().unwrap();
    // The committed demo bundle: small, always present.
    let out = common::edgeclip(home.path(), &["bench", "--iterations", "2", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_str(common::stdout(&out).trim()).unwrap();
    for stage in ["image_ms", "text_ms", "end_to_end_ms"] {
        let t = &v[stage];
        let (min, p50, p99) = (
            t["min"].as_f64().unwrap(),
            t["p50"].as_f64().unwrap(),
            t["p99"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= p50 && p50 <= p99, "{stage}: {t}");
        assert_eq!(t["runs"], 2);
    }
    assert!(v["end_to_end_fps"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 10 << 20, "{v}");
    let serving = v["serving_peak_rss_bytes"].as_u64().unwrap();
    assert!(
        serving > 10 << 20 && serving <= v["peak_rss_bytes"].as_u64().unwrap(),
        "{v}"
    );
    let cold = v["cold_start_ms"].as_f64().unwrap();
    assert!(cold > 0.0, "{v}");
    // The demo bundle is EfficientNet, not a ViT: auto falls back to tract, and says so.
    assert_eq!(v["backend"], "tract", "{v}");

    let table = common::edgeclip(home.path(), &["bench", "--iterations", "2"]);
    assert!(table.status.success(), "{}", common::stderr(&table));
    let text = common::stdout(&table);
    for needle in [
        "p50",
        "p99",
        "image tower (preprocessed input)",
        "images/s",
        "peak RSS",
        "cold start",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn boards_lists_profiles_and_board_profiles_apply() {
    let home = tempfile::tempdir().unwrap();
    let o = edgeclip(home.path(), &["boards", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let names: Vec<&str> = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "pi4",
        "pi5",
        "pi-zero-2w",
        "pi-32bit",
        "jetson-orin-nano",
        "x86-64",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert_eq!(v["detected"]["arch"], std::env::consts::ARCH);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(v["auto"], "x86-64", "{v}");
    }

    // A profile's settings reach the engine (the log names the precision and backend).
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("tractor.toml");
    std::fs::write(
        &profile,
        "description = \"t\"\nthreads = 1\nprecision = \"int8\"\nbackend = \"tract\"\n",
    )
    .unwrap();
    let o = edgeclip(
        home.path(),
        &[
            "-v",
            "--board",
            profile.to_str().unwrap(),
            "classify",
            "--labels",
            "examples/labels.txt",
            "examples/images/rocket.jpg",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("int8, tract CPU, 1 thread(s)"),
        "{}",
        stderr(&o)
    );

    let o = edgeclip(
        home.path(),
        &["--board", "no-such-board", "classify", "-l", "x", "y"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no such profile") && stderr(&o).contains("pi5"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn oversized_config_and_label_files_are_refused_by_name() {
    let home = tempfile::tempdir().unwrap();
    // A config file of 2 MiB (a wrong file, e.g. a log, passed as --config).
    let big = home.path().join("big.toml");
    let mut text = String::from("# padding\n");
    while text.len() <= 2 << 20 {
        text.push_str("# a comment line that only takes up room in the file\n");
    }
    std::fs::write(&big, &text).unwrap();
    let out = edgeclip(
        home.path(),
        &["run", "--config", big.to_str().unwrap(), "--check-config"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("big.toml") && err.contains("larger than the 1048576-byte limit"),
        "{err}"
    );

    // More labels than a file may hold: refused with the file and line.
    let labels = home.path().join("labels.txt");
    let many: String = (0..=edgeclip::limits::MAX_LABELS)
        .map(|i| format!("thing {i}\n"))
        .collect();
    std::fs::write(&labels, many).unwrap();
    let out = edgeclip(
        home.path(),
        &[
            "classify",
            "--labels",
            labels.to_str().unwrap(),
            "examples/images/rocket.jpg",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("labels.txt:10001") && err.contains("10000"),
        "{err}"
    );
}
