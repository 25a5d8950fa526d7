//! Weak networks, on real kernel paths: `onair bench weaknet` cells shortened to a few seconds
//! — a relay, a publisher (720p30 test source) and a player in their own network namespaces,
//! the player's link impaired by `onair impair` on NFQUEUE once playback runs — and the
//! figures the player measured held to the targets (with a margin for a shared
//! two-core machine; the full 60 s matrix is the benchmark, in docs/PERFORMANCE.md).
//!
//! One cell at a time (one lock): each runs an encoder and a decoder and times them.

mod common;

use std::process::Command;

use common::netns::{self, ONAIR, onair, turn};
use serde_json::Value;

/// Whether the test may run: root, iproute2 and iptables (CI has them).
fn available() -> bool {
    if !netns::available() {
        eprintln!("skipped: building network namespaces needs root and iproute2");
        return false;
    }
    assert!(
        netns::iptables_available(),
        "the weak-network tests need iptables (Debian's `iptables` package)"
    );
    true
}

/// Runs `onair bench weaknet ARGS --json` and returns its one cell's player figures.
fn cell(args: &[&str]) -> Value {
    let out = Command::new(ONAIR)
        .args(["bench", "weaknet", "--json"])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run onair bench weaknet");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the bench prints JSON");
    let figures = report["cells"][0]["onair"].clone();
    assert!(figures.get("error").is_none(), "the cell failed: {figures}");
    eprintln!("{args:?}: {figures}");
    figures
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn on_a_clean_link_nothing_is_held() {
    if !available() {
        return;
    }
    let _turn = turn();
    let v = cell(&["--cells", "clean", "--seconds", "6"]);
    assert!(f(&v, "fps") >= 27.0, "{v}");
    assert_eq!(f(&v, "stall_ratio"), 0.0, "{v}");
    let p50 = f(&v["capture_to_decoded_ms"], "p50");
    assert!(
        p50 < 30.0,
        "capture → decoded stays near the codec floor: {v}"
    );
    assert!(
        f(&v, "playout_delay_ms") < 5.0,
        "no playout delay added: {v}"
    );
    assert_eq!(f(&v, "keyframes_requested"), 0.0, "{v}");
    // Nothing lost, so no FEC repair packets were sent (nothing rebuilt).
    assert_eq!(f(&v, "packets_fec_recovered"), 0.0, "{v}");
    // The network quality the player reports for its own link.
    assert_eq!(v["downstream_quality"], "excellent", "{v}");
}

#[test]
fn twenty_percent_loss_each_way_with_100ms_and_jitter_plays_smoothly() {
    if !available() {
        return;
    }
    let _turn = turn();
    // The "bad" cell: 20 % loss both ways, 100 ± 30 ms towards the player.
    let v = cell(&["--cells", "bad", "--seconds", "12"]);
    // The impairment was real: packets were repaired and the delay is there.
    assert!(f(&v, "packets_repaired") > 200.0, "{v}");
    // The relay's Reed–Solomon repairs rebuilt most losses before any NACK (in 12 s cells:
    // about 1,000 of 1,050 repaired; with XOR parity it was 500–600 of 1,300).
    assert!(f(&v, "packets_fec_recovered") > 300.0, "{v}");
    assert!(
        f(&v, "packets_fec_recovered") >= 0.6 * f(&v, "packets_repaired"),
        "FEC, not resends, mends most: {v}"
    );
    // Little delay over the path's 100 ms: frames rarely wait a round trip for a resend, so
    // the playout delay ends small (12 s cells: 18–82 ms; with XOR parity the 20 s benchmark
    // cell ended at 248–377 ms). The p50 over so short a cell still counts the first seconds,
    // before the repair share has risen (173–297 ms; the 20 s benchmark cell 117–124, XOR
    // 395–510).
    assert!(f(&v, "playout_delay_ms") < 200.0, "{v}");
    let p50 = f(&v["capture_to_decoded_ms"], "p50");
    assert!((100.0..600.0).contains(&p50), "{v}");
    // Smooth: (before this work: 1–9 fps, stall 0.96, 14 freezes over 500 ms; with XOR
    // parity 3–10 % stall in 12 s cells).
    assert!(f(&v, "fps") >= 25.0, "{v}");
    assert!(f(&v, "stall_ratio") <= 0.05, "{v}");
    assert!(f(&v, "longest_freeze_ms") < 500.0, "{v}");
    assert!(
        f(&v, "keyframes_requested") <= 3.0,
        "NACK repair, not keyframes: {v}"
    );
    // Audio: (before: 19 % of frames lost).
    let audio = f(&v, "audio_frames_played") + f(&v, "audio_frames_concealed");
    assert!(audio >= 0.9 * f(&v, "audio_frames_expected"), "{v}");
    // The loss shows in the network quality (10–30 % is Bad), though playback is smooth.
    assert_eq!(v["downstream_quality"], "bad", "{v}");
}

#[test]
fn random_loss_is_no_reason_to_step_an_auto_player_down() {
    if !available() {
        return;
    }
    let _turn = turn();
    // A fifth of everything lost at random each way, no delay and no cap: a lossy radio
    // link, not a full one. A smaller layer would lose as much, paced and without FEC (the
    // relay stepped such a player down to 180p at 3–19 fps, and never back up).
    let v = cell(&[
        "--simulcast",
        "--loss",
        "0.2",
        "--up-loss",
        "0.2",
        "--seconds",
        "8",
    ]);
    assert!(v["first_step_down_ms"].is_null(), "stepped down: {v}");
    assert_eq!(f(&v, "video_layer"), 0.0, "{v}");
    assert_eq!(f(&v, "layer_changes"), 0.0, "{v}");
    assert_eq!(f(&v, "settle_layer_changes"), 0.0, "{v}");
    // Repaired as on one layer: FEC and NACK (the relay sends no FEC to a paced player).
    assert!(f(&v, "packets_fec_recovered") > 20.0, "{v}");
    assert!(f(&v, "fps") >= 25.0, "{v}");
}

/// `key=value` from an event or stats line.
fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

#[test]
fn forty_percent_loss_with_150ms_and_jitter_keeps_playing_without_long_freezes() {
    if !available() {
        return;
    }
    let _turn = turn();
    // The "terrible" cell: 40 % loss both ways, 150 ± 40 ms towards the player.
    // Target: no freeze over a second, audio ≥ 90 % played or concealed.
    let v = cell(&["--cells", "terrible", "--seconds", "12"]);
    assert!(f(&v, "packets_fec_recovered") > 300.0, "{v}");
    // (With XOR parity the 20 s benchmark cell stalled 56 % at 14 fps, freezes up to 2 s.)
    assert!(f(&v, "fps") >= 24.0, "{v}");
    assert!(f(&v, "stall_ratio") <= 0.15, "{v}");
    assert!(f(&v, "longest_freeze_ms") < 1_000.0, "{v}");
    let audio = f(&v, "audio_frames_played") + f(&v, "audio_frames_concealed");
    assert!(audio >= 0.9 * f(&v, "audio_frames_expected"), "{v}");
}

#[test]
fn one_viewer_on_a_bad_link_costs_the_others_no_keyframes() {
    use std::time::{Duration, Instant};
    if !available() {
        return;
    }
    let _turn = turn();
    // Host 0 the relay, 1 the publisher, 2 a viewer on a clean link, 3 one whose link loses
    // 30 % each way with 50 ms of delay.
    let mut lab = netns::Lab::new("wk", 4);
    let dir = std::env::temp_dir().join(format!("onair-weaknet-kf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let listen = format!("{}:7880", lab.addr(0));
    let relay = lab.spawn(onair(&lab, 0, &dir, &["serve", "--listen", &listen]));
    netns::wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    let server = format!("ws://{listen}");
    let live = ["--server", &server, "--room", "kf", "--stream", "cam"];
    let mut publish = onair(
        &lab,
        1,
        &dir,
        &["publish", "--preset", "360p", "--duration", "60"],
    );
    publish.args(live);
    let publisher = lab.spawn(publish);
    let mut viewers = Vec::new();
    for host in [2, 3] {
        let mut c = onair(&lab, host, &dir, &["play", "--stats", "--duration", "60"]);
        c.args(live);
        viewers.push(lab.spawn(c));
    }
    for v in &viewers {
        netns::wait_line(v, "player_video_first_frame", Duration::from_secs(30))
            .unwrap_or_else(|seen| panic!("a viewer got no frame: {seen:?}"));
    }
    let onair_bin = std::path::Path::new(ONAIR);
    let bad = netns::LinkSpec {
        loss: 0.3,
        burst: 1.0,
        delay_ms: 50,
        jitter_ms: 0,
    };
    lab.impair(onair_bin, 3, 0, &bad, 10, 1)
        .expect("impair the viewer's downlink");
    let up = netns::LinkSpec { delay_ms: 0, ..bad };
    lab.impair(onair_bin, 0, 3, &up, 11, 2)
        .expect("impair its uplink");
    // Ten seconds: keyframes the publisher was asked for, and the clean viewer's frame rate.
    let end = Instant::now() + Duration::from_secs(12);
    let (mut keyframes, mut seconds, mut clean_fps) = (0u64, 0, Vec::new());
    while Instant::now() < end {
        while let Ok(line) = publisher.try_recv() {
            if line.contains("publisher_quality") {
                keyframes += field::<u64>(&line, "keyframe_requests=").unwrap_or(0);
                seconds += 1;
            }
        }
        while let Ok(line) = viewers[0].try_recv() {
            if line.starts_with("stats ") {
                clean_fps.extend(field::<u32>(&line, "fps="));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "keyframes asked of the publisher: {keyframes} in {seconds} s; clean viewer fps {clean_fps:?}"
    );
    assert!(seconds >= 8, "the publisher reported quality each second");
    // The SFU forwards a repair request at most every 500 ms; the player asks only when NACK
    // repair failed. (Before: ~10 a second from one lossy player.)
    assert!(keyframes <= 6, "{keyframes} keyframes in {seconds} s");
    let steady = &clean_fps[1..];
    assert!(
        steady.iter().all(|f| *f >= 27),
        "the clean viewer plays on: {clean_fps:?}"
    );
}

#[test]
fn a_thin_link_gets_a_smaller_simulcast_layer_instead_of_freezing() {
    if !available() {
        return;
    }
    let _turn = turn();
    // 600 kbit/s to the player, the publisher sending 720p (≈ 1 Mbps here), 360p and 180p.
    // Without layers this cell plays at 0 fps (docs/PERFORMANCE.md, weak networks).
    let v = cell(&["--cells", "thin", "--seconds", "12", "--simulcast"]);
    let layer = v["video_layer"]
        .as_u64()
        .unwrap_or_else(|| panic!("no layer: {v}"));
    assert!(layer >= 1, "stepped down from the full picture: {v}");
    assert!(f(&v, "fps") >= 20.0, "{v}");
    assert!(f(&v, "longest_freeze_ms") < 3_000.0, "{v}");
}

/// One `onair play --stats` viewer's story, read from its output lines.
#[derive(Debug, Default)]
struct Viewer {
    /// When its first frame came (s, from its own clock).
    first_frame: Option<f64>,
    /// Layer changes: (s, layer).
    layers: Vec<(f64, usize)>,
    /// Stats lines: (seconds since the first, fps, longest gap ms).
    seconds: Vec<(u32, u32, f64)>,
    /// Each stats line's latest frame width (0: none yet).
    widths: Vec<u32>,
    /// The decoded picture's size changes: (s, width).
    sizes: Vec<(f64, u32)>,
    /// Its quality events: keyframes received so far, the relay's estimate (kbit/s).
    keyframes: Vec<u64>,
    estimates: Vec<f64>,
}

impl Viewer {
    fn read(&mut self, rx: &std::sync::mpsc::Receiver<String>) {
        while let Ok(line) = rx.try_recv() {
            let at = || line.split_whitespace().next().and_then(|t| t.parse().ok());
            if line.contains("player_video_first_frame") {
                self.first_frame = at();
            } else if line.contains("player_video_size ") {
                if let (Some(t), Some(w)) = (at(), field(&line, "width=")) {
                    self.sizes.push((t, w));
                }
            } else if line.contains("player_video_layer ") {
                if let (Some(t), Some(l)) = (at(), field(&line, "layer=")) {
                    self.layers.push((t, l));
                }
            } else if line.contains("player_quality ") {
                self.keyframes
                    .extend(field::<u64>(&line, "keyframes_received="));
                self.estimates.extend(field::<f64>(&line, "estimate_kbps="));
            } else if line.starts_with("stats ") {
                let n = self.seconds.len() as u32;
                if let (Some(fps), Some(gap)) =
                    (field(&line, "fps="), field(&line, "longest_gap_ms="))
                {
                    self.seconds.push((n, fps, gap));
                    let width = field::<String>(&line, "size=")
                        .and_then(|s| s.split('x').next().and_then(|w| w.parse().ok()))
                        .unwrap_or(0);
                    self.widths.push(width);
                }
            }
        }
    }
}

/// A lab with a relay on host 0 and a 720p simulcast publisher on host 1; returns it, its temp
/// dir and the player command's common arguments.
fn simulcast_lab(
    tag: &str,
    hosts: usize,
) -> (
    netns::Lab,
    std::path::PathBuf,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
) {
    publishing_lab(tag, hosts, &["--simulcast"])
}

/// A relay on host 0 and a 720p publisher (with `extra` flags) on host 1, live; the lab,
/// its temp dir, the flags that reach the stream, and the publisher's output lines.
fn publishing_lab(
    tag: &str,
    hosts: usize,
    extra: &[&str],
) -> (
    netns::Lab,
    std::path::PathBuf,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::time::Duration;
    let mut lab = netns::Lab::new(tag, hosts);
    let dir = std::env::temp_dir().join(format!("onair-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let listen = format!("{}:7880", lab.addr(0));
    // ONAIR_TEST_RELAY_LOG=FILTER keeps the relay's log in the temp dir's relay.log.
    let mut serve = onair(&lab, 0, &dir, &["serve", "--listen", &listen]);
    let log = std::env::var("ONAIR_TEST_RELAY_LOG").ok().map(|filter| {
        serve.env("RUST_LOG", filter);
        std::env::temp_dir().join(format!("onair-{tag}-relay.log"))
    });
    let relay = lab.spawn_logged(serve, log.as_deref());
    netns::wait_line(&relay, "media:", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the relay did not start: {seen:?}"));
    let live: Vec<String> = [
        "--server",
        &format!("ws://{listen}"),
        "--room",
        tag,
        "--stream",
        "cam",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut publish = onair(
        &lab,
        1,
        &dir,
        &["publish", "--preset", "720p", "--duration", "90"],
    );
    publish.args(extra);
    publish.args(&live);
    let publisher = lab.spawn(publish);
    netns::wait_line(&publisher, "Publishing", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the publisher did not go live: {seen:?}"));
    (lab, dir, live, publisher)
}

fn spawn_viewer(
    lab: &mut netns::Lab,
    host: usize,
    dir: &std::path::Path,
    live: &[String],
) -> std::sync::mpsc::Receiver<String> {
    let mut c = onair(
        lab,
        host,
        dir,
        &["play", "--stats", "--layer", "auto", "--duration", "90"],
    );
    c.args(live);
    // ONAIR_TEST_VIEWER_LOG=FILTER keeps each viewer's log as onair-viewer-HOST.log in the
    // temp dir.
    let log = std::env::var("ONAIR_TEST_VIEWER_LOG").ok().map(|filter| {
        c.env("RUST_LOG", filter);
        std::env::temp_dir().join(format!("onair-viewer-{host}.log"))
    });
    lab.spawn_logged(c, log.as_deref())
}

#[test]
fn a_thin_uplink_takes_the_publishers_bitrate_down() {
    use std::time::{Duration, Instant};
    if !available() {
        return;
    }
    let _turn = turn();
    // Losses without a queue are not congestion (`tests/lossy_link`); a thin uplink's are:
    // a 500 kbit/s cap with a 200 ms queue on what the relay receives (the publisher's
    // uplink) takes the encoder's target under it.
    let (lab, dir, _live, publisher) = publishing_lab("up", 2, &[]);
    let targets = |secs: u64, until: &dyn Fn(u32) -> bool| {
        let (mut seen, end) = (Vec::new(), Instant::now() + Duration::from_secs(secs));
        while Instant::now() < end {
            if let Ok(line) = publisher.recv_timeout(Duration::from_millis(100))
                && line.contains("publisher_quality")
                && let Some(t) = field::<u32>(&line, "target_kbps=")
            {
                seen.push(t);
                if until(t) {
                    break;
                }
            }
        }
        seen
    };
    let before = targets(4, &|_| false);
    lab.rate_cap(0, 500, 200).expect("cap the relay's host");
    let capped = Instant::now();
    let after = targets(15, &|t| t <= 500);
    let took = capped.elapsed();
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("before {before:?}; capped {after:?} after {took:?}");
    assert!(
        before.last().is_some_and(|t| *t >= 1_000),
        "a clean link keeps the preset's bitrate: {before:?}"
    );
    assert!(
        after.last().is_some_and(|t| *t <= 500),
        "the target did not go under the cap: {after:?}"
    );
}

#[test]
fn three_viewers_on_three_links_each_get_the_layer_that_fits() {
    use std::time::{Duration, Instant};
    if !available() {
        return;
    }
    let _turn = turn();
    // Hosts 2, 3, 4: 600 kbit/s, 250 kbit/s, unlimited. The layers: 720p (≈ 1.5 Mbps),
    // 360p (⅓), 180p (⅒).
    let (mut lab, dir, live, publisher) = simulcast_lab("tv", 5);
    lab.rate_cap(2, 600, 200).expect("cap host 2");
    lab.rate_cap(3, 250, 200).expect("cap host 3");
    let rx: Vec<_> = (2..5)
        .map(|h| spawn_viewer(&mut lab, h, &dir, &live))
        .collect();
    let mut viewers: Vec<Viewer> = (0..3).map(|_| Viewer::default()).collect();
    // 20 s: long enough for the capped viewers' probes for the next layer (4 s after their
    // link was measured full) to come and go, and for the last 3 s to show where they settle.
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        for (v, r) in viewers.iter_mut().zip(&rx) {
            v.read(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    while let Ok(line) = publisher.try_recv() {
        eprintln!("publisher: {line}");
    }
    for (v, name) in viewers.iter().zip(["600 kbit/s", "250 kbit/s", "clean"]) {
        eprintln!("{name}: {v:?}");
    }
    for (v, want) in viewers.iter().zip([1usize, 2, 0]) {
        // When the relay answered the play (its first word on the layer: media flows from
        // then), on the viewer's own clock from the start of `play`.
        let answered = v
            .layers
            .first()
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no answer: {v:?}"));
        // When it decoded the first picture of the layer that fits (1280, 640 or 320 wide).
        let fitting = 1280 >> want;
        let shown = v
            .sizes
            .iter()
            .find(|(_, w)| *w == fitting)
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("never {fitting} wide: {v:?}"));
        if want > 0 {
            // Each capped viewer plays the layer that fits within 2 s of the answer (the
            // issue's figure; 0.86-1.08 s in 12 runs once a step down stopped resending the
            // old layer's losses, 2.2-2.4 s one run in three before) and ends on it: the
            // picture it gets is that size for the last 3 s.
            assert!(
                shown - answered <= SHOWN_WITHIN,
                "{fitting} wide {:.2} s after the answer: {v:?}",
                shown - answered
            );
            let tail = &v.widths[v.widths.len().saturating_sub(3)..];
            assert!(
                tail.len() == 3 && tail.iter().all(|w| *w == fitting),
                "ends on {fitting} wide: {:?} {v:?}",
                v.widths
            );
            let changes = v.sizes.iter().filter(|(t, _)| *t > shown).count();
            assert!(changes <= 2, "{changes} size changes after fitting: {v:?}");
        }
        // After that (SHOWN_WITHIN after the answer, or later if it showed that layer later)
        // no freeze: the longest gap between frames stays under 500 ms in each second of the
        // stats lines (line n covers n..n+1 s after `play`) from the first that starts then.
        // The capped viewers' probes for the next layer, which their links cannot carry,
        // must end before they cost one (at a 60 ms queue they froze the picture for 1.2 s
        // one run in ten; ended at 40 ms, the worst gap was 101 ms in 6 runs).
        let from = (answered + SHOWN_WITHIN).max(shown).ceil() as usize;
        let worst = v.seconds.iter().skip(from).map(|s| s.2).fold(0.0, f64::max);
        assert!(worst < 500.0, "a freeze of {worst} ms: {v:?}");
        let fps: Vec<u32> = v.seconds.iter().skip(from).map(|s| s.1).collect();
        let mean = f64::from(fps.iter().sum::<u32>()) / fps.len().max(1) as f64;
        assert!(mean >= 25.0, "{mean:.1} fps on average: {v:?}");
    }
    // The clean viewer: the full picture all along, keyframes only at the GOP's pace (one
    // every 2 s at most, whatever the others asked of the smaller layers).
    let clean = &viewers[2];
    assert!(clean.layers.iter().all(|(_, l)| *l == 0), "{clean:?}");
    // From the fourth report on: in the first seconds the capped viewers still got the
    // full layer and asked it for keyframes too. The GOP is 2 s; one more (a capped
    // viewer's probe that succeeded asks the full layer for one) is allowed.
    let kf = &clean.keyframes;
    assert!(kf.len() >= 12, "{clean:?}");
    let span = (kf.len() - 4) as f64;
    let per_second = (kf[kf.len() - 1] - kf[3]) as f64 / span;
    assert!(
        per_second <= 0.6,
        "{per_second} keyframes a second: {clean:?}"
    );
}

/// How soon after the relay's answer a capped viewer of the three-viewer test must decode the
/// layer that fits (s).
const SHOWN_WITHIN: f64 = 2.0;

#[test]
fn a_cap_mid_stream_steps_the_layer_down_and_its_end_steps_it_up() {
    use std::time::{Duration, Instant};
    if !available() {
        return;
    }
    let _turn = turn();
    let (mut lab, dir, live, _publisher) = simulcast_lab("cl", 3);
    let rx = spawn_viewer(&mut lab, 2, &dir, &live);
    let mut v = Viewer::default();
    let wait = |v: &mut Viewer, secs: u64, done: &dyn Fn(&Viewer) -> bool| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end && !done(v) {
            v.read(&rx);
            std::thread::sleep(Duration::from_millis(50));
        }
        done(v)
    };
    assert!(
        wait(&mut v, 30, &|v| v.seconds.len() >= 8
            && v.first_frame.is_some()),
        "{v:?}"
    );
    assert!(
        v.layers.iter().all(|(_, l)| *l == 0),
        "clean at first: {v:?}"
    );
    let changes = v.layers.len();
    lab.rate_cap(2, 400, 200).expect("cap");
    let capped = Instant::now();
    let down = wait(&mut v, 6, &|v| {
        v.layers.len() > changes && v.layers.last().is_some_and(|l| l.1 > 0)
    });
    let down_after = capped.elapsed();
    assert!(down, "no step down: {v:?}");
    // Some seconds on the thin link, then the cap goes.
    let _ = wait(&mut v, 6, &|_| false);
    lab.clear_rate_cap(2).expect("lift the cap");
    let lifted = Instant::now();
    let up = wait(&mut v, 15, &|v| v.layers.last().is_some_and(|l| l.1 == 0));
    let up_after = lifted.elapsed();
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("down after {down_after:?}, up after {up_after:?}: {v:?}");
    assert!(
        down_after <= Duration::from_secs(2),
        "stepped down after {down_after:?}"
    );
    assert!(up, "not back to the full picture: {v:?}");
    assert!(
        up_after <= Duration::from_secs(10),
        "stepped up after {up_after:?}"
    );
}
