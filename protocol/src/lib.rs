//! # onair-protocol
//!
//! What the Onair engine and relay agree on, with no I/O and no runtime: the signaling
//! [`messages`] (JSON over WebSocket), the rules for room, user and stream [`ids`], every
//! [`error`] code with its cause and fix, and [`token`]s (HS256 claims, minting and
//! verification). Both `onair-engine` and `onair-relay` depend on it; it depends on neither.

pub mod error;
#[cfg(test)]
mod fuzz;
pub mod ice;
pub mod ids;
pub mod messages;
pub mod token;

pub use error::{ErrorCode, WireError, errors_markdown};
pub use ice::IceServer;
pub use messages::{StreamInfo, UpdateType, User};
