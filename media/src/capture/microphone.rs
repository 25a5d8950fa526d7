//! Microphones through cpal: list them, capture at the device's rate and resample to 48 kHz,
//! delivered in 10 ms frames. No device is an error with its code (1006010), never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::capture::{CaptureHandle, Outputs};
use crate::error::MediaError;
use crate::frame::{AudioFrame, SAMPLE_RATE, wall_clock_us};

/// An audio input the system offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicrophoneInfo {
    /// Its name, to open it by.
    pub name: String,
    /// Its default sample rate.
    pub sample_rate: u32,
    /// Its default channel count.
    pub channels: u16,
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| "(unnamed)".into())
}

/// ALSA's `null` plugin "captures" silence on machines with no sound card: not a microphone.
fn is_pseudo_device(d: &cpal::Device) -> bool {
    d.id().is_ok_and(|id| id.id() == "null")
}

/// The microphones on this machine (empty when there are none).
pub fn list_microphones() -> Result<Vec<MicrophoneInfo>, MediaError> {
    let host = cpal::default_host();
    let devices = host
        .input_devices()
        .map_err(|e| MediaError::MicrophoneOpen(e.to_string()))?;
    Ok(devices
        .filter(|d| !is_pseudo_device(d))
        .filter_map(|d| {
            let config = d.default_input_config().ok()?;
            Some(MicrophoneInfo {
                name: device_name(&d),
                sample_rate: config.sample_rate(),
                channels: config.channels(),
            })
        })
        .collect())
}

/// Linear-interpolating resampler to 48 kHz, up to 2 channels kept.
pub struct Resampler {
    step: f64,
    pos: f64,
    channels: usize,
    prev: Vec<f32>,
}

impl Resampler {
    /// From `rate` Hz with `channels` channels.
    pub fn new(rate: u32, channels: usize) -> Resampler {
        Resampler {
            step: f64::from(rate) / f64::from(SAMPLE_RATE),
            pos: 0.0,
            channels: channels.clamp(1, 2),
            prev: vec![0.0; channels.clamp(1, 2)],
        }
    }

    /// Channels out.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Resamples interleaved `input` (with `in_channels`) into `out` (i16, this resampler's
    /// channels).
    pub fn push(&mut self, input: &[f32], in_channels: usize, out: &mut Vec<i16>) {
        let in_channels = in_channels.max(1);
        let frames = input.len() / in_channels;
        let sample = |i: isize, c: usize, prev: &[f32]| -> f32 {
            if i < 0 {
                prev[c]
            } else {
                input[i as usize * in_channels + c.min(in_channels - 1)]
            }
        };
        // Positions are measured from the sample before `input` (index -1 = `prev`).
        while self.pos < frames as f64 {
            let i = self.pos.floor() as isize - 1;
            let t = (self.pos - self.pos.floor()) as f32;
            for c in 0..self.channels {
                let a = sample(i, c, &self.prev);
                let b = sample(i + 1, c, &self.prev);
                let v = a + (b - a) * t;
                out.push((v * 32767.0).clamp(-32768.0, 32767.0) as i16);
            }
            self.pos += self.step;
        }
        self.pos -= frames as f64;
        if frames > 0 {
            for c in 0..self.channels {
                self.prev[c] = input[(frames - 1) * in_channels + c.min(in_channels - 1)];
            }
        }
    }
}

/// Starts capturing from the microphone named `name` (the default if `None`).
pub fn start(name: Option<String>, outputs: Outputs) -> CaptureHandle {
    CaptureHandle::spawn("microphone".into(), move |stop: Arc<AtomicBool>| {
        let Some(audio) = outputs.audio.clone() else {
            return;
        };
        let host = cpal::default_host();
        let device = match &name {
            // With no real input device, the "default" one is ALSA's silence: say so.
            None if list_microphones().unwrap_or_default().is_empty() => None,
            None => host.default_input_device(),
            Some(n) => host
                .input_devices()
                .ok()
                .and_then(|mut ds| ds.find(|d| device_name(d) == *n)),
        };
        let Some(device) = device else {
            (outputs.on_error)(MediaError::NoMicrophone);
            return;
        };
        let config = match device.default_input_config() {
            Ok(c) => c,
            Err(e) => {
                (outputs.on_error)(MediaError::MicrophoneOpen(format!(
                    "{}: {e}",
                    device_name(&device)
                )));
                return;
            }
        };
        let in_channels = usize::from(config.channels());
        let mut resampler = Resampler::new(config.sample_rate(), in_channels);
        let out_channels = resampler.channels();
        let ten_ms = (SAMPLE_RATE as usize / 100) * out_channels;
        let mut pending: Vec<i16> = Vec::with_capacity(ten_ms * 4);
        let mut pts_us: i64 = 0;
        let errors = outputs.on_error.clone();
        let on_data = move |data: &[f32], _: &cpal::InputCallbackInfo| {
            resampler.push(data, in_channels, &mut pending);
            while pending.len() >= ten_ms {
                let samples: Vec<i16> = pending.drain(..ten_ms).collect();
                audio.send(&Arc::new(AudioFrame {
                    sample_rate: SAMPLE_RATE,
                    channels: out_channels as u16,
                    samples,
                    pts_us,
                    capture_time_us: wall_clock_us(),
                }));
                pts_us += 10_000;
            }
        };
        let on_error = move |e: cpal::Error| errors(MediaError::MicrophoneOpen(e.to_string()));
        let stream = match device.build_input_stream::<f32, _, _>(
            config.config(),
            on_data,
            on_error,
            None,
        ) {
            Ok(s) => s,
            Err(e) => {
                (outputs.on_error)(MediaError::MicrophoneOpen(format!(
                    "{}: {e}",
                    device_name(&device)
                )));
                return;
            }
        };
        if let Err(e) = stream.play() {
            (outputs.on_error)(MediaError::MicrophoneOpen(e.to_string()));
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stream);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_duration_and_shape() {
        for rate in [44_100u32, 48_000, 16_000, 96_000] {
            let mut r = Resampler::new(rate, 2);
            let mut out = Vec::new();
            // One second of a 100 Hz sine in 10 ms blocks, stereo.
            for block in 0..100 {
                let n = rate as usize / 100;
                let input: Vec<f32> = (0..n)
                    .flat_map(|i| {
                        let t = (block * n + i) as f32 / rate as f32;
                        let s = (t * 100.0 * std::f32::consts::TAU).sin() * 0.5;
                        [s, s]
                    })
                    .collect();
                r.push(&input, 2, &mut out);
            }
            let frames = out.len() / 2;
            assert!(
                (47_990..=48_010).contains(&frames),
                "{rate} Hz gave {frames} frames"
            );
            let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            assert!((15_000..=17_000).contains(&peak), "{rate} Hz peak {peak}");
        }
    }
}
