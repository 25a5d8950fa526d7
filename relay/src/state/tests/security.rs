//! Who may play what, token lifetimes and the per-user, per-session and WHIP/WHEP limits.

use super::*;

/// A token for `user` of app 1, valid from `now` (Unix seconds) for `ttl` seconds.
fn token_for(h: &Harness, user: &str, now: u64, ttl: u64, streams: Option<&[&str]>) -> String {
    let mut claims = Claims::new(1, user, now, ttl);
    claims.privilege = Privilege {
        login: true,
        publish: true,
    };
    claims.stream_id_list = streams.map(|s| s.iter().map(|s| s.to_string()).collect());
    token::mint(&claims, &h.sign)
}

fn token_login(h: &mut Harness, c: Client, room: &str, user: &str, token: &str) -> Vec<Output> {
    h.request(
        c,
        json!({"type":"login","room_id":room,"user":{"user_id":user},"token":token}),
    )
}

/// The code of the PlayStopped `conn` was sent for `stream`.
fn play_stopped(out: &[Output], conn: ConnId, stream: &str) -> Option<u32> {
    out.iter().find_map(|o| match o {
        Output::Send {
            to,
            msg: ServerMessage::PlayStopped {
                stream_id, code, ..
            },
        } if to.contains(&conn) && stream_id == stream => Some(*code),
        _ => None,
    })
}

#[test]
fn a_session_plays_only_streams_of_its_own_rooms() {
    let mut h = Harness::roomy();
    let host = h.client();
    let outsider = h.client();
    h.login(host, "r1", "host");
    h.login(outsider, "r2", "o");
    h.publish_flowing(host, "r1", "cam");
    assert_eq!(
        error_code(&h.play(outsider, "cam"), outsider.conn),
        Some(ErrorCode::PlayNotAuthorized.code())
    );
    assert!(h.players("cam").is_empty());
    h.check();
    // In the stream's room, it may.
    h.login(outsider, "r1", "o");
    h.play_answered(outsider, "cam");
    assert_eq!(h.players("cam"), [outsider.sid]);
    h.check();
    // Leaving the stream's room (but not r2) ends the play at once.
    let out = h.request(outsider, json!({"type":"logout","room_id":"r1"}));
    assert_eq!(
        play_stopped(&out, outsider.conn, "cam"),
        Some(ErrorCode::PlayNotAuthorized.code())
    );
    assert!(h.players("cam").is_empty());
    h.check();
}

#[test]
fn cross_room_play_needs_some_room_of_the_app() {
    let mut h = Harness::cross_room();
    let host = h.client();
    let cohost = h.client();
    h.login(host, "r1", "host");
    h.login(cohost, "r2", "cohost");
    h.publish_flowing(host, "r1", "cam");
    h.play_answered(cohost, "cam");
    assert_eq!(h.players("cam"), [cohost.sid]);
    // Roomless, it may not.
    let roomless = h.client();
    assert_eq!(
        error_code(&h.play(roomless, "cam"), roomless.conn),
        Some(ErrorCode::NotLoggedIn.code())
    );
    h.check();
}

#[test]
fn a_kicked_player_stops_receiving() {
    let mut h = Harness::roomy();
    let host = h.client();
    let viewer = h.client();
    h.login(host, "r1", "host");
    h.login(viewer, "r1", "v");
    h.publish_flowing(host, "r1", "cam");
    h.play_answered(viewer, "cam");
    // The same user logs in elsewhere: the old session's play ends with the kick's code.
    let again = h.client();
    let out = h.login(again, "r1", "v");
    assert!(sent(&out).contains(&(viewer.conn, "kicked".to_string())));
    assert!(sent(&out).contains(&(0, "end_play".to_string())));
    assert_eq!(
        play_stopped(&out, viewer.conn, "cam"),
        Some(ErrorCode::KickedOut.code())
    );
    assert!(h.playing(viewer).is_empty());
    h.check();
}

#[test]
fn tokens_warn_before_they_expire_can_be_renewed_and_remove_the_session_when_they_do() {
    let mut h = Harness::roomy();
    let t0 = 2_000_000_000;
    h.state.set_clock(Some(t0));
    let host = h.client();
    let viewer = h.client();
    let short = token_for(&h, "host", t0, 35, None);
    assert!(matches!(
        response(&token_login(&mut h, host, "r1", "host", &short), host.conn),
        Some(Ok(_))
    ));
    let long = token_for(&h, "v", t0, 3600, None);
    token_login(&mut h, viewer, "r1", "v", &long);
    h.publish_flowing(host, "r1", "cam");
    h.play_answered(viewer, "cam");
    h.login(host, "r2", "host"); // an app-sign seat elsewhere never expires
    h.check();

    // Nothing for the first 5 s; then one warning with the time left.
    h.state.set_clock(Some(t0 + 4));
    assert!(sent(&h.state.tick(h.now)).is_empty());
    h.state.set_clock(Some(t0 + 5));
    let out = h.state.tick(h.now);
    let warned: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg:
                    ServerMessage::TokenWillExpire {
                        room_id,
                        remain_seconds,
                    },
            } => Some((to.clone(), room_id.clone(), *remain_seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(warned, [(vec![host.conn], "r1".to_string(), 30)]);
    h.state.set_clock(Some(t0 + 6));
    assert!(sent(&h.state.tick(h.now)).is_empty(), "warned once");

    // A renewal for another user is refused; one for this user extends the seat.
    let wrong = token_for(&h, "v", t0, 3600, None);
    let out = h.request(
        host,
        json!({"type":"renew_token","room_id":"r1","token":wrong}),
    );
    assert_eq!(
        error_code(&out, host.conn),
        Some(ErrorCode::TokenWrongUser.code())
    );
    let renewed = token_for(&h, "host", t0 + 6, 60, None);
    let out = h.request(
        host,
        json!({"type":"renew_token","room_id":"r1","token":renewed}),
    );
    assert!(matches!(response(&out, host.conn), Some(Ok(_))));
    h.state.set_clock(Some(t0 + 35));
    assert!(sent(&h.state.tick(h.now)).is_empty(), "renewed: no kick");

    // Not renewed again: warned anew, then removed from r1 at expiry, its stream ending.
    h.state.set_clock(Some(t0 + 40));
    assert_eq!(
        sent(&h.state.tick(h.now)),
        [(host.conn, "token_will_expire".to_string())]
    );
    h.state.set_clock(Some(t0 + 66));
    let out = h.state.tick(h.now);
    let s = sent(&out);
    assert!(s.contains(&(host.conn, "kicked".to_string())), "{s:?}");
    assert_eq!(
        play_stopped(&out, viewer.conn, "cam"),
        Some(ErrorCode::StreamNotFound.code()),
        "the expired publisher's stream ended"
    );
    let kicked_code = out.iter().find_map(|o| match o {
        Output::Send {
            msg: ServerMessage::Kicked { code, .. },
            ..
        } => Some(*code),
        _ => None,
    });
    assert_eq!(kicked_code, Some(ErrorCode::TokenExpiredKicked.code()));
    assert_eq!(h.state.gauges().streams, 0);
    // Still in r2, where it logged in with the app sign.
    assert_eq!(h.state.gauges().rooms, 2);
    h.check();
}

#[test]
fn a_token_with_a_stream_list_publishes_only_those_streams() {
    let mut h = Harness::roomy();
    let host = h.client();
    let t = token_for(&h, "host", token::unix_now(), 3600, Some(&["allowed"]));
    token_login(&mut h, host, "r1", "host", &t);
    assert_eq!(
        error_code(&h.publish(host, "r1", "other"), host.conn),
        Some(ErrorCode::StreamIdNotAuthorized.code())
    );
    assert!(matches!(
        response(&h.publish(host, "r1", "allowed"), host.conn),
        Some(Ok(_))
    ));
    h.check();
}

#[test]
fn sessions_per_user_and_plays_per_session_are_bounded() {
    let mut h = Harness::new(Limits {
        max_sessions_per_user: 2,
        max_plays_per_session: 2,
        requests_per_second: 1e9,
        request_burst: 1e9,
        max_consecutive_errors: u32::MAX,
        ..Limits::default()
    });
    let (a, b, c) = (h.client(), h.client(), h.client());
    h.login(a, "r1", "u");
    h.login(b, "r2", "u");
    assert_eq!(
        error_code(&h.login(c, "r3", "u"), c.conn),
        Some(ErrorCode::TooManySessionsForUser.code())
    );
    // Another room on a session the user already has is no new session; replacing a seat
    // (same user, same room) is allowed too.
    assert!(matches!(
        response(&h.login(a, "r3", "u"), a.conn),
        Some(Ok(_))
    ));
    assert!(matches!(
        response(&h.login(c, "r2", "u"), c.conn),
        Some(Ok(_))
    ));
    h.check();

    let host = h.client();
    h.login(host, "r1", "host");
    for s in ["s1", "s2", "s3"] {
        h.publish_flowing(host, "r1", s);
    }
    h.play_answered(a, "s1");
    h.play_answered(a, "s2");
    assert_eq!(
        error_code(&h.play(a, "s3"), a.conn),
        Some(ErrorCode::TooManyPlays.code())
    );
    // Playing one of its streams again is a replacement, not one more.
    h.play_answered(a, "s2");
    assert_eq!(h.playing(a), ["s1", "s2"]);
    h.check();
}

#[test]
fn whip_and_whep_resources_are_bounded_and_a_second_post_replaces_the_first() {
    let mut h = Harness::new(Limits {
        max_http_sessions_per_user: 1,
        max_http_sessions_per_app: 2,
        ..Limits::default()
    });
    let now = token::unix_now();
    let host = h.client();
    h.login(host, "r1", "host");
    h.publish_flowing(host, "r1", "cam");
    let viewer = token_for(&h, "viewer", now, 3600, None);
    let (first, _, app_id, _) = h
        .state
        .http_begin(&viewer, "r1", "cam", false, h.now)
        .expect("first WHEP");
    h.state
        .negotiated(0, 0, first, app_id, "cam", false, Ok("answer".into()));
    assert_eq!(h.players("cam"), [first]);
    // The same user POSTs again for the same room: the first resource's play ends.
    let (second, _, _, out) = h
        .state
        .http_begin(&viewer, "r1", "cam", false, h.now)
        .expect("second WHEP replaces the first");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::EndPlay { session, .. } if *session == first)),
        "{out:?}"
    );
    h.state
        .negotiated(0, 0, second, app_id, "cam", false, Ok("answer".into()));
    assert_eq!(h.players("cam"), [second]);
    assert_eq!(h.state.gauges().sessions, 2);
    h.check();
    // The same user in another room is one resource too many for the user.
    let refused = h.state.http_begin(&viewer, "r2", "cam", false, h.now);
    assert!(matches!(refused, Err(e) if e.code == ErrorCode::TooManyHttpSessions.code()));
    // Another user fills the app; a third is refused.
    let other = token_for(&h, "other", now, 3600, None);
    h.state
        .http_begin(&other, "r1", "cam", false, h.now)
        .expect("second resource of the app");
    let third = token_for(&h, "third", now, 3600, None);
    let refused = h.state.http_begin(&third, "r1", "cam", false, h.now);
    assert!(matches!(refused, Err(e) if e.code == ErrorCode::TooManyHttpSessions.code()));
    h.check();
}

#[test]
fn connections_are_bounded_in_total_and_per_address() {
    let mut h = Harness::new(Limits {
        max_connections: 4,
        max_connections_per_ip: 2,
        ..Limits::default()
    });
    let (a, b) = (
        std::net::IpAddr::from([10, 0, 0, 1]),
        std::net::IpAddr::from([10, 0, 0, 2]),
    );
    let c1 = h.state.open_conn_from(Some(a), h.now);
    h.state.open_conn_from(Some(a), h.now);
    let refused = h.state.admit(Some(a));
    assert!(matches!(refused, Err(e) if e.code == ErrorCode::TooManyConnections.code()));
    assert!(h.state.admit(Some(b)).is_ok());
    // A WHIP/WHEP resource counts as a connection of its address.
    let host = h.client();
    h.login(host, "r1", "host");
    h.publish_flowing(host, "r1", "cam");
    let t = token_for(&h, "viewer", token::unix_now(), 3600, None);
    let refused = h
        .state
        .http_begin_from(Some(a), &t, "r1", "cam", false, h.now);
    assert!(matches!(refused, Err(e) if e.code == ErrorCode::TooManyConnections.code()));
    let (sid, secret, _, _) = h
        .state
        .http_begin_from(Some(b), &t, "r1", "cam", false, h.now)
        .expect("room for b");
    assert_eq!(h.state.connections_from(b), 1);
    h.check();
    // The total: 3 connections and a resource.
    assert!(
        matches!(h.state.admit(Some(b)), Err(e) if e.code == ErrorCode::TooManyConnections.code())
    );
    h.state.close_conn(c1, h.now);
    assert!(h.state.admit(Some(a)).is_ok());
    h.state.http_end(sid, &secret);
    assert_eq!(h.state.connections_from(b), 0);
    h.check();
}
