//! Across hosts: the relay, a publisher and a player each in its own network namespace (no
//! loopback between them, no multicast route), over `wss://` with a development CA, typed as a
//! user would: `onair serve --listen 0.0.0.0:7880 --self-signed`, `onair publish`, `onair play`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::{self, Lab, wait_line};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// `onair` inside host `i`, with the lab's own development app (sign and CA) in `dir`.
fn onair(lab: &Lab, i: usize, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = lab.command(i, ONAIR);
    c.args(args)
        .env("ONAIR_DEV_APP_FILE", dir.join("dev-app.toml"))
        .env("RUST_LOG", "error")
        .env_remove("ONAIR_SERVER")
        .env_remove("ONAIR_CA_CERT");
    c
}

/// Parses `stats fps=N delay_ms=D … lost_frames=L`.
fn stats(line: &str) -> Option<(u32, f64, u64)> {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
    };
    Some((
        field("fps=")?.parse().ok()?,
        field("delay_ms=")?.parse().ok()?,
        field("lost_frames=")?.parse().ok()?,
    ))
}

#[test]
fn a_relay_on_all_interfaces_serves_other_hosts_over_wss() {
    if !netns::available() {
        eprintln!("skipped: building network namespaces needs root and iproute2");
        return;
    }
    let mut lab = Lab::new("w", 3);
    let dir = std::env::temp_dir().join(format!("onair-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    let relay = lab.spawn(onair(
        &lab,
        0,
        &dir,
        &["serve", "--listen", "0.0.0.0:7880", "--self-signed"],
    ));
    let banner = wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    let text = banner.join("\n");
    assert!(text.contains("wss://"), "{text}");
    assert!(
        text.contains(&lab.addr(0)),
        "the certificate names the host's address: {text}"
    );
    assert!(dir.join("ca.pem").exists(), "the development CA is kept");

    let server = format!("wss://{}:7880", lab.addr(0));
    let _publisher = lab.spawn(onair(
        &lab,
        1,
        &dir,
        &[
            "publish",
            "--server",
            &server,
            "--room",
            "hosts",
            "--stream",
            "cam",
            "--preset",
            "360p",
            "--duration",
            "40",
        ],
    ));
    let player = lab.spawn(onair(
        &lab,
        2,
        &dir,
        &[
            "play",
            "--server",
            &server,
            "--room",
            "hosts",
            "--stream",
            "cam",
            "--stats",
            "--duration",
            "30",
        ],
    ));
    let seen = wait_line(&player, "player_video_first_frame", Duration::from_secs(25))
        .unwrap_or_else(|seen| panic!("no first frame across hosts: {seen:?}"));
    assert!(seen.iter().any(|l| l.contains("state=Playing")), "{seen:?}");
    // Five seconds of stats: every frame decoded, in order, at the source's rate.
    let mut seconds = Vec::new();
    while seconds.len() < 6 {
        let line = player
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("the player went quiet after {seconds:?}"));
        if let Some(s) = stats(&line) {
            seconds.push(s);
        }
    }
    // The first second may be partial (it started mid-second).
    let steady = &seconds[1..];
    for (fps, delay_ms, _) in steady {
        assert!(*fps >= 27, "about 30 fps across hosts: {seconds:?}");
        assert!(
            *delay_ms < 100.0,
            "sub-100 ms capture → decoded: {seconds:?}"
        );
    }
    let lost = steady.last().map_or(0, |s| s.2);
    assert_eq!(
        lost, 0,
        "no frame missing from the stamps' sequence: {seconds:?}"
    );
    let medians: Vec<f64> = steady.iter().map(|s| s.1).collect();
    eprintln!("across hosts over wss: per-second median capture → decoded {medians:?} ms");
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
