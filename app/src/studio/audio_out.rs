//! Hearing streams: one speaker output (cpal) on its own thread, mixing the decoded audio of
//! every unmuted stream. The UI adds and removes streams through a bounded channel the audio
//! callback drains, so neither side ever waits for the other; each stream keeps at most
//! [`MAX_BUFFERED_MS`] of audio (older samples are dropped, not queued).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_channel::{Receiver, Sender, bounded};
use onair_engine::media::{FrameReceiver, SharedAudioFrame};
use parking_lot::Mutex;

/// The most audio one stream may have waiting; beyond it the oldest is dropped.
pub const MAX_BUFFERED_MS: usize = 80;
const RATE: usize = 48_000;

/// A change to the set of streams heard.
pub enum Change {
    /// Hear this stream.
    Add(String, FrameReceiver<SharedAudioFrame>),
    /// Stop hearing it.
    Remove(String),
}

struct Source {
    stream_id: String,
    frames: FrameReceiver<SharedAudioFrame>,
    /// Mono samples at 48 kHz, -1..1.
    pending: VecDeque<f32>,
}

/// The speaker output.
pub struct AudioOut {
    changes: Sender<Change>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<String>>,
}

impl AudioOut {
    /// Opens the default output device on its own thread. Without one, the status says so
    /// and adding streams does nothing.
    pub fn start() -> AudioOut {
        let (changes, rx) = bounded(64);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new("opening the speaker…".to_string()));
        let thread = {
            let (stop, status) = (stop.clone(), status.clone());
            std::thread::Builder::new()
                .name("onair-speaker".into())
                .spawn(move || run(rx, stop, status))
                .ok()
        };
        AudioOut {
            changes,
            stop,
            thread,
            status,
        }
    }

    /// Starts hearing a stream.
    pub fn add(&self, stream_id: &str, frames: FrameReceiver<SharedAudioFrame>) {
        let _ = self
            .changes
            .try_send(Change::Add(stream_id.to_string(), frames));
    }

    /// Stops hearing a stream.
    pub fn remove(&self, stream_id: &str) {
        let _ = self.changes.try_send(Change::Remove(stream_id.to_string()));
    }

    /// What the output is doing ("48000 Hz, 2 ch on …", or why there is no sound).
    pub fn status(&self) -> String {
        self.status
            .try_lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for AudioOut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mixes the streams heard into a device's buffers: every stream's 48 kHz audio folded to
/// mono, summed, stepped to the device's rate (nearest sample) and copied to each device
/// channel. Each stream keeps at most [`MAX_BUFFERED_MS`]; older samples are dropped.
pub struct Mixer {
    sources: Vec<Source>,
    channels: usize,
    step: f64,
    phase: f64,
}

impl Mixer {
    /// A mixer for a device at `device_rate` Hz with `channels` channels.
    pub fn new(device_rate: u32, channels: usize) -> Mixer {
        Mixer {
            sources: Vec::new(),
            channels: channels.max(1),
            step: RATE as f64 / f64::from(device_rate.max(1)),
            phase: 0.0,
        }
    }

    /// Adds or removes a stream.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Add(stream_id, frames) => {
                self.sources.retain(|s| s.stream_id != stream_id);
                self.sources.push(Source {
                    stream_id,
                    frames,
                    pending: VecDeque::new(),
                });
            }
            Change::Remove(stream_id) => self.sources.retain(|s| s.stream_id != stream_id),
        }
    }

    /// Streams heard.
    pub fn streams(&self) -> usize {
        self.sources.len()
    }

    /// Fills one device buffer (interleaved) from what the streams have delivered.
    pub fn fill(&mut self, out: &mut [f32]) {
        let frames_out = out.len() / self.channels;
        let needed = (frames_out as f64 * self.step).ceil() as usize + 1;
        let cap = RATE * MAX_BUFFERED_MS / 1000;
        for s in &mut self.sources {
            // Everything delivered, then keep only the newest: a backlog left in the channel
            // would be delay heard for good.
            while let Some(frame) = s.frames.try_recv() {
                let ch = usize::from(frame.channels.max(1));
                for chunk in frame.samples.chunks_exact(ch) {
                    let sum: f32 = chunk.iter().map(|&x| f32::from(x)).sum();
                    s.pending.push_back(sum / ch as f32 / 32768.0);
                }
            }
            while s.pending.len() > cap.max(needed) {
                s.pending.pop_front();
            }
        }
        for frame in out.chunks_mut(self.channels) {
            let index = self.phase as usize;
            let v: f32 = self
                .sources
                .iter()
                .map(|s| s.pending.get(index).copied().unwrap_or(0.0))
                .sum();
            frame.fill(v.clamp(-1.0, 1.0));
            self.phase += self.step;
        }
        let consumed = self.phase as usize;
        self.phase -= consumed as f64;
        for s in &mut self.sources {
            let n = consumed.min(s.pending.len());
            s.pending.drain(..n);
        }
    }
}

fn run(changes: Receiver<Change>, stop: Arc<AtomicBool>, status: Arc<Mutex<String>>) {
    let set = |s: String| *status.lock() = s;
    let host = cpal::default_host();
    let Some(device) = host.default_output_device() else {
        set("no speaker found".into());
        return;
    };
    let config = match device.default_output_config() {
        Ok(c) => c,
        Err(e) => {
            set(format!("speaker unavailable: {e}"));
            return;
        }
    };
    let channels = usize::from(config.channels());
    let device_rate = config.sample_rate();
    let mut mixer = Mixer::new(device_rate, channels);
    let on_data = move |out: &mut [f32], _: &cpal::OutputCallbackInfo| {
        while let Ok(change) = changes.try_recv() {
            mixer.apply(change);
        }
        mixer.fill(out);
    };
    let errors = status.clone();
    let stream = match device.build_output_stream::<f32, _, _>(
        config.config(),
        on_data,
        move |e: cpal::Error| *errors.lock() = format!("speaker error: {e}"),
        None,
    ) {
        Ok(s) => s,
        Err(e) => {
            set(format!("speaker unavailable: {e}"));
            return;
        }
    };
    if let Err(e) = stream.play() {
        set(format!("speaker unavailable: {e}"));
        return;
    }
    set(format!("{device_rate} Hz, {channels} ch"));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_engine::media::{AudioFrame, frame_channel};

    fn tone(value: i16, channels: u16, ms: usize) -> SharedAudioFrame {
        Arc::new(AudioFrame {
            sample_rate: 48_000,
            channels,
            samples: vec![value; 48 * ms * usize::from(channels)],
            pts_us: 0,
            capture_time_us: 0,
        })
    }

    #[test]
    fn unmuted_streams_are_summed_and_muted_ones_are_silent() {
        let mut mixer = Mixer::new(48_000, 2);
        let (a_tx, a_rx) = frame_channel(16);
        let (b_tx, b_rx) = frame_channel(16);
        a_tx.send(tone(8192, 1, 10));
        b_tx.send(tone(4096, 2, 10));
        mixer.apply(Change::Add("a".into(), a_rx));
        mixer.apply(Change::Add("b".into(), b_rx));
        let mut out = vec![0.0f32; 2 * 240];
        mixer.fill(&mut out);
        // 0.25 + 0.125 on both channels.
        assert!(
            out.iter().all(|v| (v - 0.375).abs() < 1e-4),
            "{:?}",
            &out[..4]
        );
        // Muting b leaves a alone.
        mixer.apply(Change::Remove("b".into()));
        assert_eq!(mixer.streams(), 1);
        mixer.fill(&mut out);
        assert!(
            out.iter().all(|v| (v - 0.25).abs() < 1e-4),
            "{:?}",
            &out[..4]
        );
        // Nothing delivered: silence, not old audio.
        mixer.fill(&mut out);
        mixer.fill(&mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn a_stream_never_queues_more_than_the_cap() {
        let mut mixer = Mixer::new(44_100, 1);
        let (tx, rx) = frame_channel(64);
        // 400 ms delivered at once (the device fell behind): only the newest 80 ms are kept.
        for i in 0..40 {
            tx.send(tone(if i < 32 { 1000 } else { 2000 }, 1, 10));
        }
        mixer.apply(Change::Add("s".into(), rx));
        let mut out = vec![0.0f32; 441];
        mixer.fill(&mut out);
        let newest = 2000.0 / 32768.0;
        assert!(
            out.iter().all(|v| (v - newest).abs() < 1e-4),
            "older audio was dropped, the newest is heard first: {:?}",
            &out[..3]
        );
    }
}
