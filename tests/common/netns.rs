//! Test hosts: the lab of `onair::netlab` (network namespaces, veth pairs, impairment), and
//! what the tests between hosts share: `onair` run inside a host, and one test at a time.
#![allow(unused_imports, dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

pub use onair::netlab::impair::LinkSpec;
pub use onair::netlab::{Lab, available, iptables_available, wait_line};

/// The `onair` binary under test.
pub const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// `onair ARGS` inside host `i`, with the lab's own development app (sign and CA) in `dir`.
pub fn onair(lab: &Lab, i: usize, dir: &Path, args: &[&str]) -> Command {
    let mut c = lab.command(i, ONAIR);
    c.args(args)
        .env("ONAIR_DEV_APP_FILE", dir.join("dev-app.toml"))
        .env("RUST_LOG", "error")
        .env_remove("ONAIR_SERVER")
        .env_remove("ONAIR_CA_CERT");
    c
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The turn of one test of this binary (a failed test's poisoned lock is still a turn): each
/// runs a relay, an encoder and a decoder, and their timing means little when several share
/// two cores.
pub fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
