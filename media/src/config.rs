//! Video settings and the seed SDK's presets (ZEGO's `ZegoVideoConfigPreset`: 180p … 1080p with
//! their default bitrates and 15 fps).

use crate::error::MediaError;

/// The seed SDK's video presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoPreset {
    /// 320×180, 300 kbps.
    P180,
    /// 480×270, 400 kbps.
    P270,
    /// 640×360, 600 kbps.
    P360,
    /// 960×540, 1200 kbps.
    P540,
    /// 1280×720, 1500 kbps.
    P720,
    /// 1920×1080, 3000 kbps.
    P1080,
}

impl VideoPreset {
    /// Every preset, smallest first.
    pub const ALL: [VideoPreset; 6] = [
        VideoPreset::P180,
        VideoPreset::P270,
        VideoPreset::P360,
        VideoPreset::P540,
        VideoPreset::P720,
        VideoPreset::P1080,
    ];

    /// `"720p"` and the like.
    pub fn name(self) -> &'static str {
        match self {
            VideoPreset::P180 => "180p",
            VideoPreset::P270 => "270p",
            VideoPreset::P360 => "360p",
            VideoPreset::P540 => "540p",
            VideoPreset::P720 => "720p",
            VideoPreset::P1080 => "1080p",
        }
    }

    /// Parses `"720p"` (or `"720"`).
    pub fn parse(text: &str) -> Option<VideoPreset> {
        let t = text.trim().trim_end_matches(['p', 'P']);
        VideoPreset::ALL
            .into_iter()
            .find(|p| p.name().trim_end_matches('p') == t)
    }
}

/// How a channel's video is captured and encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoConfig {
    /// Encoded width (even).
    pub width: u32,
    /// Encoded height (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate, constant.
    pub bitrate_kbps: u32,
    /// Seconds between keyframes (a player can also ask for one at any time).
    pub keyframe_interval_s: u32,
    /// Simulcast layers sent (1: none; 2 or 3: also half and quarter size, see
    /// [`VideoConfig::layers`]).
    pub simulcast_layers: u8,
}

/// The share of the full layer's bitrate each simulcast layer gets (720p 1500 kbps → 360p
/// 500 → 180p 150, the and LiveKit's usual ladder).
const LAYER_BITRATE_SHARE: [f64; 3] = [1.0, 1.0 / 3.0, 0.1];

impl VideoConfig {
    /// The seed SDK's preset: its resolution, its bitrate, 15 fps, a keyframe every 2 s.
    pub fn preset(p: VideoPreset) -> VideoConfig {
        let (width, height, bitrate_kbps) = match p {
            VideoPreset::P180 => (320, 180, 300),
            VideoPreset::P270 => (480, 270, 400),
            VideoPreset::P360 => (640, 360, 600),
            VideoPreset::P540 => (960, 540, 1200),
            VideoPreset::P720 => (1280, 720, 1500),
            VideoPreset::P1080 => (1920, 1080, 3000),
        };
        VideoConfig {
            width,
            height,
            fps: 15,
            bitrate_kbps,
            keyframe_interval_s: 2,
            simulcast_layers: 1,
        }
    }

    /// The same, sending `layers` simulcast layers (1–3): the full picture, then half and
    /// quarter width and height at a third and a tenth of the bitrate. Each is its own
    /// encoder and RTP stream; the relay gives each player the one its link carries.
    pub fn simulcast(mut self, layers: u8) -> VideoConfig {
        self.simulcast_layers = layers.clamp(1, 3);
        self
    }

    /// Each layer's own config, the full picture first.
    pub fn layers(&self) -> Vec<VideoConfig> {
        let even = |v: u32| (v & !1).max(16);
        (0..self.simulcast_layers.clamp(1, 3))
            .map(|i| {
                let scale = 1u32 << i;
                VideoConfig {
                    width: even(self.width / scale),
                    height: even(self.height / scale),
                    bitrate_kbps: ((f64::from(self.bitrate_kbps)
                        * LAYER_BITRATE_SHARE[usize::from(i)])
                    .round() as u32)
                        .max(30),
                    simulcast_layers: 1,
                    ..*self
                }
            })
            .collect()
    }

    /// The same with another frame rate.
    pub fn with_fps(mut self, fps: u32) -> VideoConfig {
        self.fps = fps;
        self
    }

    /// The same with another bitrate.
    pub fn with_bitrate_kbps(mut self, kbps: u32) -> VideoConfig {
        self.bitrate_kbps = kbps;
        self
    }

    /// Frames between keyframes.
    pub fn gop_frames(&self) -> u32 {
        (self.fps * self.keyframe_interval_s.max(1)).max(1)
    }

    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), MediaError> {
        let dims = |v: u32| (16..=4096).contains(&v) && v.is_multiple_of(2);
        if !dims(self.width) || !dims(self.height) {
            return Err(MediaError::InvalidConfig(format!(
                "{}x{}: width and height must be even and 16-4096",
                self.width, self.height
            )));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(MediaError::InvalidConfig(format!(
                "fps {} not in 1-120",
                self.fps
            )));
        }
        if !(10..=100_000).contains(&self.bitrate_kbps) {
            return Err(MediaError::InvalidConfig(format!(
                "bitrate {} kbps not in 10-100000",
                self.bitrate_kbps
            )));
        }
        Ok(())
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig::preset(VideoPreset::P360)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulcast_ladder_halves_the_picture_and_thins_the_bitrate() {
        let c = VideoConfig::preset(VideoPreset::P720)
            .with_fps(30)
            .simulcast(3);
        let l: Vec<(u32, u32, u32)> = c
            .layers()
            .iter()
            .map(|l| (l.width, l.height, l.bitrate_kbps))
            .collect();
        assert_eq!(l, [(1280, 720, 1500), (640, 360, 500), (320, 180, 150)]);
        assert!(
            c.layers()
                .iter()
                .all(|l| l.fps == 30 && l.validate().is_ok())
        );
        assert_eq!(VideoConfig::default().layers().len(), 1);
        assert_eq!(VideoConfig::default().simulcast(9).layers().len(), 3);
    }

    #[test]
    fn presets_match_the_seed_sdk() {
        let c = VideoConfig::preset(VideoPreset::P720);
        assert_eq!(
            (c.width, c.height, c.fps, c.bitrate_kbps),
            (1280, 720, 15, 1500)
        );
        assert_eq!(VideoPreset::parse("1080p"), Some(VideoPreset::P1080));
        assert_eq!(VideoPreset::parse("360"), Some(VideoPreset::P360));
        assert_eq!(VideoPreset::parse("4k"), None);
        for p in VideoPreset::ALL {
            assert!(VideoConfig::preset(p).validate().is_ok());
        }
        assert!(VideoConfig { width: 641, ..c }.validate().is_err());
        assert!(c.with_fps(0).validate().is_err());
    }
}
