//! The room half of the engine: events, the per-room state machine, and the connection task
//! that drives them over signaling.

pub mod connection;
pub mod events;
pub mod machine;
