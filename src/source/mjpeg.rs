//! MJPEG: camera JPEGs without Huffman tables, and splitting a byte stream of concatenated
//! JPEGs into frames.
//!
//! USB (UVC) cameras send "Motion JPEG" frames that usually omit the DHT segment: the
//! AVI/OpenDML MJPEG convention is that the standard tables of JPEG Annex K.3 apply.
//! ffmpeg and libjpeg-based tools insert those tables before decoding; zune-jpeg only does
//! so when it sees an `AVI1` APP0 segment, which most cameras do not write, so we insert
//! them ourselves ([`with_huffman_tables`]).
//!
//! [`JpegSplitter`] finds frame boundaries by walking the JPEG structure (segment lengths
//! up to the scan, then the entropy-coded data, where `FF 00` and `RSTn` are not
//! markers), not by searching for `FF D9`: an EXIF thumbnail carries its own EOI, and a
//! search alone cannot tell a truncated frame from one that is still arriving.

use std::borrow::Cow;
use std::io::{self, Read};

use image::RgbImage;

use crate::preprocess::PreprocessError;

/// Largest single JPEG accepted from a stream (bytes). A 4K MJPEG frame at high quality is
/// ~3 MB; anything near this cap is a broken stream, and capping it bounds memory.
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// How much is read from the stream at a time.
const READ_CHUNK: usize = 64 << 10;

/// The DHT segment of the standard Huffman tables (JPEG Annex K.3, tables K.3–K.6), as
/// ffmpeg's `mjpeg_dht`/libjpeg's `std_huff_tables` write it: marker, length 0x01A2, then
/// DC luminance (class 0, id 0), DC chrominance (0, 1), AC luminance (1, 0) and AC
/// chrominance (1, 1), each as 16 code-length counts followed by the symbol values.
#[rustfmt::skip]
pub const STANDARD_DHT: [u8; 420] = [
    0xFF, 0xC4, 0x01, 0xA2,
    // DC luminance: Tc=0, Th=0
    0x00,
    0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // DC chrominance: Tc=0, Th=1
    0x01,
    0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // AC luminance: Tc=1, Th=0
    0x10,
    0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D,
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
    // AC chrominance: Tc=1, Th=1
    0x11,
    0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77,
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// What the header walk of one JPEG found.
struct HeaderInfo {
    /// Offset of the first SOS marker (`FF DA`).
    sos: usize,
    /// Whether a DHT segment (`FF C4`) came before it.
    has_dht: bool,
}

/// Walks the header segments of `bytes` (which start with SOI) up to the first SOS.
/// `None` when the bytes are not a well-formed JPEG header: the decoder then reports why.
fn walk_header(bytes: &[u8]) -> Option<HeaderInfo> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut pos = 2;
    let mut has_dht = false;
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        match marker {
            // Fill byte before a marker.
            0xFF => pos += 1,
            // Stand-alone markers: no length.
            0x01 | 0xD0..=0xD7 => pos += 2,
            0xD8 | 0xD9 | 0x00 => return None,
            0xDA => return Some(HeaderInfo { sos: pos, has_dht }),
            _ => {
                has_dht |= marker == 0xC4;
                let len =
                    usize::from(*bytes.get(pos + 2)?) << 8 | usize::from(*bytes.get(pos + 3)?);
                if len < 2 {
                    return None;
                }
                pos += 2 + len;
            }
        }
    }
}

/// Whether `jpeg` is a JPEG whose header lacks a DHT segment (a typical UVC MJPEG frame).
pub fn lacks_huffman_tables(jpeg: &[u8]) -> bool {
    walk_header(jpeg).is_some_and(|h| !h.has_dht)
}

/// `jpeg` with the standard Huffman tables ([`STANDARD_DHT`]) inserted before its first
/// scan when its header has none; borrowed unchanged otherwise (tables present, or not a
/// parseable JPEG header, which the decoder will then report).
pub fn with_huffman_tables(jpeg: &[u8]) -> Cow<'_, [u8]> {
    match walk_header(jpeg) {
        Some(HeaderInfo {
            sos,
            has_dht: false,
        }) => {
            let mut out = Vec::with_capacity(jpeg.len() + STANDARD_DHT.len());
            out.extend_from_slice(&jpeg[..sos]);
            out.extend_from_slice(&STANDARD_DHT);
            out.extend_from_slice(&jpeg[sos..]);
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(jpeg),
    }
}

/// Decodes one encoded frame: an MJPEG frame (standard Huffman tables inserted when
/// omitted) or any image [`crate::preprocess::decode`] reads.
pub fn decode_encoded(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    crate::preprocess::decode(&with_huffman_tables(bytes))
}

/// Result of walking a (possibly partial) JPEG that starts with SOI.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// The data ends before the JPEG does.
    NeedMore,
    /// The JPEG is complete: its length in bytes, EOI included.
    Complete(usize),
    /// Not a valid JPEG: the reason, and the offset from which to look for the next SOI
    /// (never 0, so resynchronising always makes progress).
    Malformed(String, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Marker segments before (or between) scans.
    Header,
    /// Entropy-coded data after an SOS header.
    Scan,
}

/// Incremental walker over one JPEG: resumable when more bytes arrive, so a frame is
/// scanned once however many reads it takes to arrive.
#[derive(Debug, Clone)]
pub(crate) struct JpegWalker {
    /// Offset (from SOI) of the next byte to examine.
    pos: usize,
    phase: Phase,
}

impl JpegWalker {
    /// A walker positioned just after SOI.
    pub(crate) fn new() -> JpegWalker {
        JpegWalker {
            pos: 2,
            phase: Phase::Header,
        }
    }

    /// Continues walking `data` (the JPEG from its SOI, as much as has arrived).
    pub(crate) fn walk(&mut self, data: &[u8]) -> Walk {
        loop {
            match self.phase {
                Phase::Header => {
                    let Some(&b) = data.get(self.pos) else {
                        return Walk::NeedMore;
                    };
                    if b != 0xFF {
                        return Walk::Malformed(
                            format!("expected a marker at byte {}, found 0x{b:02x}", self.pos),
                            self.pos.max(1),
                        );
                    }
                    let Some(&marker) = data.get(self.pos + 1) else {
                        return Walk::NeedMore;
                    };
                    match marker {
                        0xFF => self.pos += 1,
                        0x01 | 0xD0..=0xD7 => self.pos += 2,
                        // A new frame began: this one was cut short (a camera or encoder
                        // dropped the rest). Resynchronise on the new SOI.
                        0xD8 => {
                            return Walk::Malformed(
                                format!("truncated: a new frame starts at byte {}", self.pos),
                                self.pos,
                            )
                        }
                        0xD9 => {
                            return Walk::Malformed(
                                "end of image before any scan data".into(),
                                self.pos + 2,
                            )
                        }
                        0x00 => {
                            return Walk::Malformed(
                                format!("invalid marker 0xFF00 at byte {}", self.pos),
                                self.pos + 1,
                            )
                        }
                        _ => {
                            let (Some(&hi), Some(&lo)) =
                                (data.get(self.pos + 2), data.get(self.pos + 3))
                            else {
                                return Walk::NeedMore;
                            };
                            let len = usize::from(hi) << 8 | usize::from(lo);
                            if len < 2 {
                                return Walk::Malformed(
                                    format!(
                                        "segment 0xFF{marker:02X} at byte {} has length {len}",
                                        self.pos
                                    ),
                                    self.pos + 2,
                                );
                            }
                            self.pos += 2 + len;
                            if marker == 0xDA {
                                self.phase = Phase::Scan;
                            }
                        }
                    }
                }
                Phase::Scan => {
                    let rest = data.get(self.pos..).unwrap_or_default();
                    match rest.iter().position(|&b| b == 0xFF) {
                        None => {
                            self.pos = self.pos.max(data.len());
                            return Walk::NeedMore;
                        }
                        Some(i) => self.pos += i,
                    }
                    let Some(&next) = data.get(self.pos + 1) else {
                        return Walk::NeedMore;
                    };
                    match next {
                        // Stuffed 0xFF data byte, restart marker: still scan data.
                        0x00 | 0xD0..=0xD7 => self.pos += 2,
                        // Fill byte before a marker.
                        0xFF => self.pos += 1,
                        0xD9 => return Walk::Complete(self.pos + 2),
                        0xD8 => {
                            return Walk::Malformed(
                                format!("truncated: a new frame starts at byte {}", self.pos),
                                self.pos,
                            )
                        }
                        // Another marker segment: DHT/SOS between the scans of a
                        // progressive JPEG, DNL, ...
                        _ => self.phase = Phase::Header,
                    }
                }
            }
        }
    }
}

/// Why the splitter could not produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Reading the stream failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The bytes were not a complete JPEG (truncated, malformed, over the size cap). The
    /// splitter has already skipped them: the next call resumes with the next frame.
    #[error("{0}")]
    Corrupt(String),
}

/// A read buffer that keeps unconsumed bytes contiguous and reuses its allocation.
pub(crate) struct ByteBuf<R> {
    reader: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// End of the valid bytes.
    end: usize,
    eof: bool,
}

impl<R: Read> ByteBuf<R> {
    pub(crate) fn new(reader: R) -> ByteBuf<R> {
        ByteBuf {
            reader,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The unconsumed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` unconsumed bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Whether the reader has reported end of stream.
    pub(crate) fn at_eof(&self) -> bool {
        self.eof
    }

    /// Reads more bytes after the unconsumed ones; `Ok(false)` at end of stream.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // Move what is left to the front so the buffer never grows past one frame plus a
        // chunk, however long the stream runs.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        loop {
            match self
                .reader
                .read(&mut self.buf[self.end..self.end + READ_CHUNK])
            {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The reader.
    pub(crate) fn get_ref(&self) -> &R {
        &self.reader
    }
}

/// Offset of the first `FF D8 FF` (SOI followed by a marker) in `data`.
fn find_soi(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF])
}

/// The JPEG walking state shared by [`JpegSplitter`] and the multipart reader.
pub(crate) struct FrameCursor {
    walker: Option<JpegWalker>,
    max_frame: usize,
    /// Bytes skipped outside frames (garbage, part headers), for diagnostics.
    skipped: u64,
}

impl FrameCursor {
    pub(crate) fn new(max_frame: usize) -> FrameCursor {
        FrameCursor {
            walker: None,
            max_frame,
            skipped: 0,
        }
    }

    /// Forgets a frame in progress (after the caller resynchronised by other means).
    pub(crate) fn reset(&mut self) {
        self.walker = None;
    }

    /// The next complete JPEG from `input`, skipping anything before its SOI. `Ok(None)`
    /// at end of stream with no frame in progress.
    pub(crate) fn next_jpeg<R: Read>(
        &mut self,
        input: &mut ByteBuf<R>,
    ) -> Result<Option<Vec<u8>>, SplitError> {
        loop {
            let Some(walker) = self.walker.as_mut() else {
                let data = input.data();
                if let Some(at) = find_soi(data) {
                    self.skipped += at as u64;
                    input.consume(at);
                    self.walker = Some(JpegWalker::new());
                    continue;
                }
                // Keep the last two bytes: they may be the start of an SOI split across
                // reads.
                let drop = data.len().saturating_sub(2);
                self.skipped += drop as u64;
                input.consume(drop);
                if !input.fill()? {
                    self.skipped += input.data().len() as u64;
                    let rest = input.data().len();
                    input.consume(rest);
                    return Ok(None);
                }
                continue;
            };
            let data = input.data();
            match walker.walk(data) {
                Walk::Complete(len) if len > self.max_frame => {
                    input.consume(len);
                    self.walker = None;
                    return Err(SplitError::Corrupt(format!(
                        "frame of {len} bytes is larger than {} bytes, skipped",
                        self.max_frame
                    )));
                }
                Walk::Complete(len) => {
                    let frame = data[..len].to_vec();
                    input.consume(len);
                    self.walker = None;
                    return Ok(Some(frame));
                }
                Walk::Malformed(reason, resume) => {
                    input.consume(resume);
                    self.walker = None;
                    return Err(SplitError::Corrupt(reason));
                }
                Walk::NeedMore => {
                    if data.len() > self.max_frame {
                        // Skip past what has been walked; the resync then discards the
                        // rest of the oversized frame as garbage.
                        let skip = walker.pos.min(data.len()).max(2);
                        input.consume(skip);
                        self.walker = None;
                        return Err(SplitError::Corrupt(format!(
                            "frame larger than {} bytes, skipped",
                            self.max_frame
                        )));
                    }
                    if !input.fill()? {
                        let len = input.data().len();
                        input.consume(len);
                        self.walker = None;
                        return Err(SplitError::Corrupt(format!(
                            "stream ended inside a frame ({len} bytes of it received)"
                        )));
                    }
                }
            }
        }
    }
}

/// Splits a byte stream of concatenated JPEGs (an MJPEG stream: a camera pipe, ffmpeg's
/// `-f mjpeg` output, an HTTP body) into frames.
///
/// Garbage between frames is skipped; a truncated or malformed frame is reported once as
/// [`SplitError::Corrupt`] and the splitter resynchronises on the next SOI; a frame over the
/// size cap is reported and skipped. Memory stays at one frame plus a 64 KiB read chunk:
/// the read buffer is reused across frames.
pub struct JpegSplitter<R> {
    input: ByteBuf<R>,
    cursor: FrameCursor,
}

impl<R: Read> JpegSplitter<R> {
    /// A splitter with the default frame cap ([`MAX_FRAME_BYTES`]).
    pub fn new(reader: R) -> JpegSplitter<R> {
        JpegSplitter::with_max_frame(reader, MAX_FRAME_BYTES)
    }

    /// A splitter that rejects frames over `max_frame` bytes.
    pub fn with_max_frame(reader: R, max_frame: usize) -> JpegSplitter<R> {
        JpegSplitter {
            input: ByteBuf::new(reader),
            cursor: FrameCursor::new(max_frame),
        }
    }

    /// The next complete JPEG, `Ok(None)` at the end of the stream.
    ///
    /// After [`SplitError::Corrupt`] the caller may call again for the next frame; after
    /// [`SplitError::Io`] the stream is in an unknown state.
    pub fn next_jpeg(&mut self) -> Result<Option<Vec<u8>>, SplitError> {
        self.cursor.next_jpeg(&mut self.input)
    }

    /// Bytes skipped so far outside frames (garbage between frames, truncated frames are
    /// not included).
    pub fn skipped_bytes(&self) -> u64 {
        self.cursor.skipped
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        self.input.get_ref()
    }

    /// Whether the underlying reader has reached its end.
    pub fn at_eof(&self) -> bool {
        self.input.at_eof()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal structurally valid JPEG: SOI, a COM segment, SOS header, scan data with a
    /// stuffed byte and a restart marker, EOI.
    fn tiny(payload: u8) -> Vec<u8> {
        vec![
            0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x04, b'h', b'i', 0xFF, 0xDA, 0x00, 0x03, 0x00, payload,
            0xFF, 0x00, 0x12, 0xFF, 0xD0, 0x34, 0xFF, 0xD9,
        ]
    }

    #[test]
    fn walker_handles_stuffing_restarts_and_resumes_across_chunks() {
        let jpeg = tiny(7);
        for cut in 0..jpeg.len() {
            let mut w = JpegWalker::new();
            let first = w.walk(&jpeg[..cut]);
            assert_eq!(first, Walk::NeedMore, "cut at {cut}");
            assert_eq!(w.walk(&jpeg), Walk::Complete(jpeg.len()), "cut at {cut}");
        }
    }

    #[test]
    fn splitter_skips_garbage_and_reports_truncation() {
        let mut stream = b"--boundary\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        stream.extend(tiny(1));
        stream.extend(b"\r\n\xFF\xD8junk");
        stream.extend(tiny(2));
        // A frame cut inside its scan data, then a good one.
        stream.extend(&tiny(3)[..15]);
        stream.extend(tiny(4));
        // A truncated last frame.
        stream.extend(&tiny(5)[..12]);
        let mut s = JpegSplitter::new(&stream[..]);
        assert_eq!(s.next_jpeg().unwrap(), Some(tiny(1)));
        assert_eq!(s.next_jpeg().unwrap(), Some(tiny(2)));
        assert!(matches!(s.next_jpeg(), Err(SplitError::Corrupt(_))));
        assert_eq!(s.next_jpeg().unwrap(), Some(tiny(4)));
        assert!(matches!(s.next_jpeg(), Err(SplitError::Corrupt(_))));
        assert_eq!(s.next_jpeg().unwrap(), None);
        assert_eq!(s.next_jpeg().unwrap(), None);
    }

    #[test]
    fn oversized_frames_are_skipped_and_the_stream_resyncs() {
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        big.extend(std::iter::repeat_n(0x11, 5000));
        big.extend([0xFF, 0xD9]);
        let mut stream = big.clone();
        stream.extend(tiny(9));
        let mut s = JpegSplitter::with_max_frame(&stream[..], 1000);
        assert!(matches!(s.next_jpeg(), Err(SplitError::Corrupt(m)) if m.contains("larger")));
        assert_eq!(s.next_jpeg().unwrap(), Some(tiny(9)));
        assert_eq!(s.next_jpeg().unwrap(), None);
    }

    #[test]
    fn dht_is_inserted_only_when_missing() {
        let jpeg = tiny(1);
        assert!(lacks_huffman_tables(&jpeg));
        let fixed = with_huffman_tables(&jpeg);
        assert_eq!(fixed.len(), jpeg.len() + STANDARD_DHT.len());
        assert!(!lacks_huffman_tables(&fixed));
        assert!(matches!(with_huffman_tables(&fixed), Cow::Borrowed(_)));
        assert!(matches!(
            with_huffman_tables(b"not a jpeg"),
            Cow::Borrowed(_)
        ));
    }
}
