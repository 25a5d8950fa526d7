//! The reference player of `onair bench weaknet --chromium`: headless Chromium (Debian's
//! `/usr/bin/chromium`, libwebrtc's receiver) playing the cell's stream over WHEP through the
//! same relay, from the player's namespace, measured through the DevTools protocol with
//! `getStats()`: frames decoded, freezes (libwebrtc's own definition), jitter-buffer delay,
//! packets lost after repair, NACKs and PLIs sent, audio concealed — and, from the page's
//! `requestVideoFrameCallback`, the frames shown, held to our own stall rule.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";

/// What the page returns: the video and audio inbound-rtp counters.
const STATS: &str = r#"(async () => {
  const pc = window.onair && window.onair.pc;
  if (!pc) return null;
  const o = window.onair;
  const out = { frames: o.frames, stall_ms: o.stall_ms, freezes_over_500ms: o.freezes_over_500ms,
    longest_gap_ms: o.longest_gap_ms, now_ms: performance.now(), last_frame_ms: o.last_frame_ms };
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = s;
  });
  return out;
})()"#;

struct Browser {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Browser {
    fn open(url: &str) -> anyhow::Result<Browser> {
        if !std::path::Path::new(CHROMIUM).exists() {
            bail!("no {CHROMIUM} (Debian's chromium package; `make test` installs it)");
        }
        let dir =
            std::env::temp_dir().join(format!("onair-weaknet-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        let mut browser = Browser {
            child,
            dir,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        browser.port = loop {
            if let Ok(text) = std::fs::read_to_string(browser.dir.join("DevToolsActivePort"))
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                break port;
            }
            if Instant::now() > deadline {
                bail!("chromium did not open its DevTools port");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(browser)
    }

    /// The page's DevTools WebSocket URL.
    fn page_ws(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            write!(
                s,
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.port
            )?;
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
            if let Ok(Value::Array(targets)) = serde_json::from_str::<Value>(body)
                && let Some(ws) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return Ok(ws.to_string());
            }
            if Instant::now() > deadline {
                bail!("no page target in chromium");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Evaluates [`STATS`] in the page.
type DevTools =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn stats(ws: &mut DevTools, id: u64) -> Value {
    let msg = json!({"id": id, "method": "Runtime.evaluate",
        "params": {"expression": STATS, "returnByValue": true, "awaitPromise": true}});
    if ws
        .send(tokio_tungstenite::tungstenite::Message::text(
            msg.to_string(),
        ))
        .await
        .is_err()
    {
        return Value::Null;
    }
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or("")) else {
            continue;
        };
        if v["id"] == id {
            return v["result"]["result"]["value"].clone();
        }
    }
    Value::Null
}

fn n(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// Plays `url` (the relay's `/live?mode=whep…` page) in Chromium: prints `ready` once frames
/// show, then measures `seconds` after a 3 s settle and returns its figures.
pub fn measure(url: &str, seconds: f64) -> anyhow::Result<Value> {
    let browser = Browser::open(url)?;
    let ws_url = browser.page_ws()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .context("DevTools socket")?;
        let mut id = 0;
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            id += 1;
            let s = stats(&mut ws, id).await;
            if n(&s, &["frames"]) > 0.0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromium showed no frame: {s}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("ready");
        tokio::time::sleep(Duration::from_secs(3)).await;
        id += 1;
        let a = stats(&mut ws, id).await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        id += 1;
        let b = stats(&mut ws, id).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let d = |path: &[&str]| n(&b, path) - n(&a, path);
        let freezes_s = d(&["video", "totalFreezesDuration"]);
        // Our stall rule on the frames Chromium showed (a frame-less tail counts too).
        let tail = n(&b, &["now_ms"]) - n(&b, &["last_frame_ms"]);
        let stall_ms = (d(&["stall_ms"]) + if tail > 2000.0 / 30.0 + 50.0 { tail } else { 0.0 })
            .min(elapsed * 1000.0);
        let emitted = d(&["video", "jitterBufferEmittedCount"]).max(1.0);
        let samples = d(&["audio", "totalSamplesReceived"]).max(1.0);
        Ok(json!({
            "stall_ratio": (stall_ms / 1000.0 / elapsed * 1e4).round() / 1e4,
            "freezes_over_500ms": d(&["freezes_over_500ms"]),
            "fps": (d(&["frames"]) / elapsed * 10.0).round() / 10.0,
            "fps_decoded": (d(&["video", "framesDecoded"]) / elapsed * 10.0).round() / 10.0,
            "libwebrtc_freezes": d(&["video", "freezeCount"]),
            "freeze_ratio": (freezes_s / elapsed * 1e4).round() / 1e4,
            "jitter_buffer_ms": (d(&["video", "jitterBufferDelay"]) / emitted * 1e4).round() / 10.0,
            "packets_lost_after_repair": d(&["video", "packetsLost"]),
            "nacks_sent": d(&["video", "nackCount"]),
            "keyframes_requested": d(&["video", "pliCount"]) + d(&["video", "firCount"]),
            "audio_concealed_share": (d(&["audio", "concealedSamples"]) / samples * 1e4).round() / 1e4,
        }))
    })
}
