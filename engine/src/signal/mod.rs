//! The client end of the signaling protocol: a typed WebSocket connection to the relay.

mod client;
pub mod dispatch;
pub mod tls;

pub use client::{SignalClient, normalize_url};
pub use tls::TlsTrust;
