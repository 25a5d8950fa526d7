//! What the studio remembers between runs (kept in eframe's storage): where to connect, who we
//! are, which rooms to enter, the broadcast's sources and preset, the log filter.

use serde::{Deserialize, Serialize};

use super::model::LogFilter;

/// Key of the settings in eframe's storage.
pub const STORAGE_KEY: &str = "onair.settings";

/// Which relay the studio uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionSettings {
    /// A relay inside the studio, with the development app (`onair serve`'s).
    Embedded,
    /// A relay elsewhere.
    Remote {
        /// Its signaling URL, `ws://host:port`.
        server: String,
        /// The app ID.
        app_id: u32,
        /// The app sign (64 hex), or empty when logging in with a token.
        app_sign: String,
        /// A login token, or empty.
        token: String,
    },
}

/// The broadcast's video source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideoChoice {
    /// The moving test pattern.
    Test,
    /// A camera (None: the first).
    Camera {
        /// Its index.
        index: Option<u32>,
    },
    /// A media file, looped.
    File {
        /// Its path.
        path: String,
    },
}

/// The broadcast's audio source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AudioChoice {
    /// No audio.
    None,
    /// The test tone.
    Tone,
    /// A microphone (None: the default one).
    Microphone {
        /// Its name.
        name: Option<String>,
    },
}

/// The broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    /// The room to publish into.
    pub room: String,
    /// The stream ID to publish as.
    pub stream_id: String,
    /// Video preset name (`720p`, ...).
    pub preset: String,
    /// Frames per second.
    pub fps: u32,
    /// Video source.
    pub video: VideoChoice,
    /// Audio source.
    pub audio: AudioChoice,
}

/// Everything remembered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Which relay.
    pub connection: ConnectionSettings,
    /// Our user ID.
    pub user_id: String,
    /// Rooms to enter at start.
    pub rooms: Vec<String>,
    /// The broadcast.
    pub host: HostSettings,
    /// Play new streams as they appear.
    pub auto_play: bool,
    /// Run the camera (or test source) preview from the start.
    pub preview: bool,
    /// The event log's filter.
    pub log_filter: LogFilter,
    /// The connection's app sign and token are in the OS keyring, not in this file.
    pub secrets_in_keyring: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connection: ConnectionSettings::Embedded,
            user_id: "studio".into(),
            rooms: vec!["studio".into()],
            host: HostSettings {
                room: "studio".into(),
                stream_id: "studio-main".into(),
                preset: "720p".into(),
                fps: 30,
                video: VideoChoice::Test,
                audio: AudioChoice::Tone,
            },
            auto_play: true,
            preview: true,
            log_filter: LogFilter {
                hide_quality: true,
                ..Default::default()
            },
            secrets_in_keyring: false,
        }
    }
}
