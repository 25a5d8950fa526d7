//! Opus through libopus: 20 ms frames at 48 kHz, low-delay application, in-band FEC available;
//! and the Opus decoder, one packet in and 20 ms out.

use std::collections::VecDeque;

use ffmpeg::format::Sample;
use ffmpeg::format::sample::Type as SampleType;
use ffmpeg_next as ffmpeg;

use crate::codec::{init, is_again};
use crate::error::MediaError;
use crate::frame::{AudioFrame, SAMPLE_RATE};

/// Samples per channel in one 20 ms Opus frame.
pub const OPUS_FRAME: usize = 960;

/// One encoded Opus packet.
#[derive(Clone, Debug)]
pub struct EncodedAudio {
    /// The packet.
    pub data: Vec<u8>,
    /// The source frame's presentation time, µs.
    pub pts_us: i64,
    /// The source frame's capture time, µs since the Unix epoch.
    pub capture_time_us: u64,
}

fn layout(channels: u16) -> ffmpeg::ChannelLayout {
    if channels >= 2 {
        ffmpeg::ChannelLayout::STEREO
    } else {
        ffmpeg::ChannelLayout::MONO
    }
}

/// An Opus encoder.
pub struct OpusEncoder {
    encoder: ffmpeg::encoder::audio::Encoder,
    channels: u16,
    frame: ffmpeg::frame::Audio,
    packet: ffmpeg::Packet,
    /// Samples waiting to fill a 20 ms frame (sources may deliver 10 ms at a time).
    buffer: Vec<i16>,
    buffer_times: VecDeque<(i64, u64)>,
    index: i64,
    pending: VecDeque<(i64, i64, u64)>,
}

impl OpusEncoder {
    /// Opens an encoder for `channels` (1 or 2) at `bitrate_kbps`, with in-band FEC if `fec`.
    pub fn new(channels: u16, bitrate_kbps: u32, fec: bool) -> Result<OpusEncoder, MediaError> {
        init();
        let channels = channels.clamp(1, 2);
        let codec = ffmpeg::encoder::find_by_name("libopus")
            .ok_or(MediaError::CodecUnavailable("libopus"))?;
        let ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
        let mut enc = ctx
            .encoder()
            .audio()
            .map_err(|e| MediaError::Encode(format!("libopus context: {e}")))?;
        enc.set_rate(SAMPLE_RATE as i32);
        enc.set_format(Sample::I16(SampleType::Packed));
        enc.set_channel_layout(layout(channels));
        enc.set_channels(i32::from(channels));
        enc.set_bit_rate(bitrate_kbps as usize * 1000);
        enc.set_time_base((1, SAMPLE_RATE as i32));
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("frame_duration", "20");
        opts.set("application", "lowdelay");
        if fec {
            // In-band FEC needs the voip application and an expected loss rate.
            opts.set("application", "voip");
            opts.set("fec", "1");
            opts.set("packet_loss", "10");
        }
        let encoder = enc
            .open_with(opts)
            .map_err(|e| MediaError::Encode(format!("opening libopus: {e}")))?;
        let mut frame = ffmpeg::frame::Audio::new(
            Sample::I16(SampleType::Packed),
            OPUS_FRAME,
            layout(channels),
        );
        frame.set_rate(SAMPLE_RATE);
        Ok(OpusEncoder {
            encoder,
            channels,
            frame,
            packet: ffmpeg::Packet::empty(),
            buffer: Vec::with_capacity(OPUS_FRAME * 4),
            buffer_times: VecDeque::new(),
            index: 0,
            pending: VecDeque::new(),
        })
    }

    /// The stream parameters for a muxer.
    pub fn parameters(&self) -> ffmpeg::codec::Parameters {
        ffmpeg::codec::Parameters::from(&*self.encoder)
    }

    /// Feeds PCM (48 kHz, this encoder's channel count) and returns every packet it completes.
    pub fn encode(&mut self, audio: &AudioFrame) -> Result<Vec<EncodedAudio>, MediaError> {
        if audio.sample_rate != SAMPLE_RATE || audio.channels != self.channels {
            return Err(MediaError::Encode(format!(
                "Opus encoder takes {} channel(s) at 48 kHz, got {} at {} Hz",
                self.channels, audio.channels, audio.sample_rate
            )));
        }
        self.buffer_times
            .push_back((audio.pts_us, audio.capture_time_us));
        self.buffer.extend_from_slice(&audio.samples);
        let per_frame = OPUS_FRAME * usize::from(self.channels);
        let mut out = Vec::new();
        while self.buffer.len() >= per_frame {
            let times = self
                .buffer_times
                .pop_front()
                .unwrap_or((audio.pts_us, audio.capture_time_us));
            {
                let plane: &mut [i16] = self.frame.plane_mut(0);
                let n = plane.len().min(per_frame);
                plane[..n].copy_from_slice(&self.buffer[..n]);
            }
            self.buffer.drain(..per_frame);
            self.frame.set_pts(Some(self.index * OPUS_FRAME as i64));
            self.pending
                .push_back((self.index * OPUS_FRAME as i64, times.0, times.1));
            self.index += 1;
            self.encoder
                .send_frame(&self.frame)
                .map_err(|e| MediaError::Encode(e.to_string()))?;
            self.drain(&mut out)?;
        }
        Ok(out)
    }

    fn drain(&mut self, out: &mut Vec<EncodedAudio>) -> Result<(), MediaError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    // libopus delays its output by its lookahead; keep the times in order.
                    let (pts_us, capture_time_us) =
                        self.pending.pop_front().map_or((0, 0), |(_, p, c)| (p, c));
                    out.push(EncodedAudio {
                        data: self.packet.data().map(<[u8]>::to_vec).unwrap_or_default(),
                        pts_us,
                        capture_time_us,
                    });
                }
                Err(e) if is_again(&e) => return Ok(()),
                Err(e) => return Err(MediaError::Encode(e.to_string())),
            }
        }
    }
}

/// An Opus decoder producing 48 kHz interleaved 16-bit PCM.
pub struct OpusDecoder {
    decoder: ffmpeg::decoder::Audio,
    frame: ffmpeg::frame::Audio,
    channels: u16,
}

impl OpusDecoder {
    /// Opens a decoder for `channels` (1 or 2).
    pub fn new(channels: u16) -> Result<OpusDecoder, MediaError> {
        init();
        let channels = channels.clamp(1, 2);
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::OPUS)
            .ok_or(MediaError::CodecUnavailable("opus"))?;
        let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
        // The decoder needs the channel count before the first packet.
        #[allow(unsafe_code)]
        // SAFETY: writing plain fields of the context we own, before it is opened.
        unsafe {
            let raw = ctx.as_mut_ptr();
            (*raw).sample_rate = SAMPLE_RATE as i32;
            (*raw).channels = i32::from(channels);
            (*raw).channel_layout = layout(channels).bits();
        }
        let decoder = ctx
            .decoder()
            .audio()
            .map_err(|e| MediaError::Decode(format!("opening the Opus decoder: {e}")))?;
        Ok(OpusDecoder {
            decoder,
            frame: ffmpeg::frame::Audio::empty(),
            channels,
        })
    }

    /// Decodes one packet into PCM carrying the times given here.
    pub fn decode(
        &mut self,
        data: &[u8],
        pts_us: i64,
        capture_time_us: u64,
    ) -> Result<Option<AudioFrame>, MediaError> {
        let packet = ffmpeg::Packet::copy(data);
        self.decoder
            .send_packet(&packet)
            .map_err(|e| MediaError::Decode(e.to_string()))?;
        match self.decoder.receive_frame(&mut self.frame) {
            Ok(()) => Ok(Some(AudioFrame {
                sample_rate: SAMPLE_RATE,
                channels: self.channels,
                samples: interleave_i16(&self.frame, self.channels),
                pts_us,
                capture_time_us,
            })),
            Err(e) if is_again(&e) => Ok(None),
            Err(e) => Err(MediaError::Decode(e.to_string())),
        }
    }
}

/// Any decoded audio frame as interleaved i16 with `channels` channels.
pub(crate) fn interleave_i16(frame: &ffmpeg::frame::Audio, channels: u16) -> Vec<i16> {
    let n = frame.samples();
    let src_ch = usize::from(frame.channels().max(1));
    let ch = usize::from(channels.max(1));
    let mut out = vec![0i16; n * ch];
    let sample_at = |c: usize, i: usize| -> f32 {
        let c = c.min(src_ch - 1);
        match frame.format() {
            Sample::F32(SampleType::Planar) => frame.plane::<f32>(c).get(i).copied().unwrap_or(0.0),
            Sample::F32(SampleType::Packed) => frame
                .plane::<f32>(0)
                .get(i * src_ch + c)
                .copied()
                .unwrap_or(0.0),
            Sample::I16(SampleType::Planar) => {
                f32::from(frame.plane::<i16>(c).get(i).copied().unwrap_or(0)) / 32768.0
            }
            Sample::I16(SampleType::Packed) => {
                f32::from(
                    frame
                        .plane::<i16>(0)
                        .get(i * src_ch + c)
                        .copied()
                        .unwrap_or(0),
                ) / 32768.0
            }
            _ => 0.0,
        }
    };
    for i in 0..n {
        for c in 0..ch {
            out[i * ch + c] = (sample_at(c, i) * 32767.0).clamp(-32768.0, 32767.0) as i16;
        }
    }
    out
}
