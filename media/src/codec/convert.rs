//! Moving pictures between our [`VideoFrame`] and FFmpeg's frames, with swscale only where the
//! format or size differs.

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;

use crate::error::MediaError;
use crate::frame::{ColorMatrix, ColorSpace, PixelFormat, VideoFrame};

fn pixel(format: PixelFormat) -> Pixel {
    match format {
        PixelFormat::I420 => Pixel::YUV420P,
        PixelFormat::Nv12 => Pixel::NV12,
    }
}

/// Copies a frame's planes row by row into an FFmpeg frame of the same format and size.
pub fn copy_into_ffmpeg(src: &VideoFrame, dst: &mut ffmpeg::frame::Video) {
    for i in 0..src.plane_count() {
        let p = src.planes[i];
        let row_bytes = match (src.format, i) {
            (_, 0) => src.width as usize,
            (PixelFormat::I420, _) => (src.width as usize).div_ceil(2),
            (PixelFormat::Nv12, _) => (src.width as usize).div_ceil(2) * 2,
        };
        let dst_stride = dst.stride(i);
        let data = dst.data_mut(i);
        for row in 0..p.rows {
            let s = p.offset + row * p.stride;
            let d = row * dst_stride;
            if let (Some(from), Some(to)) = (
                src.data.get(s..s + row_bytes),
                data.get_mut(d..d + row_bytes),
            ) {
                to.copy_from_slice(from);
            }
        }
    }
}

/// Copies a YUV420P FFmpeg frame out into a tightly packed I420 [`VideoFrame`], writing each
/// byte once (no zero-fill first).
pub fn copy_from_ffmpeg_i420(src: &ffmpeg::frame::Video) -> VideoFrame {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = Vec::with_capacity(w * h + 2 * cw * ch);
    for (i, (row_bytes, rows)) in [(w, h), (cw, ch), (cw, ch)].into_iter().enumerate() {
        let stride = src.stride(i);
        let plane = src.data(i);
        for row in 0..rows {
            match plane.get(row * stride..row * stride + row_bytes) {
                Some(bytes) => data.extend_from_slice(bytes),
                None => data.resize(data.len() + row_bytes, if i == 0 { 16 } else { 128 }),
            }
        }
    }
    VideoFrame {
        format: PixelFormat::I420,
        width: src.width(),
        height: src.height(),
        planes: VideoFrame::i420_planes(src.width(), src.height()),
        data,
        pts_us: 0,
        capture_time_us: 0,
        color: color_of(src),
    }
}

/// The colour space an FFmpeg frame declares; unspecified counts as BT.601 limited range,
/// what WebRTC encoders and cameras give.
pub fn color_of(src: &ffmpeg::frame::Video) -> ColorSpace {
    use ffmpeg::color::{Range, Space};
    ColorSpace {
        matrix: match src.color_space() {
            Space::BT709 => ColorMatrix::Bt709,
            _ => ColorMatrix::Bt601,
        },
        full_range: src.color_range() == Range::JPEG,
    }
}

/// Converts pictures of one format and size to I420 of another size, reusing its swscale
/// context and buffers.
pub struct Converter {
    scaler: scaling::Context,
    input: ffmpeg::frame::Video,
    output: ffmpeg::frame::Video,
    key: (Pixel, u32, u32, u32, u32),
}

impl Converter {
    fn new(from: Pixel, w: u32, h: u32, to_w: u32, to_h: u32) -> Result<Converter, MediaError> {
        let scaler = scaling::Context::get(
            from,
            w,
            h,
            Pixel::YUV420P,
            to_w,
            to_h,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| {
            MediaError::Encode(format!("swscale {from:?} {w}x{h} -> {to_w}x{to_h}: {e}"))
        })?;
        Ok(Converter {
            scaler,
            input: ffmpeg::frame::Video::new(from, w, h),
            output: ffmpeg::frame::Video::new(Pixel::YUV420P, to_w, to_h),
            key: (from, w, h, to_w, to_h),
        })
    }

    /// The last converted picture.
    pub fn output(&self) -> &ffmpeg::frame::Video {
        &self.output
    }

    /// Converts an FFmpeg frame (any format swscale reads) to an FFmpeg YUV420P frame.
    pub fn convert_ffmpeg<'a>(
        slot: &'a mut Option<Converter>,
        src: &ffmpeg::frame::Video,
        to_w: u32,
        to_h: u32,
    ) -> Result<&'a mut ffmpeg::frame::Video, MediaError> {
        let key = (src.format(), src.width(), src.height(), to_w, to_h);
        if slot.as_ref().map(|c| c.key) != Some(key) {
            *slot = Some(Converter::new(key.0, key.1, key.2, to_w, to_h)?);
        }
        let Some(c) = slot.as_mut() else {
            return Err(MediaError::Encode("converter missing".into()));
        };
        c.scaler
            .run(src, &mut c.output)
            .map_err(|e| MediaError::Encode(format!("swscale: {e}")))?;
        Ok(&mut c.output)
    }

    /// Converts one of our frames to an FFmpeg YUV420P frame of `to_w`×`to_h`.
    pub fn convert<'a>(
        slot: &'a mut Option<Converter>,
        src: &VideoFrame,
        to_w: u32,
        to_h: u32,
    ) -> Result<&'a mut ffmpeg::frame::Video, MediaError> {
        let key = (pixel(src.format), src.width, src.height, to_w, to_h);
        if slot.as_ref().map(|c| c.key) != Some(key) {
            *slot = Some(Converter::new(key.0, key.1, key.2, to_w, to_h)?);
        }
        let Some(c) = slot.as_mut() else {
            return Err(MediaError::Encode("converter missing".into()));
        };
        copy_into_ffmpeg(src, &mut c.input);
        c.scaler
            .run(&c.input, &mut c.output)
            .map_err(|e| MediaError::Encode(format!("swscale: {e}")))?;
        Ok(&mut c.output)
    }
}
