//! Camera buffers to our frames, converted once: YUYV and RGB straight into I420 in one pass,
//! NV12 kept as NV12 (the encoder and the renderer take it), MJPEG decoded by FFmpeg.

use ffmpeg_next as ffmpeg;

use crate::codec::convert::{Converter, copy_from_ffmpeg_i420};
use crate::codec::init;
use crate::error::MediaError;
use crate::frame::{PixelFormat, Plane, VideoFrame};

/// Packed YUYV 4:2:2 (`Y0 U Y1 V`) to I420, averaging chroma of each row pair.
pub fn yuyv_to_i420(src: &[u8], width: u32, height: u32) -> Option<VideoFrame> {
    let (w, h) = (width as usize & !1, height as usize & !1);
    if w == 0 || h == 0 || src.len() < w * h * 2 {
        return None;
    }
    let mut f = VideoFrame::new_i420(w as u32, h as u32);
    let (yp, up, vp) = (f.planes[0], f.planes[1], f.planes[2]);
    for row in (0..h).step_by(2) {
        let a = &src[row * w * 2..(row + 1) * w * 2];
        let b = &src[(row + 1) * w * 2..(row + 2) * w * 2];
        for px in 0..w / 2 {
            let (qa, qb) = (&a[px * 4..px * 4 + 4], &b[px * 4..px * 4 + 4]);
            f.data[yp.offset + row * yp.stride + 2 * px] = qa[0];
            f.data[yp.offset + row * yp.stride + 2 * px + 1] = qa[2];
            f.data[yp.offset + (row + 1) * yp.stride + 2 * px] = qb[0];
            f.data[yp.offset + (row + 1) * yp.stride + 2 * px + 1] = qb[2];
            f.data[up.offset + (row / 2) * up.stride + px] =
                (u16::from(qa[1]) + u16::from(qb[1])).div_ceil(2) as u8;
            f.data[vp.offset + (row / 2) * vp.stride + px] =
                (u16::from(qa[3]) + u16::from(qb[3])).div_ceil(2) as u8;
        }
    }
    Some(f)
}

/// Packed RGB24 (or BGR24 with `bgr`) to I420, BT.601 limited range.
pub fn rgb_to_i420(src: &[u8], width: u32, height: u32, bgr: bool) -> Option<VideoFrame> {
    let (w, h) = (width as usize & !1, height as usize & !1);
    let stride = width as usize * 3;
    if w == 0 || h == 0 || src.len() < stride * height as usize {
        return None;
    }
    let mut f = VideoFrame::new_i420(w as u32, h as u32);
    let (yp, up, vp) = (f.planes[0], f.planes[1], f.planes[2]);
    let rgb = |x: usize, y: usize| {
        let p = &src[y * stride + x * 3..y * stride + x * 3 + 3];
        let (r, g, b) = if bgr {
            (p[2], p[1], p[0])
        } else {
            (p[0], p[1], p[2])
        };
        (i32::from(r), i32::from(g), i32::from(b))
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = rgb(x, y);
            f.data[yp.offset + y * yp.stride + x] =
                (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let mut acc = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (r, g, b) = rgb(x + dx, y + dy);
                acc = (acc.0 + r, acc.1 + g, acc.2 + b);
            }
            let (r, g, b) = (acc.0 / 4, acc.1 / 4, acc.2 / 4);
            f.data[up.offset + (y / 2) * up.stride + x / 2] =
                (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            f.data[vp.offset + (y / 2) * vp.stride + x / 2] =
                (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    Some(f)
}

/// NV12 as NV12: one copy into a frame of our own, no conversion.
pub fn nv12_frame(src: &[u8], width: u32, height: u32) -> Option<VideoFrame> {
    let (w, h) = (width as usize, height as usize);
    let size = w * h + w * h.div_ceil(2);
    if w % 2 != 0 || h % 2 != 0 || src.len() < size {
        return None;
    }
    Some(VideoFrame {
        format: PixelFormat::Nv12,
        width,
        height,
        planes: [
            Plane {
                offset: 0,
                stride: w,
                rows: h,
            },
            Plane {
                offset: w * h,
                stride: w,
                rows: h / 2,
            },
            Plane {
                offset: size,
                stride: 0,
                rows: 0,
            },
        ],
        data: src[..size].to_vec(),
        pts_us: 0,
        capture_time_us: 0,
        color: Default::default(),
    })
}

/// Grey to I420 with neutral chroma.
pub fn gray_to_i420(src: &[u8], width: u32, height: u32) -> Option<VideoFrame> {
    let (w, h) = (width as usize & !1, height as usize & !1);
    if src.len() < width as usize * height as usize {
        return None;
    }
    let mut f = VideoFrame::new_i420(w as u32, h as u32);
    for y in 0..h {
        let o = f.planes[0].offset + y * f.planes[0].stride;
        f.data[o..o + w].copy_from_slice(&src[y * width as usize..y * width as usize + w]);
    }
    Some(f)
}

/// Decodes MJPEG camera frames with FFmpeg.
pub struct MjpegDecoder {
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
    converter: Option<Converter>,
}

impl MjpegDecoder {
    /// Opens FFmpeg's MJPEG decoder.
    pub fn new() -> Result<MjpegDecoder, MediaError> {
        init();
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::MJPEG)
            .ok_or(MediaError::CodecUnavailable("mjpeg"))?;
        let decoder = ffmpeg::codec::context::Context::new_with_codec(codec)
            .decoder()
            .video()
            .map_err(|e| MediaError::Decode(format!("opening the MJPEG decoder: {e}")))?;
        Ok(MjpegDecoder {
            decoder,
            frame: ffmpeg::frame::Video::empty(),
            converter: None,
        })
    }

    /// One JPEG in, one I420 frame out.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<VideoFrame, MediaError> {
        self.decoder
            .send_packet(&ffmpeg::Packet::copy(jpeg))
            .map_err(|e| MediaError::Decode(e.to_string()))?;
        self.decoder
            .receive_frame(&mut self.frame)
            .map_err(|e| MediaError::Decode(e.to_string()))?;
        Ok(match self.frame.format() {
            ffmpeg::format::Pixel::YUV420P | ffmpeg::format::Pixel::YUVJ420P => {
                copy_from_ffmpeg_i420(&self.frame)
            }
            _ => {
                let (w, h) = (self.frame.width() & !1, self.frame.height() & !1);
                copy_from_ffmpeg_i420(Converter::convert_ffmpeg(
                    &mut self.converter,
                    &self.frame,
                    w,
                    h,
                )?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_in_one_pass() {
        // 4x2: Y ramps, U=100 on row 0 and 50 on row 1, V=200.
        let mut src = Vec::new();
        for row in 0..2u8 {
            for px in 0..2u8 {
                src.extend_from_slice(&[
                    10 * (row * 4 + px * 2),
                    if row == 0 { 100 } else { 50 },
                    10 * (row * 4 + px * 2 + 1),
                    200,
                ]);
            }
        }
        let f = yuyv_to_i420(&src, 4, 2).expect("converts");
        assert_eq!(f.plane(0), &[0, 10, 20, 30, 40, 50, 60, 70]);
        assert_eq!(f.plane(1), &[75, 75]);
        assert_eq!(f.plane(2), &[200, 200]);
        assert!(
            yuyv_to_i420(&src[..10], 4, 2).is_none(),
            "short buffers are refused, not read past"
        );
    }

    #[test]
    fn rgb_white_and_black_map_to_video_range() {
        let mut src = vec![255u8; 4 * 2 * 3];
        src[..6].fill(0);
        let f = rgb_to_i420(&src, 4, 2, false).expect("converts");
        assert_eq!(f.luma(0, 0), 16);
        assert_eq!(f.luma(3, 1), 235);
        assert!(f.plane(1).iter().all(|&u| (126..=130).contains(&u)));
    }

    #[test]
    fn nv12_and_gray_are_kept_or_padded() {
        let f = nv12_frame(&[7u8; 4 * 2 * 3 / 2], 4, 2).expect("nv12");
        assert_eq!((f.format, f.plane(1).len()), (PixelFormat::Nv12, 4));
        let g = gray_to_i420(&[9u8; 8], 4, 2).expect("gray");
        assert_eq!(g.plane(0), &[9; 8]);
        assert_eq!(g.plane(1), &[128, 128]);
    }
}
