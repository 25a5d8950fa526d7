//! WebRTC transport shared by the engine and the relay's SFU: peer-connection setup (H.264 and
//! Opus, NACK, reports, keyframe requests delivered to the application), the capture-time SEI,
//! and RTP → access-unit assembly.

pub mod assembler;
pub mod fec;
pub mod fec_form;
pub mod fec_guard;
#[cfg(test)]
mod fuzz;
pub mod gate;
pub mod jitter;
pub mod keyframe_requests;
pub mod late_acks;
pub mod link_meter;
pub mod nack;
pub mod nack_budget;
pub mod nack_count;
pub mod pacer;
pub mod peer;
pub mod playout;
pub mod received;
pub mod rs;
pub mod rs_fec;
pub mod sei;
pub mod send_loss;
pub mod simulcast;
pub mod stap;
pub mod tap;
pub mod udp_mux;
