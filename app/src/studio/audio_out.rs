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

enum Change {
    Add(String, FrameReceiver<SharedAudioFrame>),
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
    let device_rate = config.sample_rate() as usize;
    let mut sources: Vec<Source> = Vec::new();
    // Stepping through 48 kHz source samples at the device's rate (nearest sample).
    let step = RATE as f64 / device_rate.max(1) as f64;
    let mut phase = 0.0f64;
    let on_data = move |out: &mut [f32], _: &cpal::OutputCallbackInfo| {
        while let Ok(change) = changes.try_recv() {
            match change {
                Change::Add(stream_id, frames) => {
                    sources.retain(|s| s.stream_id != stream_id);
                    sources.push(Source {
                        stream_id,
                        frames,
                        pending: VecDeque::new(),
                    });
                }
                Change::Remove(stream_id) => sources.retain(|s| s.stream_id != stream_id),
            }
        }
        let frames_out = out.len() / channels.max(1);
        let needed = (frames_out as f64 * step).ceil() as usize + 1;
        for s in &mut sources {
            while s.pending.len() < needed {
                let Some(frame) = s.frames.try_recv() else {
                    break;
                };
                let ch = usize::from(frame.channels.max(1));
                for chunk in frame.samples.chunks_exact(ch) {
                    let sum: f32 = chunk.iter().map(|&x| f32::from(x)).sum();
                    s.pending.push_back(sum / ch as f32 / 32768.0);
                }
            }
            let cap = RATE * MAX_BUFFERED_MS / 1000;
            while s.pending.len() > cap.max(needed) {
                s.pending.pop_front();
            }
        }
        for frame in out.chunks_mut(channels.max(1)) {
            let mut v = 0.0f32;
            let index = phase as usize;
            for s in &sources {
                v += s.pending.get(index).copied().unwrap_or(0.0);
            }
            frame.fill(v.clamp(-1.0, 1.0));
            phase += step;
        }
        let consumed = phase as usize;
        phase -= consumed as f64;
        for s in &mut sources {
            let n = consumed.min(s.pending.len());
            s.pending.drain(..n);
        }
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
