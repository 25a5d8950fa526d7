//! H.264 through libx264 for zero latency, and FFmpeg's H.264 decoder in low-delay mode.
//!
//! Encoder: no B-frames, no lookahead, slice threads (not frame threads), constant bitrate with
//! a VBV of one frame, IDR on request, bitrate changes applied on the next frame (libx264
//! reconfigures itself when the context's rates change); a new size, frame rate or GOP reopens
//! it. Decoder: `LOW_DELAY`, slice threads, one frame out for each packet in.

use std::collections::VecDeque;

use ffmpeg::codec::threading;
use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use crate::codec::convert::{self, Converter};
use crate::codec::{init, is_again, slice_threads};
use crate::config::VideoConfig;
use crate::error::MediaError;
use crate::frame::{PixelFormat, VideoFrame};

/// One encoded frame: an Annex-B access unit.
#[derive(Clone, Debug)]
pub struct EncodedVideo {
    /// NAL units with start codes; SPS/PPS repeated before each IDR.
    pub data: Vec<u8>,
    /// An IDR frame.
    pub keyframe: bool,
    /// The source frame's presentation time, µs.
    pub pts_us: i64,
    /// The source frame's capture time, µs since the Unix epoch.
    pub capture_time_us: u64,
}

/// A zero-latency H.264 encoder.
pub struct H264Encoder {
    encoder: ffmpeg::encoder::video::Encoder,
    config: VideoConfig,
    input: ffmpeg::frame::Video,
    converter: Option<Converter>,
    packet: ffmpeg::Packet,
    index: i64,
    pending: VecDeque<(i64, i64, u64)>,
    keyframe_requested: bool,
    /// What the last frame was encoded from: `Some(true)` the scaler's output, `Some(false)`
    /// the plain copy in `input`.
    last_scaled: Option<bool>,
}

fn open_encoder(config: &VideoConfig) -> Result<ffmpeg::encoder::video::Encoder, MediaError> {
    config.validate()?;
    init();
    let codec =
        ffmpeg::encoder::find_by_name("libx264").ok_or(MediaError::CodecUnavailable("libx264"))?;
    let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
    ctx.set_threading(threading::Config {
        kind: threading::Type::Slice,
        count: slice_threads(),
        ..Default::default()
    });
    let mut enc = ctx
        .encoder()
        .video()
        .map_err(|e| MediaError::Encode(format!("libx264 context: {e}")))?;
    let bps = config.bitrate_kbps as usize * 1000;
    let gop = config.gop_frames();
    enc.set_width(config.width);
    enc.set_height(config.height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base((1, config.fps as i32));
    enc.set_frame_rate(Some((config.fps as i32, 1)));
    enc.set_gop(gop);
    enc.set_max_b_frames(0);
    // Our sources are BT.601 limited range; say so in the VUI so players convert it right.
    enc.set_colorspace(ffmpeg::color::Space::SMPTE170M);
    enc.set_color_range(ffmpeg::color::Range::MPEG);
    enc.set_bit_rate(bps);
    enc.set_max_bit_rate(bps);
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("preset", "ultrafast");
    opts.set("tune", "zerolatency");
    opts.set("forced-idr", "1");
    // A VBV of one frame: no frame may take longer than a frame interval to send.
    opts.set("bufsize", &(bps / config.fps.max(1) as usize).to_string());
    opts.set(
        "x264-params",
        &format!(
            "bframes=0:rc-lookahead=0:sync-lookahead=0:sliced-threads=1:scenecut=0:\
             repeat-headers=1:keyint={gop}:min-keyint={gop}:nal-hrd=none"
        ),
    );
    enc.open_with(opts)
        .map_err(|e| MediaError::Encode(format!("opening libx264: {e}")))
}

impl H264Encoder {
    /// Opens an encoder for `config`.
    pub fn new(config: VideoConfig) -> Result<H264Encoder, MediaError> {
        let encoder = open_encoder(&config)?;
        Ok(H264Encoder {
            encoder,
            input: ffmpeg::frame::Video::new(Pixel::YUV420P, config.width, config.height),
            config,
            converter: None,
            packet: ffmpeg::Packet::empty(),
            index: 0,
            pending: VecDeque::new(),
            keyframe_requested: false,
            last_scaled: None,
        })
    }

    /// The stream parameters (codec, size) for a muxer.
    pub fn parameters(&self) -> ffmpeg::codec::Parameters {
        ffmpeg::codec::Parameters::from(&*self.encoder)
    }

    /// The settings in force.
    pub fn config(&self) -> VideoConfig {
        self.config
    }

    /// The next frame will be an IDR (a player asked, by PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate from the next frame on, without a keyframe.
    pub fn set_bitrate_kbps(&mut self, kbps: u32) -> Result<(), MediaError> {
        let config = self.config.with_bitrate_kbps(kbps);
        config.validate()?;
        let bps = kbps as usize * 1000;
        self.encoder.set_bit_rate(bps);
        self.encoder.set_max_bit_rate(bps);
        set_rc_buffer_size(&mut self.encoder, bps / self.config.fps.max(1) as usize);
        self.config = config;
        Ok(())
    }

    /// Applies new settings: a bitrate-only change is live; anything else reopens the encoder
    /// (and so starts with a keyframe).
    pub fn reconfigure(&mut self, config: VideoConfig) -> Result<(), MediaError> {
        config.validate()?;
        if config == self.config {
            return Ok(());
        }
        if config.with_bitrate_kbps(self.config.bitrate_kbps) == self.config {
            return self.set_bitrate_kbps(config.bitrate_kbps);
        }
        self.encoder = open_encoder(&config)?;
        self.input = ffmpeg::frame::Video::new(Pixel::YUV420P, config.width, config.height);
        self.config = config;
        self.pending.clear();
        Ok(())
    }

    /// Encodes one frame and returns its packet (scaling it first if its size or format differs
    /// from the config).
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, MediaError> {
        self.encode_from(None, frame)
    }

    /// The picture the last frame was encoded from (I420 at this encoder's size).
    pub fn last_picture(&self) -> Option<&ffmpeg::frame::Video> {
        match self.last_scaled? {
            true => self.converter.as_ref().map(Converter::output),
            false => Some(&self.input),
        }
    }

    /// Like [`Self::encode`], scaling from `larger`'s last picture of `frame` when it has one
    /// (a simulcast ladder: 360p from the 720p layer's copy, 180p from the 360p picture, so
    /// the frame is copied once and each scale reads the smallest picture that will do).
    pub fn encode_from(
        &mut self,
        larger: Option<&H264Encoder>,
        frame: &VideoFrame,
    ) -> Result<Option<EncodedVideo>, MediaError> {
        let (w, h) = (self.config.width, self.config.height);
        let picture = larger
            .and_then(H264Encoder::last_picture)
            .filter(|p| p.format() == Pixel::YUV420P && p.width() >= w && p.height() >= h);
        let source: &mut ffmpeg::frame::Video = if let Some(picture) = picture {
            self.last_scaled = Some(true);
            Converter::convert_ffmpeg(&mut self.converter, picture, w, h)?
        } else if frame.format == PixelFormat::I420 && frame.width == w && frame.height == h {
            self.last_scaled = Some(false);
            convert::copy_into_ffmpeg(frame, &mut self.input);
            &mut self.input
        } else {
            self.last_scaled = Some(true);
            Converter::convert(&mut self.converter, frame, w, h)?
        };
        source.set_pts(Some(self.index));
        source.set_kind(if self.keyframe_requested {
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        self.keyframe_requested = false;
        self.encoder
            .send_frame(source)
            .map_err(|e| MediaError::Encode(e.to_string()))?;
        self.pending
            .push_back((self.index, frame.pts_us, frame.capture_time_us));
        if self.pending.len() > 64 {
            self.pending.pop_front();
        }
        self.index += 1;
        match self.encoder.receive_packet(&mut self.packet) {
            Ok(()) => {
                let pts = self.packet.pts().unwrap_or(self.index - 1);
                while self.pending.front().is_some_and(|(i, _, _)| *i < pts) {
                    self.pending.pop_front();
                }
                let (pts_us, capture_time_us) = match self.pending.pop_front() {
                    Some((i, p, c)) if i == pts => (p, c),
                    _ => (frame.pts_us, frame.capture_time_us),
                };
                Ok(Some(EncodedVideo {
                    data: self.packet.data().map(<[u8]>::to_vec).unwrap_or_default(),
                    keyframe: self.packet.is_key(),
                    pts_us,
                    capture_time_us,
                }))
            }
            Err(e) if is_again(&e) => Ok(None),
            Err(e) => Err(MediaError::Encode(e.to_string())),
        }
    }
}

/// Sets `rc_buffer_size` (VBV size) on an open encoder; libx264 reconfigures on the next frame.
/// ffmpeg-next has no setter for this field, hence the one raw write.
#[allow(unsafe_code)]
fn set_rc_buffer_size(encoder: &mut ffmpeg::encoder::video::Encoder, bits: usize) {
    // SAFETY: the pointer is the encoder's own live AVCodecContext, owned by `encoder` and
    // borrowed mutably here; `rc_buffer_size` is a plain int that libx264 reads on the next frame.
    unsafe {
        (*encoder.as_mut_ptr()).rc_buffer_size = bits.min(i32::MAX as usize) as i32;
    }
}

/// A low-delay H.264 decoder.
pub struct H264Decoder {
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
    converter: Option<Converter>,
    index: i64,
    pending: VecDeque<(i64, i64, u64)>,
}

impl H264Decoder {
    /// Opens a decoder.
    pub fn new() -> Result<H264Decoder, MediaError> {
        init();
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::H264)
            .ok_or(MediaError::CodecUnavailable("h264"))?;
        let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
        ctx.set_flags(ffmpeg::codec::Flags::LOW_DELAY);
        ctx.set_threading(threading::Config {
            kind: threading::Type::Slice,
            count: slice_threads(),
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| MediaError::Decode(format!("opening the H.264 decoder: {e}")))?;
        Ok(H264Decoder {
            decoder,
            frame: ffmpeg::frame::Video::empty(),
            converter: None,
            index: 0,
            pending: VecDeque::new(),
        })
    }

    /// Decodes one access unit; returns the picture it completes, carrying the times given here.
    pub fn decode(
        &mut self,
        data: &[u8],
        pts_us: i64,
        capture_time_us: u64,
    ) -> Result<Option<VideoFrame>, MediaError> {
        let mut packet = ffmpeg::Packet::copy(data);
        packet.set_pts(Some(self.index));
        self.pending
            .push_back((self.index, pts_us, capture_time_us));
        if self.pending.len() > 64 {
            self.pending.pop_front();
        }
        self.index += 1;
        self.decoder
            .send_packet(&packet)
            .map_err(|e| MediaError::Decode(e.to_string()))?;
        match self.decoder.receive_frame(&mut self.frame) {
            Ok(()) => {
                let mut out = match self.frame.format() {
                    Pixel::YUV420P | Pixel::YUVJ420P => convert::copy_from_ffmpeg_i420(&self.frame),
                    _ => {
                        let (w, h) = (self.frame.width(), self.frame.height());
                        let converted =
                            Converter::convert_ffmpeg(&mut self.converter, &self.frame, w, h)?;
                        convert::copy_from_ffmpeg_i420(converted)
                    }
                };
                let pts = self.frame.pts().unwrap_or(self.index - 1);
                while self.pending.front().is_some_and(|(i, _, _)| *i < pts) {
                    self.pending.pop_front();
                }
                if let Some((i, p, c)) = self.pending.pop_front()
                    && i == pts
                {
                    out.pts_us = p;
                    out.capture_time_us = c;
                }
                Ok(Some(out))
            }
            Err(e) if is_again(&e) => Ok(None),
            Err(e) => Err(MediaError::Decode(e.to_string())),
        }
    }
}
