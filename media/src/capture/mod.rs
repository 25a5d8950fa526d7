//! Where frames come from: the synthetic test source, a camera (nokhwa), a microphone (cpal)
//! and media files (FFmpeg). Each source runs on its own thread, paced by its clock, and hands
//! every frame to a [`Fanout`]. Dropping the [`CaptureHandle`] stops it and releases the device
//! at once.

pub mod camera;
pub mod convert;
pub mod file;
pub mod microphone;
pub mod test;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::channel::Fanout;
use crate::error::MediaError;
use crate::frame::{SharedAudioFrame, SharedVideoFrame};

/// Where a channel's video comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoSource {
    /// The moving pattern with burned-in frame number and capture time.
    Test,
    /// A camera; `None` for the first one.
    Camera {
        /// Index among [`camera::list_cameras`].
        index: Option<u32>,
    },
    /// A media file, played at real-time pace and looped.
    File(PathBuf),
}

/// Where a channel's audio comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioSource {
    /// No audio.
    None,
    /// The 440 Hz tone with a 2 kHz marker every second.
    Tone,
    /// A microphone; `None` for the default one.
    Microphone {
        /// A name from [`microphone::list_microphones`].
        name: Option<String>,
    },
    /// The audio of a media file (played with its video when the video source is the same file).
    File(PathBuf),
}

/// Called from a capture thread when it fails.
pub type ErrorCallback = Arc<dyn Fn(MediaError) + Send + Sync>;

/// Where a running source delivers.
#[derive(Clone)]
pub struct Outputs {
    /// Video frames, if this source makes them.
    pub video: Option<Arc<Fanout<SharedVideoFrame>>>,
    /// Audio frames, if this source makes them.
    pub audio: Option<Arc<Fanout<SharedAudioFrame>>>,
    /// Failures.
    pub on_error: ErrorCallback,
}

/// A running source. Dropping it stops the thread and releases the device.
pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Set for a device the thread holds; released before `stop()` returns.
    describe: String,
}

impl CaptureHandle {
    /// Starts `run` on a named thread; it must return soon after `stop` is set.
    pub fn spawn(
        describe: String,
        run: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> CaptureHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("onair-capture-{describe}"))
            .spawn(move || run(flag))
            .map_err(|e| tracing::error!(error = %e, "cannot start a capture thread"))
            .ok();
        CaptureHandle {
            stop,
            thread,
            describe,
        }
    }

    /// What this handle captures.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and waits for it (and so for the device to be released).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Sleeps until `deadline` unless `stop` is set first (checked every 20 ms at most).
pub(crate) fn sleep_until(deadline: std::time::Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(20)));
    }
}
