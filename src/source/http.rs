//! HTTP cameras: an MJPEG stream (`multipart/x-mixed-replace`, as IP cameras, mjpg-streamer,
//! motion and ESP32-CAM serve), a bare JPEG stream, or a snapshot URL polled at a rate.

use std::io::Read;
use std::time::Duration;

use ureq::BodyReader;

use super::mjpeg::{ByteBuf, FrameCursor, JpegSplitter, SplitError, MAX_FRAME_BYTES};
use super::replay::Pacer;
use super::{CaptureError, FrameData, FrameSource};

/// How long connecting and waiting for the response headers may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence within a stream before it counts as dropped: a camera that stops
/// sending without closing the connection must still be reconnected.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshot polling rate when none is configured.
const DEFAULT_SNAPSHOT_FPS: f32 = 2.0;
/// Longest run of part headers accepted.
const MAX_PART_HEADERS: usize = 16 << 10;

/// Offset of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `boundary` parameter of a `multipart/...` content type, without quotes.
pub(crate) fn multipart_boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Reads the parts of a `multipart/x-mixed-replace` body, one JPEG each.
///
/// A part's `Content-Length` is used when present (and checked: a part that does not end
/// in EOI is re-read by walking the JPEG, as some cameras send wrong lengths); without it
/// the JPEG structure itself delimits the frame. The boundary is searched for as the
/// parameter's text, with or without the leading `--` that RFC 2046 adds, since cameras
/// disagree on it.
pub(crate) struct MultipartReader<R> {
    input: ByteBuf<R>,
    cursor: FrameCursor,
    boundary: Vec<u8>,
    max_frame: usize,
}

impl<R: Read> MultipartReader<R> {
    pub(crate) fn new(reader: R, boundary: &str, max_frame: usize) -> MultipartReader<R> {
        MultipartReader {
            input: ByteBuf::new(reader),
            cursor: FrameCursor::new(max_frame),
            boundary: boundary.as_bytes().to_vec(),
            max_frame,
        }
    }

    /// Ensures at least `n` unconsumed bytes; `Ok(false)` when the stream ends first.
    fn want(&mut self, n: usize) -> Result<bool, SplitError> {
        while self.input.data().len() < n {
            if !self.input.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next line (without its line ending), consumed; `None` at end of stream.
    /// Lines over `limit` bytes are an error.
    fn line(&mut self, limit: usize) -> Result<Option<String>, SplitError> {
        let mut searched = 0;
        loop {
            let data = self.input.data();
            if let Some(i) = data[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                let line = String::from_utf8_lossy(&data[..end])
                    .trim_end_matches('\r')
                    .to_string();
                self.input.consume(end + 1);
                return Ok(Some(line));
            }
            searched = data.len();
            if searched > limit {
                return Err(SplitError::Corrupt(format!(
                    "multipart header line longer than {limit} bytes"
                )));
            }
            if !self.input.fill()? {
                return Ok(None);
            }
        }
    }

    /// The next part's body; `Ok(None)` at end of stream or after the closing boundary.
    pub(crate) fn next_part(&mut self) -> Result<Option<Vec<u8>>, SplitError> {
        // 1. The boundary (skipping the previous part's trailing CRLF, any preamble).
        let keep = self.boundary.len().saturating_sub(1);
        loop {
            let data = self.input.data();
            if let Some(at) = find(data, &self.boundary) {
                self.input.consume(at + self.boundary.len());
                break;
            }
            let drop = data.len().saturating_sub(keep);
            self.input.consume(drop);
            if !self.input.fill()? {
                return Ok(None);
            }
        }
        // 2. The rest of the boundary line: `--` marks the closing delimiter.
        let Some(rest) = self.line(1024)? else {
            return Ok(None);
        };
        if rest.starts_with("--") {
            return Ok(None);
        }
        // 3. Part headers, up to the blank line.
        let mut content_length = None;
        let mut header_bytes = 0;
        loop {
            // Some servers omit the blank line: stop at the JPEG itself.
            if !self.want(2)? {
                return Ok(None);
            }
            if self.input.data().starts_with(&[0xFF, 0xD8]) {
                break;
            }
            let Some(line) = self.line(MAX_PART_HEADERS)? else {
                return Ok(None);
            };
            if line.trim().is_empty() {
                break;
            }
            header_bytes += line.len();
            if header_bytes > MAX_PART_HEADERS {
                return Err(SplitError::Corrupt(format!(
                    "multipart part headers longer than {MAX_PART_HEADERS} bytes"
                )));
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse::<usize>().ok();
                }
            }
        }
        // 4. The body.
        self.cursor.reset();
        match content_length {
            Some(len) if len > self.max_frame => Err(SplitError::Corrupt(format!(
                "part of {len} bytes is larger than {} bytes, skipped",
                self.max_frame
            ))),
            Some(len) => {
                if !self.want(len)? {
                    let got = self.input.data().len();
                    self.input.consume(got);
                    return Err(SplitError::Corrupt(format!(
                        "stream ended inside a frame ({got} of {len} bytes received)"
                    )));
                }
                let part = &self.input.data()[..len];
                let trimmed = part
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(&part[..0], |i| &part[..=i]);
                if part.starts_with(&[0xFF, 0xD8]) && trimmed.ends_with(&[0xFF, 0xD9]) {
                    let frame = trimmed.to_vec();
                    self.input.consume(len);
                    Ok(Some(frame))
                } else if part.starts_with(&[0xFF, 0xD8]) {
                    // Wrong Content-Length: let the JPEG structure decide.
                    log::debug!("multipart part's Content-Length {len} does not end at EOI");
                    self.cursor.next_jpeg(&mut self.input)
                } else {
                    let magic: Vec<String> =
                        part.iter().take(8).map(|b| format!("{b:02x}")).collect();
                    self.input.consume(len);
                    Err(SplitError::Corrupt(format!(
                        "part is not a JPEG (first bytes {})",
                        magic.join(" ")
                    )))
                }
            }
            None => self.cursor.next_jpeg(&mut self.input),
        }
    }
}

enum HttpStream {
    Multipart(MultipartReader<BodyReader<'static>>),
    Raw(JpegSplitter<BodyReader<'static>>),
    /// A URL answering one JPEG per request, re-requested for each frame. Holds the frame
    /// fetched by `open` until it is handed out.
    Snapshot(Option<Vec<u8>>),
}

/// An HTTP camera: `GET url`, then frames from the response.
///
/// - `multipart/*` responses are parsed part by part (`multipart/x-mixed-replace`);
/// - `image/*` responses are snapshots: the URL is requested again for each frame, at the
///   configured rate (default 2 fps);
/// - anything else is read as concatenated JPEGs.
///
/// A refused connection, a timeout, a 5xx answer or the end of the stream is
/// [`CaptureError::Disconnected`]; other 4xx answers (wrong path, credentials) are
/// [`CaptureError::Config`].
pub struct HttpMjpeg {
    url: String,
    agent: ureq::Agent,
    pacer: Pacer,
    max_frame: usize,
    stream: Option<HttpStream>,
}

impl HttpMjpeg {
    /// A camera at `url`; `fps` paces snapshot polling only (a stream comes at the
    /// camera's rate).
    pub fn new(url: impl Into<String>, fps: Option<f32>) -> HttpMjpeg {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .user_agent(concat!("edgeclip/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        HttpMjpeg {
            url: url.into(),
            agent,
            pacer: Pacer::new(Some(fps.unwrap_or(DEFAULT_SNAPSHOT_FPS))),
            max_frame: MAX_FRAME_BYTES,
            stream: None,
        }
    }

    fn disconnected(&self, reason: String) -> CaptureError {
        CaptureError::Disconnected {
            source_name: self.describe(),
            reason,
        }
    }

    fn corrupt(&self, reason: String) -> CaptureError {
        CaptureError::Corrupt {
            source_name: self.describe(),
            frame: 0,
            reason,
        }
    }

    /// Sends the request; the response's content type and body.
    fn request(&self) -> Result<(String, ureq::Body), CaptureError> {
        match self.agent.get(&self.url).call() {
            Ok(response) => {
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Ok((content_type, response.into_body()))
            }
            Err(ureq::Error::StatusCode(code))
                if (400..500).contains(&code) && code != 408 && code != 429 =>
            {
                Err(CaptureError::Config {
                    source_name: self.describe(),
                    reason: format!("the server answered HTTP {code}"),
                })
            }
            Err(ureq::Error::StatusCode(code)) => {
                Err(self.disconnected(format!("the server answered HTTP {code}")))
            }
            Err(
                e @ (ureq::Error::BadUri(_)
                | ureq::Error::Http(_)
                | ureq::Error::InvalidProxyUrl
                | ureq::Error::RequireHttpsOnly(_)),
            ) => Err(CaptureError::Config {
                source_name: self.describe(),
                reason: e.to_string(),
            }),
            Err(e) => Err(self.disconnected(e.to_string())),
        }
    }

    /// Reads one snapshot body.
    fn read_snapshot(&self, body: ureq::Body) -> Result<Vec<u8>, CaptureError> {
        let mut bytes = Vec::new();
        body.into_reader()
            .take(self.max_frame as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.disconnected(format!("reading the snapshot: {e}")))?;
        if bytes.len() > self.max_frame {
            return Err(self.corrupt(format!("snapshot larger than {} bytes", self.max_frame)));
        }
        if bytes.is_empty() {
            return Err(self.corrupt("empty snapshot".into()));
        }
        Ok(bytes)
    }

    fn map_split(
        &mut self,
        r: Result<Option<Vec<u8>>, SplitError>,
    ) -> Result<Option<FrameData>, CaptureError> {
        match r {
            Ok(Some(frame)) => Ok(Some(FrameData::Encoded(frame))),
            Ok(None) => {
                self.stream = None;
                Err(self.disconnected("the stream ended".into()))
            }
            Err(SplitError::Corrupt(reason)) => Err(self.corrupt(reason)),
            Err(SplitError::Io(e)) => {
                self.stream = None;
                Err(self.disconnected(format!("read error: {e}")))
            }
        }
    }
}

impl FrameSource for HttpMjpeg {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        self.stream = None;
        self.pacer.reset();
        let (content_type, body) = self.request()?;
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let stream = if mime.starts_with("multipart/") {
            match multipart_boundary(&content_type) {
                Some(boundary) => HttpStream::Multipart(MultipartReader::new(
                    body.into_reader(),
                    &boundary,
                    self.max_frame,
                )),
                // No boundary: the parts are still JPEGs, found by their structure.
                None => HttpStream::Raw(JpegSplitter::with_max_frame(
                    body.into_reader(),
                    self.max_frame,
                )),
            }
        } else if mime.starts_with("image/") {
            HttpStream::Snapshot(Some(self.read_snapshot(body)?))
        } else {
            HttpStream::Raw(JpegSplitter::with_max_frame(
                body.into_reader(),
                self.max_frame,
            ))
        };
        log::debug!("{}: connected ({content_type})", self.url);
        self.stream = Some(stream);
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        match self.stream.as_mut() {
            None => Err(self.disconnected("not connected".into())),
            Some(HttpStream::Multipart(reader)) => {
                let r = reader.next_part();
                self.map_split(r)
            }
            Some(HttpStream::Raw(splitter)) => {
                let r = splitter.next_jpeg();
                self.map_split(r)
            }
            Some(HttpStream::Snapshot(first)) => {
                let frame = match first.take() {
                    Some(frame) => frame,
                    None => {
                        self.pacer.wait();
                        let (_, body) = self.request()?;
                        self.read_snapshot(body)?
                    }
                };
                Ok(Some(FrameData::Encoded(frame)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(tag: u8) -> Vec<u8> {
        vec![
            0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, tag, 0xFF, 0x00, 0xFF, 0xD9,
        ]
    }

    #[test]
    fn boundary_parameter_forms() {
        let b = |s| multipart_boundary(s);
        assert_eq!(
            b("multipart/x-mixed-replace; boundary=frame").as_deref(),
            Some("frame")
        );
        assert_eq!(
            b("multipart/x-mixed-replace;boundary=\"--my b\"").as_deref(),
            Some("--my b")
        );
        assert_eq!(
            b("multipart/x-mixed-replace; BOUNDARY=x; charset=y").as_deref(),
            Some("x")
        );
        assert_eq!(b("multipart/x-mixed-replace"), None);
    }

    #[test]
    fn parts_with_and_without_lengths() {
        let mut body = b"preamble\r\n".to_vec();
        // With Content-Length.
        body.extend(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 11\r\n\r\n");
        body.extend(jpeg(1));
        // Without, and a wrong length, and without the blank line.
        body.extend(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n");
        body.extend(jpeg(2));
        body.extend(b"\r\n--frame\r\nContent-Length: 9\r\n\r\n");
        body.extend(jpeg(3));
        body.extend(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n");
        body.extend(jpeg(4));
        // Not a JPEG, then the closing delimiter.
        body.extend(b"\r\n--frame\r\nContent-Length: 4\r\n\r\nabcd\r\n--frame--\r\n");
        let mut r = MultipartReader::new(&body[..], "frame", 1 << 20);
        assert_eq!(r.next_part().unwrap(), Some(jpeg(1)));
        assert_eq!(r.next_part().unwrap(), Some(jpeg(2)));
        assert_eq!(r.next_part().unwrap(), Some(jpeg(3)));
        assert_eq!(r.next_part().unwrap(), Some(jpeg(4)));
        assert!(matches!(r.next_part(), Err(SplitError::Corrupt(m)) if m.contains("not a JPEG")));
        assert_eq!(r.next_part().unwrap(), None);
    }
}
