//! Live controls the engine handle sets and the media threads read without waiting: a publish
//! channel's mutes and the SEI waiting for a frame, a played stream's mutes and volume.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use onair_media::frame::{AudioFrame, VideoFrame};
use onair_protocol::error::ErrorCode;
use onair_transport::sei::MAX_USER_DATA;

/// SEI messages a channel may queue per second (ZEGO's limit: one per frame at 30 fps).
pub const SEI_PER_SECOND: usize = 30;

/// SEI waits at most this long for a frame captured after it was sent; a stalled source then
/// takes it on the next frame it encodes, whenever that was captured.
const SEI_WAIT: Duration = Duration::from_millis(500);

/// SEI data waiting for its frame.
struct PendingSei {
    /// Sent at this wall-clock time (µs since the Unix epoch): the first frame captured at or
    /// after it carries the data.
    sent_us: u64,
    sent_at: Instant,
    data: Vec<u8>,
}

#[derive(Default)]
struct SeiQueue {
    pending: VecDeque<PendingSei>,
    /// When the calls of the last second were made.
    recent: VecDeque<Instant>,
}

/// One publish channel's controls, shared by the engine handle and its encode threads.
#[derive(Default)]
pub struct PublishControls {
    audio_muted: AtomicBool,
    video_muted: AtomicBool,
    /// Video encoders running for the channel (a restart may briefly overlap the old one).
    encoding: AtomicU32,
    sei: parking_lot::Mutex<SeiQueue>,
    /// Simulcast layers the relay said no player needs (not encoded until needed again).
    paused_layers: [AtomicBool; 3],
}

impl PublishControls {
    /// Mutes or unmutes the audio; returns whether that changed anything.
    pub fn set_audio_muted(&self, muted: bool) -> bool {
        self.audio_muted.swap(muted, Ordering::Relaxed) != muted
    }

    /// Mutes or unmutes the video; returns whether that changed anything.
    pub fn set_video_muted(&self, muted: bool) -> bool {
        self.video_muted.swap(muted, Ordering::Relaxed) != muted
    }

    /// The relay's word on which simulcast layers players need (0 first); the others pause.
    pub fn set_active_layers(&self, active: &[bool]) {
        for (i, paused) in self.paused_layers.iter().enumerate() {
            // The full picture never pauses.
            let pause = i > 0 && !active.get(i).copied().unwrap_or(true);
            paused.store(pause, Ordering::Relaxed);
        }
    }

    /// Whether simulcast layer `i` is paused (no player needs it).
    pub fn layer_paused(&self, i: usize) -> bool {
        self.paused_layers
            .get(i)
            .is_some_and(|p| p.load(Ordering::Relaxed))
    }

    /// Whether the audio is muted.
    pub fn audio_muted(&self) -> bool {
        self.audio_muted.load(Ordering::Relaxed)
    }

    /// Whether the video is muted.
    pub fn video_muted(&self) -> bool {
        self.video_muted.load(Ordering::Relaxed)
    }

    /// A video encoder starts: SEI is accepted until the returned guard (held by the encode
    /// thread) drops; when the last one does, SEI still waiting is dropped.
    pub fn encoding(self: &Arc<Self>) -> EncodingGuard {
        self.encoding.fetch_add(1, Ordering::SeqCst);
        EncodingGuard(self.clone())
    }

    /// Queues `data` for the first video frame captured from now on, or says why not.
    pub fn queue_sei(&self, data: &[u8], sent_us: u64, now: Instant) -> Result<(), ErrorCode> {
        if data.is_empty() || data.len() > MAX_USER_DATA {
            return Err(ErrorCode::SeiTooLong);
        }
        if self.encoding.load(Ordering::SeqCst) == 0 {
            return Err(ErrorCode::SeiNotPublishing);
        }
        let mut q = self.sei.lock();
        while q
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            q.recent.pop_front();
        }
        if q.recent.len() >= SEI_PER_SECOND {
            return Err(ErrorCode::SeiRateLimited);
        }
        q.recent.push_back(now);
        q.pending.push_back(PendingSei {
            sent_us,
            sent_at: now,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// The SEI a frame captured at `capture_time_us` carries: everything sent before it was
    /// captured (or waiting too long), in order.
    pub fn take_sei(&self, capture_time_us: u64, now: Instant) -> Vec<Vec<u8>> {
        let mut q = self.sei.lock();
        let mut out = Vec::new();
        while let Some(p) = q.pending.front() {
            let due = p.sent_us <= capture_time_us
                || capture_time_us == 0
                || now.saturating_duration_since(p.sent_at) >= SEI_WAIT;
            if !due {
                break;
            }
            if let Some(p) = q.pending.pop_front() {
                out.push(p.data);
            }
        }
        out
    }
}

/// Marks a running video encoder (see [`PublishControls::encoding`]).
pub struct EncodingGuard(Arc<PublishControls>);

impl Drop for EncodingGuard {
    fn drop(&mut self) {
        if self.0.encoding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.sei.lock().pending.clear();
        }
    }
}

/// A black picture the size and timing of `frame` (what a muted camera sends).
pub fn black_like(frame: &VideoFrame) -> VideoFrame {
    let mut black = VideoFrame::new_i420(frame.width, frame.height);
    black.pts_us = frame.pts_us;
    black.capture_time_us = frame.capture_time_us;
    black
}

/// Silence the size and timing of `frame` (what a muted microphone sends).
pub fn silence_like(frame: &AudioFrame) -> AudioFrame {
    AudioFrame {
        samples: vec![0; frame.samples.len()],
        ..frame.clone()
    }
}

/// The most a played stream's volume may be raised (ZEGO's `setPlayVolume` range 0–200).
pub const MAX_PLAY_VOLUME: u32 = 200;

/// One played stream's controls, kept with its outputs across restarts.
pub struct PlayControls {
    audio_muted: AtomicBool,
    video_muted: AtomicBool,
    /// Percent, 0–200 (100: as received).
    volume: AtomicU32,
}

impl Default for PlayControls {
    fn default() -> Self {
        PlayControls {
            audio_muted: AtomicBool::new(false),
            video_muted: AtomicBool::new(false),
            volume: AtomicU32::new(100),
        }
    }
}

impl PlayControls {
    /// Mutes or unmutes the stream's audio here (the frames stop reaching the app).
    pub fn set_audio_muted(&self, muted: bool) {
        self.audio_muted.store(muted, Ordering::Relaxed);
    }

    /// Mutes or unmutes the stream's video here (frames are not delivered; the relay stops
    /// sending them); returns whether that changed anything.
    pub fn set_video_muted(&self, muted: bool) -> bool {
        self.video_muted.swap(muted, Ordering::Relaxed) != muted
    }

    /// Whether the audio is muted.
    pub fn audio_muted(&self) -> bool {
        self.audio_muted.load(Ordering::Relaxed)
    }

    /// Whether the video is muted.
    pub fn video_muted(&self) -> bool {
        self.video_muted.load(Ordering::Relaxed)
    }

    /// Sets the volume in percent, clamped to 0–200.
    pub fn set_volume(&self, percent: u32) {
        self.volume
            .store(percent.min(MAX_PLAY_VOLUME), Ordering::Relaxed);
    }

    /// The volume in percent.
    pub fn volume(&self) -> u32 {
        self.volume.load(Ordering::Relaxed)
    }

    /// Applies the volume to decoded samples (saturating), unless it is 100 %.
    pub fn apply_volume(&self, samples: &mut [i16]) {
        let v = self.volume();
        if v == 100 {
            return;
        }
        for s in samples {
            *s = (i32::from(*s) * v as i32 / 100).clamp(i32::from(i16::MIN), i32::from(i16::MAX))
                as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sei_waits_for_a_frame_captured_after_it_and_keeps_its_order() {
        let c = Arc::new(PublishControls::default());
        let now = Instant::now();
        assert_eq!(
            c.queue_sei(b"x", 1_000, now),
            Err(ErrorCode::SeiNotPublishing)
        );
        let encoding = c.encoding();
        assert_eq!(c.queue_sei(b"", 1_000, now), Err(ErrorCode::SeiTooLong));
        assert_eq!(
            c.queue_sei(&vec![1; MAX_USER_DATA + 1], 1_000, now),
            Err(ErrorCode::SeiTooLong)
        );
        assert_eq!(c.queue_sei(b"a", 1_000, now), Ok(()));
        assert_eq!(c.queue_sei(b"b", 2_000, now), Ok(()));
        // A frame captured before the first call carries nothing.
        assert!(c.take_sei(999, now).is_empty());
        assert_eq!(c.take_sei(1_500, now), vec![b"a".to_vec()]);
        assert_eq!(c.take_sei(2_000, now), vec![b"b".to_vec()]);
        // A stalled source: after the wait, the next frame takes it anyway.
        assert_eq!(c.queue_sei(b"c", 9_000, now), Ok(()));
        assert!(c.take_sei(5_000, now).is_empty());
        assert_eq!(c.take_sei(5_000, now + SEI_WAIT), vec![b"c".to_vec()]);
        // Stopping drops what is left.
        assert_eq!(c.queue_sei(b"d", 9_000, now), Ok(()));
        drop(encoding);
        assert_eq!(
            c.queue_sei(b"x", 1_000, now),
            Err(ErrorCode::SeiNotPublishing)
        );
        let _encoding = c.encoding();
        assert!(c.take_sei(10_000, now).is_empty());
    }

    #[test]
    fn sei_is_limited_to_thirty_a_second() {
        let c = Arc::new(PublishControls::default());
        let _encoding = c.encoding();
        let now = Instant::now();
        for i in 0..SEI_PER_SECOND {
            assert_eq!(c.queue_sei(b"x", i as u64, now), Ok(()));
        }
        assert_eq!(c.queue_sei(b"x", 99, now), Err(ErrorCode::SeiRateLimited));
        let later = now + Duration::from_secs(1);
        assert_eq!(c.queue_sei(b"x", 99, later), Ok(()));
    }

    #[test]
    fn volume_scales_and_saturates() {
        let c = PlayControls::default();
        let mut s = [1000i16, -1000, 30000];
        c.apply_volume(&mut s);
        assert_eq!(s, [1000, -1000, 30000]);
        c.set_volume(50);
        c.apply_volume(&mut s);
        assert_eq!(s, [500, -500, 15000]);
        c.set_volume(1000);
        assert_eq!(c.volume(), 200);
        let mut s = [20000i16, -20000];
        c.apply_volume(&mut s);
        assert_eq!(s, [i16::MAX, i16::MIN]);
    }
}
