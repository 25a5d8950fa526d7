//! Interop with a real browser: headless Chromium (fake camera and microphone) publishes over
//! WHIP while an engine plays it, and plays over WHEP what an engine publishes. The page is the
//! relay's own `/live`; the test reads its state through the DevTools protocol.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use onair_engine::token::{self, Claims};
use onair_engine::{PlayerConfig, PublishChannel, User, VideoConfig, VideoPreset};

const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Browser {
    fn open(url: &str) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "Debian's chromium is needed for this test: `make test` (or .ci/install-deps test) installs it"
        );
        let dir = std::env::temp_dir().join(format!(
            "onair-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("DevToolsActivePort"))
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser { child, dir, port }
    }

    /// The page's DevTools WebSocket URL.
    fn page_ws(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("devtools");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            write!(
                s,
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.port
            )
            .expect("write");
            // DevTools may keep the connection open: read what arrives, until a pause.
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            let raw = String::from_utf8_lossy(&raw);
            let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            if let Ok(serde_json::Value::Array(targets)) =
                serde_json::from_str::<serde_json::Value>(body)
                && let Some(ws) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return ws.to_string();
            }
            assert!(Instant::now() < deadline, "no page target in chromium");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Evaluates `expr` in the page until `done` accepts its value (or the time runs out).
    fn wait_for(
        &self,
        expr: &str,
        secs: u64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let ws_url = self.page_ws();
        runtime().block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
                .await
                .unwrap_or_else(|e| panic!("devtools socket {ws_url}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut id = 0u64;
            let mut last = serde_json::Value::Null;
            while Instant::now() < deadline {
                id += 1;
                let msg = serde_json::json!({"id": id, "method": "Runtime.evaluate",
                    "params": {"expression": expr, "returnByValue": true}});
                ws.send(tokio_tungstenite::tungstenite::Message::text(
                    msg.to_string(),
                ))
                .await
                .expect("send");
                while let Ok(Some(Ok(m))) =
                    tokio::time::timeout(Duration::from_secs(5), ws.next()).await
                {
                    let Ok(v) =
                        serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or(""))
                    else {
                        continue;
                    };
                    if v["id"] == id {
                        last = v["result"]["result"]["value"].clone();
                        break;
                    }
                }
                if done(&last) {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            last
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
        "http://{}/live?mode=whip&room=b&stream=chrome-cam&token={t}",
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
        "http://{}/live?mode=whep&room=b&stream=eng-cam&token={t}",
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
