//! One-shot inputs: image files, directories and one image on standard input.
//!
//! A source yields [`Frame`]s one at a time, so a directory of 10,000 photos is never
//! held in memory, and an unreadable file is one error in the stream, not the end of it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::limits::read_capped;

/// Largest encoded image read (bytes): a larger "image" is a mistake, not a photo.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// File extensions picked up when walking a directory (explicit files are tried whatever
/// their name).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "pnm", "ppm", "pgm",
];

/// One encoded image and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// File path, or `-` for standard input.
    pub source: String,
    /// The encoded bytes (JPEG, PNG, ...).
    pub bytes: Vec<u8>,
}

/// Why one input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The input.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Larger than [`MAX_IMAGE_BYTES`].
    #[error("{path}: larger than the {MAX_IMAGE_BYTES}-byte limit for one image")]
    TooLarge {
        /// The input.
        path: String,
    },
    /// Zero bytes.
    #[error("{path}: empty")]
    Empty {
        /// The input.
        path: String,
    },
}

impl SourceError {
    /// The input the error is about.
    pub fn input(&self) -> &str {
        match self {
            SourceError::Io { path, .. }
            | SourceError::TooLarge { path, .. }
            | SourceError::Empty { path } => path,
        }
    }
}

enum Input {
    File(PathBuf),
    Stdin,
    Failed(SourceError),
}

/// Images named on a command line: files, directories (walked recursively, sorted,
/// image extensions only) and `-` for one image on standard input.
pub struct PathSource {
    inputs: std::vec::IntoIter<Input>,
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

impl PathSource {
    /// Expands `paths` into the list of inputs (directory walking happens here).
    pub fn new(paths: &[PathBuf]) -> PathSource {
        let mut inputs = Vec::new();
        for p in paths {
            if p.as_os_str() == "-" {
                inputs.push(Input::Stdin);
            } else if p.is_dir() {
                let mut files = Vec::new();
                for entry in walkdir::WalkDir::new(p)
                    .follow_links(true)
                    .sort_by_file_name()
                {
                    match entry {
                        Ok(e) if e.file_type().is_file() && has_image_extension(e.path()) => {
                            files.push(e.into_path())
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let path = e.path().unwrap_or(p).display().to_string();
                            inputs.push(Input::Failed(SourceError::Io {
                                path,
                                source: e.into(),
                            }));
                        }
                    }
                }
                inputs.extend(files.into_iter().map(Input::File));
            } else {
                inputs.push(Input::File(p.clone()));
            }
        }
        PathSource {
            inputs: inputs.into_iter(),
        }
    }

    /// Number of inputs left.
    pub fn remaining(&self) -> usize {
        self.inputs.len()
    }
}

fn read_limited(r: impl Read, path: &str) -> Result<Vec<u8>, SourceError> {
    let bytes = read_capped(r, MAX_IMAGE_BYTES)
        .map_err(|source| SourceError::Io {
            path: path.to_string(),
            source,
        })?
        .ok_or_else(|| SourceError::TooLarge {
            path: path.to_string(),
        })?;
    if bytes.is_empty() {
        return Err(SourceError::Empty {
            path: path.to_string(),
        });
    }
    Ok(bytes)
}

impl Iterator for PathSource {
    type Item = Result<Frame, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.inputs.next()? {
            Input::Failed(e) => Err(e),
            Input::Stdin => read_limited(std::io::stdin().lock(), "-").map(|bytes| Frame {
                source: "-".into(),
                bytes,
            }),
            Input::File(p) => {
                let name = p.display().to_string();
                fs::File::open(&p)
                    .map_err(|source| SourceError::Io {
                        path: name.clone(),
                        source,
                    })
                    .and_then(|f| read_limited(f, &name))
                    .map(|bytes| Frame {
                        source: name,
                        bytes,
                    })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_walked_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("b.JPG"), b"b").unwrap();
        fs::write(dir.path().join("a.png"), b"a").unwrap();
        fs::write(dir.path().join("notes.txt"), b"n").unwrap();
        fs::write(dir.path().join("sub/c.jpeg"), b"c").unwrap();
        let frames: Vec<_> = PathSource::new(&[dir.path().to_path_buf()])
            .map(|f| f.unwrap().bytes)
            .collect();
        assert_eq!(frames, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn bad_inputs_are_errors_in_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        fs::write(&empty, b"").unwrap();
        let good = dir.path().join("x.bin");
        fs::write(&good, b"data").unwrap();
        let got: Vec<_> = PathSource::new(&[dir.path().join("missing.jpg"), empty, good]).collect();
        assert!(
            matches!(&got[0], Err(SourceError::Io { path, .. }) if path.ends_with("missing.jpg"))
        );
        assert!(matches!(&got[1], Err(SourceError::Empty { .. })));
        assert_eq!(got[2].as_ref().unwrap().bytes, b"data");
    }
}
