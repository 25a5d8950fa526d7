//! `onair bench weaknet`: playback over impaired links. For each cell a relay, a publisher
//! (720p30 test source, 1.5 Mbps ceiling) and a player run in their own network namespaces;
//! once the player shows its first frame the cell's impairment is put on the player's link
//! (or the publisher's) — loss, bursts, delay and jitter by `onair impair` on NFQUEUE, rate
//! caps by tbf — and the player is measured for `--seconds`: stalls, freezes, frame rate,
//! capture → decoded delay from the burned-in stamp, audio frames, keyframe requests, bitrate.
//!
//! The player runs as `onair bench weaknet --player-of URL` inside its namespace and prints
//! one JSON line; this process builds the hosts and collects the lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use onair::dev_app;
use onair::netlab::impair::LinkSpec;
use onair::netlab::{Lab, wait_line};
use onair_engine::media::frame::wall_clock_us;
use onair_engine::media::stamp;
use onair_engine::{Engine, EngineProfile, Event, PlayerConfig, QualityLevel, RoomConfig, User};
use serde_json::{Value, json};

use super::stats;

/// `onair bench weaknet` flags.
#[derive(Args, Debug)]
pub struct WeaknetArgs {
    /// Seconds each cell is measured (after the impairment is on).
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Cells to run, comma-separated (default: all): clean, mild, bad, burst, terrible,
    /// extreme, thin, uplink.
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Run one custom cell instead: this on what the player receives…
    #[command(flatten)]
    custom: Option<LinkSpec>,
    /// …and this share of what the player sends lost (with `--loss` etc.).
    #[arg(long)]
    up_loss: Option<f64>,
    /// A rate cap on what the player receives, kbit/s (a custom cell, alone or with `--loss`
    /// etc.; a queue of 200 ms).
    #[arg(long)]
    rate_kbit: Option<u32>,
    /// Keep each process's log (stderr, with the engine's debug lines) in this directory as
    /// CELL-ROLE.log.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Also play each cell's stream in headless Chromium (WHEP, from the player's namespace,
    /// after our player) and print its figures beside ours.
    #[arg(long)]
    chromium: bool,
    /// The publisher sends simulcast (720p, 360p, 180p) and the player asks for Auto: the
    /// relay picks the layer the player's link carries.
    #[arg(long)]
    simulcast: bool,
    /// Neither the relay nor the publisher sends FEC repair packets (`onair serve --no-fec`,
    /// `onair publish --no-fec`): NACK repair alone, to compare.
    #[arg(long)]
    no_fec: bool,
    /// The layer the player asks for (auto, big, small, smallest; with `--simulcast`): a
    /// fixed one shows a layer's repair on a lossy link without the relay stepping down.
    #[arg(long, default_value = "auto")]
    layer: String,
    /// Internal: play the relay at this http:// URL in Chromium and print its figures.
    #[arg(long, hide = true)]
    chromium_of: Option<String>,
    /// Internal: be the player of the relay at this URL and print its figures as JSON.
    #[arg(long, hide = true)]
    player_of: Option<String>,
}

/// One cell of the matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Its name.
    pub name: &'static str,
    /// What the player receives from the relay goes through this.
    pub down: LinkSpec,
    /// What the player sends the relay (NACKs, reports) goes through this.
    pub up: LinkSpec,
    /// What the publisher sends the relay.
    pub publisher_up: LinkSpec,
    /// What the publisher receives from the relay (NACKs, reports, estimates).
    pub publisher_down: LinkSpec,
    /// A rate cap on what the player receives, kbit/s.
    pub rate_kbit: Option<u32>,
    /// The publisher always sends simulcast here (the cell's target needs a smaller layer to
    /// step down to), with or without `--simulcast`.
    pub simulcast: bool,
    /// The issue's target, as text.
    pub target: &'static str,
}

const fn link(loss: f64, burst: f64, delay_ms: u32, jitter_ms: u32) -> LinkSpec {
    LinkSpec {
        loss,
        burst,
        delay_ms,
        jitter_ms,
    }
}

/// The matrix: delay and jitter one way (towards the receiver), loss both ways.
pub fn matrix() -> Vec<Cell> {
    let c = LinkSpec::CLEAN;
    let player = |name, down: LinkSpec, target| Cell {
        name,
        down,
        up: link(down.loss, down.burst, 0, 0),
        publisher_up: c,
        publisher_down: c,
        rate_kbit: None,
        simulcast: false,
        target,
    };
    vec![
        player("clean", c, "p50 <= floor + 3 ms, stall 0"),
        player(
            "mild",
            link(0.05, 1.0, 40, 10),
            "stall <= 0.5 %, p50 <= 40 + 35 ms",
        ),
        player(
            "bad",
            link(0.20, 1.0, 100, 30),
            "stall <= 2 %, no freeze > 500 ms, p50 <= 100 + 60 ms",
        ),
        player(
            "burst",
            link(0.10, 5.0, 60, 0),
            "stall <= 2 %, no freeze > 1 s",
        ),
        player(
            "terrible",
            link(0.40, 1.0, 150, 40),
            "no freeze > 1 s; audio >= 90 % played or concealed",
        ),
        player(
            "extreme",
            link(0.70, 1.0, 0, 0),
            "session stays up; audio >= 50 % recovered",
        ),
        Cell {
            rate_kbit: Some(600),
            simulcast: true,
            ..player(
                "thin",
                c,
                "steps down within 2 s (first_step_down_ms), then stall <= 1 %",
            )
        },
        Cell {
            publisher_up: link(0.20, 1.0, 80, 0),
            publisher_down: link(0.20, 1.0, 0, 0),
            ..player("uplink", c, "publisher adapts; players stall <= 2 %")
        },
    ]
}

/// Runs the benchmark (or, with `--player-of`, one cell's player).
pub fn run(args: WeaknetArgs) -> anyhow::Result<()> {
    if let Some(base) = &args.chromium_of {
        let sign = dev_app::load().context("no development app (ONAIR_DEV_APP_FILE)")?;
        let mut claims = onair_engine::token::Claims::new(
            dev_app::DEV_APP_ID,
            "weaknet-chromium",
            onair_engine::token::unix_now(),
            3600,
        );
        claims.room_id = Some("weak".into());
        let token = onair_engine::token::mint(&claims, &sign);
        let url = format!("{base}/live?mode=whep&room=weak&stream=cam#token={token}");
        println!("{}", super::chromium::measure(&url, args.seconds)?);
        return Ok(());
    }
    let video_layer = onair_engine::VideoLayer::parse(&args.layer)
        .filter(|l| *l != onair_engine::VideoLayer::Off)
        .ok_or_else(|| anyhow::anyhow!("--layer is auto, big, small or smallest"))?;
    if let Some(server) = &args.player_of {
        let figures = measure_player(server, args.seconds, video_layer)?;
        println!("{figures}");
        return Ok(());
    }
    if !onair::netlab::available() {
        bail!("onair bench weaknet builds network namespaces: run it as root with iproute2");
    }
    let exe = std::env::current_exe().context("finding the onair binary")?;
    let custom = args
        .custom
        .filter(|c| !c.is_clean())
        .or(args.rate_kbit.map(|_| LinkSpec::CLEAN));
    let cells: Vec<Cell> = match custom {
        Some(down) => vec![Cell {
            name: "custom",
            down,
            up: link(args.up_loss.unwrap_or(0.0), 1.0, 0, 0),
            publisher_up: LinkSpec::CLEAN,
            publisher_down: LinkSpec::CLEAN,
            rate_kbit: args.rate_kbit,
            simulcast: false,
            target: "",
        }],
        None => matrix()
            .into_iter()
            .filter(|c| args.cells.is_empty() || args.cells.iter().any(|n| n == c.name))
            .collect(),
    };
    if cells.is_empty() {
        bail!(
            "no such cell; the cells are clean, mild, bad, burst, terrible, extreme, thin, uplink"
        );
    }
    let mut results = Vec::new();
    for cell in &cells {
        if !args.json {
            eprintln!("cell {} ({} s)…", cell.name, args.seconds);
        }
        let options = CellOptions {
            seconds: args.seconds,
            logs: args.logs.clone(),
            chromium: args.chromium,
            simulcast: args.simulcast || cell.simulcast,
            no_fec: args.no_fec,
            layer: args.layer.clone(),
        };
        let (figures, chromium) = match run_cell(&exe, cell, &options) {
            Ok(both) => both,
            Err(e) => (json!({ "error": format!("{e:#}") }), Value::Null),
        };
        results.push(json!({
            "cell": cell.name,
            "player_down": cell.down,
            "player_up": cell.up,
            "publisher_up": cell.publisher_up,
            "publisher_down": cell.publisher_down,
            "rate_kbit": cell.rate_kbit,
            "simulcast": options.simulcast,
            "target": cell.target,
            "onair": figures,
            "chromium": chromium,
        }));
    }
    let report = json!({
        "bench": "weaknet",
        "cores": stats::cores(),
        "resolution": if args.simulcast { "720p30 simulcast (360p, 180p)" } else { "720p30" },
        "layer": args.layer,
        "seconds": args.seconds,
        "fec": !args.no_fec,
        "cells": results,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn onair(lab: &Lab, host: usize, exe: &Path, dir: &Path, logs: bool) -> std::process::Command {
    let mut c = lab.command(host, &exe.to_string_lossy());
    let level = if logs {
        "warn,onair_engine=debug,onair_relay=trace,onair_transport=trace"
    } else {
        "error"
    };
    c.env("ONAIR_DEV_APP_FILE", dir.join("dev-app.toml"))
        .env("RUST_LOG", level)
        .env_remove("ONAIR_SERVER")
        .env_remove("ONAIR_CA_CERT");
    c
}

/// How a cell is run (besides its impairment).
#[derive(Clone, Debug, Default)]
pub struct CellOptions {
    /// Seconds measured.
    pub seconds: f64,
    /// Keep each process's log here.
    pub logs: Option<PathBuf>,
    /// Chromium plays the stream too.
    pub chromium: bool,
    /// The publisher sends three layers.
    pub simulcast: bool,
    /// Neither the relay nor the publisher sends FEC.
    pub no_fec: bool,
    /// The layer the player asks for (`VideoLayer::parse`).
    pub layer: String,
}

/// Hosts: 0 the relay, 1 the publisher, 2 the player.
pub fn run_cell(exe: &Path, cell: &Cell, options: &CellOptions) -> anyhow::Result<(Value, Value)> {
    let CellOptions {
        seconds,
        chromium,
        simulcast,
        no_fec,
        ..
    } = *options;
    let logs = options.logs.as_deref();
    let mut lab = Lab::try_new("wn", 3).map_err(anyhow::Error::msg)?;
    let dir = TempDir::new(&format!("weaknet-{}", cell.name))?;
    if let Some(logs) = logs {
        std::fs::create_dir_all(logs)?;
    }
    let log = |role: &str| logs.map(|d| d.join(format!("{}-{role}.log", cell.name)));
    let mut relay = onair(&lab, 0, exe, &dir.0, logs.is_some());
    relay.args(["serve", "--listen", &format!("{}:7880", lab.addr(0))]);
    if no_fec {
        relay.arg("--no-fec");
    }
    let relay = lab.spawn_logged(relay, log("relay").as_deref());
    wait_line(&relay, "media:", Duration::from_secs(20))
        .map_err(|seen| anyhow::anyhow!("the relay did not start: {seen:?}"))?;
    let server = format!("ws://{}:7880", lab.addr(0));
    // Long enough for our player and, with --chromium, Chromium after it.
    let total = 2.0 * seconds + 120.0;
    let mut publisher = onair(&lab, 1, exe, &dir.0, logs.is_some());
    publisher.args([
        "publish", "--server", &server, "--room", "weak", "--stream", "cam",
    ]);
    publisher.args(["--preset", "720p", "--duration", &format!("{total}")]);
    if simulcast {
        publisher.arg("--simulcast");
    }
    if no_fec {
        publisher.arg("--no-fec");
    }
    let _publisher = lab.spawn_logged(publisher, log("publisher").as_deref());
    let mut player = onair(&lab, 2, exe, &dir.0, logs.is_some());
    player.args(["bench", "weaknet", "--player-of", &server]);
    player.args(["--seconds", &format!("{seconds}")]);
    player.args(["--layer", &options.layer]);
    let player = lab.spawn_logged(player, log("player").as_deref());
    wait_line(&player, "ready", Duration::from_secs(40))
        .map_err(|seen| anyhow::anyhow!("the player never showed a frame: {seen:?}"))?;
    // The impairment goes on once playback runs (a session established on a clean link, as
    // a viewer whose network turns bad).
    let seed = 0x5eed;
    lab.impair(exe, 2, 0, &cell.down, 10, seed)
        .and_then(|()| lab.impair(exe, 0, 2, &cell.up, 11, seed + 1))
        .and_then(|()| lab.impair(exe, 0, 1, &cell.publisher_up, 12, seed + 2))
        .and_then(|()| lab.impair(exe, 1, 0, &cell.publisher_down, 13, seed + 3))
        .map_err(anyhow::Error::msg)?;
    if let Some(kbit) = cell.rate_kbit {
        lab.rate_cap(2, kbit, 200).map_err(anyhow::Error::msg)?;
    }
    let seen = wait_line(
        &player,
        "\"stall_ratio\"",
        Duration::from_secs_f64(seconds + 60.0),
    )
    .map_err(|seen| anyhow::anyhow!("the player printed no figures: {seen:?}"))?;
    let line = seen.last().context("no line")?;
    let ours: Value = serde_json::from_str(line)?;
    if !chromium {
        return Ok((ours, Value::Null));
    }
    // The same stream, the same impaired link, libwebrtc's receiver.
    let mut reference = onair(&lab, 2, exe, &dir.0, logs.is_some());
    reference.args(["bench", "weaknet", "--seconds", &format!("{seconds}")]);
    reference.args(["--chromium-of", &format!("http://{}:7880", lab.addr(0))]);
    let reference = lab.spawn_logged(reference, log("chromium").as_deref());
    let theirs = wait_line(
        &reference,
        "\"freeze_ratio\"",
        Duration::from_secs_f64(seconds + 60.0),
    )
    .map_err(|seen| json!({ "error": format!("chromium printed no figures: {seen:?}") }))
    .and_then(|seen| {
        seen.last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .ok_or_else(|| json!({ "error": "chromium's figures did not parse" }))
    });
    Ok((ours, theirs.unwrap_or_else(|e| e)))
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("onair-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Video stall accounting: gaps between new frames longer than two frame intervals plus
/// 50 ms are stalls (their whole length counts); a gap over 500 ms is also a freeze.
#[derive(Debug, Default)]
pub struct Smoothness {
    last: Option<Instant>,
    stalled: Duration,
    freezes_over_500ms: u64,
    longest: Duration,
}

impl Smoothness {
    /// The gap that counts as a stall at 30 fps: 2 × 33.3 ms + 50 ms.
    pub const STALL: Duration = Duration::from_micros(2 * 33_333 + 50_000);

    /// A new frame at `at`.
    pub fn frame(&mut self, at: Instant) {
        if let Some(last) = self.last.replace(at) {
            self.gap(at.saturating_duration_since(last));
        }
    }

    fn gap(&mut self, gap: Duration) {
        if gap > Self::STALL {
            self.stalled += gap;
        }
        if gap > Duration::from_millis(500) {
            self.freezes_over_500ms += 1;
        }
        self.longest = self.longest.max(gap);
    }

    /// Closes the measurement at `end` (a frame-less tail counts too).
    pub fn finish(&mut self, end: Instant) {
        if let Some(last) = self.last {
            self.gap(end.saturating_duration_since(last));
        }
    }
}

fn quality_counts(e: &Event) -> Option<[f64; 7]> {
    match e {
        Event::PlayerQualityUpdate {
            keyframe_requests,
            audio_frames_played,
            audio_frames_concealed,
            audio_frames_lost,
            packets_repaired,
            playout_delay_ms,
            packets_fec_recovered,
            ..
        } => Some([
            *keyframe_requests as f64,
            *audio_frames_played as f64,
            *audio_frames_concealed as f64,
            *audio_frames_lost as f64,
            *packets_repaired as f64,
            *playout_delay_ms,
            *packets_fec_recovered as f64,
        ]),
        _ => None,
    }
}

/// The level reported most often (the worse one on a tie; Unknown if none).
fn most_common(levels: &[QualityLevel]) -> QualityLevel {
    let mut counts = std::collections::BTreeMap::new();
    for l in levels {
        *counts.entry(*l).or_insert(0u32) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(l, n)| (*n, *l))
        .map_or(QualityLevel::Unknown, |(l, _)| l)
}

/// The player of one cell, inside the player's namespace.
fn measure_player(
    server: &str,
    seconds: f64,
    video_layer: onair_engine::VideoLayer,
) -> anyhow::Result<Value> {
    let sign = dev_app::load().context("no development app (ONAIR_DEV_APP_FILE)")?;
    let engine = Engine::create(EngineProfile {
        app_id: dev_app::DEV_APP_ID,
        app_sign: sign.to_hex(),
        server: server.to_string(),
        ..Default::default()
    })?;
    engine.login_room("weak", User::new("weaknet-player"), RoomConfig::default());
    let frames = engine.play_frames("cam");
    engine.start_playing_stream(
        "cam",
        PlayerConfig {
            video_layer,
            ..Default::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(35);
    // The layer the relay sent before the measured window (simulcast).
    let mut settled_layer = None::<usize>;
    loop {
        match engine
            .events()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Event::PlayerRecvVideoFirstFrame { .. }) => break,
            Ok(Event::PlayerVideoLayerChanged { layer, .. }) => settled_layer = Some(layer),
            Ok(_) => {}
            Err(_) => bail!("no first frame within 35 s"),
        }
    }
    println!("ready");
    // The impairment goes on about now (the harness applies it on reading "ready").
    let impaired = Instant::now();
    // (Auto starts a layered stream on its best layer, 0, when no change came before.)
    let first_layer = settled_layer.or(Some(0));
    let mut settle_layer_changes = 0u32;
    // When the player first showed a smaller layer than it started on (simulcast).
    let mut first_step_down = None::<Duration>;
    let mut step_down = |layer: usize| {
        if first_step_down.is_none() && first_layer.is_some_and(|f| layer > f) {
            first_step_down = Some(impaired.elapsed());
        }
    };
    // Let the impairment go on and the player settle into it (a freeze in there is the cost
    // of adapting: `settle_longest_freeze_ms`).
    let settle = impaired + Duration::from_secs(3);
    let mut last_counts = [0.0; 7];
    let mut settling = Smoothness::default();
    settling.frame(impaired);
    while Instant::now() < settle {
        if frames.recv_timeout(Duration::from_millis(20)).is_some() {
            settling.frame(Instant::now());
        }
        while let Ok(e) = engine.events().try_recv() {
            if let Event::PlayerVideoLayerChanged { layer, .. } = &e {
                settled_layer = Some(*layer);
                settle_layer_changes += 1;
                step_down(*layer);
            }
            last_counts = quality_counts(&e).unwrap_or(last_counts);
        }
    }
    settling.finish(Instant::now());
    let start_counts = last_counts;
    let mut smooth = Smoothness::default();
    let mut delays = Vec::new();
    let (mut first_number, mut last_number, mut shown, mut stamped) = (None, 0u32, 0u64, 0u64);
    let mut kbps = Vec::new();
    // Network quality levels reported in the window: ours (downstream), and the publisher's
    // upstream as the relay shares it.
    let (mut downstream, mut publisher_upstream) = (Vec::new(), Vec::new());
    // Simulcast: the layer the relay sends, and how often it changed in the window.
    let (mut layer, mut layer_changes) = (None::<usize>, 0u32);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(seconds);
    smooth.frame(t0);
    while Instant::now() < end {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(2)) {
            let now = Instant::now();
            smooth.frame(now);
            shown += 1;
            // The capture time rides in the frame's SEI (the burned-in stamp's pixels are
            // skipped by the encoder at a very low bitrate and then read stale).
            let stamp = stamp::read(&f);
            let capture = match f.capture_time_us {
                0 => stamp.map_or(0, |s| s.capture_time_us),
                t => t,
            };
            if capture > 0 {
                delays.push(wall_clock_us().saturating_sub(capture) as f64 / 1000.0);
            }
            if let Some(s) = stamp {
                stamped += 1;
                first_number.get_or_insert(s.frame_number);
                last_number = last_number.max(s.frame_number);
            }
        }
        while let Ok(e) = engine.events().try_recv() {
            match &e {
                Event::PlayerQualityUpdate { video_kbps, .. } => kbps.push(*video_kbps),
                Event::PlayerVideoLayerChanged { layer: l, .. } => {
                    layer = Some(*l);
                    layer_changes += 1;
                    step_down(*l);
                }
                Event::NetworkQuality {
                    user_id,
                    upstream,
                    downstream: down,
                } => {
                    if user_id.is_empty() {
                        downstream.push(*down);
                    } else {
                        publisher_upstream.push(*upstream);
                    }
                }
                _ => {}
            }
            last_counts = quality_counts(&e).unwrap_or(last_counts);
        }
    }
    smooth.finish(Instant::now());
    let elapsed = t0.elapsed().as_secs_f64();
    let d = |i: usize| (last_counts[i] - start_counts[i]).max(0.0);
    let audio_expected = elapsed * 50.0;
    let figures = json!({
        "stall_ratio": (smooth.stalled.as_secs_f64() / elapsed * 1e4).round() / 1e4,
        "freezes_over_500ms": smooth.freezes_over_500ms,
        "longest_freeze_ms": smooth.longest.as_millis() as u64,
        "settle_longest_freeze_ms": settling.longest.as_millis() as u64,
        "first_step_down_ms": first_step_down.map(|d| d.as_millis() as u64),
        "settle_layer_changes": settle_layer_changes,
        "fps": (shown as f64 / elapsed * 10.0).round() / 10.0,
        "frames_missing": first_number.map_or(0, |f| u64::from(last_number - f + 1).saturating_sub(stamped)),
        "capture_to_decoded_ms": stats::summary(delays),
        "audio_frames_expected": audio_expected.round(),
        "audio_frames_played": d(1),
        "audio_frames_concealed": d(2),
        "audio_frames_lost": d(3),
        "keyframes_requested": d(0),
        "packets_repaired": d(4),
        "packets_fec_recovered": d(6),
        "playout_delay_ms": last_counts[5],
        "bitrate_kbps": (kbps.iter().sum::<f64>() / kbps.len().max(1) as f64).round(),
        "downstream_quality": most_common(&downstream).name(),
        "video_layer": layer.or(settled_layer),
        "layer_changes": layer_changes,
        "publisher_upstream_quality": most_common(&publisher_upstream).name(),
    });
    engine.destroy();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_count_only_long_gaps_and_the_tail() {
        let t = Instant::now();
        let mut s = Smoothness::default();
        for i in 0..30u64 {
            s.frame(t + Duration::from_millis(i * 33));
        }
        assert_eq!(s.stalled, Duration::ZERO);
        let last = t + Duration::from_millis(29 * 33);
        s.frame(last + Duration::from_millis(600));
        assert_eq!(s.stalled, Duration::from_millis(600));
        assert_eq!(s.freezes_over_500ms, 1);
        s.finish(last + Duration::from_millis(700));
        assert_eq!(
            s.stalled,
            Duration::from_millis(600),
            "a 100 ms tail is no stall"
        );
        assert_eq!(s.longest, Duration::from_millis(600));
    }

    #[test]
    fn the_matrix_has_the_issues_cells() {
        let names: Vec<&str> = matrix().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "clean", "mild", "bad", "burst", "terrible", "extreme", "thin", "uplink"
            ]
        );
    }
}
