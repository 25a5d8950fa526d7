//! Sound levels (ZEGO's sound-level monitor): the captured audio's level and each played
//! stream's, 0–100, every `interval`. The level is the RMS of the interval's samples in dBFS,
//! mapped linearly from −60 dBFS (0) to 0 dBFS (100); voice activity is a level above
//! [`VAD_LEVEL`]. The arithmetic is sans-I/O ([`Meter`]); a small thread reads the frames.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use onair_media::channel::FrameReceiver;
use onair_media::frame::SharedAudioFrame;

use crate::room::events::Event;
use crate::room::sink::EventSink;

/// A level above this counts as voice (or sound) activity.
pub const VAD_LEVEL: f32 = 15.0;

/// The level (0–100) of samples whose mean square is `mean_square` (of i16 samples).
pub fn level_of(mean_square: f64) -> f32 {
    if mean_square <= 0.0 {
        return 0.0;
    }
    let dbfs = 10.0 * (mean_square / (32768.0 * 32768.0)).log10();
    (((dbfs + 60.0) / 60.0) * 100.0).clamp(0.0, 100.0) as f32
}

/// Sums one stream's samples over an interval.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meter {
    sum_squares: f64,
    samples: u64,
}

impl Meter {
    /// Takes a frame's samples.
    pub fn push(&mut self, samples: &[i16]) {
        for s in samples {
            let v = f64::from(*s);
            self.sum_squares += v * v;
        }
        self.samples += samples.len() as u64;
    }

    /// The interval's level, and a fresh start; `None` if nothing arrived.
    pub fn take(&mut self) -> Option<f32> {
        if self.samples == 0 {
            return None;
        }
        let level = level_of(self.sum_squares / self.samples as f64);
        *self = Meter::default();
        Some(level)
    }
}

/// The running monitor: stops (and joins its thread) when dropped.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// New subscriptions to the streams being played: given whether a stream is already
/// known, `(stream_id, receiver)` for the others.
pub type Subscribe =
    Box<dyn Fn(&dyn Fn(&str) -> bool) -> Vec<(String, FrameReceiver<SharedAudioFrame>)> + Send>;

/// Where the monitor finds audio: the captured channel, and the played streams now.
pub struct Sources {
    /// The main channel's captured audio.
    pub captured: FrameReceiver<SharedAudioFrame>,
    /// Subscribes to the streams being played now: `(stream_id, receiver)` for those not in
    /// `known`.
    pub played: Subscribe,
}

/// Starts reporting every `interval` (clamped to 100–3000 ms, as ZEGO's).
pub fn start(interval: Duration, vad: bool, sources: Sources, sink: EventSink) -> Monitor {
    let interval = interval.clamp(Duration::from_millis(100), Duration::from_millis(3000));
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("onair-sound-level".into())
        .spawn(move || {
            let mut captured = Meter::default();
            let mut remote: HashMap<String, (FrameReceiver<SharedAudioFrame>, Meter)> =
                HashMap::new();
            let mut next = Instant::now() + interval;
            while !stopped.load(Ordering::Relaxed) {
                // Drain often: the receivers hold only a few frames.
                std::thread::sleep(Duration::from_millis(40));
                while let Some(f) = sources.captured.try_recv() {
                    captured.push(&f.samples);
                }
                for (id, rx) in (sources.played)(&|id| remote.contains_key(id)) {
                    remote.insert(id, (rx, Meter::default()));
                }
                for (rx, meter) in remote.values_mut() {
                    while let Some(f) = rx.try_recv() {
                        meter.push(&f.samples);
                    }
                }
                if Instant::now() < next {
                    continue;
                }
                next += interval;
                let level = captured.take().unwrap_or(0.0);
                sink.emit(Event::CapturedSoundLevelUpdate {
                    level,
                    vad: vad && level > VAD_LEVEL,
                });
                let levels: BTreeMap<String, f32> = remote
                    .iter_mut()
                    .filter_map(|(id, (_, m))| Some((id.clone(), m.take()?)))
                    .collect();
                if !levels.is_empty() {
                    sink.emit(Event::RemoteSoundLevelUpdate { levels });
                }
            }
        })
        .ok();
    Monitor { stop, thread }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_loudness() {
        let tone: Vec<i16> = (0..960)
            .map(|i| (12_000.0 * (i as f64 * 0.05).sin()) as i16)
            .collect();
        let mut m = Meter::default();
        m.push(&tone);
        let level = m.take().expect("a level");
        // RMS 12,000/√2 is −11.7 dBFS: (60 − 11.7) / 60 of the way up.
        assert!((level - 80.5).abs() < 1.0, "{level}");
        assert_eq!(m.take(), None, "a fresh start");
        m.push(&[0; 960]);
        assert_eq!(m.take(), Some(0.0), "silence");
        m.push(&[i16::MAX; 10]);
        assert!(m.take().is_some_and(|l| l > 99.0));
        // −40 dBFS is a third of the scale.
        assert!((level_of((327.68f64).powi(2)) - 33.3).abs() < 0.5);
    }
}
