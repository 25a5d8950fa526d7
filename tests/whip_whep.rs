//! WHIP and WHEP: a standards client publishes with an SDP offer over HTTP while an engine
//! plays it, and plays over HTTP what an engine publishes. The HTTP client here is a bare
//! HTTP/1.1 request over a socket; the WebRTC side is a real peer connection.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use onair_engine::live::PlayOutputs;
use onair_engine::live::{player, publisher};
use onair_engine::media::capture::{Outputs, test as testsrc};
use onair_engine::media::channel::Fanout;
use onair_engine::media::stamp;
use onair_engine::token::{self, Claims};
use onair_engine::{PlayerConfig, PublishChannel, User, VideoConfig, VideoPreset};
use onair_transport::peer::MediaNetwork;

fn token_for(relay: &TestRelay, user: &str, room: &str, publish: bool) -> String {
    let mut c = Claims::new(APP_ID, user, token::unix_now(), 3600);
    c.room_id = Some(room.into());
    c.privilege.publish = publish;
    token::mint(&c, &relay.sign)
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[test]
fn a_whip_publisher_is_a_user_and_a_stream_that_engines_play() {
    let relay = TestRelay::start();
    let rt = runtime();
    let viewer = relay.engine();
    viewer.login_room("w", User::new("viewer"), notify());
    until(&viewer, "state w LOGINED");
    let frames = viewer.play_frames("whip-cam");

    // Refusals first: no token, a token without publish, a malformed one.
    let bare = http(
        &relay,
        "POST",
        "/whip/w/whip-cam",
        &[("Content-Type", "application/sdp")],
        "v=0",
    );
    assert_eq!(bare.status, 401, "{}", bare.body);
    assert!(bare.body.contains("1002067"), "{}", bare.body);
    let viewer_only = token_for(&relay, "whip-host", "w", false);
    let auth = format!("Bearer {viewer_only}");
    let r = http(
        &relay,
        "POST",
        "/whip/w/whip-cam",
        &[("Authorization", &auth)],
        "v=0",
    );
    assert_eq!(
        (r.status, r.body.contains("1003072")),
        (403, true),
        "{}",
        r.body
    );
    let r = http(
        &relay,
        "POST",
        "/whip/w/whip-cam",
        &[("Authorization", "Bearer x.y.z")],
        "v=0",
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // A real publisher: test pattern → H.264 over WebRTC, negotiated over WHIP.
    let video = Arc::new(Fanout::default());
    let audio = Arc::new(Fanout::default());
    let config = VideoConfig::preset(VideoPreset::P360).with_fps(30);
    let (video_rx, audio_rx) = (video.subscribe(2), audio.subscribe(8));
    let _capture = testsrc::start_video(
        config,
        Outputs {
            video: Some(video),
            audio: None,
            on_error: Arc::new(|_| {}),
        },
    );
    let (events_tx, _events_rx) = tokio::sync::mpsc::channel(64);
    let (peer, offer) = rt
        .block_on(publisher::offer(
            &MediaNetwork::on(LOOPBACK),
            "whip-cam",
            1,
            1,
            events_tx,
            Default::default(),
        ))
        .expect("offer");
    let auth = format!("Bearer {}", token_for(&relay, "whip-host", "w", true));
    let created = http(
        &relay,
        "POST",
        "/whip/w/whip-cam",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/sdp"),
        ],
        &offer,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    let location = created.header("location").expect("Location").to_string();
    assert!(location.starts_with("/whip/resource/"), "{location}");
    let _media = rt.block_on(async {
        peer.accept(created.body.clone()).await.expect("answer");
        peer.start_media(config, video_rx, audio_rx, Default::default())
            .await
            .expect("media")
    });

    // The room sees a user and a stream, and the engine plays it.
    let seen = until(&viewer, "stream w ADD whip-cam@whip-host");
    assert!(
        seen.contains(&"user w ADD whip-host".to_string()),
        "{seen:?}"
    );
    viewer.start_playing_stream("whip-cam", PlayerConfig::default());
    until(&viewer, "first_video whip-cam");
    let f = frames
        .recv_timeout(Duration::from_secs(2))
        .expect("a frame");
    assert!(
        stamp::read(&f).is_some(),
        "the stamped test pattern came through"
    );

    // Only the holder of the resource URL can end it; then the room hears it go.
    let wrong = http(&relay, "DELETE", "/whip/resource/1-nope", &[], "");
    assert_eq!(wrong.status, 404);
    let deleted = http(&relay, "DELETE", &location, &[], "");
    assert_eq!(deleted.status, 200);
    let seen = until(&viewer, "user w DELETE whip-host");
    assert!(
        seen.contains(&"stream w DELETE whip-cam@whip-host".to_string()),
        "{seen:?}"
    );
    rt.block_on(peer.close());
}

#[test]
fn a_whep_player_receives_what_an_engine_publishes() {
    let relay = TestRelay::start();
    let rt = runtime();
    let host = relay.engine();
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360).with_fps(30),
    );
    host.login_room("w", User::new("host"), notify());
    host.start_publishing_stream("eng-cam", PublishChannel::Main);
    until(&host, "publisher eng-cam Publishing");

    let auth = format!("Bearer {}", token_for(&relay, "whep-viewer", "w", false));
    let missing = http(
        &relay,
        "POST",
        "/whep/w/no-such",
        &[("Authorization", &auth)],
        "v=0",
    );
    assert_eq!(missing.status, 404, "{}", missing.body);

    // "Publishing" means the publisher's connection is up; the room hears of the stream (and
    // WHEP can play it) once its first packets reach the relay, a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut peer, created) = loop {
        let (peer, offer) = rt
            .block_on(player::offer(&MediaNetwork::on(LOOPBACK)))
            .expect("offer");
        let r = http(
            &relay,
            "POST",
            "/whep/w/eng-cam",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/sdp"),
            ],
            &offer,
        );
        if r.status != 404 || Instant::now() > deadline {
            break (peer, r);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(created.status, 201, "{}", created.body);
    let location = created.header("location").expect("Location").to_string();
    let outputs = PlayOutputs::default();
    let frames = outputs.video.subscribe(2);
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    rt.block_on(peer.accept(
        created.body.clone(),
        "eng-cam".into(),
        1,
        &outputs,
        tx,
        &onair_engine::room::sink::EventSink::new(16).0,
    ))
    .expect("answer");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut numbers = Vec::new();
    while Instant::now() < deadline && numbers.len() < 30 {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(200))
            && let Some(s) = stamp::read(&f)
        {
            numbers.push(s.frame_number);
        }
    }
    assert!(numbers.len() >= 30, "frames over WHEP: {numbers:?}");
    assert!(
        numbers.windows(2).all(|w| w[1] > w[0]),
        "in order: {numbers:?}"
    );
    // The WHEP viewer is a user in the room too.
    let seen = until(&host, "user w ADD whep-viewer");
    assert!(!seen.is_empty());
    assert_eq!(http(&relay, "DELETE", &location, &[], "").status, 200);
    until(&host, "user w DELETE whep-viewer");
    drop(peer);

    // A WHEP player that vanishes without DELETE (its connection closes) is noticed by the
    // relay: its session ends and the room sees it leave.
    let auth = format!("Bearer {}", token_for(&relay, "whep-gone", "w", false));
    let (mut peer, offer) = rt
        .block_on(player::offer(&MediaNetwork::on(LOOPBACK)))
        .expect("offer");
    let created = http(
        &relay,
        "POST",
        "/whep/w/eng-cam",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/sdp"),
        ],
        &offer,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let outputs = PlayOutputs::default();
    let frames = outputs.video.subscribe(2);
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    rt.block_on(peer.accept(
        created.body.clone(),
        "eng-cam".into(),
        1,
        &outputs,
        tx,
        &onair_engine::room::sink::EventSink::new(16).0,
    ))
    .expect("answer");
    assert!(
        frames.recv_timeout(Duration::from_secs(5)).is_some(),
        "frames flow"
    );
    until(&host, "user w ADD whep-gone");
    {
        // Dropping the player closes its connection (on the runtime it entered).
        let _inside = rt.enter();
        drop(peer);
    }
    until(&host, "user w DELETE whep-gone");
    // The stream itself is untouched: the publisher is still live.
    assert!(
        !drain_for(&host, Duration::from_millis(300))
            .iter()
            .any(|e| e.starts_with("publisher eng-cam NoPublish")),
        "the publisher kept publishing"
    );
}

#[test]
fn cors_preflight_allows_web_pages() {
    let relay = TestRelay::start();
    let r = http(
        &relay,
        "OPTIONS",
        "/whip/w/x",
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        "",
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
}
