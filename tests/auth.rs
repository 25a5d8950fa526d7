//! Token and app-sign authentication: every refusal has its own stable code.

mod common;

use common::*;
use onair_engine::messages::RequestBody;
use onair_engine::token::{self, AppSign, Claims};
use onair_engine::{RoomConfig, User};
use onair_relay::Limits;

fn with_token(t: &str) -> RoomConfig {
    RoomConfig {
        token: Some(t.to_string()),
        is_user_status_notify: true,
    }
}

fn claims(user: &str) -> Claims {
    Claims::new(APP_ID, user, token::unix_now(), 3600)
}

#[test]
fn every_bad_token_is_refused_with_its_code() {
    let (config, sign, other_app_sign) = two_app_config();
    let relay = TestRelay::start_config(config, sign.clone());
    // An engine without the app sign: tokens only.
    let engine = relay.engine_with(|p| p.app_sign.clear());
    let stranger = AppSign::random();

    let mut expired = claims("u");
    expired.iat -= 7200;
    expired.exp = token::unix_now() - 10;
    let mut other_room = claims("u");
    other_room.room_id = Some("elsewhere".into());
    let mut no_login = claims("u");
    no_login.privilege.login = false;
    let mut other_app = claims("u");
    other_app.app_id = 2;

    let cases: Vec<(&str, Option<String>, u32)> = vec![
        ("no credentials at all", None, 1002067),
        ("garbage", Some("not-a-jwt".into()), 1002033),
        (
            "signed with a stranger's sign",
            Some(token::mint(&claims("u"), &stranger)),
            1002033,
        ),
        ("expired", Some(token::mint(&expired, &sign)), 1002033),
        (
            "for app 2, signed by app 2",
            Some(token::mint(&other_app, &other_app_sign)),
            1002033,
        ),
        (
            "for app 2, signed by app 1",
            Some(token::mint(&other_app, &sign)),
            1002034,
        ),
        (
            "for another user",
            Some(token::mint(&claims("someone-else"), &sign)),
            1002035,
        ),
        (
            "for another room",
            Some(token::mint(&other_room, &sign)),
            1002036,
        ),
        (
            "without login privilege",
            Some(token::mint(&no_login, &sign)),
            1002037,
        ),
    ];
    for (i, (what, tok, code)) in cases.into_iter().enumerate() {
        let room = format!("auth-{i}");
        let cfg = RoomConfig {
            token: tok,
            is_user_status_notify: false,
        };
        engine.login_room(&room, User::new("u"), cfg);
        let seen = until(&engine, &format!("state {room} LOGIN_FAILED"));
        assert_eq!(
            seen,
            [
                format!("state {room} LOGINING 0"),
                format!("state {room} LOGIN_FAILED {code}")
            ],
            "case: {what}"
        );
    }
    // The right token works, and the failures never touched the relay's rooms.
    engine.login_room(
        "ok",
        User::new("u"),
        with_token(&token::mint(&claims("u"), &sign)),
    );
    until(&engine, "state ok LOGINED");
    assert!(relay.metrics().contains("onair_rooms 1"));
}

#[test]
fn app_sign_login_follows_the_app_policy() {
    let (config, sign, _) = two_app_config();
    let relay = TestRelay::start_config(config, sign.clone());
    // App 1 is token-only.
    let by_sign = relay.engine();
    by_sign.login_room("r", User::new("u"), notify());
    assert_eq!(
        until(&by_sign, "state r LOGIN_FAILED"),
        ["state r LOGINING 0", "state r LOGIN_FAILED 1002038"]
    );
    // App 2 allows the sign, but not a wrong one.
    let wrong = relay.engine_with(|p| {
        p.app_id = 2;
        p.app_sign = AppSign::random().to_hex();
    });
    wrong.login_room("r", User::new("u"), notify());
    assert_eq!(
        until(&wrong, "state r LOGIN_FAILED"),
        ["state r LOGINING 0", "state r LOGIN_FAILED 1002039"]
    );
    // An app the relay does not serve.
    let unknown = relay.engine_with(|p| p.app_id = 99);
    unknown.login_room("r", User::new("u"), notify());
    assert_eq!(
        until(&unknown, "state r LOGIN_FAILED"),
        ["state r LOGINING 0", "state r LOGIN_FAILED 1000006"]
    );
}

#[test]
fn an_invalid_app_sign_in_the_profile_is_refused_at_create() {
    let relay = TestRelay::start();
    let err = onair_engine::Engine::create(onair_engine::EngineProfile {
        app_id: APP_ID,
        app_sign: "xyz".into(),
        server: relay.url(),
        ..Default::default()
    })
    .err()
    .expect("refused");
    assert_eq!(err.code(), 1000013);
    let err = onair_engine::Engine::create(onair_engine::EngineProfile {
        server: "ftp://nope".into(),
        ..Default::default()
    })
    .err()
    .expect("refused");
    assert_eq!(err.code(), 1000013);
}

#[test]
fn publishing_needs_the_publish_privilege() {
    let relay = TestRelay::start_with(Limits::default());
    let rt = runtime();
    rt.block_on(async {
        let login = |c: Claims| RequestBody::Login {
            room_id: "r".into(),
            user: User::new(c.user_id.clone()),
            token: Some(token::mint(&c, &relay.sign)),
            app_sign: None,
            is_user_status_notify: false,
        };
        let publish = |s: &str| RequestBody::Publish {
            room_id: "r".into(),
            stream_id: s.into(),
            extra_info: String::new(),
            sdp: None,
        };
        let mut viewer = relay.raw_client().await;
        viewer
            .request(login(claims("viewer")))
            .await
            .expect("login");
        let err = viewer
            .request(publish("v"))
            .await
            .expect_err("no publish privilege");
        assert_eq!(err.code(), 1003072);
        let mut host = relay.raw_client().await;
        let mut c = claims("host");
        c.privilege.publish = true;
        host.request(login(c)).await.expect("login");
        host.request(publish("h")).await.expect("host may publish");
        // Not logged into the room named.
        let err = host
            .request(RequestBody::Publish {
                room_id: "other".into(),
                stream_id: "h2".into(),
                extra_info: String::new(),
                sdp: None,
            })
            .await
            .expect_err("not in room");
        assert_eq!(err.code(), 1002001);
    });
}
