//! Live frame sources on recorded camera data (`tests/data/camera/`, see its README):
//! pixel conversion against ffmpeg's own, MJPEG splitting, HTTP/ffmpeg/V4L2 sources with
//! disconnects and reconnects through the capture loop, replay pacing.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeclip::source::v4l2::{FakeMode, FakeV4l2Device, V4l2};
use edgeclip::source::{
    decode_frame, lacks_huffman_tables, run_capture, with_huffman_tables, Backoff, CaptureError,
    CaptureStats, FrameData, FrameSource, HttpMjpeg, JpegSplitter, LatestSlot, PixelFormat,
    ReaderMjpeg, SourceKind, SourceOptions, SourceSpec, STANDARD_DHT,
};
use image::RgbImage;

const W: u32 = 160;
const H: u32 = 120;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/camera")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference(name: &str) -> RgbImage {
    image::open(data(name)).unwrap().into_rgb8()
}

/// The recorded clip's frames (6 UVC-style JPEGs without DHT).
fn clip_frames() -> Vec<Vec<u8>> {
    let mut s = JpegSplitter::new(Cursor::new(read("clip-160x120.mjpeg")));
    let mut frames = Vec::new();
    while let Some(f) = s.next_jpeg().unwrap() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 6);
    frames
}

/// (max, mean) absolute difference over all channels.
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += u64::from(d);
    }
    (max, sum as f64 / a.as_raw().len() as f64)
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

/// Polls `cond` every 10 ms for up to `secs`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn require_fixtures() -> bool {
    std::env::var("EDGECLIP_REQUIRE_FIXTURES").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------
// Pixel conversion

/// Our YUYV → RGB on a recording of a real photo, against swscale's conversion of the same
/// bytes with accurate rounding and the chroma pair repeated (nearest neighbour), i.e. the
/// same BT.601 limited-range formula computed independently (command in the data README).
/// Measured: max 1, mean 0.006 LSB (both are fixed point; they round a few samples
/// differently). Bounds: max 1, mean 0.05. A wrong coefficient, full-range maths, swapped
/// U/V or a misread stride shows as 3+ LSB on average. (swscale's *default* fast path is
/// not used as the reference: it is biased ~1.5 LSB low on this frame.)
#[test]
fn yuyv_recording_matches_ffmpeg() {
    let yuyv = read("chelsea-160x120.yuyv");
    assert_eq!(yuyv.len(), (W * H * 2) as usize);
    let ours = decode_frame(&FrameData::Yuyv {
        width: W,
        height: H,
        stride: W * 2,
        data: yuyv.clone(),
    })
    .unwrap();
    let (max, mean) = diff(&ours, &reference("chelsea-160x120.yuyv.ref.png"));
    eprintln!("YUYV vs ffmpeg rgb24: max {max}, mean {mean:.4}");
    assert!(max <= 1 && mean <= 0.05, "max {max}, mean {mean}");

    // The same frame with padded rows (stride > 2 × width, as some drivers deliver).
    let stride = W * 2 + 64;
    let mut padded = Vec::new();
    for row in yuyv.chunks(W as usize * 2) {
        padded.extend_from_slice(row);
        padded.extend(std::iter::repeat_n(0xAB, 64));
    }
    let from_padded = decode_frame(&FrameData::Yuyv {
        width: W,
        height: H,
        stride,
        data: padded,
    })
    .unwrap();
    assert_eq!(from_padded, ours);
}

/// An MJPEG frame (4:2:2, standard tables, as a UVC camera sends) decoded by our path
/// (zune-jpeg with libjpeg-turbo's upsampling and colour conversion, see vendor/README)
/// against ffmpeg's decoder + swscale with accurate rounding and bilinear chroma
/// interpolation. The two differ by design in the IDCT and in chroma upsampling (libjpeg's
/// triangle filter against bilinear), by a few LSB at colour edges. Measured: max 3, mean
/// 0.27 LSB. Bounds: max 4, mean 0.5. A wrong Huffman table does not decode at all, and a
/// colour-space or range mistake moves the mean by 5+ LSB.
#[test]
fn mjpeg_recording_matches_ffmpeg() {
    let jpeg = read("chelsea-160x120.jpg");
    let ours = decode_frame(&FrameData::Encoded(jpeg)).unwrap();
    let (max, mean) = diff(&ours, &reference("chelsea-160x120.jpg.ref.png"));
    eprintln!("MJPEG vs ffmpeg rgb24: max {max}, mean {mean:.4}");
    assert!(max <= 4 && mean <= 0.5, "max {max}, mean {mean}");

    // The two recordings are the same picture through two camera formats: they agree to
    // the accuracy of JPEG at ffmpeg's -q:v 5 (measured: max 28, mean 3.6 LSB).
    let yuyv = decode_frame(&FrameData::Yuyv {
        width: W,
        height: H,
        stride: W * 2,
        data: read("chelsea-160x120.yuyv"),
    })
    .unwrap();
    let (max, mean) = diff(&ours, &yuyv);
    eprintln!("MJPEG vs YUYV recording: max {max}, mean {mean:.4}");
    assert!(mean <= 5.0, "mean {mean}");
}

/// A camera frame without DHT decodes to exactly the image of the same frame with the
/// standard tables, and our inserted block is byte for byte the one ffmpeg writes.
#[test]
fn dht_stripped_frame_decodes_identically() {
    let with = read("chelsea-160x120.jpg");
    let without = read("chelsea-160x120-nodht.jpg");
    assert!(!lacks_huffman_tables(&with));
    assert!(lacks_huffman_tables(&without));
    assert_eq!(with.len() - without.len(), STANDARD_DHT.len());
    assert!(
        with.windows(STANDARD_DHT.len()).any(|w| w == STANDARD_DHT),
        "ffmpeg's DHT segment differs from STANDARD_DHT"
    );
    // Without the insertion the decoder has no tables (the file has no AVI1 marker).
    assert!(edgeclip::preprocess::decode(&without).is_err());
    let a = decode_frame(&FrameData::Encoded(with)).unwrap();
    let b = decode_frame(&FrameData::Encoded(without.clone())).unwrap();
    assert_eq!(a, b);
    assert_eq!(with_huffman_tables(&without).len(), without.len() + 420);
}

// ---------------------------------------------------------------------------------------
// MJPEG streams

/// Standard input's source on an in-memory stream: garbage between frames, a frame cut
/// in the middle, a truncated last frame.
#[test]
fn mjpeg_stream_with_garbage_and_truncation() {
    let frames = clip_frames();
    let mut stream = b"garbage before the first frame \xFF\xD8\x00".to_vec();
    stream.extend(&frames[0]);
    stream.extend(b"\r\n--boundary\r\nContent-Type: image/jpeg\r\n\r\n");
    stream.extend(&frames[1]);
    stream.extend(&frames[2][..frames[2].len() / 2]); // cut: the encoder dropped the rest
    stream.extend(&frames[3]);
    stream.extend(&frames[4]);
    stream.extend(&frames[5][..frames[5].len() - 100]); // the writer died

    let mut source = ReaderMjpeg::new("memory", Cursor::new(stream));
    source.open().unwrap();
    let mut got = Vec::new();
    let mut corrupt = 0;
    loop {
        match source.next_frame() {
            Ok(Some(FrameData::Encoded(f))) => got.push(f),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => break,
            Err(CaptureError::Corrupt { .. }) => corrupt += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        got,
        vec![
            frames[0].clone(),
            frames[1].clone(),
            frames[3].clone(),
            frames[4].clone()
        ]
    );
    assert_eq!(corrupt, 2);
    for f in &got {
        let img = decode_frame(&FrameData::Encoded(f.clone())).unwrap();
        assert_eq!(img.dimensions(), (W, H));
    }
}

/// A recorded `.mjpeg` file as a source: plays once, or loops.
#[test]
fn mjpeg_file_plays_and_loops() {
    let path = data("clip-160x120.mjpeg");
    let path = path.to_str().unwrap();
    let once = SourceOptions {
        fps: Some(0.0),
        ..SourceOptions::default()
    };
    let spec = SourceSpec::parse(path, once).unwrap();
    assert!(matches!(spec.kind, SourceKind::MjpegFile(_)));
    let mut source = spec.open().unwrap();
    source.open().unwrap();
    let mut n = 0;
    while source.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);

    let looping = SourceOptions {
        looping: true,
        ..once
    };
    let mut source = SourceSpec::parse(path, looping).unwrap().open().unwrap();
    source.open().unwrap();
    for _ in 0..15 {
        assert!(source.next_frame().unwrap().is_some());
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// Reads an HTTP request head.
fn read_request(stream: &TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" || line == "\n" {
            return;
        }
        line.clear();
    }
}

/// Serves `connections` multipart MJPEG responses of `frames` (the first with part
/// Content-Length headers, the next without), each then dropped, then stops listening.
fn mjpeg_server(frames: Vec<Vec<u8>>, connections: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/video.mjpg", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        for i in 0..connections {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            read_request(&conn);
            let mut out = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\
                Content-Type: multipart/x-mixed-replace; boundary=myboundary\r\n\r\n"
                .to_vec();
            for f in &frames {
                out.extend(b"--myboundary\r\nContent-Type: image/jpeg\r\n");
                if i % 2 == 0 {
                    out.extend(format!("Content-Length: {}\r\n", f.len()).as_bytes());
                }
                out.extend(b"\r\n");
                out.extend(f);
                out.extend(b"\r\n");
            }
            let _ = conn.write_all(&out);
            // Dropping the connection mid-stream: the camera went away.
        }
    });
    (url, handle)
}

#[test]
fn http_mjpeg_reconnects_through_the_capture_loop() {
    let frames = clip_frames();
    let (url, server) = mjpeg_server(frames.clone(), 2);
    let spec = SourceSpec::parse(&url, SourceOptions::default()).unwrap();
    assert!(matches!(spec.kind, SourceKind::Http(_)));
    let source = spec.open().unwrap();

    let slot = LatestSlot::new();
    let stop = AtomicBool::new(false);
    let stats = CaptureStats::new();
    std::thread::scope(|s| {
        let capture = s.spawn(|| run_capture(source, &slot, &stop, &stats, fast_backoff()));
        let done = wait_for(10, || {
            stats.frames.load(Ordering::Relaxed) >= 12
                && stats.disconnects.load(Ordering::Relaxed) >= 2
        });
        stop.store(true, Ordering::Relaxed);
        assert!(capture.join().unwrap().is_ok());
        let snap = stats.snapshot();
        assert!(done, "{snap:?}");
        assert_eq!(snap.frames, 12, "{snap:?}");
        assert_eq!(snap.corrupt, 0, "{snap:?}");
        assert!(snap.reconnects >= 1, "{snap:?}");
    });
    server.join().unwrap();
    let last = slot.try_take().expect("a frame in the slot");
    assert_eq!(last.seq, 12);
    assert_eq!(decode_frame(&last.data).unwrap().dimensions(), (W, H));
}

#[test]
fn http_errors_are_classified() {
    // Nothing listening: the capture loop should retry.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut source = HttpMjpeg::new(format!("http://127.0.0.1:{port}/"), None);
    assert!(matches!(
        source.open(),
        Err(CaptureError::Disconnected { .. })
    ));

    // 404: a wrong URL is not retried; 503 is.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for status in ["404 Not Found", "503 Service Unavailable"] {
            let (mut conn, _) = listener.accept().unwrap();
            read_request(&conn);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let mut source = HttpMjpeg::new(format!("http://{addr}/nope"), None);
    let e = source.open().unwrap_err();
    assert!(
        matches!(e, CaptureError::Config { .. }) && e.to_string().contains("404"),
        "{e}"
    );
    assert!(matches!(
        source.open(),
        Err(CaptureError::Disconnected { .. })
    ));
    server.join().unwrap();
}

/// A URL serving one JPEG per request is polled.
#[test]
fn http_snapshot_url_is_polled() {
    let frames = clip_frames();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for f in frames.iter().take(3) {
            let (mut conn, _) = listener.accept().unwrap();
            read_request(&conn);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                f.len()
            );
            let _ = conn.write_all(f);
        }
    });
    let mut source = HttpMjpeg::new(format!("http://{addr}/snapshot.jpg"), Some(50.0));
    source.open().unwrap();
    let expected = clip_frames();
    for f in expected.iter().take(3) {
        assert_eq!(
            source.next_frame().unwrap(),
            Some(FrameData::Encoded(f.clone()))
        );
    }
    server.join().unwrap();
    assert!(matches!(
        source.next_frame(),
        Err(CaptureError::Disconnected { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// ffmpeg

fn have_ffmpeg() -> bool {
    let ok = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !require_fixtures(),
            "ffmpeg not installed and EDGECLIP_REQUIRE_FIXTURES=1"
        );
        eprintln!("SKIPPED: ffmpeg is not installed (apt install ffmpeg)");
    }
    ok
}

#[test]
fn ffmpeg_source_reads_a_file_then_reports_the_exit() {
    if !have_ffmpeg() {
        return;
    }
    let clip = data("clip-160x120.mjpeg");
    let text = format!("ffmpeg:-f mjpeg -i '{}'", clip.display());
    let mut source = SourceSpec::parse(&text, SourceOptions::default())
        .unwrap()
        .open()
        .unwrap();
    for round in 0..2 {
        // Reopening after the exit starts ffmpeg again.
        source.open().unwrap();
        let mut n = 0;
        let err = loop {
            match source.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(decode_frame(&frame).unwrap().dimensions(), (W, H));
                    n += 1;
                }
                Ok(None) => panic!("ffmpeg output is a live stream: it disconnects, never ends"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 6, "round {round}");
        assert!(matches!(err, CaptureError::Disconnected { .. }), "{err}");
        assert!(err.to_string().contains("exited"), "{err}");
    }

    // A failing input: the error carries ffmpeg's own message.
    let mut source = SourceSpec::parse("ffmpeg:-i /no/such/clip.mp4", SourceOptions::default())
        .unwrap()
        .open()
        .unwrap();
    source.open().unwrap();
    let err = source.next_frame().unwrap_err();
    assert!(matches!(err, CaptureError::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
}

/// An ffmpeg whose input never delivers (here a FIFO nobody writes, like an RTSP camera
/// that stops sending) is killed by the watchdog: a disconnect, not a hang.
#[test]
fn stalled_ffmpeg_is_killed_and_disconnects() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stalled.mjpeg");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: mkfifo failed");
        return;
    }
    let mut source = edgeclip::source::Ffmpeg::with_input_args(
        vec![
            "-f".into(),
            "mjpeg".into(),
            "-i".into(),
            fifo.display().to_string(),
        ],
        "stalled".into(),
        None,
        None,
    )
    .stall_timeout(Duration::from_millis(500));
    source.open().unwrap();
    let started = Instant::now();
    let err = source.next_frame().unwrap_err();
    assert!(matches!(err, CaptureError::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("no frame"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_ffmpeg_is_a_config_error() {
    let mut source = edgeclip::source::Ffmpeg::url("rtsp://camera/stream", None, None)
        .program("/nonexistent/ffmpeg-for-edgeclip-tests");
    let err = source.open().unwrap_err();
    assert!(matches!(err, CaptureError::Config { .. }), "{err}");
    assert!(err.to_string().contains("install ffmpeg"), "{err}");
}

// ---------------------------------------------------------------------------------------
// V4L2 (a fake device playing the recordings)

fn fake_device(interval_ms: u64) -> FakeV4l2Device {
    FakeV4l2Device::new(
        vec![
            FakeMode {
                format: PixelFormat::Mjpeg,
                width: W,
                height: H,
                stride: 0,
                fps: vec![30.0, 15.0],
                frames: clip_frames(),
            },
            FakeMode {
                format: PixelFormat::Yuyv,
                width: W,
                height: H,
                stride: 0,
                fps: vec![10.0],
                frames: vec![read("chelsea-160x120.yuyv")],
            },
        ],
        Duration::from_millis(interval_ms),
    )
}

#[test]
fn v4l2_camera_that_vanishes_and_returns_is_reconnected() {
    let device = fake_device(2);
    let control = device.control();
    control.vanish_after(3);
    let source = V4l2::with_device(
        "/dev/video-fake",
        Box::new(device),
        SourceOptions::default(),
    );

    let slot = LatestSlot::new();
    let stop = AtomicBool::new(false);
    let stats = CaptureStats::new();
    std::thread::scope(|s| {
        let capture =
            s.spawn(|| run_capture(Box::new(source), &slot, &stop, &stats, fast_backoff()));
        // Unplugged after 3 frames; reopening fails for a while.
        assert!(wait_for(5, || control.failed_opens.load(Ordering::SeqCst) >= 2));
        assert!(!stats.connected.load(Ordering::Relaxed));
        assert_eq!(stats.frames.load(Ordering::Relaxed), 3);
        control.reappear();
        assert!(wait_for(5, || stats.frames.load(Ordering::Relaxed) >= 8));
        stop.store(true, Ordering::Relaxed);
        assert!(capture.join().unwrap().is_ok());
    });
    let snap = stats.snapshot();
    assert_eq!((snap.disconnects, snap.reconnects), (1, 1), "{snap:?}");
    assert!(
        snap.last_error
            .as_deref()
            .unwrap_or("")
            .contains("/dev/video-fake"),
        "{snap:?}"
    );
    assert!(snap.description.contains("MJPG 160x120"), "{snap:?}");
    let frame = slot.try_take().unwrap();
    assert!(frame.seq >= 8);
    assert_eq!(decode_frame(&frame.data).unwrap().dimensions(), (W, H));
}

#[test]
fn v4l2_yuyv_mode_delivers_raw_frames() {
    let options = SourceOptions {
        format: Some(PixelFormat::Yuyv),
        fps: Some(10.0),
        ..SourceOptions::default()
    };
    let mut source = V4l2::with_device("/dev/video-fake", Box::new(fake_device(0)), options);
    source.open().unwrap();
    let frame = source.next_frame().unwrap().unwrap();
    assert!(matches!(
        frame,
        FrameData::Yuyv {
            width: W,
            height: H,
            stride: 320,
            ..
        }
    ));
    let (max, _) = diff(
        &decode_frame(&frame).unwrap(),
        &reference("chelsea-160x120.yuyv.ref.png"),
    );
    assert!(max <= 1);
}

#[test]
fn v4l2_mode_not_offered_lists_the_modes() {
    for options in [
        SourceOptions {
            format: Some(PixelFormat::Yuyv),
            width: Some(640),
            height: Some(480),
            ..Default::default()
        },
        SourceOptions {
            fps: Some(60.0),
            ..Default::default()
        },
    ] {
        let mut source = V4l2::with_device("/dev/video-fake", Box::new(fake_device(0)), options);
        let err = source.open().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CaptureError::Config { .. }), "{msg}");
        assert!(msg.contains("MJPG: 160x120 (30/15 fps)"), "{msg}");
        assert!(msg.contains("YUYV: 160x120 (10 fps)"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------
// Replay and pattern

#[test]
fn replay_paces_and_reports_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let frames = clip_frames();
    for (i, f) in frames.iter().enumerate().take(5) {
        std::fs::write(dir.path().join(format!("frame-{i}.jpg")), f).unwrap();
    }
    std::fs::write(dir.path().join("frame-2b.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a frame").unwrap();

    let options = SourceOptions {
        fps: Some(20.0),
        ..SourceOptions::default()
    };
    let spec = SourceSpec::parse(dir.path().to_str().unwrap(), options).unwrap();
    let (slot, stop, stats) = (
        LatestSlot::new(),
        AtomicBool::new(false),
        CaptureStats::new(),
    );
    let started = Instant::now();
    run_capture(spec.open().unwrap(), &slot, &stop, &stats, fast_backoff()).unwrap();
    let elapsed = started.elapsed();
    let snap = stats.snapshot();
    assert_eq!((snap.frames, snap.corrupt), (5, 1), "{snap:?}");
    let err = snap.last_error.unwrap();
    assert!(
        err.contains("frame-2b.jpg") && err.contains("empty"),
        "{err}"
    );
    // 6 files at 20 fps: 5 intervals of 50 ms after the first.
    assert!(
        elapsed >= Duration::from_millis(240) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(slot.try_take().is_some_and(|f| f.seq == 5));

    // A glob over the same directory, looping, unpaced.
    let pattern = format!("{}/frame-?.jpg", dir.path().display());
    let looping = SourceOptions {
        fps: Some(0.0),
        looping: true,
        ..SourceOptions::default()
    };
    let mut source = SourceSpec::parse(&pattern, looping)
        .unwrap()
        .open()
        .unwrap();
    source.open().unwrap();
    for i in 0..12 {
        assert_eq!(
            source.next_frame().unwrap(),
            Some(FrameData::Encoded(frames[i % 5].clone()))
        );
    }
}

#[test]
fn pattern_is_deterministic_and_ends_after_n_frames() {
    let options = SourceOptions {
        width: Some(64),
        height: Some(48),
        fps: Some(0.0),
        ..SourceOptions::default()
    };
    let spec = SourceSpec::parse("pattern:bars,frames=3", options).unwrap();
    let collect = || {
        let mut source = spec.open().unwrap();
        source.open().unwrap();
        let mut frames = Vec::new();
        while let Some(FrameData::Rgb(img)) = source.next_frame().unwrap() {
            assert_eq!(img.dimensions(), (64, 48));
            frames.push(img);
        }
        frames
    };
    let a = collect();
    assert_eq!(a.len(), 3);
    assert_eq!(a, collect());
    assert_ne!(a[0], a[1], "the bars move");

    let (slot, stop, stats) = (
        Arc::new(LatestSlot::new()),
        AtomicBool::new(false),
        CaptureStats::new(),
    );
    run_capture(spec.open().unwrap(), &slot, &stop, &stats, fast_backoff()).unwrap();
    assert_eq!(stats.snapshot().frames, 3);
    assert_eq!(
        slot.try_take().map(|f| f.data),
        Some(FrameData::Rgb(a[2].clone()))
    );
    assert!(slot.is_finished());
}
