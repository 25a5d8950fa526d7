//! Publish and play through the relay's SFU over real WebRTC on loopback: the seed's states in
//! order, every stamped frame through in order, stop and resume, duplicate IDs, logout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use onair_engine::media::stamp;
use onair_engine::{Engine, PlayerConfig, PublishChannel, User, VideoConfig, VideoPreset};

const MAIN: PublishChannel = PublishChannel::Main;

/// Events of one kind, in order, until one starts with `prefix` (other kinds are skipped).
fn until_kind(engine: &Engine, kind: &str, prefix: &str) -> Vec<String> {
    until(engine, prefix)
        .into_iter()
        .filter(|e| e.starts_with(kind))
        .collect()
}

fn host(relay: &TestRelay) -> Engine {
    let e = relay.engine();
    e.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    e.login_room("live", User::new("host"), quiet());
    until(&e, "state live LOGINED");
    e
}

fn viewer(relay: &TestRelay, name: &str) -> Engine {
    let e = relay.engine();
    e.login_room("live", User::new(name), quiet());
    until(&e, "state live LOGINED");
    e
}

#[test]
fn a_viewer_plays_the_hosts_stream_with_every_frame_in_order() {
    let relay = TestRelay::start();
    let host = host(&relay);
    let viewer = viewer(&relay, "viewer");
    let frames = viewer.play_frames("cam");
    host.start_publishing_stream("cam", MAIN);
    assert_eq!(
        until_kind(&host, "publisher", "publisher cam Publishing"),
        [
            "publisher cam PublishRequesting 0",
            "publisher cam Publishing 0"
        ]
    );
    // The room hears of the stream once its media flows; the viewer plays it from the update.
    until(&viewer, "stream live ADD cam@host");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    let seen = until(&viewer, "first_video cam");
    assert_eq!(
        seen.iter()
            .filter(|e| e.starts_with("player"))
            .cloned()
            .collect::<Vec<_>>(),
        ["player cam PlayRequesting 0", "player cam Playing 0"],
        "{seen:?}"
    );
    let audio = viewer.play_audio_frames("cam");
    // Two seconds of video: consecutive frame numbers, nothing lost on loopback.
    let t0 = Instant::now();
    let mut numbers = Vec::new();
    let mut delays_ms = Vec::new();
    while t0.elapsed() < Duration::from_secs(2) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(200)) {
            let s = stamp::read(&f).expect("stamp survives the trip");
            numbers.push(s.frame_number);
            delays_ms.push(
                onair_engine::media::frame::wall_clock_us().saturating_sub(s.capture_time_us)
                    as f64
                    / 1000.0,
            );
        }
    }
    assert!(
        numbers.len() >= 50,
        "about 60 frames in 2 s, got {}",
        numbers.len()
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "every frame, in order: {numbers:?}"
    );
    delays_ms.sort_by(f64::total_cmp);
    eprintln!(
        "capture → decoded on loopback: p50 {:.1} ms, max {:.1} ms",
        delays_ms[delays_ms.len() / 2],
        delays_ms[delays_ms.len() - 1]
    );
    assert!(
        audio.recv_timeout(Duration::from_secs(2)).is_some(),
        "audio arrives too"
    );
    // Quality reports arrive every second on both sides; the second one covers a whole second
    // of playing (the first may start before the first frame).
    until(&viewer, "play_quality cam");
    let q = until(&viewer, "play_quality cam");
    let last = q.last().cloned().unwrap_or_default();
    let fps: f64 = last
        .split(' ')
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!((20.0..=40.0).contains(&fps), "about 30 fps decoded: {last}");
    assert!(last.ends_with(" 0"), "no packets lost on loopback: {last}");
    assert_eq!(
        viewer_quality_stutters(&viewer),
        Some(0),
        "no stutter on loopback"
    );
    until(&host, "pub_quality cam");
    // Stop: the viewer goes back to waiting; start again: it resumes by itself.
    host.stop_publishing_stream(MAIN);
    assert_eq!(
        until_kind(&host, "publisher", "publisher cam NoPublish"),
        ["publisher cam NoPublish 0"]
    );
    assert_eq!(
        until_kind(&viewer, "player", "player cam PlayRequesting"),
        ["player cam PlayRequesting 1004002"]
    );
    host.start_publishing_stream("cam", MAIN);
    until(&host, "publisher cam Publishing");
    assert_eq!(
        until_kind(&viewer, "player", "player cam Playing"),
        ["player cam Playing 0"]
    );
    let _ = frames.latest();
    assert!(
        frames.recv_timeout(Duration::from_secs(3)).is_some(),
        "frames again after the restart"
    );
    // Logout stops everything.
    host.logout_room("live");
    let seen = until(&host, "state live LOGOUT");
    assert!(
        seen.contains(&"publisher cam NoPublish 0".to_string()),
        "{seen:?}"
    );
}

#[test]
fn a_duplicate_stream_id_is_refused_and_a_missing_stream_is_waited_for() {
    let relay = TestRelay::start();
    let first = host(&relay);
    first.start_publishing_stream("same", MAIN);
    until(&first, "publisher same Publishing");
    let second = viewer(&relay, "second");
    second.start_publishing_stream("same", MAIN);
    assert_eq!(
        until_kind(&second, "publisher", "publisher same NoPublish"),
        [
            "publisher same PublishRequesting 0",
            "publisher same NoPublish 1003028"
        ]
    );
    // Playing a stream before it exists waits, then plays when it appears.
    let early = viewer(&relay, "early");
    early.start_playing_stream("later", PlayerConfig::default());
    until(&early, "player later PlayRequesting");
    assert!(
        drain_for(&early, Duration::from_millis(500))
            .iter()
            .all(|e| !e.starts_with("player"))
    );
    let late_host = relay.engine();
    late_host.login_room("live", User::new("late-host"), quiet());
    until(&late_host, "state live LOGINED");
    late_host.start_publishing_stream("later", MAIN);
    until(&early, "first_video later");
}

#[test]
fn one_publisher_reaches_twenty_players() {
    let relay = TestRelay::start();
    let host = relay.engine();
    host.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P180).with_fps(15));
    host.login_room("big", User::new("host"), quiet());
    host.start_publishing_stream("big-cam", MAIN);
    until(&host, "publisher big-cam Publishing");
    let players: Vec<Engine> = (0..20)
        .map(|i| {
            let e = relay.engine();
            e.login_room("big", User::new(format!("p{i}")), quiet());
            e.start_playing_stream("big-cam", PlayerConfig::default());
            e
        })
        .collect();
    let receivers: Vec<_> = players.iter().map(|p| p.play_frames("big-cam")).collect();
    for p in &players {
        until(p, "first_video big-cam");
    }
    // Two seconds at 15 fps: every player sees the stream advance, in order.
    let t0 = Instant::now();
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); receivers.len()];
    while t0.elapsed() < Duration::from_secs(2) {
        for (i, rx) in receivers.iter().enumerate() {
            while let Some(f) = rx.try_recv() {
                if let Some(s) = stamp::read(&f) {
                    seen[i].push(s.frame_number);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, numbers) in seen.iter().enumerate() {
        assert!(
            numbers.len() >= 20,
            "player {i} got {} frames in 2 s",
            numbers.len()
        );
        assert!(
            numbers.windows(2).all(|w| w[1] > w[0]),
            "player {i} in order: {numbers:?}"
        );
    }
    drop(players);
}

#[test]
fn main_and_aux_channels_publish_at_once_and_logout_stops_the_preview() {
    let relay = TestRelay::start();
    let host = host(&relay);
    host.set_video_config(
        PublishChannel::Aux,
        VideoConfig::preset(VideoPreset::P180).with_fps(15),
    );
    let preview = host.preview_frames(MAIN);
    host.start_preview(MAIN);
    host.start_publishing_stream("main-cam", MAIN);
    host.start_publishing_stream("aux-cam", PublishChannel::Aux);
    until_all(
        &host,
        &[
            "publisher main-cam Publishing",
            "publisher aux-cam Publishing",
        ],
    );
    let viewer = viewer(&relay, "viewer");
    let (main_rx, aux_rx) = (
        viewer.play_frames("main-cam"),
        viewer.play_frames("aux-cam"),
    );
    viewer.start_playing_stream("main-cam", PlayerConfig::default());
    viewer.start_playing_stream("aux-cam", PlayerConfig::default());
    let main = main_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("main frames");
    let aux = aux_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("aux frames");
    assert_eq!(
        (main.width, aux.width),
        (640, 320),
        "each channel keeps its own config"
    );
    viewer.report_rendered_first_frame("main-cam");
    until(&viewer, "rendered main-cam");
    // Logging out of the last room stops publishing on both channels and the preview.
    host.logout_room("live");
    let seen = until(&host, "state live LOGOUT");
    assert!(
        seen.contains(&"publisher main-cam NoPublish 0".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"publisher aux-cam NoPublish 0".to_string()),
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let _ = preview.latest();
    assert!(
        preview.recv_timeout(Duration::from_millis(500)).is_none(),
        "the preview stopped"
    );
}

/// The stutter count in the viewer's next quality report.
fn viewer_quality_stutters(viewer: &Engine) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(e) = viewer
        .events()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let onair_engine::Event::PlayerQualityUpdate { stutters, .. } = e {
            return Some(stutters);
        }
    }
    None
}

#[test]
fn after_a_relay_restart_media_is_back_at_once_not_after_an_ice_timeout() {
    let mut relay = TestRelay::start();
    let host = host(&relay);
    let viewer = viewer(&relay, "viewer");
    let frames = viewer.play_frames("cam");
    host.start_publishing_stream("cam", MAIN);
    until(&host, "publisher cam Publishing");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");
    while frames.try_recv().is_some() {}

    let restarted = Instant::now();
    relay.restart();
    let restart_us = onair_engine::media::frame::wall_clock_us();
    // The host learns the relay forgot its session and publishes again at once.
    let seen = until(&host, "publisher cam Publishing");
    assert!(
        seen.iter()
            .any(|e| e == "publisher cam PublishRequesting 1000018"),
        "{seen:?}"
    );
    // A frame captured after the restart reaches the viewer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        assert!(Instant::now() < deadline, "no media 10 s after the restart");
        if let Some(f) = frames.recv_timeout(Duration::from_millis(100))
            && stamp::read(&f).is_some_and(|s| s.capture_time_us > restart_us)
        {
            break restarted.elapsed();
        }
    };
    eprintln!(
        "relay restart → viewer decoding again: {} ms",
        back.as_millis()
    );
    // ICE alone would notice the dead connections only after its timeout (≈ 5 s).
    assert!(
        back < Duration::from_secs(4),
        "media back in {back:?} (the relay answered within ~0.1 s)"
    );
}

#[test]
fn a_relay_killed_with_sigkill_and_restarted_has_media_back_within_two_seconds() {
    // A relay process killed outright (no goodbye to anyone) and started again on the same
    // address, shared media port included (the listen port + 2, bound again at once).
    let sign = onair_engine::token::AppSign::random();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = app_config_file("sigkill", &sign);
    let mut relay = serve_process(&config, addr, &[]);
    let engine = |name: &str| {
        let e = Engine::create(onair_engine::EngineProfile {
            app_id: APP_ID,
            app_sign: sign.to_hex(),
            server: format!("ws://{addr}"),
            ..Default::default()
        })
        .expect("engine");
        e.login_room("live", User::new(name), quiet());
        until(&e, "state live LOGINED");
        e
    };
    let host = engine("host");
    host.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    let viewer = engine("viewer");
    let frames = viewer.play_frames("cam");
    host.start_publishing_stream("cam", MAIN);
    until(&host, "publisher cam Publishing");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");

    relay.kill().expect("SIGKILL");
    let _ = relay.wait();
    let mut relay = serve_process(&config, addr, &[]);
    let answered = Instant::now();
    let restart_us = onair_engine::media::frame::wall_clock_us();
    let seen = until_within(&host, "publisher cam Publishing", Duration::from_secs(10));
    let publishing = answered.elapsed();
    assert!(
        seen.iter()
            .any(|e| e == "publisher cam PublishRequesting 1000018"),
        "the host learnt the relay had lost its session: {seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let decoding = loop {
        assert!(Instant::now() < deadline, "no media 10 s after the restart");
        if let Some(f) = frames.recv_timeout(Duration::from_millis(50))
            && stamp::read(&f).is_some_and(|s| s.capture_time_us > restart_us)
        {
            break answered.elapsed();
        }
    };
    let _ = relay.kill();
    let _ = relay.wait();
    if let Some(dir) = config.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    eprintln!(
        "relay SIGKILLed and restarted: host Publishing {} ms and viewer decoding {} ms after \
         the relay answered",
        publishing.as_millis(),
        decoding.as_millis()
    );
    assert!(
        publishing < Duration::from_secs(2) && decoding < Duration::from_secs(2),
        "media back within 2 s of the relay answering: Publishing after {publishing:?}, \
         decoding after {decoding:?}"
    );
}
