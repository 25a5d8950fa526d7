//! Across hosts: the relay, a publisher and a player each in its own network namespace (no
//! loopback between them, no multicast route), over `wss://` with a development CA, typed as a
//! user would: `onair serve --listen 0.0.0.0:7880 --self-signed`, `onair publish`, `onair play`.
//! Then the network misbehaving: a relay behind a 1:1 NAT (with and without `--public-ip`),
//! the player's host cut off for 3 s and for 20 s (iptables inside its namespace), and a player
//! that reaches only a TURN server (coturn).
//!
//! The tests take turns (one lock): each runs a relay, an encoder and a decoder, and their
//! frame-rate and timing figures mean little when four such sets share two cores.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::netns::{self, Lab, onair, turn, wait_line};

/// The secret the TURN test's coturn shares with its relay.
const TURN_SECRET: &str = "onair-test-turn-secret";

/// Whether the test may run: false (with a note) without root and iproute2.
fn hosts_available() -> bool {
    if !netns::available() {
        eprintln!("skipped: building network namespaces needs root and iproute2");
        return false;
    }
    true
}

/// Like [`hosts_available`], and a test that needs iptables fails saying so when it is missing.
fn hosts_with_iptables_available() -> bool {
    if !hosts_available() {
        return false;
    }
    assert!(
        netns::iptables_available(),
        "this test needs iptables (Debian's `iptables` package) to NAT and cut test hosts"
    );
    true
}

/// A fresh directory for one test's development app and CA (tests run in one process),
/// removed when dropped, failed tests included.
fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("onair-hosts-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `onair publish` of the 360p test source in host `i`.
fn publish(lab: &Lab, i: usize, dir: &Path, server: &str, room: &str, secs: u32) -> Command {
    onair(
        lab,
        i,
        dir,
        &[
            "publish",
            "--server",
            server,
            "--room",
            room,
            "--stream",
            "cam",
            "--preset",
            "360p",
            "--duration",
            &secs.to_string(),
        ],
    )
}

/// `onair play --stats` in host `i`.
fn play(lab: &Lab, i: usize, dir: &Path, server: &str, room: &str, secs: u32) -> Command {
    onair(
        lab,
        i,
        dir,
        &[
            "play",
            "--server",
            server,
            "--room",
            room,
            "--stream",
            "cam",
            "--stats",
            "--duration",
            &secs.to_string(),
        ],
    )
}

/// A child's stdout lines, each kept with when it arrived (seconds since the log began).
struct Log {
    name: &'static str,
    rx: Receiver<(Instant, String)>,
    start: Instant,
    lines: Vec<(f64, String)>,
}

impl Log {
    fn new(name: &'static str, lines: Receiver<String>) -> Log {
        // Stamped as they arrive, even when read later.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Log {
            name,
            rx,
            start: Instant::now(),
            lines: Vec::new(),
        }
    }

    fn keep(&mut self, (at, line): (Instant, String)) -> &str {
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        self.lines.push((t, line));
        self.lines.last().map_or("", |(_, l)| l.as_str())
    }

    /// The next line before `deadline`, kept.
    fn next_before(&mut self, deadline: Instant) -> Option<&str> {
        let left = deadline.checked_duration_since(Instant::now())?;
        let stamped = self.rx.recv_timeout(left).ok()?;
        Some(self.keep(stamped))
    }

    /// Keeps the lines that have arrived so far, without waiting.
    fn catch_up(&mut self) {
        while let Ok(stamped) = self.rx.try_recv() {
            self.keep(stamped);
        }
    }

    /// Seconds since the log began.
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Reads lines until one satisfies `hit` (and returns it) or `within` passes.
    fn until(&mut self, within: Duration, mut hit: impl FnMut(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(line) = self.next_before(deadline) {
            if hit(line) {
                return Some(line.to_string());
            }
        }
        None
    }

    /// Keeps reading for `span` (to see what follows an event).
    fn drain_for(&mut self, span: Duration) {
        let deadline = Instant::now() + span;
        while self.next_before(deadline).is_some() {}
    }

    /// A mark: the index of the next line to arrive.
    fn mark(&self) -> usize {
        self.lines.len()
    }

    /// The lines since `mark`.
    fn since(&self, mark: usize) -> impl Iterator<Item = &str> {
        self.lines[mark..].iter().map(|(_, l)| l.as_str())
    }

    /// The lines since `mark` other than the per-second figures, with their arrival times.
    fn events_since(&self, mark: usize) -> Vec<String> {
        self.lines[mark..]
            .iter()
            .filter(|(_, l)| !l.starts_with("stats ") && !l.contains("_quality "))
            .map(|(t, l)| format!("[{t:.2}] {}", l.trim()))
            .collect()
    }

    /// The frame counts of the `stats` lines between two marks.
    fn fps_between(&self, from: usize, to: usize) -> Vec<u32> {
        self.lines[from..to.min(self.lines.len())]
            .iter()
            .filter_map(|(_, l)| stats_fps(l))
            .collect()
    }

    /// Every line, with its arrival time, for an assertion message.
    fn dump(&self) -> String {
        let mut text = format!("--- {} ({} lines) ---\n", self.name, self.lines.len());
        for (t, l) in &self.lines {
            text.push_str(&format!("[{t:6.2}] {l}\n"));
        }
        text
    }
}

/// The frames a `stats` line counts (also the `stats fps=0 lost_frames=L` of an empty second).
fn stats_fps(line: &str) -> Option<u32> {
    if !line.starts_with("stats ") {
        return None;
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("fps="))?
        .parse()
        .ok()
}

/// The `lost_frames=` of a `stats` line (frames missing from the stamps' sequence so far).
fn lost_frames(line: &str) -> Option<u64> {
    line.strip_prefix("stats ")?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lost_frames="))?
        .parse()
        .ok()
}

/// The `state=` and `error=` of a `player_state` line.
fn player_state(line: &str) -> Option<(&str, u32)> {
    if !line.contains("player_state ") {
        return None;
    }
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k));
    Some((field("state=")?, field("error=")?.parse().ok()?))
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
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn = turn();
    let mut lab = Lab::new("w", 3);
    let dir = temp_dir("w");
    // The relay's host takes UDP only on the media port, as a firewall with one rule: every
    // connection shares the default port (the listen port + 2).
    lab.iptables(
        0,
        &[
            "-A", "INPUT", "-p", "udp", "!", "--dport", "7882", "-j", "DROP",
        ],
    )
    .expect("firewall rule on the relay's host");

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
        text.contains(&format!(
            "media: UDP {}:7882 (one port for every connection)",
            lab.addr(0)
        )),
        "{text}"
    );
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
    let play_cmd = |lab: &Lab, host: usize| {
        onair(
            lab,
            host,
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
        )
    };
    let player = lab.spawn(play_cmd(&lab, 2));
    // A second player on the publisher's host: three connections on the one port.
    let second = lab.spawn(play_cmd(&lab, 1));
    let seen = wait_line(&player, "player_video_first_frame", Duration::from_secs(25))
        .unwrap_or_else(|seen| panic!("no first frame across hosts: {seen:?}"));
    wait_line(&second, "player_video_first_frame", Duration::from_secs(25))
        .unwrap_or_else(|seen| panic!("the second player got no first frame: {seen:?}"));
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
}

/// A relay in host 0, a publisher in host 1 and a player in host 2, the player steady: two
/// seconds in a row at 25 fps or more.
fn three_hosts_playing(tag: &str, secs: u32) -> (Lab, TempDir, Log, Log) {
    let mut lab = Lab::new(tag, 3);
    let dir = temp_dir(tag);
    // The relay's log (its ICE restarts among it) is kept in the test's directory.
    let mut serve = onair(
        &lab,
        0,
        &dir,
        &["serve", "--listen", "0.0.0.0:7880", "--self-signed"],
    );
    serve.env("RUST_LOG", "error,onair_relay=info");
    let relay = lab.spawn_logged(serve, Some(&dir.join("relay.log")));
    wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    let server = format!("wss://{}:7880", lab.addr(0));
    let publisher = Log::new(
        "publisher",
        lab.spawn(publish(&lab, 1, &dir, &server, tag, secs)),
    );
    let mut player = Log::new("player", lab.spawn(play(&lab, 2, &dir, &server, tag, secs)));
    let mut in_a_row = 0;
    let steady = player.until(Duration::from_secs(25), |l| {
        match stats_fps(l) {
            Some(fps) if fps >= 25 => in_a_row += 1,
            Some(_) => in_a_row = 0,
            None => {}
        }
        in_a_row >= 2
    });
    assert!(
        steady.is_some(),
        "the player never played steadily (two seconds at ≥ 25 fps):\n{}",
        player.dump()
    );
    (lab, dir, player, publisher)
}

/// Cuts everything reaching host `i` (signaling and media) for `span`.
fn cut_host(lab: &Lab, i: usize, player: &mut Log, span: Duration) {
    let iface = lab.iface(i);
    lab.iptables(i, &["-A", "INPUT", "-i", &iface, "-j", "DROP"])
        .unwrap_or_else(|e| panic!("cutting host {i}: {e}"));
    player.drain_for(span);
    lab.iptables(i, &["-D", "INPUT", "-i", &iface, "-j", "DROP"])
        .unwrap_or_else(|e| panic!("restoring host {i}: {e}"));
}

#[test]
fn a_three_second_cut_resumes_without_a_new_login_or_noplay() {
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn = turn();
    let (lab, _dir, mut player, mut publisher) = three_hosts_playing("c3", 40);
    let cut_mark = player.mark();
    let cut_at = player.now();
    cut_host(&lab, 2, &mut player, Duration::from_secs(3));
    let restored_at = player.now();
    let restore_mark = player.mark();
    let mut first_frames = None;
    let back = player.until(Duration::from_secs(10), |l| {
        let fps = stats_fps(l);
        if fps.is_some_and(|f| f > 0) && first_frames.is_none() {
            first_frames = Some(Instant::now());
        }
        fps.is_some_and(|f| f >= 25)
    });
    let full_rate_after = player.now() - restored_at;
    // What follows the recovery, for late NoPlay or login lines.
    player.drain_for(Duration::from_secs(2));
    publisher.catch_up();
    let seen = format!(
        "cut at {cut_at:.2} s, restored at {restored_at:.2} s\n{}{}",
        player.dump(),
        publisher.dump()
    );
    assert!(
        player
            .fps_between(cut_mark, restore_mark)
            .iter()
            .any(|&f| f < 10),
        "the cut took effect (a second with almost no frames):\n{seen}"
    );
    assert!(
        back.is_some(),
        "no second at ≥ 25 fps within 10 s of the restore:\n{seen}"
    );
    assert!(
        !player.since(cut_mark).any(|l| l.contains("state=NoPlay")),
        "a 3 s cut must not end the play (NoPlay):\n{seen}"
    );
    let logins = player
        .lines
        .iter()
        .filter(|(_, l)| l.contains("reason=LOGINED"))
        .count();
    assert_eq!(
        logins, 1,
        "a 3 s cut must resume the session, not log in afresh (one LOGINED):\n{seen}"
    );
    eprintln!(
        "3 s cut (at {cut_at:.2} s, restored at {restored_at:.2} s): first frames {:.2} s and \
         first full-rate second {full_rate_after:.2} s after the restore; fps each second \
         from the cut on {:?}, lost_frames {:?} at the end; events since the cut: {:?}",
        first_frames.map_or(f64::NAN, |t| {
            t.saturating_duration_since(player.start).as_secs_f64() - restored_at
        }),
        player.fps_between(cut_mark, usize::MAX),
        player.lines.iter().rev().find_map(|(_, l)| lost_frames(l)),
        player.events_since(cut_mark),
    );
    drop(lab);
}

#[test]
fn a_twelve_second_udp_cut_is_mended_by_an_ice_restart_without_a_new_play() {
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn = turn();
    let (lab, dir, mut player, mut publisher) = three_hosts_playing("r12", 50);
    let cut_mark = player.mark();
    let cut_at = player.now();
    // Only UDP: signaling (TCP) stays up, so the player's restart offer reaches the relay.
    // Longer than the disconnect grace (5 s), after which the play would be negotiated anew.
    let iface = lab.iface(2);
    let rule = ["INPUT", "-i", &iface, "-p", "udp", "-j", "DROP"];
    let with = |op: &'static str| [&[op][..], &rule[..]].concat();
    lab.iptables(2, &with("-A"))
        .unwrap_or_else(|e| panic!("cutting UDP: {e}"));
    player.drain_for(Duration::from_secs(12));
    lab.iptables(2, &with("-D"))
        .unwrap_or_else(|e| panic!("restoring UDP: {e}"));
    let restored_at = player.now();
    let restore_mark = player.mark();
    let back = player.until(Duration::from_secs(10), |l| {
        stats_fps(l).is_some_and(|f| f >= 25)
    });
    let recovery = player.now() - restored_at;
    player.drain_for(Duration::from_secs(1));
    publisher.catch_up();
    let relay_log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    let seen = format!(
        "cut at {cut_at:.2} s, restored at {restored_at:.2} s\n{}{}\nrelay log:\n{relay_log}",
        player.dump(),
        publisher.dump()
    );
    assert!(
        player.fps_between(cut_mark, restore_mark).contains(&0),
        "the cut took effect (seconds with no frames):\n{seen}"
    );
    assert!(
        relay_log.contains("ICE restarted"),
        "the player restarted ICE on its connection and the relay answered:\n{seen}"
    );
    assert!(
        !player
            .since(cut_mark)
            .any(|l| l.contains("state=PlayRequesting") || l.contains("state=NoPlay")),
        "the restarted connection carried on: no new play (PlayRequesting) and no NoPlay:\n{seen}"
    );
    assert!(
        back.is_some(),
        "no second at ≥ 25 fps within 10 s of the restore:\n{seen}"
    );
    eprintln!(
        "12 s UDP cut (at {cut_at:.2} s, restored at {restored_at:.2} s), mended by an ICE \
         restart: full rate again {recovery:.2} s after the restore; fps each second from the \
         cut {:?}; events since the cut: {:?}",
        player.fps_between(cut_mark, usize::MAX),
        player.events_since(cut_mark)
    );
    drop(lab);
}

#[test]
fn a_twenty_second_cut_ends_in_retry_states_then_recovers() {
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn = turn();
    let (lab, _dir, mut player, mut publisher) = three_hosts_playing("c20", 60);
    let cut_mark = player.mark();
    let cut_at = player.now();
    cut_host(&lab, 2, &mut player, Duration::from_secs(20));
    let restored_at = player.now();
    let restore_mark = player.mark();
    let back = player.until(Duration::from_secs(20), |l| {
        stats_fps(l).is_some_and(|f| f >= 25)
    });
    let recovery = player.now() - restored_at;
    player.drain_for(Duration::from_secs(2));
    publisher.catch_up();
    let seen = format!(
        "cut at {cut_at:.2} s, restored at {restored_at:.2} s\n{}{}",
        player.dump(),
        publisher.dump()
    );
    let during: Vec<&str> = player
        .lines
        .get(cut_mark..restore_mark)
        .unwrap_or_default()
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| l.contains("_state "))
        .collect();
    let retrying = during.iter().any(|l| {
        l.contains("reason=RECONNECTING")
            || player_state(l).is_some_and(|(state, error)| state == "PlayRequesting" && error != 0)
    });
    assert!(
        player.fps_between(cut_mark, restore_mark).contains(&0),
        "the cut took effect (seconds with no frames):\n{seen}"
    );
    assert!(
        retrying,
        "during a 20 s cut the player reports retrying (PlayRequesting with an error, or the \
         room RECONNECTING):\n{seen}"
    );
    assert!(
        !player.since(cut_mark).any(|l| l.contains("state=NoPlay")),
        "a 20 s cut must not end the play (NoPlay):\n{seen}"
    );
    assert!(
        back.is_some(),
        "no second at ≥ 25 fps within 20 s of the restore:\n{seen}"
    );
    eprintln!(
        "20 s cut (at {cut_at:.2} s, restored at {restored_at:.2} s): full rate again \
         {recovery:.2} s after the restore; fps each second after the restore {:?}; events \
         since the cut: {:?}",
        player.fps_between(restore_mark, usize::MAX),
        player.events_since(cut_mark)
    );
    drop(lab);
}

#[test]
fn a_relay_behind_a_one_to_one_nat_works_with_public_ip_and_fails_clearly_without() {
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn = turn();
    // Outside: a publisher (0) and a player (1). Inside, behind the router's 1:1 NAT: the
    // relay (2) and, for the half without --public-ip, a publisher next to it (3) whose
    // stream exists so that the outside player's own media connection is tried (and fails).
    // The outside hosts stand for users at home: a stateful firewall takes in only replies,
    // so the relay cannot open a media path towards them itself (without it, the relay's
    // checks would reach an outside address directly, through the NAT, and mend a missing
    // --public-ip with peer-reflexive candidates).
    let mut lab = Lab::routed("n", 2, 2);
    let public = lab
        .one_to_one_nat(2, &[7880])
        .unwrap_or_else(|e| panic!("setting up the NAT: {e}"));
    for host in [0, 1] {
        lab.replies_only(host)
            .unwrap_or_else(|e| panic!("firewalling host {host}: {e}"));
    }
    let dir = temp_dir("n");
    let server = format!("wss://{public}:7880");
    // Inside, the relay is reached at its own address (a NAT rarely hairpins).
    let server_inside = format!("wss://{}:7880", lab.addr(2));
    let serve = |lab: &Lab, public_ip: bool| {
        let mut args = vec![
            "serve",
            "--listen",
            "0.0.0.0:7880",
            "--self-signed",
            "--tls-name",
            &public,
        ];
        if public_ip {
            args.extend(["--public-ip", &public]);
        }
        onair(lab, 2, &dir, &args)
    };

    // Without --public-ip the relay offers its inside address, which nothing outside can
    // reach. Signaling works (TCP 7880 is forwarded); media cannot. Each side must say so
    // with its connect-timeout code rather than hang, and nothing may play.
    let relay = lab.spawn(serve(&lab, false));
    let banner = wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    let _inside = lab.spawn(publish(&lab, 3, &dir, &server_inside, "nat", 30));
    let mut outside_publisher = Log::new(
        "outside publisher",
        lab.spawn(onair(
            &lab,
            0,
            &dir,
            &[
                "publish",
                "--server",
                &server,
                "--room",
                "nat",
                "--stream",
                "out",
                "--preset",
                "180p",
                "--duration",
                "30",
            ],
        )),
    );
    let mut player = Log::new("player", lab.spawn(play(&lab, 1, &dir, &server, "nat", 30)));
    let failed = player.until(Duration::from_secs(15), |l| {
        player_state(l).is_some_and(|(state, error)| state == "PlayRequesting" && error != 0)
    });
    let player_failed_after = player.now();
    // A moment more, for a late Playing.
    player.drain_for(Duration::from_secs(1));
    outside_publisher.catch_up();
    let seen = format!(
        "relay: {banner:?}\n{}{}",
        player.dump(),
        outside_publisher.dump()
    );
    assert!(
        player
            .lines
            .iter()
            .any(|(_, l)| l.contains("room_stream") && l.contains("ADD")),
        "the inside publisher's stream is listed to the outside player:\n{seen}"
    );
    assert!(
        failed.is_some(),
        "without --public-ip the outside player must report PlayRequesting with an error \
         code (1004021 PlayConnectTimeout) within 15 s, not hang:\n{seen}"
    );
    assert!(
        !player
            .lines
            .iter()
            .any(|(_, l)| l.contains("state=Playing")),
        "without --public-ip nothing outside can reach the relay's media, so no Playing:\n{seen}"
    );
    let publisher_failed = outside_publisher.lines.iter().find(|(_, l)| {
        l.contains("publisher_state") && l.contains("state=PublishRequesting error=1003021")
    });
    assert!(
        publisher_failed.is_some(),
        "without --public-ip the outside publisher must report PublishRequesting with 1003021 \
         (PublishConnectTimeout) within 15 s:\n{seen}"
    );
    eprintln!(
        "behind a 1:1 NAT without --public-ip: the player reported {:?} after {player_failed_after:.1} s, \
         the publisher {:?} after {:.1} s",
        failed.as_deref().map(str::trim),
        publisher_failed.map(|(_, l)| l.trim()),
        publisher_failed.map_or(f64::NAN, |(t, _)| *t),
    );

    // With --public-ip: media candidates carry the public address, and all flows.
    lab.kill_all();
    let started = Instant::now();
    let relay = lab.spawn(serve(&lab, true));
    let banner = wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not restart: {seen:?}"));
    let mut publisher = Log::new(
        "publisher",
        lab.spawn(publish(&lab, 0, &dir, &server, "nat2", 30)),
    );
    let mut player = Log::new(
        "player",
        lab.spawn(play(&lab, 1, &dir, &server, "nat2", 30)),
    );
    let first = player.until(Duration::from_secs(15), |l| {
        l.contains("player_video_first_frame")
    });
    if first.is_none() {
        publisher.catch_up();
        panic!(
            "no first frame through the NAT with --public-ip {public} (relay: {banner:?});\n\
             the router's DNAT counters (new flows to the public address; UDP 0 means the \
             clients never sent media to {public}, i.e. were offered another address):\n{}\n{}{}",
            lab.router_nat_counters(),
            player.dump(),
            publisher.dump()
        );
    }
    let mut seconds = Vec::new();
    while seconds.len() < 6 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let Some(line) = player.next_before(deadline) else {
            panic!(
                "the player went quiet after {seconds:?}:\n{}",
                player.dump()
            );
        };
        if let Some(s) = stats(line) {
            seconds.push(s);
        }
    }
    let steady = &seconds[1..];
    assert!(
        steady.iter().all(|s| s.0 >= 27),
        "about 30 fps through the NAT: {seconds:?}\n{}",
        player.dump()
    );
    assert_eq!(
        steady.last().map_or(0, |s| s.2),
        0,
        "no frame lost through the NAT: {seconds:?}\n{}",
        player.dump()
    );
    let fps: Vec<u32> = steady.iter().map(|s| s.0).collect();
    eprintln!(
        "behind a 1:1 NAT with --public-ip {public}: fps {fps:?}, playing {:.1} s after the \
         relay started",
        started.elapsed().as_secs_f64()
    );
    drop(lab);
}

/// Through TURN: a player whose host drops every UDP packet not from the TURN server plays
/// with `--relay-only`, through Debian's coturn (started in a host of its own), with
/// credentials the relay minted for its session from the secret it shares with coturn.
#[test]
fn a_player_that_only_reaches_the_turn_server_plays_through_it() {
    if !hosts_with_iptables_available() {
        return;
    }
    let _turn_of_this_test = turn();
    let turnserver = ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("coturn is installed (`make test` installs it)");
    // Hosts: 0 relay, 1 publisher, 2 player (UDP only from the TURN server), 3 TURN server.
    let mut lab = Lab::new("t", 4);
    let dir = temp_dir("turn");
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
        TURN_SECRET,
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
            // A connection per port here (the shared port is the default, tried above).
            "--udp-port-range",
            "50000-50099",
            "--turn",
            &turn_url,
            "--turn-secret",
            TURN_SECRET,
        ],
    ));
    let banner = wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    assert!(banner.join("\n").contains("TURN turn:"), "{banner:?}");
    assert!(
        banner
            .join("\n")
            .contains("ports 50000-50099, one per connection"),
        "{banner:?}"
    );

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
    let _publisher = lab.spawn(publish(&lab, 1, &dir, &server, "turn", 40));
    let mut relay_only = play(&lab, 2, &dir, &server, "turn", 30);
    relay_only.arg("--relay-only");
    let player = lab.spawn(relay_only);
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
}
