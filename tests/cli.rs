//! The `onair` binary as a user runs it: serve, watch, token, errors, bench.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn onair() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onair"))
}

fn temp_file(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("onair-test-{}-{nanos}-{name}", std::process::id()))
}

/// `onair serve` on an ephemeral port with its own development app; killed on drop.
struct Serve {
    child: Child,
    url: String,
    dev_file: PathBuf,
}

impl Serve {
    fn start() -> Serve {
        let dev_file = temp_file("dev-app.toml");
        let mut child = onair()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("ONAIR_DEV_APP_FILE", &dev_file)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn onair serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut url = None;
        while url.is_none() && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("relay listening: signaling ") {
                url = rest.split(' ').next().map(String::from);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            url: url.expect("serve prints its URL"),
            dev_file,
        }
    }

    fn client(&self) -> Command {
        let mut c = onair();
        c.env("ONAIR_DEV_APP_FILE", &self.dev_file)
            .env("ONAIR_SERVER", &self.url)
            .env("RUST_LOG", "error");
        c
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.dev_file);
    }
}

/// Whether the command succeeded, and its standard output; on failure, with the end of its
/// standard error after it (so an assert on `ok` shows why).
fn stdout_of(mut c: Command) -> (bool, String) {
    let out = c.output().expect("run onair");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // The last lines: FFmpeg's decoder may have printed many before the error.
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        text.push_str("\n--- stderr (last lines) ---\n");
        for line in tail.into_iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
    }
    (out.status.success(), text)
}

#[test]
fn serve_then_watch_prints_the_room_flow() {
    let serve = Serve::start();
    let mut host = serve.client();
    host.args([
        "watch",
        "--room",
        "demo",
        "--user",
        "host",
        "--duration",
        "3",
    ]);
    let host = host.stdout(Stdio::piped()).spawn().expect("spawn watch");
    std::thread::sleep(Duration::from_millis(800));
    let mut guest = serve.client();
    guest.args([
        "watch",
        "--room",
        "demo",
        "--user",
        "guest",
        "--duration",
        "0.5",
    ]);
    let (ok, out) = stdout_of(guest);
    assert!(ok, "{out}");
    assert!(
        out.contains("room_state room=demo reason=LOGINING(0)"),
        "{out}"
    );
    assert!(
        out.contains("room_state room=demo reason=LOGINED(1)"),
        "{out}"
    );
    assert!(
        out.contains("room_user room=demo ADD users=[host]"),
        "{out}"
    );
    assert!(out.contains("reason=LOGOUT(7)"), "{out}");
    let host = host.wait_with_output().expect("watch ends");
    let out = String::from_utf8_lossy(&host.stdout);
    assert!(host.status.success(), "{out}");
    assert!(
        out.contains("room_user room=demo ADD users=[guest]"),
        "{out}"
    );
    assert!(
        out.contains("room_user room=demo DELETE users=[guest]"),
        "{out}"
    );
}

#[test]
fn minted_tokens_log_in_and_wrong_ones_fail_with_codes() {
    let serve = Serve::start();
    let mut mint = serve.client();
    mint.args([
        "token",
        "--user-id",
        "carol",
        "--room",
        "stage",
        "--ttl",
        "1h",
    ]);
    let (ok, token) = stdout_of(mint);
    assert!(ok);
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let mut good = serve.client();
    good.args([
        "watch",
        "--room",
        "stage",
        "--user",
        "carol",
        "--token",
        &token,
        "--duration",
        "0.5",
    ])
    .env("ONAIR_APP_SIGN", "");
    let (ok, out) = stdout_of(good);
    assert!(ok, "{out}");
    assert!(out.contains("reason=LOGINED(1)"), "{out}");

    let mut wrong_room = serve.client();
    wrong_room.args([
        "watch",
        "--room",
        "backstage",
        "--user",
        "carol",
        "--token",
        &token,
    ]);
    let (ok, out) = stdout_of(wrong_room);
    assert!(!ok, "a failed login exits non-zero");
    assert!(
        out.contains("reason=LOGIN_FAILED(2) error=1002036(TokenWrongRoom)"),
        "{out}"
    );
}

#[test]
fn errors_markdown_is_docs_errors_md() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args(["errors", "--markdown"]);
        c
    });
    assert!(ok);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ERRORS.md"))
        .expect("docs/ERRORS.md");
    assert_eq!(
        doc, out,
        "docs/ERRORS.md is stale: run `onair errors --markdown > docs/ERRORS.md`"
    );
}

#[test]
fn bench_signal_prints_its_json_shape() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args([
            "bench",
            "signal",
            "--clients",
            "20",
            "--rooms",
            "4",
            "--seconds",
            "0.3",
            "--json",
        ])
        .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["clients"], 20);
    assert!(
        v["login_ms"]["p50"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );
    assert!(
        v["login_ms"]["p99"].as_f64() >= v["login_ms"]["p50"].as_f64(),
        "{v}"
    );
    assert!(v["messages_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(v["cores"].as_u64().is_some_and(|c| c >= 1), "{v}");
}

#[test]
fn bench_media_prints_its_json_shape() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args(["bench", "media", "--frames", "20", "--json"])
            .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for key in [
        "encode_decode_720p_ms",
        "encode_decode_1080p_ms",
        "channel_handoff_ns",
    ] {
        assert!(
            v[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {v}"
        );
        assert!(
            v[key]["p99"].as_f64() >= v[key]["p50"].as_f64(),
            "{key}: {v}"
        );
    }
    assert!(v["fps_1080p"].as_f64().is_some_and(|x| x > 0.0), "{v}");
}

#[test]
fn devices_lists_or_names_the_missing_kind() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.arg("devices");
        c
    });
    assert!(ok, "{out}");
    assert!(out.contains("cameras"), "{out}");
    assert!(out.contains("microphones"), "{out}");
}

#[test]
fn publish_and_play_from_the_command_line() {
    let serve = Serve::start();
    let mut publisher = serve.client();
    publisher.args([
        "publish",
        "--room",
        "cli",
        "--stream",
        "cli-cam",
        "--preset",
        "180p",
        "--fps",
        "15",
        "--duration",
        "6",
    ]);
    let publisher = publisher
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn publish");
    let mut player = serve.client();
    player.args([
        "play",
        "--room",
        "cli",
        "--stream",
        "cli-cam",
        "--stats",
        "--duration",
        "4",
    ]);
    let (ok, out) = stdout_of(player);
    assert!(ok, "{out}");
    assert!(
        out.contains("player_state stream=cli-cam state=Playing"),
        "{out}"
    );
    assert!(
        out.contains("player_video_first_frame stream=cli-cam"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("stats fps=1")),
        "a stats line with frames: {out}"
    );
    let out = publisher.wait_with_output().expect("publish ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("publisher_state stream=cli-cam state=Publishing"),
        "{text}"
    );
}

#[test]
fn bench_latency_and_fanout_print_their_json_shape() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args([
            "bench",
            "latency",
            "--seconds",
            "1",
            "--starts",
            "2",
            "--json",
        ])
        .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for key in ["capture_to_decoded_ms", "floor_ms", "first_frame_ms"] {
        assert!(
            v[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {v}"
        );
        assert!(
            v[key]["p99"].as_f64() >= v[key]["p50"].as_f64(),
            "{key}: {v}"
        );
    }
    assert!(v["frames_sent"].as_u64().is_some_and(|n| n > 10), "{v}");
    assert_eq!(v["frames_lost"], 0, "{v}");
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args([
            "bench",
            "fanout",
            "--steps",
            "3,6",
            "--seconds",
            "1",
            "--json",
        ])
        .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    // The shape; how many players are sustained depends on how busy the machine is (the
    // suite runs these benches side by side), so only its bounds are checked here.
    assert!(v["players"].as_u64().is_some_and(|n| n <= 6), "{v}");
    // The total loss is what the steps lost, added up (each player counts its own gaps).
    let steps = v["steps"].as_array().expect("steps");
    let step_loss: u64 = steps.iter().filter_map(|s| s["loss"].as_u64()).sum();
    assert_eq!(v["loss"].as_u64(), Some(step_loss), "{v}");
    // A step that is sustained lost nothing; the count sustained is the last such step.
    for s in steps {
        if s["players"].as_u64() <= v["players"].as_u64() {
            assert_eq!(s["loss"], 0, "{v}");
        }
    }
    assert!(v["relay_cpu_pct_per_player"].as_f64().is_some(), "{v}");
    let first = &v["steps"][0];
    assert_eq!(first["players"], 3, "{v}");
    assert!(
        first["packets_per_s_per_player"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "the players received the stream: {v}"
    );
    assert!(
        first["relay_cpu_pct"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );
}

#[test]
fn bench_ui_prints_its_json_shape() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args([
            "bench",
            "ui",
            "--streams",
            "2",
            "--rooms",
            "2",
            "--seconds",
            "1",
            "--json",
        ])
        .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["streams"], 2, "{v}");
    for key in [
        "ui_frame_ms",
        "upload_ms_per_frame",
        "capture_to_texture_ms",
    ] {
        assert!(
            v[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {v}"
        );
        assert!(
            v[key]["p99"].as_f64() >= v[key]["p50"].as_f64(),
            "{key}: {v}"
        );
    }
    assert!(v["cores"].as_u64().is_some_and(|c| c >= 1), "{v}");
    // What the UI drew against what it was offered: both measured, the share consistent.
    let ui_fps = v["ui_fps"].as_f64().expect("ui_fps");
    assert!(ui_fps > 0.0, "{v}");
    let offered = v["video_frames_offered_per_s"].as_f64().expect("offered");
    let shown = v["video_frames_shown_per_s"].as_f64().expect("shown");
    assert!(offered > 0.0, "the decoders delivered frames: {v}");
    assert!(
        shown <= offered * 1.05 + 1.0,
        "cannot show more than offered: {v}"
    );
    let share = v["shown_share"].as_f64().expect("shown_share");
    assert!((share - shown / offered).abs() < 0.05, "{v}");
    assert_eq!(
        v["goal_met"]["ui_fps"].as_bool(),
        Some(ui_fps >= v["goal"]["ui_fps"].as_f64().unwrap_or(f64::MAX)),
        "{v}"
    );
    // Capture → texture cannot be shorter than capture → decoded, which is at least the codec.
    assert!(
        v["capture_to_texture_ms"]["p50"].as_f64() > Some(0.5),
        "{v}"
    );
}

#[test]
fn bench_soak_prints_its_json_shape_and_comes_back_to_baseline() {
    let (ok, out) = stdout_of({
        let mut c = onair();
        c.args([
            "bench",
            "soak",
            "--minutes",
            "0.1",
            "--warmup-seconds",
            "4",
            "--users",
            "40",
            "--rooms",
            "4",
            "--publishers",
            "1",
            "--players",
            "2",
            "--json",
        ])
        .env("RUST_LOG", "error");
        c
    });
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["back_to_baseline"]["heap"], true, "{v}");
    assert!(v["logins"].as_u64().is_some_and(|n| n >= 40), "{v}");
    assert!(v["plays"].as_u64().is_some_and(|n| n >= 1), "{v}");
    for k in ["fresh", "baseline", "end"] {
        assert!(v[k]["rss_mib"].as_f64().is_some_and(|m| m > 1.0), "{v}");
        // The relay's heap in use, from its /metrics (glibc): more than the fresh relay's
        // few hundred KiB once it holds a publisher.
        assert!(
            v[k]["heap_in_use_mib"].as_f64().is_some_and(|m| m > 0.1),
            "{v}"
        );
        assert!(v[k]["tasks"].as_u64().is_some_and(|t| t > 0), "{v}");
    }
    assert!(
        v["under_load"]["sessions"]["p50"]
            .as_f64()
            .is_some_and(|s| s >= 10.0),
        "{v}"
    );
}

#[test]
fn the_development_app_file_is_readable_by_its_owner_only_and_tokens_can_list_streams() {
    use std::os::unix::fs::PermissionsExt as _;
    let serve = Serve::start();
    let mode = std::fs::metadata(&serve.dev_file)
        .expect("the development app file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // A token limited to one stream carries the list.
    let out = serve
        .client()
        .args([
            "token",
            "--user-id",
            "host",
            "--publish",
            "--stream-id",
            "cam",
        ])
        .output()
        .expect("onair token");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let payload = token.split('.').nth(1).expect("a JWT");
    use base64::Engine as _;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON");
    assert_eq!(claims["stream_id_list"], serde_json::json!(["cam"]));
}

#[test]
fn message_and_room_info_reach_a_watcher_and_print_their_results() {
    let serve = Serve::start();
    let mut watcher = serve.client();
    watcher.args(["watch", "--room", "chat", "--user", "w", "--duration", "4"]);
    let watcher = watcher.stdout(Stdio::piped()).spawn().expect("spawn watch");
    std::thread::sleep(Duration::from_millis(800));
    let (ok, out) = stdout_of({
        let mut c = serve.client();
        c.args(["message", "--room", "chat", "--broadcast", "hello room"]);
        c
    });
    assert!(ok && out.contains("sent: message_id=1"), "{out}");
    let (ok, out) = stdout_of({
        let mut c = serve.client();
        c.args(["room-info", "--room", "chat", "--set", "topic=launch"]);
        c
    });
    assert!(ok && out.contains("set: topic"), "{out}");
    let (ok, out) = stdout_of({
        let mut c = serve.client();
        c.args(["room-info", "--room", "chat"]);
        c
    });
    assert!(ok && out.contains("topic=\"launch\""), "{out}");
    // Too long: refused with its code, non-zero exit.
    let long = "x".repeat(1025);
    let out = serve
        .client()
        .args(["message", "--room", "chat", "--barrage", &long])
        .output()
        .expect("onair message");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1009001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let watched = watcher.wait_with_output().expect("watch ends");
    let out = String::from_utf8_lossy(&watched.stdout);
    assert!(out.contains("im_broadcast room=chat"), "{out}");
    assert!(out.contains("\"hello room\""), "{out}");
    assert!(
        out.contains("room_extra_info room=chat topic=\"launch\""),
        "{out}"
    );
}

#[test]
fn sei_mutes_levels_and_quality_reach_a_watcher_that_plays() {
    let serve = Serve::start();
    let mut host = serve.client();
    host.args([
        "publish",
        "--room",
        "sei",
        "--stream",
        "cam",
        "--user",
        "host",
        "--preset",
        "180p",
        "--fps",
        "15",
        "--sei",
        "lyric",
        "--mute-mic",
        "--duration",
        "9",
    ]);
    let host = host.stdout(Stdio::piped()).spawn().expect("spawn publish");
    std::thread::sleep(Duration::from_millis(500));
    let mut watcher = serve.client();
    watcher.args([
        "watch",
        "--room",
        "sei",
        "--user",
        "w",
        "--play",
        "cam",
        "--levels",
        "500",
        "--duration",
        "7",
    ]);
    let watched = watcher.output().expect("watch");
    let out = String::from_utf8_lossy(&watched.stdout);
    // SEI as hex and text, with the frame's pts; the muted mic; the host's upstream quality;
    // levels (ours silent, the muted stream's near silence).
    assert!(out.contains("player_sei stream=cam"), "{out}");
    assert!(out.contains("text=\"lyric #"), "{out}");
    assert!(out.contains("hex=6c79726963"), "{out}");
    assert!(
        out.contains("remote_mic_state stream=cam state=mute"),
        "{out}"
    );
    assert!(out.contains("network_quality user=\"host\""), "{out}");
    assert!(out.contains("captured_sound_level level=0.0"), "{out}");
    let published = host.wait_with_output().expect("publish ends");
    let out = String::from_utf8_lossy(&published.stdout);
    assert!(out.contains("sei sent \"lyric #"), "{out}");
}
