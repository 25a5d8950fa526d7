//! The reference player of `onair bench weaknet --chromium`: headless Chromium (Debian's
//! `/usr/bin/chromium`, libwebrtc's receiver) playing the cell's stream over WHEP through the
//! same relay, from the player's namespace, measured through the DevTools protocol with
//! `getStats()`: frames decoded, freezes (libwebrtc's own definition), jitter-buffer delay,
//! packets lost after repair, NACKs and PLIs sent, audio concealed — and, from the page's
//! `requestVideoFrameCallback`, the frames shown, held to our own stall rule.

use std::time::{Duration, Instant};

use anyhow::bail;
use onair::browser::{Browser, evaluate};
use serde_json::{Value, json};

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

fn n(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// Plays `url` (the relay's `/live?mode=whep…` page) in Chromium: prints `ready` once frames
/// show, then measures `seconds` after a 3 s settle and returns its figures.
pub fn measure(url: &str, seconds: f64) -> anyhow::Result<Value> {
    let browser = Browser::open(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut ws = browser.devtools().await?;
        let mut id = 0;
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            id += 1;
            let s = evaluate(&mut ws, id, STATS).await;
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
        let a = evaluate(&mut ws, id, STATS).await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        id += 1;
        let b = evaluate(&mut ws, id, STATS).await;
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
