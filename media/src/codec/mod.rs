//! H.264 and Opus through FFmpeg (ffmpeg-next), tuned for latency: one frame in, one packet out;
//! one packet in, one frame out. Nothing here buffers frames "just in case".

pub mod convert;
pub mod h264;
pub mod opus;

use std::sync::Once;

pub use ffmpeg_next as ffmpeg;

/// Initialises FFmpeg once per process and quiets its logging to errors.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg::init() {
            tracing::error!(error = %e, "FFmpeg failed to initialise");
        }
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// Whether an FFmpeg error means "give me more input first".
pub(crate) fn is_again(e: &ffmpeg::Error) -> bool {
    matches!(e, ffmpeg::Error::Other { errno } if *errno == ffmpeg::util::error::EAGAIN)
}

/// Threads for slice-threaded coding: the cores, at most 4.
pub(crate) fn slice_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}
