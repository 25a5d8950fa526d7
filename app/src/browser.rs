//! Headless Chromium driven over the DevTools protocol: Debian's `/usr/bin/chromium` with fake
//! camera and microphone, a page opened at start, and JavaScript evaluated in it. Used by the
//! browser interop tests and `onair bench weaknet --chromium` (libwebrtc as a reference).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

/// Where Debian's chromium package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A DevTools connection to a page.
pub type DevTools =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running headless Chromium with its own profile directory; killed and removed on drop.
pub struct Browser {
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
    /// Starts Chromium on `url` and waits for its DevTools port.
    pub fn open(url: &str) -> anyhow::Result<Browser> {
        if !std::path::Path::new(CHROMIUM).exists() {
            bail!("no {CHROMIUM}: Debian's chromium package (`make test` installs it)");
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("onair-chromium-{}-{nanos}", std::process::id()));
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

    /// A DevTools connection to the page.
    pub async fn devtools(&self) -> anyhow::Result<DevTools> {
        let url = self.page_ws()?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("DevTools socket {url}"))?;
        Ok(ws)
    }
}

/// Evaluates `expr` in the page (awaiting it if it is a promise) as request `id`; its value,
/// or null if there is none within 5 s.
pub async fn evaluate(ws: &mut DevTools, id: u64, expr: &str) -> Value {
    let msg = json!({"id": id, "method": "Runtime.evaluate",
        "params": {"expression": expr, "returnByValue": true, "awaitPromise": true}});
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
