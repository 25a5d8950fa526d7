//! Safe to expose, through the real relay: who may play what (room membership, kick-out,
//! token expiry and renewal), and the HTTP edge's limits (connections per address, requests
//! per address, SDP size, CORS scope, `/metrics` on its own address, unconnected WHEP
//! resources freed).

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use onair_engine::live::player;
use onair_engine::token::{self, Claims};
use onair_engine::{PlayerConfig, PublishChannel, RoomConfig, User, VideoConfig, VideoPreset};
use onair_relay::{Limits, RelayConfig};
use onair_transport::peer::MediaNetwork;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn with_token(t: String) -> RoomConfig {
    RoomConfig {
        token: Some(t),
        is_user_status_notify: false,
    }
}

/// A token for `user` valid for `ttl` seconds from now.
fn token_for(relay: &TestRelay, user: &str, ttl: u64, publish: bool) -> String {
    let mut c = Claims::new(APP_ID, user, token::unix_now(), ttl);
    c.privilege.publish = publish;
    token::mint(&c, &relay.sign)
}

/// Whether `frames` delivers nothing new over `quiet` (after whatever was queued).
fn goes_quiet(
    frames: &onair_engine::media::channel::FrameReceiver<
        onair_engine::media::frame::SharedVideoFrame,
    >,
    quiet: Duration,
) -> bool {
    // Drain what was already on its way, then listen.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        let _ = frames.recv_timeout(Duration::from_millis(50));
    }
    frames.recv_timeout(quiet).is_none()
}

/// Asks for a WebSocket upgrade on `/ws`: the status, and what was read (up to the body of a
/// refusal).
fn ws_upgrade(addr: std::net::SocketAddr) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
        if text.contains("\"code\"") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn only_the_streams_room_plays_it_and_a_kicked_viewer_stops_receiving() {
    let relay = TestRelay::start();
    let host = relay.engine();
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360).with_fps(30),
    );
    host.login_room("stage", User::new("host"), quiet());
    until(&host, "state stage LOGINED");
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&host, "publisher cam Publishing");

    // From another room: refused for good, with its own code, and no retry.
    let outsider = relay.engine();
    outsider.login_room("lobby", User::new("outsider"), quiet());
    until(&outsider, "state lobby LOGINED");
    outsider.start_playing_stream("cam", PlayerConfig::default());
    let seen = until(&outsider, "player cam NoPlay");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("player cam NoPlay 1004030"),
        "{seen:?}"
    );
    assert!(
        !drain_for(&outsider, Duration::from_millis(1500))
            .iter()
            .any(|e| e.starts_with("player cam")),
        "a refused play is not retried"
    );

    // From the stream's room: frames.
    let viewer = relay.engine();
    viewer.login_room("stage", User::new("viewer"), quiet());
    until(&viewer, "state stage LOGINED");
    let frames = viewer.play_frames("cam");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");
    assert!(frames.recv_timeout(Duration::from_secs(2)).is_some());

    // The same user logs in elsewhere: the old viewer is kicked and its video stops at once.
    let usurper = relay.engine();
    usurper.login_room("stage", User::new("viewer"), quiet());
    until(&usurper, "state stage LOGINED");
    let seen = until_all(
        &viewer,
        &["state stage KICK_OUT 1002050", "player cam NoPlay 1002050"],
    );
    assert!(!seen.is_empty());
    assert!(
        goes_quiet(&frames, Duration::from_secs(2)),
        "a kicked viewer still receives video"
    );
    // Logging out ends a play too (the engine stops it itself; the relay would, with
    // PlayNotAuthorized), and the relay counts no player left.
    let frames = usurper.play_frames("cam");
    usurper.start_playing_stream("cam", PlayerConfig::default());
    until(&usurper, "first_video cam");
    usurper.logout_room("stage");
    until(&usurper, "player cam NoPlay");
    assert!(goes_quiet(&frames, Duration::from_secs(2)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !relay.metrics().contains("onair_players 0") {
        assert!(Instant::now() < deadline, "{}", relay.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_35_second_token_warns_can_be_renewed_and_expires_with_its_own_code() {
    let relay = TestRelay::start();
    // Both log in with 35 s tokens; one renews when warned, the other does not.
    let renewer = relay.engine_with(|p| p.app_sign.clear());
    let forgetful = relay.engine_with(|p| p.app_sign.clear());
    let t0 = Instant::now();
    renewer.login_room(
        "r",
        User::new("renewer"),
        with_token(token_for(&relay, "renewer", 35, false)),
    );
    forgetful.login_room(
        "r",
        User::new("forgetful"),
        with_token(token_for(&relay, "forgetful", 35, false)),
    );
    until(&renewer, "state r LOGINED");
    until(&forgetful, "state r LOGINED");

    let seen = until(&renewer, "token_will_expire r");
    let warned_after = t0.elapsed();
    let remain: u64 = seen
        .last()
        .and_then(|e| e.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("remaining seconds");
    assert!((28..=30).contains(&remain), "{seen:?}");
    assert!(
        warned_after >= Duration::from_secs(3) && warned_after <= Duration::from_secs(8),
        "warned {warned_after:?} after login"
    );
    // A token for someone else is refused; the right one is taken.
    renewer.renew_token("r", &token_for(&relay, "forgetful", 3600, false));
    until(&renewer, "api renew_token 1002035");
    renewer.renew_token("r", &token_for(&relay, "renewer", 3600, false));

    let seen = until_within(&forgetful, "state r KICK_OUT", Duration::from_secs(40));
    let expired_after = t0.elapsed();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("state r KICK_OUT 1002054"),
        "{seen:?}"
    );
    assert!(
        expired_after >= Duration::from_secs(33) && expired_after <= Duration::from_secs(38),
        "removed {expired_after:?} after login"
    );
    // The renewed one stays, and sees the other leave.
    assert!(
        !drain_for(&renewer, Duration::from_secs(2))
            .iter()
            .any(|e| e.contains("KICK_OUT")),
        "the renewed session was removed"
    );
    assert!(
        relay.metrics().contains("onair_users 1"),
        "{}",
        relay.metrics()
    );
}

#[test]
fn the_http_edge_limits_requests_connections_and_bodies() {
    let sign = onair_engine::token::AppSign::random();
    let mut config = RelayConfig::single_app(APP_ID, sign.clone());
    config.limits = Limits {
        http_requests_per_second: 1.0,
        http_request_burst: 3.0,
        max_connections_per_ip: 2,
        max_sdp_bytes: 4096,
        ..Limits::default()
    };
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    config.metrics_listen = Some(metrics_port);
    let relay = TestRelay::start_config(config, sign);

    // /metrics is on its own address, not on the public one.
    let m = http_at(metrics_port, "GET", "/metrics", &[], "");
    assert_eq!(m.status, 200);
    assert!(m.body.contains("onair_sessions"), "{}", m.body);

    // CORS only where web pages need it.
    let preflight = |path: &str| {
        http(
            &relay,
            "OPTIONS",
            path,
            &[
                ("Origin", "http://example.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "",
        )
    };
    let whep = preflight("/whep/r/s");
    assert_eq!(whep.header("access-control-allow-origin"), Some("*"));
    let ws = http(
        &relay,
        "GET",
        "/healthz",
        &[("Origin", "http://example.test")],
        "",
    );
    assert_eq!(ws.status, 200);
    assert_eq!(ws.header("access-control-allow-origin"), None);

    // An SDP body over the limit: 413 with its code, before any token check.
    let big = "a".repeat(5000);
    let t = format!("Bearer {}", token_for(&relay, "u", 3600, false));
    let r = http(&relay, "POST", "/whep/r/s", &[("Authorization", &t)], &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("1000003"), "{}", r.body);

    // Requests per address: the burst spent (the preflight, the metrics page and the POST
    // above count), then 429 with Retry-After and its code.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..4 {
        let r = http(&relay, "GET", "/metrics", &[], "");
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert!(limited.body.contains("1000020"), "{}", limited.body);
    let wait: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Signaling is not an HTTP request in this sense: engines still connect, up to the
    // per-address connection limit.
    let a = relay.engine();
    let b = relay.engine();
    a.login_room("r", User::new("a"), quiet());
    b.login_room("r", User::new("b"), quiet());
    until(&a, "state r LOGINED");
    until(&b, "state r LOGINED");
    let (status, head) = ws_upgrade(relay.addr);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("1000019"), "{head}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if ws_upgrade(relay.addr).0 == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place is not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_whep_resource_that_never_connects_is_freed() {
    let sign = onair_engine::token::AppSign::random();
    let mut config = RelayConfig::single_app(APP_ID, sign.clone());
    config.limits.connect_timeout_ms = 2_000;
    let relay = TestRelay::start_config(config, sign);
    let rt = runtime();
    let host = relay.engine();
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360).with_fps(30),
    );
    host.login_room("w", User::new("host"), notify());
    host.start_publishing_stream("cam", PublishChannel::Main);
    until(&host, "publisher cam Publishing");
    until(&host, "pub_quality cam");

    // A real offer, answered, then never followed by ICE: the client vanished.
    let auth = format!("Bearer {}", token_for(&relay, "ghost", 3600, false));
    let (peer, offer) = rt
        .block_on(player::offer(&MediaNetwork::on(LOOPBACK)))
        .expect("offer");
    let created = http(
        &relay,
        "POST",
        "/whep/w/cam",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/sdp"),
        ],
        &offer,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    {
        let _inside = rt.enter();
        drop(peer);
    }
    until(&host, "user w ADD ghost");
    let t = Instant::now();
    until(&host, "user w DELETE ghost");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "freed {:?} after the answer",
        t.elapsed()
    );
    assert!(
        relay.metrics().contains("onair_sessions 1"),
        "{}",
        relay.metrics()
    );
}
