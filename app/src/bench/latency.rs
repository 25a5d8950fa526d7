//! `onair bench latency`: capture-clock → decoded-frame delay (`capture_to_decoded_ms`) through the relay on loopback at 720p30 — from the
//! test source's capture time (burned into the pixels) to the decoded frame ready for the
//! texture — beside the encode+decode floor of the same frames, and the time from
//! `start_playing_stream` to the first decoded frame over repeated starts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use onair_engine::media::codec::h264::{H264Decoder, H264Encoder};
use onair_engine::media::frame::wall_clock_us;
use onair_engine::media::stamp;
use onair_engine::media::testsrc::TestPattern;
use onair_engine::token::AppSign;
use onair_engine::{
    Engine, EngineProfile, Event, PlayerConfig, PublishChannel, PublisherState, RoomConfig, User,
    VideoConfig, VideoPreset,
};
use onair_relay::{EmbeddedRelay, RelayConfig};
use serde_json::json;

use super::stats;

/// `onair bench latency` flags.
#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Seconds of video to measure.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Repeated play starts for the first-frame figure.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn wait_for(engine: &Engine, what: &str, pred: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Ok(e) = engine
        .events()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if pred(&e) {
            return Ok(e);
        }
    }
    bail!("timed out waiting for {what}")
}

/// Runs the benchmark.
pub fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let config = VideoConfig::preset(VideoPreset::P720).with_fps(30);
    let sign = AppSign::random();
    let relay = EmbeddedRelay::start(
        RelayConfig::single_app(1, sign.clone()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let profile = EngineProfile {
        app_id: 1,
        app_sign: sign.to_hex(),
        server: relay.url(),
        ..Default::default()
    };
    let host = Engine::create(profile.clone())?;
    let viewer = Engine::create(profile)?;
    for (e, name) in [(&host, "host"), (&viewer, "viewer")] {
        e.login_room("bench", User::new(name), RoomConfig::default());
        wait_for(
            e,
            "login",
            |ev| matches!(ev, Event::RoomStateChanged { reason, .. } if reason.code() == 1),
        )?;
    }
    host.set_video_config(PublishChannel::Main, config);
    host.start_publishing_stream("bench-cam", PublishChannel::Main);
    wait_for(&host, "publishing", |ev| {
        matches!(
            ev,
            Event::PublisherStateUpdate {
                state: PublisherState::Publishing,
                ..
            }
        )
    })?;

    // Capture clock → decoded frame in the player's channel.
    let frames = viewer.play_frames("bench-cam");
    viewer.start_playing_stream("bench-cam", PlayerConfig::default());
    wait_for(&viewer, "first frame", |ev| {
        matches!(ev, Event::PlayerRecvVideoFirstFrame { .. })
    })?;
    let _ = frames.latest();
    let mut delays = Vec::new();
    let mut numbers = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs_f64(args.seconds) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(500)) {
            let now = wall_clock_us();
            if let Some(s) = stamp::read(&f) {
                delays.push(now.saturating_sub(s.capture_time_us) as f64 / 1000.0);
                numbers.push(s.frame_number);
            }
        }
    }
    let (first, last) = (
        numbers.first().copied().unwrap_or(0),
        numbers.last().copied().unwrap_or(0),
    );
    let frames_sent = u64::from(last.saturating_sub(first)) + 1;
    let frames_lost = frames_sent.saturating_sub(numbers.len() as u64) + frames.stats().dropped();

    // First frame over repeated starts.
    let mut first_frame = Vec::new();
    let mut playing_ms = Vec::new();
    for _ in 0..args.starts {
        viewer.stop_playing_stream("bench-cam");
        std::thread::sleep(Duration::from_millis(200));
        viewer.start_playing_stream("bench-cam", PlayerConfig::default());
        let t_start = Instant::now();
        wait_for(&viewer, "playing", |ev| {
            matches!(
                ev,
                Event::PlayerStateUpdate {
                    state: onair_engine::PlayerState::Playing,
                    ..
                }
            )
        })?;
        playing_ms.push(t_start.elapsed().as_secs_f64() * 1e3);
        if let Event::PlayerRecvVideoFirstFrame { elapsed_ms, .. } =
            wait_for(&viewer, "first frame", |ev| {
                matches!(ev, Event::PlayerRecvVideoFirstFrame { .. })
            })?
        {
            first_frame.push(elapsed_ms as f64);
        }
    }
    viewer.destroy();
    host.destroy();
    drop(relay);

    // The floor: encode + decode of the same 720p frames, nothing else.
    let pattern = TestPattern::new(config.width, config.height);
    let mut enc = H264Encoder::new(config)?;
    let mut dec = H264Decoder::new()?;
    let mut floor = Vec::new();
    for n in 0..300u64 {
        let f = pattern.render(n, 0, 0);
        let t = Instant::now();
        let p = enc.encode(&f)?.context("no packet")?;
        dec.decode(&p.data, 0, 0)?.context("no frame")?;
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let report = json!({
        "bench": "latency",
        "cores": stats::cores(),
        "resolution": "720p30",
        "capture_to_decoded_ms": stats::summary(delays),
        "floor_ms": stats::summary(floor),
        "first_frame_ms": stats::summary(first_frame),
        "connected_ms": stats::summary(playing_ms),
        "frames_sent": frames_sent,
        "frames_lost": frames_lost,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
