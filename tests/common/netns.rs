//! Test hosts: the lab of `onair::netlab` (network namespaces, veth pairs, impairment).
#![allow(unused_imports)]

pub use onair::netlab::impair::LinkSpec;
pub use onair::netlab::{Lab, available, iptables_available, wait_line};
