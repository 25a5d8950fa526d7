//! Simulcast through the real relay: a publisher sending three layers, players asking for the
//! big and the smallest, a switch mid-stream at a keyframe without a freeze, and a stream
//! without simulcast giving the only layer it has.

mod common;

use std::time::{Duration, Instant};

use common::*;
use onair_engine::media::stamp;
use onair_engine::{
    Engine, PlayerConfig, PublishChannel, User, VideoConfig, VideoLayer, VideoPreset,
};

/// One test at a time: each runs a relay, three encoders and decoders, and times switches.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn member(relay: &TestRelay, room: &str, name: &str) -> Engine {
    let e = relay.engine();
    e.login_room(room, User::new(name), quiet());
    until(&e, &format!("state {room} LOGINED"));
    e
}

fn play(viewer: &Engine, stream: &str, layer: VideoLayer) {
    viewer.start_playing_stream(
        stream,
        PlayerConfig {
            video_layer: layer,
            ..Default::default()
        },
    );
}

/// `host` publishes "cam": 360p30 in three layers (640×360, 320×180, 160×90).
fn publish_layers(host: &Engine) {
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360)
            .with_fps(30)
            .simulcast(3),
    );
    host.start_publishing_stream("cam", PublishChannel::Main);
}

/// The size of the frames `viewer` gets within `within`, waiting until one arrives.
fn frame_size(
    frames: &onair_engine::media::FrameReceiver<onair_engine::media::SharedVideoFrame>,
    within: Duration,
) -> Option<(u32, u32)> {
    frames.recv_timeout(within).map(|f| (f.width, f.height))
}

#[test]
fn each_player_gets_the_layer_it_asks_for_and_switches_without_a_freeze() {
    let _turn = turn();
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let big = member(&relay, "r", "big");
    let small = member(&relay, "r", "small");
    publish_layers(&host);
    until(&host, "publisher cam Publishing");
    until(&big, "stream r ADD cam@host");
    let big_frames = big.play_frames("cam");
    let small_frames = small.play_frames("cam");
    play(&big, "cam", VideoLayer::Big);
    play(&small, "cam", VideoLayer::Smallest);
    until(&big, "layer cam 0 Requested");
    until(&small, "first_video cam");
    // The smallest layer may open a moment after the big one: the player moves to it.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut size = None;
    while Instant::now() < deadline {
        size = frame_size(&small_frames, Duration::from_millis(500));
        if size == Some((160, 90)) {
            break;
        }
    }
    assert_eq!(size, Some((160, 90)), "the smallest layer");
    assert_eq!(
        frame_size(&big_frames, Duration::from_secs(2)),
        Some((640, 360)),
        "the big layer"
    );
    // Switch the small player to the big layer: within 2 s, at a keyframe, no freeze.
    while small_frames.try_recv().is_some() {}
    let asked = Instant::now();
    small.set_play_stream_video_layer("cam", VideoLayer::Big);
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    let mut switched_after = None;
    let mut stamps_after = 0;
    while asked.elapsed() < Duration::from_secs(4) {
        let Some(f) = small_frames.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let now = Instant::now();
        longest = longest.max(now - last);
        last = now;
        if (f.width, f.height) == (640, 360) {
            switched_after.get_or_insert(asked.elapsed());
            // Whole pictures from the first one on (the switch waited for a keyframe).
            if stamp::read(&f).is_some() {
                stamps_after += 1;
            }
        }
    }
    let switched_after = switched_after.expect("switched to the big layer");
    assert!(
        switched_after < Duration::from_secs(2),
        "{switched_after:?}"
    );
    assert!(longest < Duration::from_millis(500), "froze {longest:?}");
    assert!(stamps_after > 30, "{stamps_after} readable big frames");
    until(&small, "layer cam 0 Requested");
    // The big player never moved.
    assert_eq!(
        frame_size(&big_frames, Duration::from_secs(1)),
        Some((640, 360))
    );
}

#[test]
fn a_stream_without_simulcast_gives_its_only_layer() {
    let _turn = turn();
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let viewer = member(&relay, "r", "viewer");
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P180).with_fps(15),
    );
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&viewer, "stream r ADD cam@host");
    let frames = viewer.play_frames("cam");
    play(&viewer, "cam", VideoLayer::Smallest);
    until(&viewer, "layer cam 0 Requested");
    assert_eq!(
        frame_size(&frames, Duration::from_secs(2)),
        Some((320, 180))
    );
}

/// The publisher's video kbit/s (all its layers), averaged over its next `n` quality reports.
fn publisher_kbps(host: &Engine, n: usize) -> f64 {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(n as u64 + 3);
    while seen.len() < n && Instant::now() < deadline {
        if let Ok(onair_engine::Event::PublisherQualityUpdate { video_kbps, .. }) =
            host.events().recv_timeout(Duration::from_millis(200))
        {
            seen.push(video_kbps);
        }
    }
    assert_eq!(seen.len(), n, "quality reports");
    seen.iter().sum::<f64>() / n as f64
}

#[test]
fn layers_nobody_plays_pause_at_the_publisher_and_resume_when_asked() {
    let _turn = turn();
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let big = member(&relay, "r", "big");
    publish_layers(&host);
    until(&host, "publisher cam Publishing");
    until(&big, "stream r ADD cam@host");
    let big_frames = big.play_frames("cam");
    play(&big, "cam", VideoLayer::Big);
    until(&big, "first_video cam");
    // The first seconds every layer is sent (the relay measures each one's rate)…
    let all = publisher_kbps(&host, 3);
    // …then the two small ones, which nobody plays, pause (after 3 s unused).
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut full_only = all;
    while Instant::now() < deadline && full_only > all * 0.85 {
        full_only = publisher_kbps(&host, 2);
    }
    eprintln!("publisher: {all:.0} kbit/s with every layer, {full_only:.0} with the full one");
    assert!(full_only <= all * 0.85, "{all} → {full_only}");
    assert_eq!(
        frame_size(&big_frames, Duration::from_secs(1)),
        Some((640, 360)),
        "the full layer plays on"
    );
    // A player of the smallest layer: it resumes, from a keyframe.
    let small = member(&relay, "r", "small");
    let small_frames = small.play_frames("cam");
    let asked = Instant::now();
    play(&small, "cam", VideoLayer::Smallest);
    let mut size = None;
    while asked.elapsed() < Duration::from_secs(4) && size != Some((160, 90)) {
        size = frame_size(&small_frames, Duration::from_millis(200));
    }
    assert_eq!(size, Some((160, 90)), "the smallest layer came back");
    eprintln!("the smallest layer back after {:?}", asked.elapsed());
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_layer_asked_for_while_the_play_is_negotiated_is_not_lost() {
    let _turn = turn();
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let viewer = member(&relay, "r", "viewer");
    publish_layers(&host);
    until(&viewer, "stream r ADD cam@host");
    let frames = viewer.play_frames("cam");
    // As the studio does: the play starts, and its tile asks for another layer at once
    // (before the relay answered; the studio lost these and played the full layer).
    play(&viewer, "cam", VideoLayer::Big);
    viewer.set_play_stream_video_layer("cam", VideoLayer::Smallest);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut size = None;
    while Instant::now() < deadline && size != Some((160, 90)) {
        size = frame_size(&frames, Duration::from_millis(200));
    }
    assert_eq!(size, Some((160, 90)), "the layer asked for last");
}
