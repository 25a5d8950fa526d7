//! Publishing over a lossy link, made by dropping a share of the publisher's outgoing RTP on
//! the wire side of its interceptor chain (`EngineProfile::simulated_send_loss`): NACK resends
//! and the player's jitter buffer keep the picture whole and in order, and the bandwidth
//! estimate (GCC over transport-wide CC feedback) keeps the encoder's bitrate: losses on a
//! path with no queue are the path's, not congestion (a thin uplink's, which queue first,
//! take it down: `tests/weaknet`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use onair_engine::media::stamp;
use onair_engine::{Engine, Event, PlayerConfig, PublishChannel, User, VideoConfig, VideoPreset};

const KBPS: u32 = 800;

fn host(relay: &TestRelay, loss: f64) -> Engine {
    let e = relay.engine_with(|p| p.simulated_send_loss = loss);
    e.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360)
            .with_fps(30)
            .with_bitrate_kbps(KBPS),
    );
    e.login_room("lossy", User::new("host"), quiet());
    until(&e, "state lossy LOGINED");
    e
}

fn viewer(relay: &TestRelay) -> Engine {
    let e = relay.engine();
    e.login_room("lossy", User::new("viewer"), quiet());
    until(&e, "state lossy LOGINED");
    e
}

/// The encoder targets the host reports over `dur`, and the packets the relay said were lost.
fn targets(host: &Engine, dur: Duration) -> (Vec<u32>, u64) {
    let deadline = Instant::now() + dur;
    let (mut out, mut lost) = (Vec::new(), 0);
    while let Ok(e) = host
        .events()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Event::PublisherQualityUpdate {
            target_kbps,
            packets_lost,
            ..
        } = e
        {
            out.push(target_kbps);
            lost += packets_lost;
        }
    }
    (out, lost)
}

#[test]
fn five_percent_loss_still_delivers_the_picture_in_order() {
    let relay = TestRelay::start();
    let host = host(&relay, 0.05);
    let viewer = viewer(&relay);
    let frames = viewer.play_frames("cam");
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&host, "publisher cam Publishing");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "player cam Playing");
    // Skip the start (the first keyframe may need a resend), then count 4 s of frames.
    let _ = frames.recv_timeout(Duration::from_secs(10));
    let started = Instant::now();
    let mut numbers = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(200))
            && let Some(s) = stamp::read(&f)
        {
            numbers.push(s.frame_number);
        }
    }
    assert!(
        numbers.windows(2).all(|w| w[1] > w[0]),
        "in order: {numbers:?}"
    );
    let (first, last) = (numbers[0], numbers[numbers.len() - 1]);
    let expected = (last - first + 1) as f64;
    let share = numbers.len() as f64 / expected;
    eprintln!("5 % loss: {} of {expected} frames arrived", numbers.len());
    // 5 % of packets dropped; a frame of 360p is several packets, so without resends most
    // frames would be broken and the decoder would wait for keyframes.
    assert!(
        share > 0.8,
        "{} of {expected} frames arrived ({share:.2})",
        numbers.len()
    );
    // The publisher's FEC repair packets rebuilt some of what its link lost before the relay
    // had to ask for it (`EngineProfile::publish_fec`, on by default).
    let metrics = relay.metrics();
    let rebuilt: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("onair_fec_rebuilt_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no onair_fec_rebuilt_total in /metrics:\n{metrics}"));
    eprintln!("5 % loss: {rebuilt} packets rebuilt by FEC at the relay");
    assert!(rebuilt > 0, "the relay rebuilt nothing from FEC");
}

#[test]
fn random_loss_is_counted_and_does_not_take_the_bitrate_down() {
    let relay = TestRelay::start();
    let clean = host(&relay, 0.0);
    let viewer = viewer(&relay);
    clean.start_publishing_stream("clean", PublishChannel::Main);
    until(&clean, "publisher clean Publishing");
    viewer.start_playing_stream("clean", PlayerConfig::default());
    let (clean_targets, clean_lost) = targets(&clean, Duration::from_secs(6));
    assert_eq!(clean_lost, 0, "nothing lost on a clean link");
    eprintln!("clean link targets: {clean_targets:?}");
    assert!(clean_targets.len() >= 4, "{clean_targets:?}");
    // (Delay-based: with both cores busy, CPU queueing can nudge one report down; the
    // typical report keeps the configured bitrate.)
    let mut sorted = clean_targets.clone();
    sorted.sort_unstable();
    assert!(
        sorted[sorted.len() / 2] >= KBPS * 9 / 10,
        "a clean link keeps the configured bitrate: {clean_targets:?}"
    );
    clean.destroy();

    let lossy = host(&relay, 0.25);
    lossy.start_publishing_stream("lossy", PublishChannel::Main);
    until(&lossy, "publisher lossy Publishing");
    viewer.start_playing_stream("lossy", PlayerConfig::default());
    let (lossy_targets, lossy_lost) = targets(&lossy, Duration::from_secs(10));
    assert!(
        lossy_lost > 20,
        "the relay reported the losses: {lossy_lost}"
    );
    eprintln!("lossy link targets: {lossy_targets:?}");
    // 25 % dropped at random before the wire, no queue anywhere: repair's business, not the
    // encoder's (GCC's loss half took it to the floor before, a publisher on a lossy radio
    // link sending 100 kbit/s of 720p).
    let mut sorted = lossy_targets.clone();
    sorted.sort_unstable();
    assert!(
        sorted.len() >= 4 && sorted[sorted.len() / 2] >= KBPS * 9 / 10,
        "random loss keeps the configured bitrate: {lossy_targets:?}"
    );
}
