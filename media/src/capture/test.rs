//! The synthetic sources on their threads: the test pattern at its frame rate and the tone
//! generator in 20 ms frames, both paced by the wall clock.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::capture::{CaptureHandle, Outputs, sleep_until};
use crate::config::VideoConfig;
use crate::frame::wall_clock_us;
use crate::testsrc::{TestPattern, ToneGenerator};

/// Starts the test pattern at `config`'s size and frame rate.
pub fn start_video(config: VideoConfig, outputs: Outputs) -> CaptureHandle {
    CaptureHandle::spawn("test-video".into(), move |stop: Arc<AtomicBool>| {
        let Some(video) = outputs.video else { return };
        let pattern = TestPattern::new(config.width, config.height);
        let interval = Duration::from_secs_f64(1.0 / f64::from(config.fps.max(1)));
        let start = Instant::now();
        let mut n: u64 = 0;
        loop {
            let due = start + interval.mul_f64(n as f64);
            if !sleep_until(due, &stop) {
                return;
            }
            let pts_us = (n as f64 * interval.as_secs_f64() * 1e6) as i64;
            let frame = pattern.render(n, pts_us, wall_clock_us());
            video.send(&Arc::new(frame));
            n += 1;
        }
    })
}

/// Starts the tone generator (mono, marker every second).
pub fn start_audio(outputs: Outputs) -> CaptureHandle {
    CaptureHandle::spawn("test-audio".into(), move |stop: Arc<AtomicBool>| {
        let Some(audio) = outputs.audio else { return };
        let mut tone = ToneGenerator::new(1, 50);
        let start = Instant::now();
        let mut n: u32 = 0;
        loop {
            let due = start + Duration::from_millis(20) * n;
            if !sleep_until(due, &stop) {
                return;
            }
            audio.send(&Arc::new(tone.next_frame(wall_clock_us())));
            n += 1;
        }
    })
}
