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
