//! Media errors, each mapped to a stable [`ErrorCode`].

use onair_protocol::error::ErrorCode;

/// Why a media operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// No camera on this machine.
    #[error("no camera found")]
    NoCamera,
    /// The camera could not be opened or stopped delivering.
    #[error("cannot open camera {device}: {reason}")]
    CameraOpen {
        /// Which device.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// The camera has no usable format near the request.
    #[error("camera {device} cannot capture {request}: {reason}")]
    CameraFormat {
        /// Which device.
        device: String,
        /// The requested format.
        request: String,
        /// What went wrong.
        reason: String,
    },
    /// No microphone on this machine.
    #[error("no microphone found")]
    NoMicrophone,
    /// The microphone could not be opened.
    #[error("cannot open microphone: {0}")]
    MicrophoneOpen(String),
    /// The media file could not be opened or read.
    #[error("cannot open media file {path}: {reason}")]
    FileOpen {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The media file has nothing to play.
    #[error("media file {0} has no playable video or audio stream")]
    FileNoStream(String),
    /// A codec is missing from FFmpeg.
    #[error("codec {0} is not available in this FFmpeg build")]
    CodecUnavailable(&'static str),
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// Decoding failed.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The video config is out of range.
    #[error("invalid video config: {0}")]
    InvalidConfig(String),
}

impl MediaError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            MediaError::NoCamera => ErrorCode::NoCamera,
            MediaError::CameraOpen { .. } => ErrorCode::CameraOpenFailed,
            MediaError::CameraFormat { .. } => ErrorCode::CameraFormatUnsupported,
            MediaError::NoMicrophone => ErrorCode::NoMicrophone,
            MediaError::MicrophoneOpen(_) => ErrorCode::MicrophoneOpenFailed,
            MediaError::FileOpen { .. } => ErrorCode::MediaFileOpenFailed,
            MediaError::FileNoStream(_) => ErrorCode::MediaFileNoStream,
            MediaError::CodecUnavailable(_) => ErrorCode::CodecUnavailable,
            MediaError::Encode(_) => ErrorCode::EncodeFailed,
            MediaError::Decode(_) => ErrorCode::DecodeFailed,
            MediaError::InvalidConfig(_) => ErrorCode::InvalidVideoConfig,
        }
    }
}
