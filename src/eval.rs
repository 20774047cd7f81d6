//! Accuracy bookkeeping for `edgeclip eval`: an ImageFolder data set (one folder per
//! class) classified against its own class names.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Errors finding a data set.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the data set or a list file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A list file line is wrong.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The list file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No usable class folders.
    #[error("{path}: no class folders with images (expected DIR/<class>/<image>)")]
    Empty {
        /// The data set root.
        path: PathBuf,
    },
}

/// One image of the data set with its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub class: usize,
}

/// Classes (folder names) and their images.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Folder names, sorted.
    pub classes: Vec<String>,
    /// Label text per class (folder name with `_` → space, or from the label map).
    pub labels: Vec<String>,
    /// The images, class by class.
    pub samples: Vec<Sample>,
}

/// How to choose the images.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only files listed (paths relative to the root, one per line), e.g. a test split.
    pub split: Option<PathBuf>,
    /// At most this many images per class (the first ones in sorted order).
    pub per_class: Option<usize>,
    /// Only these classes (folder names); the others are left out entirely.
    pub classes: Option<Vec<String>>,
    /// These classes (folder names) are left out entirely.
    pub exclude: Vec<String>,
    /// Folder name → label text.
    pub label_map: BTreeMap<String, String>,
}

/// Turns a folder name into label text: `car_side` → `car side`.
pub fn folder_to_label(folder: &str) -> String {
    folder.replace('_', " ")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a label map: lines `folder = label text`, `#` comments.
pub fn read_label_map(path: &Path) -> Result<BTreeMap<String, String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| EvalError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason: "expected 'folder = label text'".into(),
        })?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

impl Dataset {
    /// Scans `root` (ImageFolder layout) applying `sel`.
    pub fn scan(root: &Path, sel: &Selection) -> Result<Dataset, EvalError> {
        let split: Option<HashSet<String>> = match &sel.split {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(io(p))?
                    .lines()
                    .map(|l| l.trim().to_string())
                    .collect(),
            ),
        };
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|c| sel.classes.as_ref().is_none_or(|keep| keep.contains(c)))
            .filter(|c| !sel.exclude.contains(c))
            .collect();
        classes.sort();
        let mut samples = Vec::new();
        let mut kept = Vec::new();
        for class in classes {
            let dir = root.join(&class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(io(&dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        crate::source::IMAGE_EXTENSIONS
                            .iter()
                            .any(|x| x.eq_ignore_ascii_case(e))
                    })
                })
                .filter(|p| match &split {
                    None => true,
                    Some(s) => p
                        .file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| s.contains(&format!("{class}/{f}"))),
                })
                .collect();
            files.sort();
            if let Some(n) = sel.per_class {
                files.truncate(n);
            }
            if files.is_empty() {
                continue;
            }
            let ix = kept.len();
            samples.extend(files.into_iter().map(|path| Sample { path, class: ix }));
            kept.push(class);
        }
        if kept.is_empty() {
            return Err(EvalError::Empty {
                path: root.to_path_buf(),
            });
        }
        let labels = kept
            .iter()
            .map(|c| {
                sel.label_map
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| folder_to_label(c))
            })
            .collect();
        Ok(Dataset {
            classes: kept,
            labels,
            samples,
        })
    }
}

/// Per-class result.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    /// Label text.
    pub label: String,
    /// Images of this class.
    pub count: usize,
    /// Top-1 accuracy on them.
    pub top1: f64,
    /// The label most often predicted instead, and how often.
    pub most_confused_with: Option<(String, usize)>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Images classified.
    pub images: usize,
    /// Images that could not be read or decoded.
    pub skipped: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Mean of per-class top-1 (robust to unbalanced classes).
    pub balanced_top1: f64,
    /// Per class, in class order.
    pub classes: Vec<ClassReport>,
}

/// Accumulates predictions.
#[derive(Debug, Clone)]
pub struct Tally {
    labels: Vec<String>,
    confusion: Vec<Vec<usize>>,
    top5_hits: usize,
    images: usize,
    skipped: usize,
}

impl Tally {
    /// An empty tally over `labels`.
    pub fn new(labels: Vec<String>) -> Tally {
        let n = labels.len();
        Tally {
            labels,
            confusion: vec![vec![0; n]; n],
            top5_hits: 0,
            images: 0,
            skipped: 0,
        }
    }

    /// Records one image: its true class and the label ranking (best first).
    pub fn add(&mut self, truth: usize, ranking: &[usize]) {
        let (Some(&best), Some(row)) = (ranking.first(), self.confusion.get_mut(truth)) else {
            return;
        };
        if let Some(cell) = row.get_mut(best) {
            *cell += 1;
        }
        if ranking.iter().take(5).any(|&r| r == truth) {
            self.top5_hits += 1;
        }
        self.images += 1;
    }

    /// Records an image that could not be classified.
    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    /// The summary.
    pub fn report(&self) -> Report {
        let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let correct: usize = (0..self.labels.len()).map(|i| self.confusion[i][i]).sum();
        let classes: Vec<ClassReport> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let row = &self.confusion[i];
                let count: usize = row.iter().sum();
                let confused = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, &n)| j != i && n > 0)
                    .max_by_key(|&(j, &n)| (n, std::cmp::Reverse(j)))
                    .map(|(j, &n)| (self.labels[j].clone(), n));
                ClassReport {
                    label: label.clone(),
                    count,
                    top1: frac(row[i], count),
                    most_confused_with: confused,
                }
            })
            .collect();
        let present: Vec<&ClassReport> = classes.iter().filter(|c| c.count > 0).collect();
        let balanced = if present.is_empty() {
            0.0
        } else {
            present.iter().map(|c| c.top1).sum::<f64>() / present.len() as f64
        };
        Report {
            images: self.images,
            skipped: self.skipped,
            top1: frac(correct, self.images),
            top5: frac(self.top5_hits, self.images),
            balanced_top1: balanced,
            classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_top1_top5_and_confusions() {
        let mut t = Tally::new(vec!["cat".into(), "dog".into(), "car".into()]);
        t.add(0, &[0, 1, 2]);
        t.add(0, &[1, 0, 2]);
        t.add(1, &[1, 0, 2]);
        t.add(2, &[0, 1, 2]);
        t.skip();
        let r = t.report();
        assert_eq!(r.images, 4);
        assert_eq!(r.skipped, 1);
        assert!((r.top1 - 0.5).abs() < 1e-9);
        assert!((r.top5 - 1.0).abs() < 1e-9);
        assert!((r.balanced_top1 - (0.5 + 1.0 + 0.0) / 3.0).abs() < 1e-9);
        assert_eq!(r.classes[0].most_confused_with, Some(("dog".into(), 1)));
        assert_eq!(r.classes[2].top1, 0.0);
    }

    #[test]
    fn scan_applies_split_limit_and_label_map() {
        let dir = tempfile::tempdir().unwrap();
        for (c, files) in [
            ("car_side", ["a.jpg", "b.jpg", "c.jpg"]),
            ("Faces_easy", ["a.jpg", "b.png", "x.txt"]),
        ] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(c).join(f), b"").unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let split = dir.path().join("test.txt");
        std::fs::write(&split, "car_side/b.jpg\ncar_side/c.jpg\nFaces_easy/b.png\n").unwrap();
        let sel = Selection {
            split: Some(split),
            per_class: Some(1),
            classes: None,
            exclude: Vec::new(),
            label_map: [("Faces_easy".to_string(), "a face".to_string())].into(),
        };
        let d = Dataset::scan(dir.path(), &sel).unwrap();
        assert_eq!(d.classes, ["Faces_easy", "car_side"]);
        assert_eq!(d.labels, ["a face", "car side"]);
        assert_eq!(d.samples.len(), 2);
        assert!(d.samples[1].path.ends_with("car_side/b.jpg"));
        let without_faces = Selection {
            exclude: vec!["Faces_easy".into()],
            ..sel
        };
        let d = Dataset::scan(dir.path(), &without_faces).unwrap();
        assert_eq!(d.classes, ["car_side"]);
        assert_eq!(d.samples.len(), 1);
        let err = Dataset::scan(&dir.path().join("empty"), &Selection::default()).unwrap_err();
        assert!(matches!(err, EvalError::Empty { .. }));
    }

    #[test]
    fn label_map_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("map.txt");
        std::fs::write(&p, "# map\ncar_side = car\nbroken line\n").unwrap();
        let err = read_label_map(&p).unwrap_err().to_string();
        assert!(
            err.ends_with("map.txt:3: expected 'folder = label text'"),
            "{err}"
        );
    }
}
