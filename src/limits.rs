//! Size limits on what edgeclip reads from outside, and the capped read they share.
//!
//! A device reads files a person edits, streams a camera sends and caches a power cut may
//! have torn. A limit turns a mistake (a pasted blob, a wrong path, a runaway stream, a
//! hostile header) into an error that names the input, instead of memory exhaustion.
//! Each limit lives with the stage that enforces it; this module lists them all (for the
//! README's Reliability section and `--help`) and holds the read that enforces the byte caps.
//!
//! | limit | value | where |
//! |---|---|---|
//! | [`MAX_CONFIG_BYTES`] | 1 MiB | config file, board profile, bundle manifest |
//! | [`MAX_LABEL_FILE_BYTES`] | 4 MiB | label file |
//! | [`MAX_LABEL_LINE_BYTES`] | 1024 | one label-file line |
//! | [`MAX_LABELS`] | 10,000 | labels in one file |
//! | [`MAX_IMAGE_BYTES`] | 64 MiB | one encoded image (file, stdin, replay, snapshot) |
//! | [`MAX_FRAME_BYTES`] | 32 MiB | one MJPEG frame (stdin, file, HTTP multipart) |
//! | [`MAX_PIXELS`] | 100 M | declared width × height of any image or raw frame |

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

pub use crate::labels::{
    MAX_FILE_BYTES as MAX_LABEL_FILE_BYTES, MAX_LABELS, MAX_LINE_BYTES as MAX_LABEL_LINE_BYTES,
};
pub use crate::preprocess::MAX_PIXELS;
pub use crate::source::{MAX_FRAME_BYTES, MAX_IMAGE_BYTES};

/// Largest config file, board profile or bundle manifest read: these are hand-written TOML
/// of a few kilobytes; a megabyte is a wrong file.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads `r` to its end, or `Ok(None)` as soon as it holds more than `limit` bytes (only
/// `limit + 1` bytes are ever buffered).
pub fn read_capped(r: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// Reads a UTF-8 text file of at most `limit` bytes. A larger file, or one that is not
/// UTF-8, is an [`io::ErrorKind::InvalidData`] error saying so (callers add the path).
pub fn read_text_capped(path: &Path, limit: u64) -> io::Result<String> {
    let file = File::open(path)?;
    let Some(bytes) = read_capped(&file, limit)? else {
        let size = file.metadata().map(|m| m.len()).unwrap_or(limit + 1);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes, larger than the {limit}-byte limit for this file"),
        ));
    };
    String::from_utf8(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        assert_eq!(
            read_capped(&b"abcd"[..], 4).unwrap(),
            Some(b"abcd".to_vec())
        );
        assert_eq!(read_capped(&b"abcde"[..], 4).unwrap(), None);
        assert_eq!(read_capped(&b""[..], 0).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn text_files_over_the_limit_or_not_utf8_name_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "x = 1\n").unwrap();
        assert_eq!(read_text_capped(&path, 6).unwrap(), "x = 1\n");
        let e = read_text_capped(&path, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("6 bytes, larger than the 5-byte limit"),
            "{e}"
        );
        std::fs::write(&path, b"ok\xff").unwrap();
        let e = read_text_capped(&path, 100).unwrap_err();
        assert!(
            e.to_string()
                .contains("not UTF-8 text (invalid byte at offset 2)"),
            "{e}"
        );
    }
}
