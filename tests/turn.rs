//! Through TURN: a player whose host drops every UDP packet not from the TURN server plays
//! with `--relay-only`, through Debian's coturn (started by the test in a host of its own),
//! with credentials the relay minted for its session from the secret it shares with coturn.

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::{self, Lab, wait_line};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");
const SECRET: &str = "onair-test-turn-secret";

fn onair(lab: &Lab, i: usize, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = lab.command(i, ONAIR);
    c.args(args)
        .env("ONAIR_DEV_APP_FILE", dir.join("dev-app.toml"))
        .env("RUST_LOG", "error")
        .env_remove("ONAIR_SERVER")
        .env_remove("ONAIR_CA_CERT");
    c
}

#[test]
fn a_player_that_only_reaches_the_turn_server_plays_through_it() {
    if !netns::available() {
        eprintln!("skipped: building network namespaces needs root and iproute2");
        return;
    }
    let turnserver = ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("coturn is installed (`make test` installs it)");
    // Hosts: 0 relay, 1 publisher, 2 player (UDP only from the TURN server), 3 TURN server.
    let mut lab = Lab::new("t", 4);
    let dir = std::env::temp_dir().join(format!("onair-turn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let turn_ip = lab.addr(3);

    let mut turn = lab.command(3, turnserver);
    turn.args([
        "-n",
        "--listening-ip",
        &turn_ip,
        "--relay-ip",
        &turn_ip,
        "--listening-port",
        "3478",
        "--use-auth-secret",
        "--static-auth-secret",
        SECRET,
        "--realm",
        "onair.test",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--min-port",
        "49152",
        "--max-port",
        "49400",
        "--allowed-peer-ip",
        "10.77.0.0-10.77.255.255",
        "--log-file",
        "stdout",
        "--simple-log",
    ]);
    let turn_log = lab.spawn(turn);
    wait_line(&turn_log, "Total General servers", Duration::from_secs(10))
        .or_else(|_| wait_line(&turn_log, "listener opened on", Duration::from_secs(5)))
        .unwrap_or_else(|seen| panic!("coturn did not start: {seen:?}"));

    let turn_url = format!("turn:{turn_ip}:3478");
    let relay = lab.spawn(onair(
        &lab,
        0,
        &dir,
        &[
            "serve",
            "--listen",
            "0.0.0.0:7880",
            "--turn",
            &turn_url,
            "--turn-secret",
            SECRET,
        ],
    ));
    let banner = wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    assert!(banner.join("\n").contains("TURN turn:"), "{banner:?}");

    // The player's host takes UDP only from the TURN server: no direct media path exists.
    let drop_udp = lab
        .command(2, "iptables")
        .args([
            "-A", "INPUT", "-p", "udp", "!", "-s", &turn_ip, "-j", "DROP",
        ])
        .status()
        .expect("iptables");
    assert!(drop_udp.success(), "iptables rule in the player's host");

    let server = format!("ws://{}:7880", lab.addr(0));
    let _publisher = lab.spawn(onair(
        &lab,
        1,
        &dir,
        &[
            "publish",
            "--server",
            &server,
            "--room",
            "turn",
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
            "turn",
            "--stream",
            "cam",
            "--relay-only",
            "--stats",
            "--duration",
            "30",
        ],
    ));
    let seen = wait_line(&player, "player_video_first_frame", Duration::from_secs(25))
        .unwrap_or_else(|seen| panic!("no first frame through TURN: {seen:?}"));
    eprintln!("first frame through TURN: {:?}", seen.last());
    let quality = wait_line(&player, "player_quality", Duration::from_secs(5))
        .unwrap_or_else(|seen| panic!("no quality report: {seen:?}"));
    let line = quality.last().cloned().unwrap_or_default();
    assert!(
        line.contains("path=relayed"),
        "the path shows as relayed: {line}"
    );
    let mut fps = Vec::new();
    while fps.len() < 4 {
        let line = player
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("the player went quiet after {fps:?}"));
        if let Some(n) = line
            .strip_prefix("stats fps=")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
        {
            fps.push(n);
        }
    }
    assert!(
        fps[1..].iter().all(|f| *f >= 25),
        "about 30 fps through TURN: {fps:?}"
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
