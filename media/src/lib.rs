//! The engine's media half, before the network: frames, where they come from, how they become
//! H.264 and Opus and back, and how they reach the UI without adding delay.

pub mod capture;
pub mod channel;
pub mod codec;
pub mod config;
pub mod error;
pub mod frame;
pub mod local;
pub mod stamp;
pub mod testsrc;

pub use capture::{AudioSource, CaptureHandle, VideoSource};
pub use channel::{ChannelStats, Fanout, FrameReceiver, FrameSender, frame_channel};
pub use config::{VideoConfig, VideoPreset};
pub use error::MediaError;
pub use frame::{
    AudioFrame, ColorMatrix, ColorSpace, PixelFormat, SharedAudioFrame, SharedVideoFrame,
    VideoFrame,
};
pub use local::{DeviceKind, PublishChannel};
