//! # onair-engine
//!
//! The Onair SDK. The flow follows ZEGO Express's ultra-low-latency live quick start: create an
//! [`Engine`] from an [`EngineProfile`], drain its [`Event`]s, log into rooms, preview, publish,
//! play in L3 mode, stop, log out, destroy. Every call returns at once; results arrive as events.
//!
//! The relay it talks to is the `onair-relay` crate (`onair serve`); the wire both speak is
//! `onair-protocol`; capture and codecs are `onair-media` (re-exported here as [`media`]), WebRTC
//! setup is `onair-transport`. This crate links no HTTP server.
//!
//! ```no_run
//! use onair_engine::{Engine, EngineProfile, RoomConfig, User};
//! let engine = Engine::create(EngineProfile {
//!     app_id: 1,
//!     app_sign: "00".repeat(32),
//!     server: "ws://127.0.0.1:7880".into(),
//!     ..Default::default()
//! })?;
//! engine.login_room("room1", User::new("id1"), RoomConfig { token: None, is_user_status_notify: true });
//! for event in engine.events().iter() {
//!     println!("{event}");
//! }
//! # Ok::<(), onair_engine::EngineError>(())
//! ```

pub mod engine;
pub mod error;
pub mod live;
pub mod room;
pub mod signal;
pub mod sound_level;

pub use onair_media as media;
pub use onair_protocol::{ids, messages, token};

pub use engine::{Engine, EngineProfile, IceTransportPolicy, Scenario};
pub use error::{EngineError, ErrorCode, WireError};
pub use live::{PlayerConfig, ResourceMode};
pub use media::{AudioSource, DeviceKind, PublishChannel, VideoConfig, VideoPreset, VideoSource};
pub use messages::{LayerChangeReason, QualityLevel, StreamInfo, UpdateType, User, VideoLayer};
pub use onair_protocol::IceServer;
pub use room::events::{
    Event, MediaPath, PlayerState, PublisherState, RemoteDeviceState, RoomState,
    RoomStateChangedReason,
};
pub use room::machine::RoomConfig;
