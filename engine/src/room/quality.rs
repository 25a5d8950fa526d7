//! Quality reports: turning the media threads' running counters into the once-a-second
//! `PublisherQualityUpdate` / `PlayerQualityUpdate` events, and the bandwidth estimate into the
//! encoder's target. Pure arithmetic; the connection task reads the counters and the stats.

use crate::room::events::{Event, MediaPath};

/// Per-interval differences of monotonically growing counters.
#[derive(Clone, Copy, Debug)]
pub struct Deltas<const N: usize> {
    last: [u64; N],
}

impl<const N: usize> Default for Deltas<N> {
    fn default() -> Self {
        Deltas { last: [0; N] }
    }
}

impl<const N: usize> Deltas<N> {
    /// How much each counter grew since the previous call (0 for one that went backwards).
    pub fn step(&mut self, now: [u64; N]) -> [u64; N] {
        let mut d = [0; N];
        for i in 0..N {
            d[i] = now[i].saturating_sub(self.last[i]);
        }
        self.last = now;
        d
    }
}

/// A publisher's counters, in the order [`Deltas`] keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherCounts {
    /// Frames encoded and sent.
    pub frames: u64,
    /// Video bytes sent.
    pub video_bytes: u64,
    /// Audio bytes sent.
    pub audio_bytes: u64,
    /// Keyframes sent on request.
    pub keyframes_requested: u64,
    /// Packets the relay NACKed.
    pub nacked: u64,
}

impl PublisherCounts {
    fn to_array(self) -> [u64; 5] {
        [
            self.frames,
            self.video_bytes,
            self.audio_bytes,
            self.keyframes_requested,
            self.nacked,
        ]
    }
}

/// One second of a publisher, as its quality event (`rtt_ms` filled in from the stats).
pub fn publisher_report(
    stream_id: &str,
    deltas: &mut Deltas<5>,
    now: PublisherCounts,
    target_kbps: u32,
) -> Event {
    let [frames, video, audio, keyframes, nacked] = deltas.step(now.to_array());
    Event::PublisherQualityUpdate {
        stream_id: stream_id.to_string(),
        send_fps: frames as f64,
        video_kbps: video as f64 * 8.0 / 1000.0,
        audio_kbps: audio as f64 * 8.0 / 1000.0,
        target_kbps,
        keyframe_requests: keyframes,
        rtt_ms: 0.0,
        packets_lost: nacked,
        path: MediaPath::Unknown,
    }
}

/// A player's counters and gauges at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlayerCounts {
    /// Frames decoded (counter).
    pub frames: u64,
    /// Video bytes received (counter).
    pub bytes: u64,
    /// Packets lost so far (reported as the running total).
    pub lost: u64,
    /// Capture → decoded delay of the newest frame, µs.
    pub delay_us: u64,
    /// Interarrival jitter, µs.
    pub jitter_us: u64,
    /// Stutters so far.
    pub stutters: u64,
    /// Time spent in stutters so far, µs.
    pub stutter_us: u64,
    /// Keyframe requests (PLI) sent so far.
    pub keyframe_requests: u64,
    /// Missing packets that arrived after all (NACK resends, reordering) so far.
    pub repaired: u64,
    /// Lost packets rebuilt from FEC repair packets so far.
    pub fec_recovered: u64,
    /// Delay the player adds to smooth the picture (jitter buffer and playout), µs.
    pub playout_delay_us: u64,
    /// Audio frames (20 ms) played, concealed and lost so far.
    pub audio: AudioCounts,
    /// Keyframes received so far.
    pub keyframes: u64,
}

/// A player's audio frames (20 ms each) so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioCounts {
    /// Decoded from their own packet (first time or resent).
    pub played: u64,
    /// Rebuilt from the next packet's in-band FEC, or concealed (PLC).
    pub concealed: u64,
    /// Neither: silence.
    pub lost: u64,
}

/// One second of a player, as its quality event (`rtt_ms` filled in from the stats).
pub fn player_report(stream_id: &str, deltas: &mut Deltas<2>, now: PlayerCounts) -> Event {
    let [frames, bytes] = deltas.step([now.frames, now.bytes]);
    Event::PlayerQualityUpdate {
        stream_id: stream_id.to_string(),
        decode_fps: frames as f64,
        video_kbps: bytes as f64 * 8.0 / 1000.0,
        packets_lost: now.lost,
        delay_ms: now.delay_us as f64 / 1000.0,
        jitter_ms: now.jitter_us as f64 / 1000.0,
        rtt_ms: 0.0,
        stutters: now.stutters,
        stutter_ms: now.stutter_us as f64 / 1000.0,
        keyframe_requests: now.keyframe_requests,
        packets_repaired: now.repaired,
        packets_fec_recovered: now.fec_recovered,
        playout_delay_ms: now.playout_delay_us as f64 / 1000.0,
        audio_frames_played: now.audio.played,
        audio_frames_concealed: now.audio.concealed,
        audio_frames_lost: now.audio.lost,
        path: MediaPath::Unknown,
        keyframes_received: now.keyframes,
        video_layer: None,
        estimate_kbps: 0.0,
    }
}

/// The encoder's target from the bandwidth estimate: never above the configured bitrate, never
/// below a tenth of it (at least 1 kbps, at most 100 kbps as the floor).
pub fn encoder_target_kbps(estimate_bps: f64, configured_kbps: u32) -> u32 {
    let floor = (configured_kbps / 10).clamp(1, 100);
    ((estimate_bps / 1000.0) as u32).clamp(floor.min(configured_kbps), configured_kbps.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_per_interval_and_never_negative() {
        let mut d = Deltas::<2>::default();
        assert_eq!(d.step([30, 1000]), [30, 1000]);
        assert_eq!(d.step([60, 1500]), [30, 500]);
        assert_eq!(d.step([10, 1500]), [0, 0], "a reset counter reads as 0");
        assert_eq!(d.step([40, 1600]), [30, 100]);
    }

    #[test]
    fn publisher_report_turns_bytes_into_kbps() {
        let mut d = Deltas::default();
        let counts = PublisherCounts {
            frames: 30,
            video_bytes: 125_000,
            audio_bytes: 4_000,
            keyframes_requested: 1,
            nacked: 3,
        };
        let e = publisher_report("s", &mut d, counts, 800);
        assert_eq!(
            e,
            Event::PublisherQualityUpdate {
                stream_id: "s".into(),
                send_fps: 30.0,
                video_kbps: 1000.0,
                audio_kbps: 32.0,
                target_kbps: 800,
                keyframe_requests: 1,
                rtt_ms: 0.0,
                packets_lost: 3,
                path: MediaPath::Unknown,
            }
        );
        let e = publisher_report("s", &mut d, counts, 800);
        assert!(
            matches!(e, Event::PublisherQualityUpdate { send_fps, video_kbps, .. } if send_fps == 0.0 && video_kbps == 0.0)
        );
    }

    #[test]
    fn player_report_keeps_gauges_as_they_are() {
        let mut d = Deltas::default();
        let now = PlayerCounts {
            frames: 29,
            bytes: 62_500,
            lost: 4,
            delay_us: 4_500,
            jitter_us: 120,
            stutters: 1,
            stutter_us: 250_000,
            ..Default::default()
        };
        let Event::PlayerQualityUpdate {
            decode_fps,
            video_kbps,
            packets_lost,
            delay_ms,
            stutter_ms,
            ..
        } = player_report("s", &mut d, now)
        else {
            panic!("a player report");
        };
        assert_eq!(
            (decode_fps, video_kbps, packets_lost, delay_ms, stutter_ms),
            (29.0, 500.0, 4, 4.5, 250.0)
        );
    }

    #[test]
    fn the_encoder_target_follows_the_estimate_within_bounds() {
        assert_eq!(encoder_target_kbps(600_000.0, 1500), 600);
        assert_eq!(
            encoder_target_kbps(9_000_000.0, 1500),
            1500,
            "never above the config"
        );
        assert_eq!(
            encoder_target_kbps(10_000.0, 1500),
            100,
            "floor: 100 kbps at most"
        );
        assert_eq!(encoder_target_kbps(10_000.0, 300), 30, "floor: a tenth");
        assert_eq!(encoder_target_kbps(0.0, 5), 1);
    }
}
