//! Interop with a real browser: headless Chromium (fake camera and microphone) publishes over
//! WHIP while an engine plays it, and plays over WHEP what an engine publishes. The page is the
//! relay's own `/live`; the test reads its state through the DevTools protocol.

mod common;

use std::time::{Duration, Instant};

use common::*;
use onair_engine::token::{self, Claims};
use onair_engine::{PlayerConfig, PublishChannel, User, VideoConfig, VideoPreset};

/// The browser, failing the test where it cannot start.
struct Browser(onair::browser::Browser);

impl Browser {
    fn open(url: &str) -> Browser {
        Browser(onair::browser::Browser::open(url).unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// Evaluates `expr` in the page until `done` accepts its value (or the time runs out).
    fn wait_for(
        &self,
        expr: &str,
        secs: u64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        runtime().block_on(async {
            let mut ws = self.0.devtools().await.unwrap_or_else(|e| panic!("{e:#}"));
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut id = 0u64;
            let mut last = serde_json::Value::Null;
            while Instant::now() < deadline {
                id += 1;
                last = onair::browser::evaluate(&mut ws, id, expr).await;
                if done(&last) {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            last
        })
    }
}

fn token_for(relay: &TestRelay, user: &str, room: &str, publish: bool) -> String {
    let mut c = Claims::new(APP_ID, user, token::unix_now(), 3600);
    c.room_id = Some(room.into());
    c.privilege.publish = publish;
    token::mint(&c, &relay.sign)
}

#[test]
fn chromium_publishes_over_whip_and_an_engine_plays_it() {
    let relay = TestRelay::start();
    let viewer = relay.engine();
    viewer.login_room("b", User::new("viewer"), notify());
    until(&viewer, "state b LOGINED");
    let frames = viewer.play_frames("chrome-cam");
    let t = token_for(&relay, "chrome-host", "b", true);
    let browser = Browser::open(&format!(
        "http://{}/live?mode=whip&room=b&stream=chrome-cam#token={t}",
        relay.addr
    ));
    // The browser appears as a user with a stream; the engine plays it.
    until(&viewer, "stream b ADD chrome-cam@chrome-host");
    viewer.start_playing_stream("chrome-cam", PlayerConfig::default());
    until(&viewer, "first_video chrome-cam");
    let t0 = Instant::now();
    let mut decoded = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        if frames.recv_timeout(Duration::from_millis(200)).is_some() {
            decoded += 1;
        }
    }
    assert!(
        decoded >= 10,
        "the engine decoded Chromium's H.264: {decoded} frames in 2 s"
    );
    let state = browser.wait_for("window.onair", 10, |v| v["state"] == "connected");
    assert_eq!(state["state"], "connected", "{state}");
    assert!(state["error"].is_null(), "{state}");
}

#[test]
fn an_engine_publishes_and_chromium_plays_over_whep() {
    let relay = TestRelay::start();
    let host = relay.engine();
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360).with_fps(30),
    );
    host.login_room("b", User::new("host"), notify());
    host.start_publishing_stream("eng-cam", PublishChannel::Main);
    until(&host, "publisher eng-cam Publishing");
    std::thread::sleep(Duration::from_millis(300)); // let the first packets reach the relay
    let t = token_for(&relay, "chrome-viewer", "b", false);
    let browser = Browser::open(&format!(
        "http://{}/live?mode=whep&room=b&stream=eng-cam#token={t}",
        relay.addr
    ));
    let state = browser.wait_for("window.onair", 30, |v| {
        v["frames"].as_u64().unwrap_or(0) >= 30
    });
    assert!(state["error"].is_null(), "{state}");
    assert!(
        state["frames"].as_u64().unwrap_or(0) >= 30,
        "Chromium rendered the engine's stream: {state}"
    );
    until(&host, "user b ADD chrome-viewer");
}

#[test]
fn the_live_page_takes_its_token_from_the_fragment_and_refuses_it_in_the_query() {
    let relay = TestRelay::start();
    let t = token_for(&relay, "leaky", "b", false);
    // In the query string (which servers log): refused, nothing sent to the relay.
    let page = Browser::open(&format!(
        "http://{}/live?mode=whep&room=b&stream=none&token={t}",
        relay.addr
    ));
    let error = page.wait_for("window.onair && window.onair.error", 10, |v| v.is_string());
    assert_eq!(error, serde_json::json!("token in the query string"));
    assert!(!relay.metrics().contains("onair_sessions 1"));
    drop(page);
    // In the fragment: read, and used (the stream does not exist: the relay answers 404).
    let page = Browser::open(&format!(
        "http://{}/live?mode=whep&room=b&stream=none#token={t}",
        relay.addr
    ));
    let error = page.wait_for("window.onair && window.onair.error", 10, |v| v.is_string());
    assert!(error.as_str().is_some_and(|e| e.contains("404")), "{error}");
    // And the address bar no longer shows it.
    let href = page.wait_for("location.href", 5, |v| v.is_string());
    assert!(
        !href.as_str().unwrap_or_default().contains("token"),
        "{href}"
    );
}

#[test]
fn chromium_publishes_simulcast_over_whip_and_engines_get_its_layers() {
    let relay = TestRelay::start();
    let big = relay.engine();
    let small = relay.engine();
    for (e, name) in [(&big, "big"), (&small, "small")] {
        e.login_room("b", User::new(name), notify());
        until(e, "state b LOGINED");
    }
    let big_frames = big.play_frames("chrome-cam");
    let small_frames = small.play_frames("chrome-cam");
    let t = token_for(&relay, "chrome-host", "b", true);
    let _browser = Browser::open(&format!(
        "http://{}/live?mode=whip&room=b&stream=chrome-cam&simulcast=1#token={t}",
        relay.addr
    ));
    until(&big, "stream b ADD chrome-cam@chrome-host");
    for (e, layer) in [
        (&big, onair_engine::VideoLayer::Big),
        (&small, onair_engine::VideoLayer::Smallest),
    ] {
        e.start_playing_stream(
            "chrome-cam",
            PlayerConfig {
                video_layer: layer,
                ..Default::default()
            },
        );
    }
    // Chromium opens its layers as its encoder ramps up: wait for each player's size to
    // settle on the layer it asked for.
    let widest = |frames: &onair_engine::media::FrameReceiver<_>, want_small: bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(f) = frames.recv_timeout(Duration::from_millis(200))
                as Option<onair_engine::media::SharedVideoFrame>
            {
                last = Some((f.width, f.height));
                // (The big player may first get the middle layer, 640 wide, before Chromium
                // opens its full one: a wait that ended at "wider than 400" raced it.)
                let settled = if want_small {
                    f.width <= 400
                } else {
                    f.width >= 960
                };
                if settled {
                    break;
                }
            }
        }
        last
    };
    let big_size = widest(&big_frames, false).expect("the big player got frames");
    let small_size = widest(&small_frames, true).expect("the small player got frames");
    eprintln!("big {big_size:?}, smallest {small_size:?}");
    assert!(big_size.0 >= 960, "the full layer: {big_size:?}");
    assert!(small_size.0 <= 400, "the quarter layer: {small_size:?}");
}
