//! # onair-engine
//!
//! The Onair SDK and the relay it talks to, in one crate.
//!
//! The flow follows ZEGO Express's ultra-low-latency live quick start: create an [`Engine`] from an
//! [`EngineProfile`], drain its [`Event`]s, log into rooms, (publish and play in later releases),
//! log out, destroy. The relay ([`relay::Server`], `onair serve`) plays the cloud's part: rooms,
//! users, the stream registry, token auth, heartbeats and kick-out.
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
pub mod ids;
pub mod live;
pub mod media;
pub mod protocol;
pub mod relay;
pub mod room;
pub mod signal;
pub mod token;
pub mod transport;

pub use engine::{Engine, EngineProfile, Scenario};
pub use error::{EngineError, ErrorCode, WireError};
pub use live::{PlayerConfig, ResourceMode};
pub use media::{AudioSource, DeviceKind, PublishChannel, VideoConfig, VideoPreset, VideoSource};
pub use protocol::{StreamInfo, UpdateType, User};
pub use room::events::{Event, PlayerState, PublisherState, RoomState, RoomStateChangedReason};
pub use room::machine::RoomConfig;
