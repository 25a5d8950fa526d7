//! Test hosts and the links between them: network namespaces joined by veth pairs
//! ([`lab::Lab`]), and link impairment on real kernel paths (iptables, NFQUEUE with
//! `onair impair`, tbf rate limits). Used by the tests across hosts and `onair bench weaknet`;
//! everything needs root, as CI has.

pub mod impair;
pub mod lab;

pub use lab::{Lab, available, iptables_available, wait_line};
