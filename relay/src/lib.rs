//! # onair-relay
//!
//! The relay: what the seed's cloud does. Rooms, users, the stream registry, token auth,
//! heartbeats and kick-out, served over WebSocket signaling (with WHIP/WHEP for browsers and OBS,
//! `/metrics` and `/healthz`); an SFU forwards RTP without decoding it.
//!
//! [`state`] is the sans-I/O state machine; [`server`] and [`sfu`] are the thin tokio/axum and
//! WebRTC glue around it; [`cluster`] joins relays into one cluster over Redis. It links no capture, codec or UI library.

pub mod cluster;
pub mod config;
pub mod heap;
pub mod limiter;
pub mod metrics;
pub mod server;
pub mod sfu;
pub mod state;
pub mod tls;

pub use config::{AppConfig, Limits, RelayConfig, RtcConfig};
pub use server::{EmbeddedRelay, Server};
