//! A synthetic camera: moving colour bars or a moving gradient, for trying the service
//! without a camera and for tests. Frame *n* depends on *n* only, so runs are repeatable.

use image::RgbImage;

use super::replay::Pacer;
use super::{CaptureError, FrameData, FrameSource};

/// Size of a pattern frame when none is configured.
pub const DEFAULT_PATTERN_SIZE: (u32, u32) = (320, 240);
/// Frame rate of a pattern when none is configured.
pub const DEFAULT_PATTERN_FPS: f32 = 10.0;
/// Largest pattern side accepted (a typo like 64000 should not allocate gigabytes).
const MAX_PATTERN_SIDE: u32 = 8192;

/// What a [`Pattern`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatternKind {
    /// The eight 100 % colour bars (white, yellow, cyan, green, magenta, red, blue, black)
    /// scrolling left, over a grey ramp in the bottom quarter.
    #[default]
    Bars,
    /// A diagonal red/green gradient whose blue channel cycles.
    Gradient,
}

impl PatternKind {
    /// The name used in source strings (`pattern:bars`).
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::Bars => "bars",
            PatternKind::Gradient => "gradient",
        }
    }
}

const BARS: [[u8; 3]; 8] = [
    [255, 255, 255],
    [255, 255, 0],
    [0, 255, 255],
    [0, 255, 0],
    [255, 0, 255],
    [255, 0, 0],
    [0, 0, 255],
    [0, 0, 0],
];

/// A synthetic source of [`FrameData::Rgb`] frames, paced at a frame rate.
pub struct Pattern {
    kind: PatternKind,
    width: u32,
    height: u32,
    fps: f32,
    limit: Option<u64>,
    frame: u64,
    pacer: Pacer,
}

impl Pattern {
    /// A pattern of `kind`, `width × height`, at `fps` frames per second (0: unpaced),
    /// ending after `limit` frames when given.
    pub fn new(
        kind: PatternKind,
        width: u32,
        height: u32,
        fps: f32,
        limit: Option<u64>,
    ) -> Pattern {
        Pattern {
            kind,
            width,
            height,
            fps,
            limit,
            frame: 0,
            pacer: Pacer::new(Some(fps)),
        }
    }

    /// Frame `n` of a `kind` pattern at `width × height` (what the source emits as its
    /// `n`-th frame, from 0).
    pub fn render(kind: PatternKind, width: u32, height: u32, n: u64) -> RgbImage {
        let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
        match kind {
            PatternKind::Bars => {
                let shift = n * 4;
                let ramp_from = h * 3 / 4;
                RgbImage::from_fn(width, height, |x, y| {
                    let (x, y) = (u64::from(x), u64::from(y));
                    if y >= ramp_from {
                        let v = (((x + shift) % w) * 255 / w.max(2).saturating_sub(1)).min(255);
                        image::Rgb([v as u8; 3])
                    } else {
                        let bar = ((x + shift) % w) * 8 / w;
                        image::Rgb(BARS[bar as usize % 8])
                    }
                })
            }
            PatternKind::Gradient => {
                let blue = ((n * 8) % 512) as i64;
                let blue = if blue > 255 { 511 - blue } else { blue } as u8;
                RgbImage::from_fn(width, height, |x, y| {
                    let r = u64::from(x) * 255 / w.max(2).saturating_sub(1);
                    let g = u64::from(y) * 255 / h.max(2).saturating_sub(1);
                    image::Rgb([r.min(255) as u8, g.min(255) as u8, blue])
                })
            }
        }
    }
}

impl FrameSource for Pattern {
    fn describe(&self) -> String {
        format!(
            "pattern:{} {}x{}@{}fps",
            self.kind.name(),
            self.width,
            self.height,
            self.fps
        )
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        if self.width == 0
            || self.height == 0
            || self.width > MAX_PATTERN_SIDE
            || self.height > MAX_PATTERN_SIDE
        {
            return Err(CaptureError::Config {
                source_name: self.describe(),
                reason: format!(
                    "size {}x{} out of range (1..={MAX_PATTERN_SIDE} per side)",
                    self.width, self.height
                ),
            });
        }
        self.pacer.reset();
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameData>, CaptureError> {
        if self.limit.is_some_and(|limit| self.frame >= limit) {
            return Ok(None);
        }
        self.pacer.wait();
        let image = Pattern::render(self.kind, self.width, self.height, self.frame);
        self.frame += 1;
        Ok(Some(FrameData::Rgb(image)))
    }
}
