//! The synthetic test source: a moving pattern with the frame number and capture time burned in
//! (see [`crate::stamp`]), and a tone generator with a findable marker.
//!
//! The picture is a textured gradient scrolling sideways with a bouncing box, so the encoder has
//! real motion to code; each frame is assembled from precomputed rows (a few memcpys), cheap
//! enough to run at 1080p60 on one core.

use crate::frame::{AudioFrame, SAMPLE_RATE, VideoFrame};
use crate::stamp::{self, Stamp};

/// Renders test-pattern frames of one size.
pub struct TestPattern {
    width: u32,
    height: u32,
    /// Luma texture twice as wide as the frame, so any horizontal offset is one copy per row.
    luma: Vec<u8>,
    /// Chroma (U, V) textures, likewise at half resolution.
    chroma: [Vec<u8>; 2],
}

const SPEED: usize = 4;

impl TestPattern {
    /// A pattern for `width`×`height` (both even).
    pub fn new(width: u32, height: u32) -> TestPattern {
        let (w, h) = (width as usize, height as usize);
        let tw = 2 * w;
        let mut luma = vec![0u8; tw * h];
        for y in 0..h {
            for x in 0..tw {
                let xx = x % w;
                let gradient = (xx * 160 / w.max(1) + y * 40 / h.max(1)) as u32;
                let checker = if ((xx / 16) + (y / 16)) % 2 == 0 {
                    18
                } else {
                    0
                };
                let ripple = ((xx * 7 + y * 3) % 23) as u32;
                luma[y * tw + x] = (24 + gradient + checker + ripple).min(235) as u8;
            }
        }
        let (cw, ch) = (w / 2, h / 2);
        let mut u = vec![0u8; 2 * cw * ch];
        let mut v = vec![0u8; 2 * cw * ch];
        for y in 0..ch {
            for x in 0..2 * cw {
                let xx = x % cw.max(1);
                u[y * 2 * cw + x] = (64 + xx * 128 / cw.max(1)) as u8;
                v[y * 2 * cw + x] = (192 - y * 128 / ch.max(1)) as u8;
            }
        }
        TestPattern {
            width,
            height,
            luma,
            chroma: [u, v],
        }
    }

    /// Frame `n`, stamped with `n` and `capture_time_us`.
    pub fn render(&self, n: u64, pts_us: i64, capture_time_us: u64) -> VideoFrame {
        let mut f = VideoFrame::new_i420(self.width, self.height);
        self.render_into(&mut f, n, pts_us, capture_time_us);
        f
    }

    /// Renders frame `n` into `f` (an I420 frame of this pattern's size).
    pub fn render_into(&self, f: &mut VideoFrame, n: u64, pts_us: i64, capture_time_us: u64) {
        let (w, h) = (self.width as usize, self.height as usize);
        let shift = (n as usize * SPEED) % w.max(1);
        let y = f.planes[0];
        for row in 0..h {
            let src = &self.luma[row * 2 * w + shift..row * 2 * w + shift + w];
            let dst = y.offset + row * y.stride;
            f.data[dst..dst + w].copy_from_slice(src);
        }
        let (cw, ch) = (w / 2, h / 2);
        for (i, tex) in self.chroma.iter().enumerate() {
            let p = f.planes[i + 1];
            let cshift = shift / 2;
            for row in 0..ch {
                let src = &tex[row * 2 * cw + cshift..row * 2 * cw + cshift + cw];
                let dst = p.offset + row * p.stride;
                f.data[dst..dst + cw].copy_from_slice(src);
            }
        }
        // A bright box bouncing across the lower part of the picture.
        let bw = (w / 8).max(2) & !1;
        let bh = (h / 6).max(2) & !1;
        let span_x = w.saturating_sub(bw).max(1);
        let span_y = h.saturating_sub(bh + h / 4).max(1);
        let t = n as usize * 6;
        let bx = (if (t / span_x).is_multiple_of(2) {
            t % span_x
        } else {
            span_x - t % span_x
        }) & !1;
        let by = (h / 4 + (t / 2) % span_y) & !1;
        for row in by..(by + bh).min(h) {
            let o = y.offset + row * y.stride + bx;
            if let Some(px) = f.data.get_mut(o..o + bw) {
                px.fill(220);
            }
        }
        f.pts_us = pts_us;
        f.capture_time_us = capture_time_us;
        stamp::burn(
            f,
            Stamp {
                frame_number: n as u32,
                capture_time_us,
            },
        );
    }
}

/// A 440 Hz tone in 20 ms frames; every `marker_every`-th frame is a 2 kHz burst instead, which
/// a receiver finds with [`marker_strength`].
pub struct ToneGenerator {
    channels: u16,
    phase: f64,
    frame: u64,
    marker_every: u64,
}

/// Samples per channel in a 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// The tone's frequency.
pub const TONE_HZ: f64 = 440.0;
/// The marker's frequency.
pub const MARKER_HZ: f64 = 2000.0;

impl ToneGenerator {
    /// A generator with a marker every `marker_every` frames (0: never).
    pub fn new(channels: u16, marker_every: u64) -> ToneGenerator {
        ToneGenerator {
            channels: channels.clamp(1, 2),
            phase: 0.0,
            frame: 0,
            marker_every,
        }
    }

    /// Whether frame `n` carries the marker.
    pub fn is_marker(&self, n: u64) -> bool {
        self.marker_every > 0 && n.is_multiple_of(self.marker_every)
    }

    /// The next 20 ms.
    pub fn next_frame(&mut self, capture_time_us: u64) -> AudioFrame {
        let n = self.frame;
        self.frame += 1;
        let hz = if self.is_marker(n) {
            MARKER_HZ
        } else {
            TONE_HZ
        };
        let step = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
        let mut samples = Vec::with_capacity(FRAME_SAMPLES * usize::from(self.channels));
        for _ in 0..FRAME_SAMPLES {
            let s = (self.phase.sin() * 12_000.0) as i16;
            self.phase = (self.phase + step) % (2.0 * std::f64::consts::PI);
            for _ in 0..self.channels {
                samples.push(s);
            }
        }
        AudioFrame {
            sample_rate: SAMPLE_RATE,
            channels: self.channels,
            samples,
            pts_us: (n * 20_000) as i64,
            capture_time_us,
        }
    }
}

/// Goertzel power of `hz` in the first channel of `samples`, normalised by length.
pub fn tone_power(samples: &[i16], channels: u16, hz: f64) -> f64 {
    let ch = usize::from(channels.max(1));
    let n = samples.len() / ch;
    if n == 0 {
        return 0.0;
    }
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for i in 0..n {
        let s = f64::from(samples[i * ch]) + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / (n as f64 * n as f64)
}

/// How much more marker than tone a block holds (> 1: marker present).
pub fn marker_strength(samples: &[i16], channels: u16) -> f64 {
    tone_power(samples, channels, MARKER_HZ) / tone_power(samples, channels, TONE_HZ).max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_carry_their_stamp() {
        let p = TestPattern::new(640, 360);
        let a = p.render(1, 0, 111);
        let b = p.render(2, 33_333, 222);
        assert_ne!(a.data, b.data, "the picture moves");
        assert_eq!(
            stamp::read(&b),
            Some(Stamp {
                frame_number: 2,
                capture_time_us: 222
            })
        );
    }

    #[test]
    fn the_marker_is_found_only_where_it_is() {
        let mut g = ToneGenerator::new(1, 5);
        for n in 0..10 {
            let f = g.next_frame(0);
            assert_eq!(f.frames(), FRAME_SAMPLES);
            let strong = marker_strength(&f.samples, 1) > 1.0;
            assert_eq!(strong, n % 5 == 0, "frame {n}");
        }
    }
}
