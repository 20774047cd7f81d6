//! V4L2 cameras (USB webcams, the Raspberry Pi camera through its V4L2 driver, Jetson
//! USB/CSI cameras exposing `/dev/videoN`).
//!
//! The device sits behind [`V4l2Device`] so that mode negotiation, error mapping and
//! reconnection are the same code whether the frames come from the kernel
//! ([`LinuxDevice`], feature `v4l`) or from recorded frames ([`FakeV4l2Device`], which can
//! vanish and come back like an unplugged camera).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::spec::{PixelFormat, SourceOptions};
use super::{CaptureError, FrameData, FrameSource};

/// A V4L2 pixel format code, e.g. `*b"MJPG"`.
pub type FourCc = [u8; 4];

/// Frame sizes a device offers for one pixel format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSizes {
    /// A list of sizes (most USB cameras).
    Discrete(Vec<(u32, u32)>),
    /// Any size in a range on a grid (e.g. the Pi's `bcm2835-v4l2`).
    Stepwise {
        /// Smallest width × height.
        min: (u32, u32),
        /// Largest width × height.
        max: (u32, u32),
        /// Width and height steps.
        step: (u32, u32),
    },
}

impl FrameSizes {
    /// Whether `width × height` is offered.
    pub fn contains(&self, width: u32, height: u32) -> bool {
        match self {
            FrameSizes::Discrete(sizes) => sizes.contains(&(width, height)),
            FrameSizes::Stepwise { min, max, step } => {
                let on_grid = |v: u32, lo: u32, hi: u32, s: u32| {
                    (lo..=hi).contains(&v) && (v - lo).is_multiple_of(s.max(1))
                };
                on_grid(width, min.0, max.0, step.0) && on_grid(height, min.1, max.1, step.1)
            }
        }
    }

    /// The size used when none (or one side only) is configured: 640×480 when offered (plenty
    /// for a 224-pixel model input, cheap to decode), else the smallest size whose shorter
    /// side is at least 224, else the largest.
    fn pick(&self, width: Option<u32>, height: Option<u32>) -> Option<(u32, u32)> {
        let wanted = |w: u32, h: u32| width.is_none_or(|x| x == w) && height.is_none_or(|x| x == h);
        match self {
            FrameSizes::Discrete(sizes) => {
                let candidates: Vec<(u32, u32)> = sizes
                    .iter()
                    .copied()
                    .filter(|&(w, h)| wanted(w, h))
                    .collect();
                let area = |&(w, h): &(u32, u32)| u64::from(w) * u64::from(h);
                if candidates.contains(&(640, 480)) {
                    return Some((640, 480));
                }
                candidates
                    .iter()
                    .copied()
                    .filter(|&(w, h)| w.min(h) >= 224)
                    .min_by_key(area)
                    .or_else(|| candidates.iter().copied().max_by_key(area))
            }
            FrameSizes::Stepwise { min, max, step } => {
                let fit = |v: u32, lo: u32, hi: u32, s: u32| {
                    let v = v.clamp(lo, hi);
                    lo + (v - lo) / s.max(1) * s.max(1)
                };
                let (w, h) = match (width, height) {
                    (Some(w), Some(h)) => (w, h),
                    (Some(w), None) => (w, w * 3 / 4),
                    (None, Some(h)) => (h * 4 / 3, h),
                    (None, None) => (640, 480),
                };
                let size = (fit(w, min.0, max.0, step.0), fit(h, min.1, max.1, step.1));
                wanted(size.0, size.1).then_some(size)
            }
        }
    }
}

impl std::fmt::Display for FrameSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSizes::Discrete(sizes) => {
                let s: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                f.write_str(&s.join(", "))
            }
            FrameSizes::Stepwise { min, max, step } => write!(
                f,
                "{}x{} to {}x{} in steps of {}x{}",
                min.0, min.1, max.0, max.1, step.0, step.1
            ),
        }
    }
}

/// Frame rates a device offers for one format and size.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameRates {
    /// A list of rates (frames per second).
    Discrete(Vec<f32>),
    /// Any rate in a range.
    Range {
        /// Lowest rate.
        min: f32,
        /// Highest rate.
        max: f32,
    },
    /// The driver does not enumerate rates.
    Unknown,
}

impl FrameRates {
    /// Whether `fps` is offered, within 1 % (29.97 counts as 30).
    pub fn contains(&self, fps: f32) -> bool {
        let close = |r: f32| (r - fps).abs() <= 0.01 * fps.max(r);
        match self {
            FrameRates::Discrete(rates) => rates.iter().any(|&r| close(r)),
            FrameRates::Range { min, max } => fps >= *min * 0.99 && fps <= *max * 1.01,
            FrameRates::Unknown => true,
        }
    }
}

impl std::fmt::Display for FrameRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameRates::Discrete(rates) => {
                let s: Vec<String> = rates.iter().map(|r| format!("{r}")).collect();
                write!(f, "{} fps", s.join("/"))
            }
            FrameRates::Range { min, max } => write!(f, "{min}-{max} fps"),
            FrameRates::Unknown => f.write_str("fps not listed"),
        }
    }
}

/// A capture mode to ask the driver for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V4l2Mode {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate; `None` leaves the driver's default.
    pub fps: Option<f32>,
}

/// The mode the driver actually set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negotiated {
    /// Pixel format.
    pub fourcc: FourCc,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row (YUYV); may exceed 2 × width.
    pub stride: u32,
    /// Frame rate, when the driver reports one.
    pub fps: Option<f32>,
}

/// Access to one V4L2 capture device: what [`V4l2`] needs from the kernel.
pub trait V4l2Device: Send {
    /// Opens the device node (again, after [`V4l2Device::close`]).
    fn open(&mut self) -> io::Result<()>;
    /// The pixel formats offered.
    fn formats(&mut self) -> io::Result<Vec<FourCc>>;
    /// The frame sizes offered for a format.
    fn frame_sizes(&mut self, fourcc: FourCc) -> io::Result<FrameSizes>;
    /// The frame rates offered for a format and size.
    fn frame_rates(&mut self, fourcc: FourCc, width: u32, height: u32) -> io::Result<FrameRates>;
    /// Sets the mode and starts streaming.
    fn start(&mut self, mode: &V4l2Mode) -> io::Result<Negotiated>;
    /// Blocks for the next frame's bytes. An [`io::ErrorKind::InvalidData`] error is one
    /// bad frame (the driver flagged the buffer); any other error means the device is gone
    /// or stuck.
    fn read_frame(&mut self) -> io::Result<&[u8]>;
    /// Stops streaming and closes the node; harmless when not open.
    fn close(&mut self);
}

/// `ENODEV` on Linux: what V4L2 calls return once a USB camera is unplugged.
const ENODEV: i32 = 19;

fn fourcc_str(f: FourCc) -> String {
    f.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Every mode the device offers, one format per line, for error messages.
pub fn describe_modes(device: &mut dyn V4l2Device) -> io::Result<String> {
    let mut lines = Vec::new();
    for fourcc in device.formats()? {
        let name = fourcc_str(fourcc);
        if PixelFormat::from_fourcc(fourcc).is_none() {
            lines.push(format!("  {name}: (not a format edgeclip reads)"));
            continue;
        }
        let sizes = device.frame_sizes(fourcc)?;
        let detail = match &sizes {
            FrameSizes::Discrete(list) => list
                .iter()
                .map(|&(w, h)| {
                    let rates = device
                        .frame_rates(fourcc, w, h)
                        .unwrap_or(FrameRates::Unknown);
                    format!("{w}x{h} ({rates})")
                })
                .collect::<Vec<_>>()
                .join(", "),
            stepwise => stepwise.to_string(),
        };
        lines.push(format!("  {name}: {detail}"));
    }
    if lines.is_empty() {
        lines.push("  (no capture formats)".into());
    }
    Ok(lines.join("\n"))
}

/// Why no mode could be chosen.
enum ModeError {
    Io(io::Error),
    NotOffered(String),
}

impl From<io::Error> for ModeError {
    fn from(e: io::Error) -> ModeError {
        ModeError::Io(e)
    }
}

/// Chooses the mode for `options` among what `device` offers.
fn choose_mode(
    device: &mut dyn V4l2Device,
    options: &SourceOptions,
) -> Result<V4l2Mode, ModeError> {
    let formats = device.formats()?;
    let format = match options.format {
        Some(f)
            if formats
                .iter()
                .any(|&c| PixelFormat::from_fourcc(c) == Some(f)) =>
        {
            f
        }
        Some(f) => return Err(ModeError::NotOffered(format!("format {f} is not offered"))),
        // MJPG first: a quarter of the USB bandwidth, and a frame dropped before
        // inference is never decoded.
        None => [PixelFormat::Mjpeg, PixelFormat::Yuyv]
            .into_iter()
            .find(|f| {
                formats
                    .iter()
                    .any(|&c| PixelFormat::from_fourcc(c) == Some(*f))
            })
            .ok_or_else(|| {
                ModeError::NotOffered("the device offers neither MJPG nor YUYV".into())
            })?,
    };
    let fourcc = formats
        .iter()
        .copied()
        .find(|&c| PixelFormat::from_fourcc(c) == Some(format))
        .unwrap_or(format.fourcc());
    let sizes = device.frame_sizes(fourcc)?;
    let (width, height) = match (options.width, options.height) {
        (Some(w), Some(h)) if sizes.contains(w, h) => (w, h),
        (Some(w), Some(h)) => {
            return Err(ModeError::NotOffered(format!(
                "{format} {w}x{h} is not offered"
            )))
        }
        (w, h) => sizes.pick(w, h).ok_or_else(|| {
            let want = match (w, h) {
                (Some(w), _) => format!("width {w}"),
                (_, Some(h)) => format!("height {h}"),
                _ => "any size".into(),
            };
            ModeError::NotOffered(format!("{format} with {want} is not offered"))
        })?,
    };
    if let Some(fps) = options.fps {
        let rates = device.frame_rates(fourcc, width, height)?;
        if !rates.contains(fps) {
            return Err(ModeError::NotOffered(format!(
                "{format} {width}x{height} at {fps} fps is not offered ({rates})"
            )));
        }
    }
    Ok(V4l2Mode {
        format,
        width,
        height,
        fps: options.fps,
    })
}

/// A V4L2 camera as a [`FrameSource`]: MJPG frames as [`FrameData::Encoded`], YUYV frames
/// as [`FrameData::Yuyv`].
///
/// The mode comes from [`SourceOptions`] (format, size, rate); one the device does not
/// offer is [`CaptureError::Config`] listing what it does offer. The device missing or
/// vanishing (unplugged: `ENOENT`, `ENODEV`, `EIO`), busy, or silent for 10 s is
/// [`CaptureError::Disconnected`]; permission denied is [`CaptureError::Config`].
pub struct V4l2 {
    path: PathBuf,
    device: Box<dyn V4l2Device>,
    options: SourceOptions,
    negotiated: Option<Negotiated>,
}

impl V4l2 {
    /// The kernel device at `path` (e.g. `/dev/video0`).
    #[cfg(feature = "v4l")]
    pub fn new(path: impl AsRef<Path>, options: SourceOptions) -> V4l2 {
        let path = path.as_ref().to_path_buf();
        V4l2::with_device(&path, Box::new(LinuxDevice::new(&path)), options)
    }

    /// A camera reached through `device`, named `path` in logs (tests use
    /// [`FakeV4l2Device`]).
    pub fn with_device(
        path: impl AsRef<Path>,
        device: Box<dyn V4l2Device>,
        options: SourceOptions,
    ) -> V4l2 {
        V4l2 {
            path: path.as_ref().to_path_buf(),
            device,
            options,
            negotiated: None,
        }
    }

    /// The mode in use, once opened.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }

    fn disconnected(&self, reason: String) -> CaptureError {
        CaptureError::Disconnected {
            source_name: self.describe(),
            reason,
        }
    }

    fn config(&self, reason: String) -> CaptureError {
        CaptureError::Config {
            source_name: self.describe(),
            reason,
        }
    }

    /// An error from opening or querying the device.
    fn open_error(&self, what: &str, e: io::Error) -> CaptureError {
        match e.kind() {
            io::ErrorKind::PermissionDenied => self.config(format!(
                "{what}: {e} (add the user to the `video` group: sudo usermod -aG video $USER)"
            )),
            io::ErrorKind::InvalidInput => self.config(format!("{what}: {e}")),
            _ => self.disconnected(format!("{what}: {e}")),
        }
    }

    fn try_open(&mut self) -> Result<(), CaptureError> {
        self.device
            .open()
            .map_err(|e| self.open_error("cannot open", e))?;
        let mode = match choose_mode(self.device.as_mut(), &self.options) {
            Ok(mode) => mode,
            Err(ModeError::Io(e)) => return Err(self.open_error("cannot list modes", e)),
            Err(ModeError::NotOffered(why)) => {
                let offered = describe_modes(self.device.as_mut())
                    .unwrap_or_else(|e| format!("  (cannot list the modes: {e})"));
                return Err(self.config(format!("{why}; the device offers:\n{offered}")));
            }
        };
        let negotiated = self.device.start(&mode).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => self.config(format!(
                "the driver rejected {} {}x{}: {e}",
                mode.format, mode.width, mode.height
            )),
            _ => self.disconnected(format!("cannot start streaming: {e}")),
        })?;
        if PixelFormat::from_fourcc(negotiated.fourcc) != Some(mode.format)
            || (negotiated.width, negotiated.height) != (mode.width, mode.height)
        {
            return Err(self.config(format!(
                "asked for {} {}x{}, the driver set {} {}x{}",
                mode.format,
                mode.width,
                mode.height,
                fourcc_str(negotiated.fourcc),
                negotiated.width,
                negotiated.height
            )));
        }
        log::info!(
            "{}: streaming {} {}x{}{}",
            self.path.display(),
            mode.format,
            negotiated.width,
            negotiated.height,
            negotiated
                .fps
                .map(|f| format!(" at {f} fps"))
                .unwrap_or_default()
        );
        self.negotiated = Some(negotiated);
        Ok(())
    }
}

impl FrameSource for V4l2 {
    fn describe(&self) -> String {
        let path = self.path.display();
        match self.negotiated {
            Some(n) => format!(
                "{path} {} {}x{}{}",
                fourcc_str(n.fourcc),
                n.width,
                n.height,
                n.fps.map(|f| format!("@{f}")).unwrap_or_default()
            ),
            None => path.to_string(),
        }
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        self.device.close();
        self.negotiated = None;
        let r = self.try_open();
        if r.is_err() {
            self.device.close();
            self.negotiated = None;
        }
        r
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        let Some(n) = self.negotiated else {
            return Err(self.disconnected("not open".into()));
        };
        let frame = match self.device.read_frame() {
            Ok(bytes) => to_frame(&n, bytes),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(e.to_string()),
            Err(e) => {
                let reason = match e.kind() {
                    io::ErrorKind::TimedOut => "no frame for 10 s".to_string(),
                    _ => e.to_string(),
                };
                self.device.close();
                self.negotiated = None;
                return Err(self.disconnected(reason));
            }
        };
        frame.map(Some).map_err(|reason| CaptureError::Corrupt {
            source_name: self.describe(),
            frame: 0,
            reason,
        })
    }
}

/// Copies one driver buffer into a frame, checking it holds what the mode promises.
fn to_frame(n: &Negotiated, bytes: &[u8]) -> Result<FrameData, String> {
    match PixelFormat::from_fourcc(n.fourcc) {
        Some(PixelFormat::Mjpeg) => {
            if bytes.is_empty() {
                return Err("empty buffer".into());
            }
            if !bytes.starts_with(&[0xFF, 0xD8]) {
                return Err(format!("not a JPEG ({} bytes)", bytes.len()));
            }
            Ok(FrameData::Encoded(bytes.to_vec()))
        }
        Some(PixelFormat::Yuyv) => {
            // Some drivers report bytesperline 0: rows are then packed.
            let row = n.width.saturating_mul(2);
            let stride = n.stride.max(row);
            // u64: driver-reported sizes must not overflow on 32-bit boards.
            let full = u64::from(stride) * u64::from(n.height);
            let needed = full.saturating_sub(u64::from(stride - row));
            if (bytes.len() as u64) < needed || n.height == 0 {
                return Err(format!(
                    "short YUYV frame: {} of {needed} bytes",
                    bytes.len()
                ));
            }
            // `full` may exceed the buffer only when the last row is unpadded.
            let keep = usize::try_from(full).map_or(bytes.len(), |f| f.min(bytes.len()));
            Ok(FrameData::Yuyv {
                width: n.width,
                height: n.height,
                stride,
                data: bytes[..keep].to_vec(),
            })
        }
        None => Err(format!("unexpected format {}", fourcc_str(n.fourcc))),
    }
}

/// One mode of a [`FakeV4l2Device`] and the frames it plays in it.
#[derive(Debug, Clone)]
pub struct FakeMode {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row reported for YUYV (0: 2 × width).
    pub stride: u32,
    /// Rates offered.
    pub fps: Vec<f32>,
    /// Frames played in a loop (driver buffers: JPEGs for MJPG, raw rows for YUYV).
    pub frames: Vec<Vec<u8>>,
}

/// Shared switches and counters of a [`FakeV4l2Device`], kept by a test while the device
/// is owned by the capture loop.
#[derive(Debug, Default)]
pub struct FakeControl {
    gone: AtomicBool,
    vanish_after: AtomicU64,
    /// Successful opens.
    pub opens: AtomicU64,
    /// Failed opens (while gone).
    pub failed_opens: AtomicU64,
    /// Frames delivered.
    pub reads: AtomicU64,
}

impl FakeControl {
    /// Unplugs the camera: reads fail with `ENODEV`, opens with `ENOENT`.
    pub fn vanish(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    /// Unplugs the camera once `n` more frames in total have been delivered (counting
    /// from the start, as [`FakeControl::reads`] does); 0 disables.
    pub fn vanish_after(&self, reads: u64) {
        self.vanish_after.store(reads, Ordering::SeqCst);
    }

    /// Plugs the camera back in.
    pub fn reappear(&self) {
        self.vanish_after.store(0, Ordering::SeqCst);
        self.gone.store(false, Ordering::SeqCst);
    }

    /// Whether the camera is currently unplugged.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// A [`V4l2Device`] without hardware: offers the given modes, plays recorded frames at a
/// fixed interval, and can vanish and reappear through its [`FakeControl`]. For tests and
/// demonstrations on machines without a camera.
pub struct FakeV4l2Device {
    modes: Vec<FakeMode>,
    interval: Duration,
    control: Arc<FakeControl>,
    open: bool,
    current: Option<usize>,
    next: usize,
}

impl FakeV4l2Device {
    /// A device offering `modes`, delivering a frame every `interval`.
    pub fn new(modes: Vec<FakeMode>, interval: Duration) -> FakeV4l2Device {
        FakeV4l2Device {
            modes,
            interval,
            control: Arc::new(FakeControl::default()),
            open: false,
            current: None,
            next: 0,
        }
    }

    /// The switches and counters.
    pub fn control(&self) -> Arc<FakeControl> {
        self.control.clone()
    }

    fn check_present(&self, enodev: bool) -> io::Result<()> {
        if self.control.is_gone() {
            return Err(if enodev {
                io::Error::from_raw_os_error(ENODEV)
            } else {
                io::Error::new(io::ErrorKind::NotFound, "No such file or directory")
            });
        }
        if !self.open {
            return Err(io::Error::other("device not open"));
        }
        Ok(())
    }
}

impl V4l2Device for FakeV4l2Device {
    fn open(&mut self) -> io::Result<()> {
        if self.control.is_gone() {
            self.control.failed_opens.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory",
            ));
        }
        self.open = true;
        self.control.opens.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn formats(&mut self) -> io::Result<Vec<FourCc>> {
        self.check_present(true)?;
        let mut formats: Vec<FourCc> = Vec::new();
        for m in &self.modes {
            if !formats.contains(&m.format.fourcc()) {
                formats.push(m.format.fourcc());
            }
        }
        Ok(formats)
    }

    fn frame_sizes(&mut self, fourcc: FourCc) -> io::Result<FrameSizes> {
        self.check_present(true)?;
        Ok(FrameSizes::Discrete(
            self.modes
                .iter()
                .filter(|m| m.format.fourcc() == fourcc)
                .map(|m| (m.width, m.height))
                .collect(),
        ))
    }

    fn frame_rates(&mut self, fourcc: FourCc, width: u32, height: u32) -> io::Result<FrameRates> {
        self.check_present(true)?;
        Ok(self
            .modes
            .iter()
            .find(|m| m.format.fourcc() == fourcc && (m.width, m.height) == (width, height))
            .map_or(FrameRates::Unknown, |m| FrameRates::Discrete(m.fps.clone())))
    }

    fn start(&mut self, mode: &V4l2Mode) -> io::Result<Negotiated> {
        self.check_present(true)?;
        let index = self
            .modes
            .iter()
            .position(|m| {
                m.format == mode.format && (m.width, m.height) == (mode.width, mode.height)
            })
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let m = &self.modes[index];
        self.current = Some(index);
        Ok(Negotiated {
            fourcc: m.format.fourcc(),
            width: m.width,
            height: m.height,
            stride: if m.stride == 0 { m.width * 2 } else { m.stride },
            fps: mode.fps.or_else(|| m.fps.first().copied()),
        })
    }

    fn read_frame(&mut self) -> io::Result<&[u8]> {
        self.check_present(true)?;
        let limit = self.control.vanish_after.load(Ordering::SeqCst);
        if limit > 0 && self.control.reads.load(Ordering::SeqCst) >= limit {
            self.control.vanish();
            return Err(io::Error::from_raw_os_error(ENODEV));
        }
        let index = self
            .current
            .ok_or_else(|| io::Error::other("not streaming"))?;
        std::thread::sleep(self.interval);
        let frames = &self.modes[index].frames;
        if frames.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no recorded frames",
            ));
        }
        let i = self.next % frames.len();
        self.next += 1;
        self.control.reads.fetch_add(1, Ordering::SeqCst);
        Ok(&frames[i])
    }

    fn close(&mut self) {
        self.open = false;
        self.current = None;
    }
}

#[cfg(feature = "v4l")]
pub use linux::LinuxDevice;

#[cfg(feature = "v4l")]
mod linux {
    use std::io;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use v4l::buffer::{Flags, Type};
    use v4l::frameinterval::FrameIntervalEnum;
    use v4l::framesize::FrameSizeEnum;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::io::traits::Stream as StreamControl;
    use v4l::video::capture::Parameters;
    use v4l::video::Capture;
    use v4l::{Device, Format, FourCC, Fraction};

    use super::{FourCc, FrameRates, FrameSizes, Negotiated, V4l2Device, V4l2Mode};

    /// Driver buffers: enough for the driver to keep filling while one is being copied.
    const BUFFERS: u32 = 4;
    /// A camera that delivers nothing for this long is treated as gone.
    const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

    /// A kernel V4L2 device (MMAP streaming, 4 buffers) through the `v4l` crate.
    pub struct LinuxDevice {
        path: PathBuf,
        // Field order matters: the stream (its buffers) is released before the device.
        stream: Option<Stream<'static>>,
        device: Option<Device>,
    }

    impl LinuxDevice {
        /// The device at `path`, not yet opened.
        pub fn new(path: &Path) -> LinuxDevice {
            LinuxDevice {
                path: path.to_path_buf(),
                stream: None,
                device: None,
            }
        }

        fn device(&self) -> io::Result<&Device> {
            self.device
                .as_ref()
                .ok_or_else(|| io::Error::other("device not open"))
        }
    }

    fn fps_of(interval: &Fraction) -> Option<f32> {
        (interval.numerator > 0 && interval.denominator > 0)
            .then(|| interval.denominator as f32 / interval.numerator as f32)
    }

    impl V4l2Device for LinuxDevice {
        fn open(&mut self) -> io::Result<()> {
            self.close();
            let device = Device::with_path(&self.path)?;
            let caps = device.query_caps()?;
            let flags = v4l::capability::Flags::VIDEO_CAPTURE | v4l::capability::Flags::STREAMING;
            if !caps.capabilities.contains(flags) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} ({}) is not a streaming video capture device",
                        self.path.display(),
                        caps.card
                    ),
                ));
            }
            self.device = Some(device);
            Ok(())
        }

        fn formats(&mut self) -> io::Result<Vec<FourCc>> {
            // `v4l` panics on a non-UTF-8 format description: keep that a plain error.
            let device = self.device()?;
            let formats = catch_unwind(AssertUnwindSafe(|| device.enum_formats()))
                .map_err(|_| io::Error::other("the driver returned an unreadable format list"))??;
            Ok(formats.iter().map(|f| f.fourcc.repr).collect())
        }

        fn frame_sizes(&mut self, fourcc: FourCc) -> io::Result<FrameSizes> {
            let sizes = self.device()?.enum_framesizes(FourCC::new(&fourcc))?;
            let mut discrete = Vec::new();
            for size in sizes {
                match size.size {
                    FrameSizeEnum::Discrete(d) => discrete.push((d.width, d.height)),
                    FrameSizeEnum::Stepwise(s) => {
                        return Ok(FrameSizes::Stepwise {
                            min: (s.min_width, s.min_height),
                            max: (s.max_width, s.max_height),
                            step: (s.step_width.max(1), s.step_height.max(1)),
                        })
                    }
                }
            }
            Ok(FrameSizes::Discrete(discrete))
        }

        fn frame_rates(
            &mut self,
            fourcc: FourCc,
            width: u32,
            height: u32,
        ) -> io::Result<FrameRates> {
            // Drivers that do not enumerate intervals answer EINVAL/ENOTTY: not an error.
            let Ok(intervals) =
                self.device()?
                    .enum_frameintervals(FourCC::new(&fourcc), width, height)
            else {
                return Ok(FrameRates::Unknown);
            };
            let mut rates = Vec::new();
            for interval in intervals {
                match interval.interval {
                    FrameIntervalEnum::Discrete(f) => rates.extend(fps_of(&f)),
                    FrameIntervalEnum::Stepwise(s) => {
                        // The longest interval is the lowest rate.
                        if let (Some(min), Some(max)) = (fps_of(&s.max), fps_of(&s.min)) {
                            return Ok(FrameRates::Range { min, max });
                        }
                    }
                }
            }
            Ok(if rates.is_empty() {
                FrameRates::Unknown
            } else {
                FrameRates::Discrete(rates)
            })
        }

        fn start(&mut self, mode: &V4l2Mode) -> io::Result<Negotiated> {
            release_stream(&self.path, self.stream.take());
            let device = self.device()?;
            let wanted = Format::new(mode.width, mode.height, FourCC::new(&mode.format.fourcc()));
            let actual = device.set_format(&wanted)?;
            let mut fps = None;
            if let Some(rate) = mode.fps {
                // Millisecond precision: 30 → 1000/30000, 7.5 → 1000/7500.
                let interval = Fraction::new(1000, (rate * 1000.0).round().max(1.0) as u32);
                let params = device.set_params(&Parameters::new(interval))?;
                fps = fps_of(&params.interval);
            } else if let Ok(params) = device.params() {
                fps = fps_of(&params.interval);
            }
            let mut stream = Stream::with_buffers(device, Type::VideoCapture, BUFFERS)?;
            stream.set_timeout(FRAME_TIMEOUT);
            self.stream = Some(stream);
            Ok(Negotiated {
                fourcc: actual.fourcc.repr,
                width: actual.width,
                height: actual.height,
                stride: actual.stride,
                fps,
            })
        }

        fn read_frame(&mut self) -> io::Result<&[u8]> {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| io::Error::other("not streaming"))?;
            let (buf, meta) = CaptureStream::next(stream)?;
            if meta.flags.contains(Flags::ERROR) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the driver flagged the frame as corrupt",
                ));
            }
            let used = (meta.bytesused as usize).min(buf.len());
            Ok(&buf[..used])
        }

        fn close(&mut self) {
            // `v4l` panics when releasing buffers or closing fails with anything but
            // ENODEV (e.g. a half-dead USB device answering EIO). A leaked buffer set is
            // better than a capture thread killed by a panic.
            release_stream(&self.path, self.stream.take());
            release(&self.path, self.device.take());
        }
    }

    /// Stops and drops a stream. When stopping fails with anything but ENODEV, `v4l`'s
    /// drop would panic, and its buffer release panicking during that unwind would abort
    /// the process: such a stream is leaked instead (a few mapped buffers of a device that
    /// is going away anyway).
    fn release_stream(path: &Path, stream: Option<Stream<'static>>) {
        let Some(mut stream) = stream else { return };
        match StreamControl::stop(&mut stream) {
            Err(e) if e.raw_os_error() != Some(super::ENODEV) => {
                log::warn!(
                    "{}: cannot stop streaming ({e}); buffers leaked",
                    path.display()
                );
                std::mem::forget(stream);
            }
            _ => release(path, Some(stream)),
        }
    }

    /// Drops `value` (a stream or device), containing the panic `v4l` raises when the
    /// kernel refuses to release it.
    fn release<T>(path: &Path, value: Option<T>) {
        if let Some(value) = value {
            if catch_unwind(AssertUnwindSafe(move || drop(value))).is_err() {
                log::warn!(
                    "{}: error while releasing the device (ignored)",
                    path.display()
                );
            }
        }
    }

    impl Drop for LinuxDevice {
        fn drop(&mut self) {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_defaults() {
        let d = FrameSizes::Discrete(vec![(1920, 1080), (640, 480), (320, 240), (160, 120)]);
        assert_eq!(d.pick(None, None), Some((640, 480)));
        assert_eq!(d.pick(Some(320), None), Some((320, 240)));
        let d = FrameSizes::Discrete(vec![(1920, 1080), (1280, 720), (160, 120)]);
        assert_eq!(d.pick(None, None), Some((1280, 720)));
        let s = FrameSizes::Stepwise {
            min: (32, 32),
            max: (2592, 1944),
            step: (2, 2),
        };
        assert_eq!(s.pick(None, None), Some((640, 480)));
        assert!(s.contains(1024, 768));
        assert!(!s.contains(1023, 768));
        assert!(FrameRates::Discrete(vec![30.0, 15.0]).contains(29.97));
        assert!(!FrameRates::Discrete(vec![30.0, 15.0]).contains(25.0));
    }
}
