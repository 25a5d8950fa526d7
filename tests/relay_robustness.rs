//! Bad input from a raw WebSocket client gets an error with a code, never a crash, and never
//! disturbs another session.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use onair_engine::User;
use onair_engine::messages::{PROTOCOL_VERSION, RequestBody, ServerMessage};
use onair_engine::signal::SignalClient;
use onair_relay::Limits;

async fn next_response(c: &mut SignalClient) -> (Option<u64>, Option<u32>) {
    loop {
        match c.recv().await {
            Some(Ok(ServerMessage::Response { id, error, .. })) => {
                return (id, error.map(|e| e.code));
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// The whole HTTP response to a GET on the relay.
fn http_get(relay: &TestRelay, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(relay.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn malformed_unknown_oversized_and_out_of_order_messages_get_error_codes() {
    let relay = TestRelay::start();
    let rt = runtime();
    // A well-behaved user in the room throughout.
    let bystander = relay.engine();
    bystander.login_room("r1", User::new("bystander"), notify());
    until(&bystander, "state r1 LOGINED");
    rt.block_on(async {
        let mut c = SignalClient::connect(&relay.url()).await.expect("connect");
        // Before hello.
        c.send(RequestBody::Heartbeat).await.expect("send");
        assert_eq!(next_response(&mut c).await, (Some(1), Some(1000005)));
        // Not JSON.
        c.send_raw("{{{ not json".into()).await.expect("send");
        assert_eq!(next_response(&mut c).await, (None, Some(1000002)));
        // JSON with a readable id but an unknown type.
        c.send_raw(r#"{"id":77,"type":"teleport"}"#.into())
            .await
            .expect("send");
        assert_eq!(next_response(&mut c).await, (Some(77), Some(1000002)));
        // A known type missing a field.
        c.send_raw(r#"{"id":78,"type":"login","room_id":"r1"}"#.into())
            .await
            .expect("send");
        assert_eq!(next_response(&mut c).await, (Some(78), Some(1000002)));
        // Binary frames.
        c.send_binary(vec![1, 2, 3]).await.expect("send");
        assert_eq!(next_response(&mut c).await, (None, Some(1000002)));
        // Wrong protocol version.
        c.send(RequestBody::Hello {
            protocol: PROTOCOL_VERSION + 1,
            app_id: APP_ID,
            resume: None,
        })
        .await
        .expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1000001));
        // Over the message limit (but not absurdly): an error, and the connection lives on.
        let big = format!(
            r#"{{"id":79,"type":"heartbeat","pad":"{}"}}"#,
            "x".repeat(70 * 1024)
        );
        c.send_raw(big).await.expect("send");
        assert_eq!(next_response(&mut c).await, (None, Some(1000003)));
        // Now a proper hello, then hello again.
        c.send(RequestBody::Hello {
            protocol: PROTOCOL_VERSION,
            app_id: APP_ID,
            resume: None,
        })
        .await
        .expect("send");
        assert_eq!(next_response(&mut c).await.1, None);
        c.send(RequestBody::Hello {
            protocol: PROTOCOL_VERSION,
            app_id: APP_ID,
            resume: None,
        })
        .await
        .expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1000005));
        // Invalid IDs.
        let login = |room: &str, user: &str| RequestBody::Login {
            room_id: room.into(),
            user: User::new(user),
            token: None,
            app_sign: Some(relay.sign.to_hex()),
            is_user_status_notify: false,
        };
        c.send(login("bad room", "u")).await.expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1002005));
        c.send(login(&"r".repeat(129), "u")).await.expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1002005));
        c.send(login("r1", &"u".repeat(65))).await.expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1002006));
        c.send(login("r1", "u")).await.expect("send");
        assert_eq!(next_response(&mut c).await.1, None);
        c.send(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "bad/id".into(),
            extra_info: String::new(),
            sdp: None,
        })
        .await
        .expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1003005));
        c.send(RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "ok".into(),
            extra_info: "i".repeat(1025),
            sdp: None,
        })
        .await
        .expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1003012));
        // Far over the limit: the transport closes the connection.
        let huge = "y".repeat(1024 * 1024);
        let _ = c.send_raw(huge).await;
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
                Ok(None) | Ok(Some(Err(_))) => break true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "the relay closes a connection that sends a huge message"
        );
    });
    // The bystander saw the raw user come and go, and nothing else.
    assert_eq!(until(&bystander, "user r1 ADD"), ["user r1 ADD u"]);
    // The huge-message connection counts as dropped; it leaves after the heartbeat timeout,
    // which is long here, so it is still in the room: the bystander heard nothing else.
    assert!(drain_for(&bystander, Duration::from_millis(200)).is_empty());
    // The relay still serves everyone.
    let late = relay.engine();
    late.login_room("r1", User::new("late"), notify());
    until(&late, "state r1 LOGINED");
    assert_eq!(until(&bystander, "user r1"), ["user r1 ADD late"]);
    let metrics = http_get(&relay, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("onair_errors_total{code=\"1000002\",name=\"MalformedMessage\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("onair_errors_total{code=\"1000003\",name=\"MessageTooLarge\"} 1"),
        "{metrics}"
    );
    assert!(http_get(&relay, "/healthz").ends_with("ok\n"));
}

#[test]
fn floods_are_rate_limited_and_abusers_are_disconnected() {
    let relay = TestRelay::start_with(Limits {
        requests_per_second: 5.0,
        request_burst: 5.0,
        max_consecutive_errors: 10,
        ..Limits::default()
    });
    let rt = runtime();
    let bystander = relay.engine();
    bystander.login_room("r1", User::new("bystander"), notify());
    until(&bystander, "state r1 LOGINED");
    rt.block_on(async {
        let mut c = relay.raw_client().await; // hello used one token
        for _ in 0..4 {
            c.send(RequestBody::Heartbeat).await.expect("send");
            assert_eq!(next_response(&mut c).await.1, None);
        }
        c.send(RequestBody::Heartbeat).await.expect("send");
        assert_eq!(next_response(&mut c).await.1, Some(1000004));
        // Keep flooding: after 10 errors in a row the relay says goodbye and closes.
        for _ in 0..20 {
            if c.send(RequestBody::Heartbeat).await.is_err() {
                break;
            }
        }
        let mut goodbye = None;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
            if let ServerMessage::Goodbye { code, .. } = m {
                goodbye = Some(code);
            }
        }
        assert_eq!(goodbye, Some(1000007));
    });
    // The bystander, who sends a heartbeat every few seconds, is untouched.
    assert!(drain_for(&bystander, Duration::from_millis(300)).is_empty());
    let late = relay.engine();
    late.login_room("r1", User::new("late"), notify());
    until(&late, "state r1 LOGINED");
    assert_eq!(until(&bystander, "user r1"), ["user r1 ADD late"]);
}

#[test]
fn room_and_session_limits_are_enforced() {
    let relay = TestRelay::start_with(Limits {
        max_rooms_per_app: 2,
        max_users_per_room: 2,
        max_rooms_per_session: 2,
        max_streams_per_session: 1,
        max_users_per_app: 4,
        ..Limits::default()
    });
    let rt = runtime();
    rt.block_on(async {
        let login = |room: &str, user: &str| RequestBody::Login {
            room_id: room.into(),
            user: User::new(user),
            token: None,
            app_sign: Some(relay.sign.to_hex()),
            is_user_status_notify: false,
        };
        let mut a = relay.raw_client().await;
        a.request(login("r1", "a")).await.expect("r1");
        a.request(login("r2", "a")).await.expect("r2");
        assert_eq!(
            a.request(login("r3", "a"))
                .await
                .expect_err("3rd room")
                .code(),
            1002012
        );
        let mut b = relay.raw_client().await;
        b.request(login("r1", "b")).await.expect("r1");
        assert_eq!(
            b.request(login("r3", "b"))
                .await
                .expect_err("3rd room in app")
                .code(),
            1002010
        );
        let mut c = relay.raw_client().await;
        assert_eq!(
            c.request(login("r1", "c")).await.expect_err("full").code(),
            1002011
        );
        let publish = |s: &str| RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: s.into(),
            extra_info: String::new(),
            sdp: None,
        };
        a.request(publish("s1")).await.expect("first stream");
        assert_eq!(
            a.request(publish("s2"))
                .await
                .expect_err("2nd stream")
                .code(),
            1003011
        );
    });
}

#[test]
fn garbage_sdp_is_refused_with_a_code_and_frees_the_stream_id() {
    let relay = TestRelay::start();
    let rt = runtime();
    rt.block_on(async {
        let mut c = relay.raw_login("r1", "mallory").await;
        let publish = |sdp: &str| RequestBody::Publish {
            room_id: "r1".into(),
            stream_id: "junk".into(),
            extra_info: String::new(),
            sdp: Some(sdp.into()),
        };
        let err = c
            .request(publish("v=0 this is not sdp"))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), 1003020, "{err}");
        // The ID is free again, and a play offer of garbage is refused too.
        let err = c
            .request(publish(""))
            .await
            .expect_err("refused again, not StreamIdTaken");
        assert_eq!(err.code(), 1003020, "{err}");
        let err = c
            .request(RequestBody::Play {
                stream_id: "junk".into(),
                sdp: "nope".into(),
                video_layer: Default::default(),
            })
            .await
            .expect_err("no such stream");
        assert_eq!(err.code(), 1004002);
    });
    // The relay is fine.
    let e = relay.engine();
    e.login_room("r1", User::new("fine"), notify());
    until(&e, "state r1 LOGINED");
}
