//! Media files through FFmpeg: demux and decode, paced at real time by the file's timestamps,
//! looping at the end, video to I420 and audio to 48 kHz 16-bit; and a small writer that makes
//! clips (MPEG-TS with H.264 and Opus) from our encoders, for tests and demos.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ffmpeg::format::Sample;
use ffmpeg::format::sample::Type as SampleType;
use ffmpeg::media::Type as MediaType;
use ffmpeg_next as ffmpeg;

use crate::capture::{CaptureHandle, Outputs, sleep_until};
use crate::codec::convert::{Converter, copy_from_ffmpeg_i420};
use crate::codec::h264::H264Encoder;
use crate::codec::init;
use crate::codec::opus::{OpusEncoder, interleave_i16};
use crate::config::VideoConfig;
use crate::error::MediaError;
use crate::frame::{AudioFrame, SAMPLE_RATE, wall_clock_us};
use crate::testsrc::{TestPattern, ToneGenerator};

fn open_error(path: &Path, e: impl std::fmt::Display) -> MediaError {
    MediaError::FileOpen {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

struct Decoders {
    input: ffmpeg::format::context::Input,
    video: Option<(usize, f64, ffmpeg::decoder::Video)>,
    audio: Option<(
        usize,
        f64,
        ffmpeg::decoder::Audio,
        ffmpeg::software::resampling::Context,
        u16,
    )>,
}

fn open_file(path: &Path, want_video: bool, want_audio: bool) -> Result<Decoders, MediaError> {
    init();
    let input = ffmpeg::format::input(&path).map_err(|e| open_error(path, e))?;
    let mut video = None;
    let mut audio = None;
    if want_video && let Some(stream) = input.streams().best(MediaType::Video) {
        let tb = f64::from(stream.time_base());
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| open_error(path, e))?;
        ctx.set_flags(ffmpeg::codec::Flags::LOW_DELAY);
        let dec = ctx.decoder().video().map_err(|e| open_error(path, e))?;
        video = Some((stream.index(), tb, dec));
    }
    if want_audio && let Some(stream) = input.streams().best(MediaType::Audio) {
        let tb = f64::from(stream.time_base());
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| open_error(path, e))?;
        let dec = ctx.decoder().audio().map_err(|e| open_error(path, e))?;
        let channels = dec.channels().clamp(1, 2);
        let out_layout = if channels == 2 {
            ffmpeg::ChannelLayout::STEREO
        } else {
            ffmpeg::ChannelLayout::MONO
        };
        let in_layout = if dec.channel_layout().is_empty() {
            ffmpeg::ChannelLayout::default(i32::from(dec.channels()))
        } else {
            dec.channel_layout()
        };
        let resampler = ffmpeg::software::resampling::Context::get(
            dec.format(),
            in_layout,
            dec.rate(),
            Sample::I16(SampleType::Packed),
            out_layout,
            SAMPLE_RATE,
        )
        .map_err(|e| open_error(path, e))?;
        audio = Some((stream.index(), tb, dec, resampler, channels));
    }
    if video.is_none() && audio.is_none() {
        return Err(MediaError::FileNoStream(path.display().to_string()));
    }
    Ok(Decoders {
        input,
        video,
        audio,
    })
}

/// Checks that `path` opens and has something to play.
pub fn probe(path: &Path) -> Result<(), MediaError> {
    open_file(path, true, true).map(|_| ())
}

/// Plays `path`: video frames to `outputs.video`, audio to `outputs.audio`, each when its
/// timestamp comes due, looping forever until stopped.
pub fn start(path: PathBuf, outputs: Outputs) -> CaptureHandle {
    CaptureHandle::spawn("file".into(), move |stop: Arc<AtomicBool>| {
        let mut d = match open_file(&path, outputs.video.is_some(), outputs.audio.is_some()) {
            Ok(d) => d,
            Err(e) => {
                (outputs.on_error)(e);
                return;
            }
        };
        let started = Instant::now();
        // Seconds added to the file's timestamps on each loop.
        let mut loop_offset = 0.0f64;
        let mut first_ts: Option<f64> = None;
        let mut last_end = 0.0f64;
        let mut vframe = ffmpeg::frame::Video::empty();
        let mut aframe = ffmpeg::frame::Audio::empty();
        let mut resampled = ffmpeg::frame::Audio::empty();
        let mut converter: Option<Converter> = None;
        let mut decoded_any = false;
        loop {
            let mut eof = true;
            for (stream, packet) in d.input.packets() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                eof = false;
                let index = stream.index();
                // Video.
                if let (Some((vi, tb, dec)), Some(video)) =
                    (d.video.as_mut(), outputs.video.as_ref())
                    && index == *vi
                {
                    if dec.send_packet(&packet).is_err() {
                        continue;
                    }
                    while dec.receive_frame(&mut vframe).is_ok() {
                        let ts = vframe.timestamp().or(vframe.pts()).unwrap_or(0) as f64 * *tb;
                        let base = *first_ts.get_or_insert(ts);
                        let t = ts - base + loop_offset;
                        last_end = last_end.max(ts - base + 1.0 / 30.0);
                        if !sleep_until(started + Duration::from_secs_f64(t.max(0.0)), &stop) {
                            return;
                        }
                        let mut frame = match vframe.format() {
                            ffmpeg::format::Pixel::YUV420P | ffmpeg::format::Pixel::YUVJ420P
                                if vframe.width().is_multiple_of(2)
                                    && vframe.height().is_multiple_of(2) =>
                            {
                                copy_from_ffmpeg_i420(&vframe)
                            }
                            _ => match Converter::convert_ffmpeg(
                                &mut converter,
                                &vframe,
                                vframe.width() & !1,
                                vframe.height() & !1,
                            ) {
                                Ok(f) => copy_from_ffmpeg_i420(f),
                                Err(e) => {
                                    (outputs.on_error)(e);
                                    return;
                                }
                            },
                        };
                        frame.pts_us = (t * 1e6) as i64;
                        frame.capture_time_us = wall_clock_us();
                        video.send(&Arc::new(frame));
                        decoded_any = true;
                    }
                }
                // Audio.
                if let (Some((ai, tb, dec, resampler, channels)), Some(audio)) =
                    (d.audio.as_mut(), outputs.audio.as_ref())
                    && index == *ai
                {
                    if dec.send_packet(&packet).is_err() {
                        continue;
                    }
                    while dec.receive_frame(&mut aframe).is_ok() {
                        let ts = aframe.timestamp().or(aframe.pts()).unwrap_or(0) as f64 * *tb;
                        let base = *first_ts.get_or_insert(ts);
                        let t = ts - base + loop_offset;
                        let dur = aframe.samples() as f64 / f64::from(aframe.rate().max(1));
                        last_end = last_end.max(ts - base + dur);
                        if resampler.run(&aframe, &mut resampled).is_err() {
                            continue;
                        }
                        if !sleep_until(started + Duration::from_secs_f64(t.max(0.0)), &stop) {
                            return;
                        }
                        audio.send(&Arc::new(AudioFrame {
                            sample_rate: SAMPLE_RATE,
                            channels: *channels,
                            samples: interleave_i16(&resampled, *channels),
                            pts_us: (t * 1e6) as i64,
                            capture_time_us: wall_clock_us(),
                        }));
                        decoded_any = true;
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if eof && !decoded_any {
                (outputs.on_error)(MediaError::FileNoStream(path.display().to_string()));
                return;
            }
            // Loop: back to the start, continuing the clock where the clip ended.
            loop_offset += last_end.max(0.04);
            last_end = 0.0;
            decoded_any = false;
            if let Err(e) = d.input.seek(0, ..) {
                (outputs.on_error)(open_error(&path, e));
                return;
            }
            if let Some((_, _, dec)) = d.video.as_mut() {
                dec.flush();
            }
            if let Some((_, _, dec, _, _)) = d.audio.as_mut() {
                dec.flush();
            }
        }
    })
}

/// Writes a clip of the test pattern (and tone, if `with_audio`) to `path` as MPEG-TS with
/// H.264 and Opus: `seconds` long at `config`.
pub fn write_test_clip(
    path: &Path,
    config: VideoConfig,
    seconds: f64,
    with_audio: bool,
) -> Result<(), MediaError> {
    init();
    let fail = |e: ffmpeg::Error| open_error(path, e);
    let mut output = ffmpeg::format::output_as(&path, "mpegts").map_err(fail)?;
    let mut encoder = H264Encoder::new(config)?;
    let h264 = ffmpeg::encoder::find(ffmpeg::codec::Id::H264)
        .ok_or(MediaError::CodecUnavailable("h264"))?;
    let mut vstream = output.add_stream(h264).map_err(fail)?;
    vstream.set_parameters(encoder.parameters());
    vstream.set_time_base((1, 90_000));
    let mut opus = None;
    if with_audio {
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::OPUS)
            .ok_or(MediaError::CodecUnavailable("opus"))?;
        let enc = OpusEncoder::new(1, 64, false)?;
        let mut astream = output.add_stream(codec).map_err(fail)?;
        astream.set_parameters(enc.parameters());
        astream.set_time_base((1, 90_000));
        opus = Some(enc);
    }
    output.write_header().map_err(fail)?;
    let vtb = output
        .stream(0)
        .map(|s| s.time_base())
        .unwrap_or((1, 90_000).into());
    let atb = output
        .stream(1)
        .map(|s| s.time_base())
        .unwrap_or((1, 90_000).into());
    let pattern = TestPattern::new(config.width, config.height);
    let mut tone = ToneGenerator::new(1, 50);
    let frames = (seconds * f64::from(config.fps)).round() as u64;
    let mut audio_us: i64 = 0;
    for n in 0..frames {
        let pts_us = (n as f64 * 1e6 / f64::from(config.fps)) as i64;
        if let Some(p) = encoder.encode(&pattern.render(n, pts_us, 0))? {
            let mut packet = ffmpeg::Packet::copy(&p.data);
            packet.set_stream(0);
            packet.set_pts(Some(pts_us));
            packet.set_dts(Some(pts_us));
            if p.keyframe {
                packet.set_flags(ffmpeg::codec::packet::Flags::KEY);
            }
            packet.rescale_ts((1, 1_000_000), vtb);
            packet.write_interleaved(&mut output).map_err(fail)?;
        }
        while let Some(enc) = opus.as_mut()
            && audio_us <= pts_us
        {
            for p in enc.encode(&tone.next_frame(0))? {
                let mut packet = ffmpeg::Packet::copy(&p.data);
                packet.set_stream(1);
                packet.set_pts(Some(audio_us));
                packet.set_dts(Some(audio_us));
                packet.rescale_ts((1, 1_000_000), atb);
                packet.write_interleaved(&mut output).map_err(fail)?;
            }
            audio_us += 20_000;
        }
    }
    output.write_trailer().map_err(fail)?;
    Ok(())
}
