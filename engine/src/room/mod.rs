//! The room half of the engine: events, the per-room state machine, the signaling link's
//! timers, quality reports, and the connection task that drives them.

pub mod connection;
pub mod events;
pub mod link;
pub mod machine;
pub mod network_quality;
pub mod quality;
pub mod sink;
