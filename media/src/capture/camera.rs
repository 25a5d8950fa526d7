//! Cameras through nokhwa: list them with their formats, open one near a requested size and
//! frame rate, convert each buffer to our frame once. No camera is an error with its code
//! (1006001), never a panic; the caller falls back to the test source.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};

use crate::capture::convert::{MjpegDecoder, gray_to_i420, nv12_frame, rgb_to_i420, yuyv_to_i420};
use crate::capture::{CaptureHandle, Outputs};
use crate::config::VideoConfig;
use crate::error::MediaError;
use crate::frame::{VideoFrame, wall_clock_us};

/// A camera the system offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraInfo {
    /// Index to open it by.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// The driver's description.
    pub description: String,
}

/// One capture mode of a camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraMode {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// The camera's pixel format (`YUYV`, `MJPEG`, `NV12`…).
    pub format: String,
}

/// The cameras on this machine (empty when there are none).
pub fn list_cameras() -> Result<Vec<CameraInfo>, MediaError> {
    let infos = nokhwa::query(ApiBackend::Auto).map_err(|e| MediaError::CameraOpen {
        device: "(query)".into(),
        reason: e.to_string(),
    })?;
    Ok(infos
        .into_iter()
        .enumerate()
        .map(|(i, info)| CameraInfo {
            index: match info.index() {
                CameraIndex::Index(n) => *n,
                CameraIndex::String(_) => i as u32,
            },
            name: info.human_name(),
            description: info.description().to_string(),
        })
        .collect())
}

fn open(index: Option<u32>, config: &VideoConfig) -> Result<Camera, MediaError> {
    let cameras = list_cameras().unwrap_or_default();
    let Some(info) = (match index {
        Some(i) => cameras.iter().find(|c| c.index == i),
        None => cameras.first(),
    }) else {
        return Err(MediaError::NoCamera);
    };
    let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(
        CameraFormat::new_from(config.width, config.height, FrameFormat::YUYV, config.fps),
    ));
    let device = format!("{} ({})", info.name, info.index);
    let mut camera = Camera::new(CameraIndex::Index(info.index), request).map_err(|e| {
        MediaError::CameraFormat {
            device: device.clone(),
            request: format!("{}x{}@{}", config.width, config.height, config.fps),
            reason: e.to_string(),
        }
    })?;
    camera.open_stream().map_err(|e| MediaError::CameraOpen {
        device,
        reason: e.to_string(),
    })?;
    Ok(camera)
}

/// The capture modes of camera `index`.
pub fn camera_modes(index: u32) -> Result<Vec<CameraMode>, MediaError> {
    let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
    let mut camera =
        Camera::new(CameraIndex::Index(index), request).map_err(|e| MediaError::CameraOpen {
            device: index.to_string(),
            reason: e.to_string(),
        })?;
    let formats = camera
        .compatible_camera_formats()
        .map_err(|e| MediaError::CameraOpen {
            device: index.to_string(),
            reason: e.to_string(),
        })?;
    Ok(formats
        .into_iter()
        .map(|f| CameraMode {
            width: f.width(),
            height: f.height(),
            fps: f.frame_rate(),
            format: f.format().to_string(),
        })
        .collect())
}

/// Converts one camera buffer.
fn to_frame(
    format: FrameFormat,
    data: &[u8],
    width: u32,
    height: u32,
    mjpeg: &mut Option<MjpegDecoder>,
) -> Result<VideoFrame, MediaError> {
    let converted = match format {
        FrameFormat::YUYV => yuyv_to_i420(data, width, height),
        FrameFormat::NV12 => nv12_frame(data, width, height),
        FrameFormat::GRAY => gray_to_i420(data, width, height),
        FrameFormat::RAWRGB => rgb_to_i420(data, width, height, false),
        FrameFormat::RAWBGR => rgb_to_i420(data, width, height, true),
        FrameFormat::MJPEG => {
            if mjpeg.is_none() {
                *mjpeg = Some(MjpegDecoder::new()?);
            }
            return match mjpeg.as_mut() {
                Some(d) => d.decode(data),
                None => Err(MediaError::CodecUnavailable("mjpeg")),
            };
        }
    };
    converted.ok_or_else(|| {
        MediaError::Decode(format!(
            "short {format} buffer of {} bytes for {width}x{height}",
            data.len()
        ))
    })
}

/// Starts capturing from camera `index` (the first if `None`) near `config`'s size and rate.
pub fn start(index: Option<u32>, config: VideoConfig, outputs: Outputs) -> CaptureHandle {
    CaptureHandle::spawn("camera".into(), move |stop: Arc<AtomicBool>| {
        let Some(video) = outputs.video else { return };
        let mut camera = match open(index, &config) {
            Ok(c) => c,
            Err(e) => {
                (outputs.on_error)(e);
                return;
            }
        };
        let mut mjpeg = None;
        let start = Instant::now();
        let mut failures = 0;
        while !stop.load(Ordering::Relaxed) {
            let buffer = match camera.frame() {
                Ok(b) => b,
                Err(e) => {
                    failures += 1;
                    if failures > 30 {
                        (outputs.on_error)(MediaError::CameraOpen {
                            device: camera.info().human_name(),
                            reason: format!("stopped delivering frames: {e}"),
                        });
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            let res = buffer.resolution();
            match to_frame(
                buffer.source_frame_format(),
                buffer.buffer(),
                res.width(),
                res.height(),
                &mut mjpeg,
            ) {
                Ok(mut frame) => {
                    frame.capture_time_us = wall_clock_us();
                    frame.pts_us = start.elapsed().as_micros() as i64;
                    video.send(&Arc::new(frame));
                }
                Err(e) => tracing::debug!(error = %e, "dropping an unreadable camera frame"),
            }
        }
        let _ = camera.stop_stream();
    })
}
