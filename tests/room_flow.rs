//! The seed's room flow end to end: real relay on loopback, several engines per test.

mod common;

use std::time::Duration;

use common::*;
use onair_engine::User;
use onair_engine::messages::{RequestBody, ResponseBody, ServerMessage};

#[test]
fn login_then_logout_reports_events_in_order() {
    let relay = TestRelay::start();
    let a = relay.engine();
    let b = relay.engine();
    a.login_room("r1", User::new("alice"), notify());
    assert_eq!(
        until(&a, "state r1 LOGINED"),
        ["state r1 LOGINING 0", "state r1 LOGINED 0"]
    );
    b.login_room("r1", User::new("bob"), notify());
    assert_eq!(
        until(&b, "user r1 ADD"),
        [
            "state r1 LOGINING 0",
            "state r1 LOGINED 0",
            "user r1 ADD alice"
        ]
    );
    assert_eq!(until(&a, "user r1"), ["user r1 ADD bob"]);
    b.logout_room("r1");
    assert_eq!(until(&b, "state r1 LOGOUT"), ["state r1 LOGOUT 0"]);
    assert_eq!(until(&a, "user r1"), ["user r1 DELETE bob"]);
    // Logging out of a room you are not in fails with its code.
    b.logout_room("r1");
    assert_eq!(until(&b, "state r1"), ["state r1 LOGOUT_FAILED 1002001"]);
    a.logout_room("r1");
    assert_eq!(until(&a, "state r1"), ["state r1 LOGOUT 0"]);
    assert!(drain_for(&a, Duration::from_millis(200)).is_empty());
    assert_eq!(a.dropped_events(), 0);
    a.destroy();
    b.destroy();
    let m = relay.metrics();
    assert!(m.contains("onair_rooms 0"), "{m}");
    assert!(m.contains("onair_logins_total 2"), "{m}");
}

#[test]
fn one_engine_in_several_rooms_and_rooms_are_isolated() {
    let relay = TestRelay::start();
    let rt = runtime();
    let a = relay.engine();
    let b = relay.engine();
    a.login_room("r1", User::new("alice"), notify());
    a.login_room("r2", User::new("alice"), notify());
    until(&a, "state r1 LOGINED");
    until(&a, "state r2 LOGINED");
    b.login_room("r2", User::new("bob"), notify());
    until(&b, "user r2 ADD alice");
    assert_eq!(until(&a, "user r2"), ["user r2 ADD bob"]);
    // A stream in r3 is heard by nobody here; a stream in r2 by both.
    rt.block_on(async {
        let mut x = relay.raw_login("r3", "xavier").await;
        x.request(RequestBody::Publish {
            room_id: "r3".into(),
            stream_id: "x-cam".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("publish");
        let mut y = relay.raw_login("r2", "yvonne").await;
        y.request(RequestBody::Publish {
            room_id: "r2".into(),
            stream_id: "y-cam".into(),
            extra_info: "hello".into(),
            sdp: None,
        })
        .await
        .expect("publish");
        std::mem::forget((x, y));
    });
    assert_eq!(
        until(&a, "stream"),
        ["user r2 ADD yvonne", "stream r2 ADD y-cam@yvonne"]
    );
    assert_eq!(
        until(&b, "stream"),
        ["user r2 ADD yvonne", "stream r2 ADD y-cam@yvonne"]
    );
    assert!(drain_for(&a, Duration::from_millis(300)).is_empty());
    a.logout_all_rooms();
    let mut ends = [until(&a, "state"), until(&a, "state")].concat();
    ends.sort();
    assert_eq!(ends, ["state r1 LOGOUT 0", "state r2 LOGOUT 0"]);
}

#[test]
fn user_updates_only_for_notify_sessions_but_streams_for_all() {
    let relay = TestRelay::start();
    let rt = runtime();
    let quiet_engine = relay.engine();
    quiet_engine.login_room("r1", User::new("quiet"), quiet());
    until(&quiet_engine, "state r1 LOGINED");
    let loud = relay.engine();
    loud.login_room("r1", User::new("loud"), notify());
    assert_eq!(
        until(&loud, "user"),
        [
            "state r1 LOGINING 0",
            "state r1 LOGINED 0",
            "user r1 ADD quiet"
        ]
    );
    let client = rt.block_on(async {
        let mut c = relay.raw_login("r1", "caster").await;
        c.request(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "cast".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("publish");
        c
    });
    assert_eq!(
        until(&quiet_engine, "stream"),
        ["stream r1 ADD cast@caster"]
    );
    assert_eq!(
        until(&loud, "stream"),
        ["user r1 ADD caster", "stream r1 ADD cast@caster"]
    );
    rt.block_on(async move {
        let mut c = client;
        c.request(RequestBody::Logout {
            room_id: "r1".into(),
        })
        .await
        .expect("logout");
    });
    assert_eq!(
        until(&quiet_engine, "stream"),
        ["stream r1 DELETE cast@caster"]
    );
    assert_eq!(
        until(&loud, "user r1 DELETE"),
        ["stream r1 DELETE cast@caster", "user r1 DELETE caster"]
    );
    assert!(drain_for(&quiet_engine, Duration::from_millis(200)).is_empty());
}

#[test]
fn stream_ids_are_unique_across_rooms() {
    let relay = TestRelay::start();
    let rt = runtime();
    let watcher = relay.engine();
    watcher.login_room("r2", User::new("w"), quiet());
    until(&watcher, "state r2 LOGINED");
    rt.block_on(async {
        let mut x = relay.raw_login("r1", "x").await;
        let mut y = relay.raw_login("r2", "y").await;
        let publish = |room: &str| RequestBody::Publish {
            room_id: room.into(),
            stream_id: "shared-id".into(),
            extra_info: String::new(),
            sdp: None,
        };
        x.request(publish("r1"))
            .await
            .expect("first publisher wins");
        let err = y
            .request(publish("r2"))
            .await
            .expect_err("second is refused");
        assert_eq!(err.code(), 1003028, "{err}");
        // Publishing again from the owner is harmless.
        x.request(publish("r1")).await.expect("idempotent");
        // Nobody else may stop it.
        let err = y
            .request(RequestBody::StopPublish {
                stream_id: "shared-id".into(),
            })
            .await
            .expect_err("not yours");
        assert_eq!(err.code(), 1003010);
        let err = y
            .request(RequestBody::StopPublish {
                stream_id: "nope".into(),
            })
            .await
            .expect_err("no such stream");
        assert_eq!(err.code(), 1004002);
        x.request(RequestBody::StopPublish {
            stream_id: "shared-id".into(),
        })
        .await
        .expect("stop");
        y.request(publish("r2")).await.expect("free again");
        std::mem::forget((x, y));
    });
    assert_eq!(until(&watcher, "stream"), ["stream r2 ADD shared-id@y"]);
}

#[test]
fn same_user_logging_in_again_kicks_the_older_session() {
    let relay = TestRelay::start();
    let rt = runtime();
    let observer = relay.engine();
    observer.login_room("r1", User::new("obs"), notify());
    until(&observer, "state r1 LOGINED");
    // The first "dup" is a raw client with a live stream.
    let mut old = rt.block_on(async {
        let mut c = relay.raw_login("r1", "dup").await;
        c.request(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "dup-cam".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("publish");
        c
    });
    assert_eq!(
        until(&observer, "stream"),
        ["user r1 ADD dup", "stream r1 ADD dup-cam@dup"]
    );
    let first = relay.engine();
    first.login_room("r1", User::new("dup"), notify());
    until(&first, "user r1 ADD obs");
    let kicked = rt.block_on(async {
        loop {
            match old.recv().await {
                Some(Ok(ServerMessage::Kicked { room_id, code, .. })) => break (room_id, code),
                Some(Ok(_)) => continue,
                other => panic!("expected a kick, got {other:?}"),
            }
        }
    });
    assert_eq!(kicked, ("r1".to_string(), 1002050));
    // The kicked session's stream ended; the user itself never left the room.
    assert_eq!(until(&observer, "stream"), ["stream r1 DELETE dup-cam@dup"]);
    // And an engine is kicked the same way.
    let second = relay.engine();
    second.login_room("r1", User::new("dup"), notify());
    until(&second, "state r1 LOGINED");
    assert_eq!(until(&first, "state r1"), ["state r1 KICK_OUT 1002050"]);
    assert!(drain_for(&observer, Duration::from_millis(300)).is_empty());
    assert!(
        relay
            .metrics()
            .contains("onair_errors_total{code=\"1002050\",name=\"KickedOut\"} 2")
    );
}

#[test]
fn a_dropped_socket_is_removed_after_the_heartbeat_timeout() {
    let relay = TestRelay::start_with(onair_relay::Limits {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 800,
        ..Default::default()
    });
    let rt = runtime();
    let watcher = relay.engine();
    watcher.login_room("r1", User::new("w"), notify());
    until(&watcher, "state r1 LOGINED");
    rt.block_on(async {
        let mut ghost = relay.raw_login("r1", "ghost").await;
        ghost
            .request(RequestBody::Publish {
                room_id: "r1".into(),
                stream_id: "ghost-cam".into(),
                extra_info: String::new(),
                sdp: None,
            })
            .await
            .expect("publish");
        drop(ghost); // The socket closes with no logout.
    });
    assert_eq!(
        until(&watcher, "stream"),
        ["user r1 ADD ghost", "stream r1 ADD ghost-cam@ghost"]
    );
    // The relay waits for the heartbeat timeout (it might come back) — the watcher, which does
    // send heartbeats, stays in the room meanwhile.
    assert!(drain_for(&watcher, Duration::from_millis(400)).is_empty());
    assert_eq!(
        until(&watcher, "user r1 DELETE"),
        ["stream r1 DELETE ghost-cam@ghost", "user r1 DELETE ghost"]
    );
    // The live engine kept its seat across many timeouts' worth of time.
    assert!(drain_for(&watcher, Duration::from_millis(1000)).is_empty());
    let m = relay.metrics();
    assert!(m.contains("onair_heartbeat_timeouts_total 1"), "{m}");
    assert!(m.contains("onair_users 1"), "{m}");
}

#[test]
fn network_drop_resumes_the_session_without_disturbing_the_room() {
    let relay = TestRelay::start();
    let a = relay.engine();
    let b = relay.engine();
    a.login_room("r1", User::new("a"), notify());
    until(&a, "state r1 LOGINED");
    b.login_room("r1", User::new("b"), notify());
    until(&b, "user r1 ADD a");
    until(&a, "user r1 ADD b");
    b.simulate_network_drop();
    assert_eq!(
        until(&b, "state r1 RECONNECTED"),
        ["state r1 RECONNECTING 0", "state r1 RECONNECTED 0"]
    );
    // Resumed: nobody saw b leave and come back.
    assert!(drain_for(&a, Duration::from_millis(300)).is_empty());
    assert!(drain_for(&b, Duration::from_millis(100)).is_empty());
}

#[test]
fn relay_restart_reconnects_every_engine_and_resyncs() {
    let mut relay = TestRelay::start();
    let rt = runtime();
    let a = relay.engine();
    let b = relay.engine();
    a.login_room("r1", User::new("a"), notify());
    until(&a, "state r1 LOGINED");
    b.login_room("r1", User::new("b"), notify());
    until(&b, "state r1 LOGINED");
    // x publishes before the restart and will not come back.
    rt.block_on(async {
        let mut x = relay.raw_login("r1", "x").await;
        x.request(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "x-cam".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("publish");
        std::mem::forget(x);
    });
    let mut view_a = RoomView::default();
    let mut view_b = RoomView::default();
    for e in until(&a, "stream r1 ADD x-cam") {
        view_a.apply(&e);
    }
    for e in until(&b, "stream r1 ADD x-cam") {
        view_b.apply(&e);
    }
    assert_eq!(view_a, RoomView::of(&["b", "x"], &["x-cam@x"]));
    assert_eq!(view_b, RoomView::of(&["a", "x"], &["x-cam@x"]));

    relay.restart();
    // y arrives on the new relay while the engines reconnect.
    let y = rt.block_on(async {
        let mut y = relay.raw_login("r1", "y").await;
        y.request(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "y-cam".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("publish");
        y
    });
    for (engine, view) in [(&a, &mut view_a), (&b, &mut view_b)] {
        let seen = until(engine, "state r1 RECONNECTED");
        assert_eq!(
            seen.first().map(String::as_str),
            Some("state r1 RECONNECTING 0"),
            "{seen:?}"
        );
        assert_eq!(
            seen.len(),
            2,
            "nothing between RECONNECTING and RECONNECTED: {seen:?}"
        );
        for e in drain_for(engine, Duration::from_millis(800)) {
            assert!(!e.starts_with("state"), "unexpected {e} after {seen:?}");
            view.apply(&e);
        }
    }
    assert_eq!(view_a, RoomView::of(&["b", "y"], &["y-cam@y"]));
    assert_eq!(view_b, RoomView::of(&["a", "y"], &["y-cam@y"]));
    drop(y);
}

#[test]
fn reconnect_gives_up_after_the_configured_time() {
    let mut relay = TestRelay::start();
    let a = relay.engine_with(|p| p.reconnect_timeout = Duration::from_millis(600));
    a.login_room("r1", User::new("a"), notify());
    until(&a, "state r1 LOGINED");
    relay.stop();
    assert_eq!(
        until(&a, "state r1 RECONNECT_FAILED"),
        [
            "state r1 RECONNECTING 0",
            "state r1 RECONNECT_FAILED 1002070"
        ]
    );
}

#[test]
fn login_to_an_unreachable_relay_fails_after_the_login_timeout() {
    let mut relay = TestRelay::start();
    relay.stop();
    let a = relay.engine_with(|p| p.login_timeout = Duration::from_millis(300));
    a.login_room("r1", User::new("a"), notify());
    assert_eq!(
        until(&a, "state r1 LOGIN_FAILED"),
        ["state r1 LOGINING 0", "state r1 LOGIN_FAILED 1000011"]
    );
}

#[test]
fn invalid_ids_fail_locally_with_their_codes() {
    let relay = TestRelay::start();
    let a = relay.engine();
    a.login_room("bad room", User::new("a"), notify());
    assert_eq!(until(&a, "state"), ["state bad room LOGINING 0"]);
    assert_eq!(until(&a, "state"), ["state bad room LOGIN_FAILED 1002005"]);
    a.login_room("r1", User::new("u".repeat(65)), notify());
    assert_eq!(
        until(&a, "state r1 LOGIN_FAILED"),
        ["state r1 LOGINING 0", "state r1 LOGIN_FAILED 1002006"]
    );
    a.login_room("r1", User::new("ok"), notify());
    until(&a, "state r1 LOGINED");
    a.login_room("r1", User::new("ok"), notify());
    assert_eq!(until(&a, "api"), ["api login_room 1002002"]);
    rt_resync_check(&relay);
}

/// Logging into a room again on the same connection is a resync, not a second seat.
fn rt_resync_check(relay: &TestRelay) {
    runtime().block_on(async {
        let mut c = relay.raw_login("r9", "same").await;
        let again = c
            .request(RequestBody::Login {
                room_id: "r9".into(),
                user: User::new("same"),
                token: None,
                app_sign: Some(relay.sign.to_hex()),
                is_user_status_notify: true,
            })
            .await
            .expect("resync");
        assert!(matches!(again, ResponseBody::Login { ref users, .. } if users.is_empty()));
        let err = c
            .request(RequestBody::Login {
                room_id: "r9".into(),
                user: User::new("other"),
                token: None,
                app_sign: Some(relay.sign.to_hex()),
                is_user_status_notify: true,
            })
            .await
            .expect_err("conflict");
        assert_eq!(err.code(), 1002002);
    });
}
