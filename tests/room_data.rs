//! Room data through the real relay: broadcast and barrage messages and custom commands
//! (delivery, order, the sender excluded, limits and their codes), and room extra info (on
//! change, at login, limits).

mod common;

use std::time::Duration;

use common::*;
use onair_engine::{Engine, User};

fn member(relay: &TestRelay, room: &str, name: &str) -> Engine {
    let e = relay.engine();
    e.login_room(room, User::new(name), quiet());
    until(&e, &format!("state {room} LOGINED"));
    e
}

/// Briefs of the events that arrive within `dur` and start with `prefix`.
fn seen(engine: &Engine, prefix: &str, dur: Duration) -> Vec<String> {
    drain_for(engine, dur)
        .into_iter()
        .filter(|e| e.starts_with(prefix))
        .collect()
}

#[test]
fn messages_reach_the_other_members_in_order_within_zegos_limits() {
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let a = member(&relay, "r", "a");
    let b = member(&relay, "r", "b");
    let elsewhere = member(&relay, "other", "c");

    // Broadcast: to everyone else, in order; the sender gets results, not its own messages.
    for i in 0..5 {
        host.send_broadcast_message("r", &format!("m{i}"));
    }
    let want: Vec<String> = (0..5).map(|i| format!("broadcast r host:m{i}")).collect();
    for e in [&a, &b] {
        let mut got = Vec::new();
        while got.len() < 5 {
            let events = until(e, "broadcast r");
            got.extend(events.into_iter().filter(|e| e.starts_with("broadcast r")));
        }
        assert_eq!(got, want);
    }
    let results = seen(&host, "sent r", Duration::from_millis(500));
    assert_eq!(results, vec!["sent r Broadcast 0"; 5]);
    assert!(seen(&host, "broadcast", Duration::from_millis(100)).is_empty());
    assert!(seen(&elsewhere, "broadcast", Duration::from_millis(100)).is_empty());

    // Barrage, and a custom command to one user only.
    host.send_barrage_message("r", "wow");
    until(&a, "barrage r host:wow");
    until(&b, "barrage r host:wow");
    host.send_custom_command("r", "mute-yourself", &["a"]);
    until(&a, "command r host:mute-yourself");
    assert!(seen(&b, "command", Duration::from_millis(300)).is_empty());
    host.send_custom_command("r", "hi", &["nobody-here"]);
    until(&host, "sent r Custom 1009003");

    // Limits: 1 KiB, and 10 broadcast messages a second per room.
    host.send_broadcast_message("r", &"x".repeat(1025));
    until(&host, "sent r Broadcast 1009001");
    for _ in 0..12 {
        a.send_broadcast_message("r", "flood");
    }
    let results = seen(&a, "sent r Broadcast", Duration::from_secs(1));
    assert!(
        results.iter().any(|r| r.ends_with(" 1009002")),
        "never limited: {results:?}"
    );
    assert!(results.iter().filter(|r| r.ends_with(" 0")).count() <= 10);
    // Not in the room: refused by the engine, with the room's code.
    host.send_broadcast_message("nope", "?");
    until(&host, "sent nope Broadcast 1002001");
}

#[test]
fn room_extra_info_reaches_members_on_change_and_newcomers_at_login() {
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let viewer = member(&relay, "r", "viewer");
    host.set_room_extra_info("r", "product", "sneakers");
    until(&host, "extra_set r product 0");
    until(&viewer, "extra r product=sneakers@host");
    host.set_room_extra_info("r", "product", "hats");
    until(&viewer, "extra r product=hats@host");
    // A newcomer gets every key at login.
    let late = relay.engine();
    late.login_room("r", User::new("late"), quiet());
    let events = until(&late, "extra r");
    assert_eq!(
        events.last().map(String::as_str),
        Some("extra r product=hats@host")
    );
    // Limits: key length, value length, ten keys.
    host.set_room_extra_info("r", &"k".repeat(129), "v");
    until(&host, &format!("extra_set r {} 1009010", "k".repeat(129)));
    host.set_room_extra_info("r", "big", &"v".repeat(4097));
    until(&host, "extra_set r big 1009011");
    for i in 0..9 {
        host.set_room_extra_info("r", &format!("k{i}"), "v");
    }
    until(&host, "extra_set r k8 0");
    host.set_room_extra_info("r", "eleventh", "v");
    until(&host, "extra_set r eleventh 1009012");
    // Replacing an existing key is still allowed.
    host.set_room_extra_info("r", "k0", "w");
    until(&host, "extra_set r k0 0");
}

#[test]
fn stream_extra_info_goes_with_the_publish_and_updates_reach_the_room() {
    use onair_engine::{Event, PublishChannel, UpdateType, VideoConfig, VideoPreset};
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let viewer = member(&relay, "r", "viewer");
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P180).with_fps(15),
    );
    // Before publishing: kept for the publish.
    host.set_stream_extra_info(PublishChannel::Main, "round 1");
    until(&host, "stream_extra_set Main 0");
    host.start_publishing_stream("cam", PublishChannel::Main);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let added = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match viewer.events().recv_timeout(left) {
            Ok(Event::RoomStreamUpdate {
                update_type: UpdateType::Add,
                streams,
                ..
            }) => break streams,
            Ok(_) => {}
            Err(_) => panic!("no stream added"),
        }
    };
    assert_eq!(added[0].extra_info, "round 1");
    // While publishing: the room hears the change; too long is refused with its code.
    host.set_stream_extra_info(PublishChannel::Main, "round 2");
    until(&viewer, "stream_extra r cam=round 2");
    until(&host, "stream_extra_set Main 0");
    host.set_stream_extra_info(PublishChannel::Main, &"x".repeat(1025));
    until(&host, "stream_extra_set Main 1003012");
}

#[test]
fn sound_levels_follow_the_test_tone_captured_and_played() {
    use onair_engine::{AudioSource, PlayerConfig, PublishChannel, VideoConfig, VideoPreset};
    let relay = TestRelay::start();
    let host = member(&relay, "r", "host");
    let viewer = member(&relay, "r", "viewer");
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P180).with_fps(15),
    );
    host.set_audio_source(PublishChannel::Main, AudioSource::Tone);
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&host, "publisher cam Publishing");
    host.start_sound_level_monitor(200, true);
    // The tone is a 12,000-amplitude sine: RMS −11.7 dBFS, level ≈ 80, voice active.
    let levels: Vec<f64> = (0..5)
        .map(|_| {
            let e = until(&host, "captured_level");
            let last = e.last().cloned().unwrap_or_default();
            assert!(last.ends_with(" true"), "{last}");
            last.split(' ')
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0)
        })
        .collect();
    assert!(
        levels.iter().skip(1).all(|l| (75.0..=86.0).contains(l)),
        "{levels:?}"
    );
    // Played: the same tone through Opus and the relay.
    until(&viewer, "stream r ADD cam@host");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_audio cam");
    viewer.start_sound_level_monitor(200, false);
    let mut remote = Vec::new();
    while remote.len() < 4 {
        let e = until(&viewer, "remote_levels");
        let last = e.last().cloned().unwrap_or_default();
        if let Some(l) = last
            .strip_prefix("remote_levels cam=")
            .and_then(|l| l.parse::<f64>().ok())
        {
            remote.push(l);
        }
    }
    assert!(
        remote.iter().skip(1).all(|l| (70.0..=88.0).contains(l)),
        "{remote:?}"
    );
    // The viewer captures nothing: its own level is 0, with no voice.
    let e = until(&viewer, "captured_level");
    assert_eq!(e.last().map(String::as_str), Some("captured_level 0 false"));
    host.stop_sound_level_monitor();
    // What was reported before the stop is still queued: drop it, then listen.
    drain_for(&host, Duration::from_millis(300));
    let after = seen(&host, "captured_level", Duration::from_millis(600));
    assert!(after.is_empty(), "still reporting: {after:?}");
}

/// A host publishing `cam` (360p, 30 fps, the test source and tone) and a viewer playing it.
fn host_and_viewer(relay: &TestRelay) -> (Engine, Engine) {
    use onair_engine::{AudioSource, PlayerConfig, PublishChannel, VideoConfig, VideoPreset};
    let host = member(relay, "r", "host");
    let viewer = member(relay, "r", "viewer");
    host.set_video_config(PublishChannel::Main, VideoConfig::preset(VideoPreset::P360));
    host.set_audio_source(PublishChannel::Main, AudioSource::Tone);
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&host, "publisher cam Publishing");
    until(&viewer, "stream r ADD cam@host");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");
    (host, viewer)
}

#[test]
fn sei_arrives_on_the_frame_it_was_sent_with() {
    use onair_engine::media::frame::wall_clock_us;
    use onair_engine::media::stamp;
    use onair_engine::{ErrorCode, Event, PublishChannel};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let relay = TestRelay::start();
    let (host, viewer) = host_and_viewer(&relay);
    // Every decoded frame's pts → its burned-in stamp, recorded as frames arrive.
    let stamps: Arc<Mutex<HashMap<i64, stamp::Stamp>>> = Arc::default();
    let frames = viewer.play_frames("cam");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stamps, stop) = (stamps.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(f) = frames.recv_timeout(Duration::from_millis(50))
                    && let Some(s) = stamp::read(&f)
                {
                    stamps.lock().expect("stamps").insert(f.pts_us, s);
                }
            }
        })
    };
    // Refusals, each with its code.
    assert_eq!(
        host.send_sei(PublishChannel::Aux, b"x"),
        Err(ErrorCode::SeiNotPublishing)
    );
    assert_eq!(
        host.send_sei(PublishChannel::Main, &[0; 4097]),
        Err(ErrorCode::SeiTooLong)
    );
    // Ten, 150 ms apart, each naming when it was sent; binary data with zeros survives too.
    let mut sent = Vec::new();
    for i in 0..10u32 {
        let at = wall_clock_us();
        let mut data = format!("{i}:{at}:").into_bytes();
        data.extend_from_slice(&[0, 0, 0, 1, 0, 0, 3]);
        host.send_sei(PublishChannel::Main, &data).expect("sent");
        sent.push(data);
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < sent.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match viewer.events().recv_timeout(left) {
            Ok(Event::PlayerSyncRecvSEI {
                stream_id,
                data,
                pts_us,
                capture_time_us,
            }) => {
                assert_eq!(stream_id, "cam");
                got.push((data, pts_us, capture_time_us));
            }
            Ok(_) => {}
            Err(_) => panic!("{} of {} SEI arrived", got.len(), sent.len()),
        }
    }
    // In order and whole.
    assert_eq!(
        got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        sent,
        "SEI data changed on the way"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().expect("the frame reader");
    let stamps = stamps.lock().expect("stamps");
    let mut numbers = Vec::new();
    for (data, pts_us, capture_time_us) in &got {
        let text = String::from_utf8_lossy(data);
        let sent_us: u64 = text
            .split(':')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .expect("the SEI names its send time");
        // The frame it rode on (same pts) is the first one captured after the call: its
        // burned-in capture time is at or after the call and within a frame interval (33 ms)
        // plus scheduling slack.
        let stamp = stamps
            .get(pts_us)
            .unwrap_or_else(|| panic!("no decoded frame with the SEI's pts {pts_us}"));
        assert_eq!(stamp.capture_time_us, *capture_time_us, "{text}");
        let after = stamp.capture_time_us as i64 - sent_us as i64;
        assert!(
            (0..=70_000).contains(&after),
            "SEI {text} rode on frame {} captured {after} µs after the call",
            stamp.frame_number
        );
        numbers.push(stamp.frame_number);
    }
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");
    // More than 30 in a second are refused.
    let refused = (0..40)
        .map(|_| host.send_sei(PublishChannel::Main, b"burst"))
        .filter(|r| *r == Err(ErrorCode::SeiRateLimited))
        .count();
    assert!(refused >= 10, "{refused} refused");
}

/// The viewer's next remote sound level for `cam` (None: not delivered in the interval).
fn remote_level(viewer: &Engine) -> Option<f64> {
    let e = until(viewer, "remote_levels");
    e.last()
        .and_then(|l| l.strip_prefix("remote_levels cam="))
        .and_then(|l| l.parse().ok())
}

#[test]
fn mutes_are_seen_remotely_and_heard_and_seen_as_such() {
    use onair_engine::PublishChannel;
    let relay = TestRelay::start();
    let (host, viewer) = host_and_viewer(&relay);
    viewer.start_sound_level_monitor(200, false);
    remote_level(&viewer);
    let level = remote_level(&viewer).expect("cam is heard");
    assert!((70.0..=88.0).contains(&level), "{level}");
    // The publisher mutes its microphone: the room is told, players hear silence.
    host.mute_publish_stream_audio(PublishChannel::Main, true);
    until(&viewer, "mic cam mute");
    remote_level(&viewer);
    let muted = remote_level(&viewer).unwrap_or(0.0);
    assert!(muted < 5.0, "silence while muted: {muted}");
    // A newcomer learns of it with the stream.
    let late = member(&relay, "r", "late");
    let joined = until(&late, "mic cam mute");
    assert!(
        joined.iter().any(|e| e == "stream r ADD cam@host"),
        "{joined:?}"
    );
    host.mute_publish_stream_audio(PublishChannel::Main, false);
    until(&viewer, "mic cam open");
    until(&late, "mic cam open");
    remote_level(&viewer);
    assert!(remote_level(&viewer).unwrap_or(0.0) > 70.0);
    // The camera: black pictures (luma at black level, no stamp), then the picture again.
    let frames = viewer.play_frames("cam");
    let mean_luma = |f: &onair_engine::media::frame::VideoFrame| {
        let y = &f.data[f.planes[0].offset..f.planes[0].offset + f.width as usize];
        y.iter().map(|v| f64::from(*v)).sum::<f64>() / y.len() as f64
    };
    host.mute_publish_stream_video(PublishChannel::Main, true);
    until(&viewer, "camera cam disable");
    std::thread::sleep(Duration::from_millis(300));
    let f = frames
        .recv_timeout(Duration::from_secs(2))
        .expect("frames go on");
    let f = frames.latest().unwrap_or(f);
    assert!(
        onair_engine::media::stamp::read(&f).is_none() && mean_luma(&f) < 20.0,
        "black while muted (luma {})",
        mean_luma(&f)
    );
    host.mute_publish_stream_video(PublishChannel::Main, false);
    until(&viewer, "camera cam open");
    std::thread::sleep(Duration::from_millis(300));
    let f = frames
        .recv_timeout(Duration::from_secs(2))
        .expect("frames go on");
    let f = frames.latest().unwrap_or(f);
    assert!(
        onair_engine::media::stamp::read(&f).is_some(),
        "the picture is back"
    );
    // Player side: half the volume is 6 dB less (10 points of level); muted, nothing comes.
    viewer.set_play_volume("cam", 50);
    // Frames already decoded (a few hundred ms of them) are heard first.
    for _ in 0..3 {
        remote_level(&viewer);
    }
    let half = remote_level(&viewer).unwrap_or(0.0);
    assert!(
        (level - 14.0..=level - 6.0).contains(&half),
        "{level} → {half}"
    );
    viewer.mute_play_stream_audio("cam", true);
    drain_for(&viewer, Duration::from_millis(300));
    let heard = seen(&viewer, "remote_levels", Duration::from_millis(800));
    assert!(
        heard.is_empty(),
        "no audio delivered while muted: {heard:?}"
    );
    viewer.mute_play_stream_audio("cam", false);
    viewer.set_play_volume("cam", 100);
    remote_level(&viewer);
    assert!(remote_level(&viewer).is_some());
    viewer.mute_play_stream_video("cam", true);
    std::thread::sleep(Duration::from_millis(200));
    while frames.try_recv().is_some() {}
    assert!(
        frames.recv_timeout(Duration::from_millis(500)).is_none(),
        "no frames while the video is muted here"
    );
    // And the relay sends none (a second's quality report after the mute took hold).
    drain_for(&viewer, Duration::from_millis(1200));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut muted_kbps = None;
    while muted_kbps.is_none() && std::time::Instant::now() < deadline {
        if let Ok(onair_engine::Event::PlayerQualityUpdate { video_kbps, .. }) =
            viewer.events().recv_timeout(Duration::from_millis(200))
        {
            muted_kbps = Some(video_kbps);
        }
    }
    assert_eq!(muted_kbps, Some(0.0), "no video received while muted");
    viewer.mute_play_stream_video("cam", false);
    let f = frames
        .recv_timeout(Duration::from_secs(1))
        .expect("frames again");
    assert!(
        onair_engine::media::stamp::read(&f).is_some(),
        "and whole at once"
    );
}

#[test]
fn network_quality_reports_our_links_and_the_publishers_upstream() {
    let relay = TestRelay::start();
    let (_host, viewer) = host_and_viewer(&relay);
    // Loopback: ours is excellent both ways once measured; the host's upstream reaches us.
    let seen = until(&viewer, "quality \"host\"");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("quality \"host\" excellent unknown")
    );
    let seen = until(&viewer, "quality \"\"");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("quality \"\" unknown excellent")
    );
}
