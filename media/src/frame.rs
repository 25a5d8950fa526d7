//! Raw media frames: planar YUV video and 48 kHz PCM audio, shared by reference count so one
//! captured frame feeds the preview and the encoder without a copy.

use std::sync::Arc;

/// How a video frame's pixels are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Planar Y, U, V; chroma halved both ways (YUV 4:2:0, 3 planes).
    I420,
    /// Y plane, then one interleaved UV plane (YUV 4:2:0, 2 planes).
    Nv12,
}

/// Which YUV→RGB matrix a frame's samples use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ColorMatrix {
    /// ITU-R BT.601 (SD; also what cameras, the test source and most WebRTC encoders give).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD).
    Bt709,
}

/// How a frame's YUV samples map to colour: the matrix and the value range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ColorSpace {
    /// The matrix.
    pub matrix: ColorMatrix,
    /// Full range (0–255, "JPEG") rather than limited/video range (16–235 luma, 16–240 chroma).
    pub full_range: bool,
}

/// One plane of a video frame inside its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plane {
    /// Byte offset of the plane's first row in [`VideoFrame::data`].
    pub offset: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Rows.
    pub rows: usize,
}

/// One video frame.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// Layout.
    pub format: PixelFormat,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// The planes, Y first (I420: Y, U, V; NV12: Y, UV and an unused third).
    pub planes: [Plane; 3],
    /// Every plane's bytes, in one allocation.
    pub data: Vec<u8>,
    /// Presentation time in microseconds on the source's clock (0 at its first frame).
    pub pts_us: i64,
    /// Wall-clock capture time, microseconds since the Unix epoch: a receiver on the same
    /// machine compares it with its own clock to measure delay.
    pub capture_time_us: u64,
    /// How the samples map to colour (renderers pick their conversion from it).
    pub color: ColorSpace,
}

/// A frame shared between consumers.
pub type SharedVideoFrame = Arc<VideoFrame>;

impl VideoFrame {
    /// A black I420 frame with tightly packed planes.
    pub fn new_i420(width: u32, height: u32) -> VideoFrame {
        let (w, h) = (width as usize, height as usize);
        let planes = Self::i420_planes(width, height);
        let mut data = vec![0u8; w * h + 2 * w.div_ceil(2) * h.div_ceil(2)];
        data[..w * h].fill(16);
        data[w * h..].fill(128);
        VideoFrame {
            format: PixelFormat::I420,
            width,
            height,
            planes,
            data,
            pts_us: 0,
            capture_time_us: 0,
            color: ColorSpace::default(),
        }
    }

    /// Tightly packed I420 planes for `width`×`height`: Y, then U, then V.
    pub fn i420_planes(width: u32, height: u32) -> [Plane; 3] {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        [
            Plane {
                offset: 0,
                stride: w,
                rows: h,
            },
            Plane {
                offset: w * h,
                stride: cw,
                rows: ch,
            },
            Plane {
                offset: w * h + cw * ch,
                stride: cw,
                rows: ch,
            },
        ]
    }

    /// The bytes of plane `i` (rows × stride).
    pub fn plane(&self, i: usize) -> &[u8] {
        let p = self.planes[i];
        let end = (p.offset + p.stride * p.rows).min(self.data.len());
        &self.data[p.offset.min(end)..end]
    }

    /// The bytes of plane `i`, writable.
    pub fn plane_mut(&mut self, i: usize) -> &mut [u8] {
        let p = self.planes[i];
        let end = (p.offset + p.stride * p.rows).min(self.data.len());
        &mut self.data[p.offset.min(end)..end]
    }

    /// Number of planes in use.
    pub fn plane_count(&self) -> usize {
        match self.format {
            PixelFormat::I420 => 3,
            PixelFormat::Nv12 => 2,
        }
    }

    /// The luma sample at (x, y).
    pub fn luma(&self, x: usize, y: usize) -> u8 {
        let p = self.planes[0];
        self.data
            .get(p.offset + y * p.stride + x)
            .copied()
            .unwrap_or(0)
    }
}

/// One block of 48 kHz PCM audio, interleaved signed 16-bit.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioFrame {
    /// Always 48,000 inside the engine.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u16,
    /// `frames × channels` samples.
    pub samples: Vec<i16>,
    /// Presentation time in microseconds on the source's clock.
    pub pts_us: i64,
    /// Wall-clock capture time, microseconds since the Unix epoch.
    pub capture_time_us: u64,
}

/// An audio frame shared between consumers.
pub type SharedAudioFrame = Arc<AudioFrame>;

/// The engine's audio sample rate.
pub const SAMPLE_RATE: u32 = 48_000;

impl AudioFrame {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Duration in microseconds.
    pub fn duration_us(&self) -> i64 {
        (self.frames() as i64 * 1_000_000) / i64::from(self.sample_rate.max(1))
    }
}

/// Microseconds since the Unix epoch, now.
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Peak signal-to-noise ratio of the luma planes of two same-sized frames, in dB
/// (`f64::INFINITY` when identical).
pub fn psnr_y(a: &VideoFrame, b: &VideoFrame) -> f64 {
    if a.width != b.width || a.height != b.height {
        return 0.0;
    }
    let (w, h) = (a.width as usize, a.height as usize);
    let (pa, pb) = (a.planes[0], b.planes[0]);
    let mut sse = 0u64;
    for y in 0..h {
        let ra = &a.data[pa.offset + y * pa.stride..pa.offset + y * pa.stride + w];
        let rb = &b.data[pb.offset + y * pb.stride..pb.offset + y * pb.stride + w];
        for (x, z) in ra.iter().zip(rb) {
            let d = i64::from(*x) - i64::from(*z);
            sse += (d * d) as u64;
        }
    }
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / (w * h) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}
