//! The engine's local publish channels (main and aux): each has a video and an audio source, a
//! video config, the running captures and the fanouts that hand frames to the preview and, when
//! publishing, to the encoders. Capture runs only while something needs it; stopping releases
//! the device at once.

use std::sync::Arc;

use crate::capture::{self, AudioSource, CaptureHandle, ErrorCallback, Outputs, VideoSource};
use crate::channel::Fanout;
use crate::config::VideoConfig;
use crate::error::MediaError;
use crate::frame::{SharedAudioFrame, SharedVideoFrame};

/// The seed's publish channels: main (e.g. the camera) and aux (e.g. a file or screen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublishChannel {
    /// Channel 0.
    Main = 0,
    /// Channel 1.
    Aux = 1,
}

impl PublishChannel {
    /// Both channels.
    pub const ALL: [PublishChannel; 2] = [PublishChannel::Main, PublishChannel::Aux];

    /// The channel's index.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The channel with this index.
    pub fn from_index(i: usize) -> Option<PublishChannel> {
        PublishChannel::ALL.get(i).copied()
    }
}

/// Which device failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The video source (camera, file or test pattern).
    Video,
    /// The audio source (microphone, file or tone).
    Audio,
}

/// One local channel's state.
pub struct LocalChannel {
    channel: PublishChannel,
    video_source: VideoSource,
    audio_source: AudioSource,
    config: VideoConfig,
    video: Arc<Fanout<SharedVideoFrame>>,
    audio: Arc<Fanout<SharedAudioFrame>>,
    video_capture: Option<CaptureHandle>,
    audio_capture: Option<CaptureHandle>,
    previewing: bool,
    publishing: bool,
    /// Counts `set_publishing(true)` calls, so a late release of an earlier publish cannot stop
    /// a newer one (see [`LocalChannel::release_publishing`]).
    publish_epoch: u64,
}

/// Reports a capture failure (the engine turns it into an event).
pub type DeviceErrorCallback = Arc<dyn Fn(PublishChannel, DeviceKind, MediaError) + Send + Sync>;

impl LocalChannel {
    /// A channel with the test source, the tone, and the default config; nothing running.
    pub fn new(channel: PublishChannel) -> LocalChannel {
        LocalChannel {
            channel,
            video_source: VideoSource::Test,
            audio_source: AudioSource::Tone,
            config: VideoConfig::default(),
            video: Arc::new(Fanout::default()),
            audio: Arc::new(Fanout::default()),
            video_capture: None,
            audio_capture: None,
            previewing: false,
            publishing: false,
            publish_epoch: 0,
        }
    }

    /// The video fanout (subscribe for frames).
    pub fn video(&self) -> &Arc<Fanout<SharedVideoFrame>> {
        &self.video
    }

    /// The audio fanout.
    pub fn audio(&self) -> &Arc<Fanout<SharedAudioFrame>> {
        &self.audio
    }

    /// The video config.
    pub fn config(&self) -> VideoConfig {
        self.config
    }

    /// Whether the preview is on.
    pub fn is_previewing(&self) -> bool {
        self.previewing
    }

    fn wanted(&self) -> bool {
        self.previewing || self.publishing
    }

    /// Changes the video source (restarting capture if it runs).
    pub fn set_video_source(&mut self, source: VideoSource, on_error: &DeviceErrorCallback) {
        if self.video_source != source {
            self.video_source = source;
            self.restart(on_error);
        }
    }

    /// Changes the audio source (restarting capture if it runs).
    pub fn set_audio_source(&mut self, source: AudioSource, on_error: &DeviceErrorCallback) {
        if self.audio_source != source {
            self.audio_source = source;
            self.restart(on_error);
        }
    }

    /// Changes the video config; a running test source or camera restarts at the new size.
    pub fn set_config(
        &mut self,
        config: VideoConfig,
        on_error: &DeviceErrorCallback,
    ) -> Result<(), MediaError> {
        config.validate()?;
        if self.config != config {
            self.config = config;
            if matches!(
                self.video_source,
                VideoSource::Test | VideoSource::Camera { .. }
            ) {
                self.restart(on_error);
            }
        }
        Ok(())
    }

    /// Turns the preview on or off.
    pub fn set_previewing(&mut self, on: bool, on_error: &DeviceErrorCallback) {
        self.previewing = on;
        self.reconcile(on_error);
    }

    /// Marks the channel as publishing (capture runs while publishing, preview or not).
    pub fn set_publishing(&mut self, on: bool, on_error: &DeviceErrorCallback) {
        if on {
            self.publish_epoch += 1;
        }
        self.publishing = on;
        self.reconcile(on_error);
    }

    /// Which publish this is: changes with every `set_publishing(true)`.
    pub fn publish_epoch(&self) -> u64 {
        self.publish_epoch
    }

    /// Ends the publish numbered `epoch`, unless a newer one started since (then nothing
    /// changes). Stopping capture joins its threads: call it off async workers.
    pub fn release_publishing(&mut self, epoch: u64, on_error: &DeviceErrorCallback) {
        if epoch == self.publish_epoch {
            self.set_publishing(false, on_error);
        }
    }

    fn restart(&mut self, on_error: &DeviceErrorCallback) {
        self.stop_all();
        self.reconcile(on_error);
    }

    /// Stops every capture now.
    pub fn stop_all(&mut self) {
        // Dropping a handle joins its thread, which releases the device.
        self.video_capture = None;
        self.audio_capture = None;
    }

    /// Starts what is wanted and not running; stops what runs and is not wanted.
    fn reconcile(&mut self, on_error: &DeviceErrorCallback) {
        if !self.wanted() {
            self.stop_all();
            return;
        }
        let channel = self.channel;
        let errors = |kind: DeviceKind| -> ErrorCallback {
            let cb = on_error.clone();
            Arc::new(move |e| cb(channel, kind, e))
        };
        let same_file = matches!((&self.video_source, &self.audio_source),
            (VideoSource::File(a), AudioSource::File(b)) if a == b);
        let video_dead = self.video_capture.as_ref().is_none_or(|h| !h.is_running());
        let audio_dead = self.audio_capture.as_ref().is_none_or(|h| !h.is_running());
        if same_file {
            if video_dead && let VideoSource::File(path) = &self.video_source {
                self.audio_capture = None;
                self.video_capture = Some(capture::file::start(
                    path.clone(),
                    Outputs {
                        video: Some(self.video.clone()),
                        audio: Some(self.audio.clone()),
                        on_error: errors(DeviceKind::Video),
                    },
                ));
            }
            return;
        }
        if video_dead {
            let outputs = Outputs {
                video: Some(self.video.clone()),
                audio: None,
                on_error: errors(DeviceKind::Video),
            };
            self.video_capture = Some(match &self.video_source {
                VideoSource::Test => capture::test::start_video(self.config, outputs),
                VideoSource::Camera { index } => {
                    capture::camera::start(*index, self.config, outputs)
                }
                VideoSource::File(path) => capture::file::start(path.clone(), outputs),
            });
        }
        if audio_dead {
            let outputs = Outputs {
                video: None,
                audio: Some(self.audio.clone()),
                on_error: errors(DeviceKind::Audio),
            };
            self.audio_capture = match &self.audio_source {
                AudioSource::None => None,
                AudioSource::Tone => Some(capture::test::start_audio(outputs)),
                AudioSource::Microphone { name } => {
                    Some(capture::microphone::start(name.clone(), outputs))
                }
                AudioSource::File(path) => Some(capture::file::start(path.clone(), outputs)),
            };
        }
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        self.stop_all();
    }
}
