//! The relay: what the seed's cloud does. Rooms, users, the stream registry, token auth,
//! heartbeats and kick-out, served over WebSocket signaling with `/metrics` and `/healthz`.
//!
//! [`state`] is the sans-I/O state machine; [`server`] is the thin tokio/axum glue around it.

pub mod config;
pub mod metrics;
pub mod server;
pub mod sfu;
pub mod state;

pub use config::{AppConfig, Limits, RelayConfig};
pub use server::{EmbeddedRelay, Server};
