//! Shared test helpers: start a relay on loopback, make engines and raw signaling clients,
//! wait for events with a timeout, and describe events briefly so sequences read like the seed.
#![allow(dead_code)]

pub mod http;
pub mod netns;

#[allow(unused_imports)]
pub use http::{HttpResponse, http, http_at};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use onair_engine::messages::{PROTOCOL_VERSION, RequestBody, ResponseBody};
use onair_engine::signal::SignalClient;
use onair_engine::token::AppSign;
use onair_engine::{Engine, EngineProfile, Event, RoomConfig, UpdateType, User};
use onair_relay::{AppConfig, EmbeddedRelay, Limits, RelayConfig};

/// The app every test relay serves.
pub const APP_ID: u32 = 1;

/// A relay on an ephemeral loopback port, with its app's sign.
pub struct TestRelay {
    pub relay: Option<EmbeddedRelay>,
    pub sign: AppSign,
    pub config: RelayConfig,
    pub addr: SocketAddr,
}

impl TestRelay {
    pub fn start() -> TestRelay {
        Self::start_with(Limits::default())
    }

    pub fn start_with(limits: Limits) -> TestRelay {
        let sign = AppSign::random();
        let mut config = RelayConfig::single_app(APP_ID, sign.clone());
        config.limits = limits;
        Self::start_config(config, sign)
    }

    pub fn start_config(config: RelayConfig, sign: AppSign) -> TestRelay {
        // RUST_LOG=onair_engine=debug shows the relay's and engines' logs in failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let relay = EmbeddedRelay::start(config.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("relay starts");
        let addr = relay.local_addr();
        TestRelay {
            relay: Some(relay),
            sign,
            config,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn metrics(&self) -> String {
        self.relay
            .as_ref()
            .map(|r| r.metrics_text())
            .unwrap_or_default()
    }

    /// Stops the relay (every client sees its socket close).
    pub fn stop(&mut self) {
        if let Some(r) = self.relay.take() {
            r.stop();
        }
    }

    /// Starts it again on the same port with a fresh state.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match EmbeddedRelay::start(self.config.clone(), self.addr) {
                Ok(r) => {
                    self.relay = Some(r);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebind {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot restart relay on {}: {e}", self.addr),
            }
        }
    }

    /// An engine logging in with the app sign.
    pub fn engine(&self) -> Engine {
        self.engine_with(|_| {})
    }

    pub fn engine_with(&self, f: impl FnOnce(&mut EngineProfile)) -> Engine {
        let mut profile = EngineProfile {
            app_id: APP_ID,
            app_sign: self.sign.to_hex(),
            server: self.url(),
            ..Default::default()
        };
        f(&mut profile);
        Engine::create(profile).expect("engine")
    }

    /// A raw signaling client that has said hello.
    pub async fn raw_client(&self) -> SignalClient {
        let mut c = SignalClient::connect(&self.url()).await.expect("connect");
        let hello = c
            .request(RequestBody::Hello {
                protocol: PROTOCOL_VERSION,
                app_id: APP_ID,
                resume: None,
            })
            .await
            .expect("hello");
        assert!(matches!(hello, ResponseBody::Hello { .. }));
        c
    }

    /// A raw client logged into `room` as `user` with the app sign.
    pub async fn raw_login(&self, room: &str, user: &str) -> SignalClient {
        SignalClient::join(
            &self.url(),
            APP_ID,
            room,
            User::new(user),
            &self.sign.to_hex(),
        )
        .await
        .expect("join")
        .0
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn notify() -> RoomConfig {
    RoomConfig {
        token: None,
        is_user_status_notify: true,
    }
}

pub fn quiet() -> RoomConfig {
    RoomConfig::default()
}

/// An event in a few words: `state r1 LOGINED 0`, `user r1 ADD bob`, `stream r1 DELETE s1@bob`.
pub fn brief(e: &Event) -> String {
    let t = |u: &UpdateType| match u {
        UpdateType::Add => "ADD",
        UpdateType::Delete => "DELETE",
    };
    match e {
        Event::RoomStateChanged {
            room_id,
            reason,
            error_code,
            ..
        } => format!("state {room_id} {} {error_code}", reason.name()),
        Event::RoomUserUpdate {
            room_id,
            update_type,
            users,
        } => {
            let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
            format!("user {room_id} {} {}", t(update_type), ids.join(","))
        }
        Event::RoomStreamUpdate {
            room_id,
            update_type,
            streams,
        } => {
            let ids: Vec<String> = streams
                .iter()
                .map(|s| format!("{}@{}", s.stream_id, s.user.user_id))
                .collect();
            format!("stream {room_id} {} {}", t(update_type), ids.join(","))
        }
        Event::ApiCalledResult {
            api, error_code, ..
        } => format!("api {api} {error_code}"),
        Event::RoomTokenWillExpire {
            room_id,
            remain_seconds,
        } => format!("token_will_expire {room_id} {remain_seconds}"),
        Event::IMRecvBroadcastMessage { room_id, messages } => {
            let m: Vec<String> = messages
                .iter()
                .map(|m| format!("{}:{}", m.from_user.user_id, m.text))
                .collect();
            format!("broadcast {room_id} {}", m.join("|"))
        }
        Event::IMRecvBarrageMessage { room_id, messages } => {
            let m: Vec<String> = messages
                .iter()
                .map(|m| format!("{}:{}", m.from_user.user_id, m.text))
                .collect();
            format!("barrage {room_id} {}", m.join("|"))
        }
        Event::IMRecvCustomCommand {
            room_id,
            from_user,
            command,
        } => format!("command {room_id} {}:{command}", from_user.user_id),
        Event::IMSendResult {
            room_id,
            kind,
            error_code,
            ..
        } => format!("sent {room_id} {kind:?} {error_code}"),
        Event::RoomExtraInfoUpdate { room_id, infos } => {
            let i: Vec<String> = infos
                .iter()
                .map(|i| format!("{}={}@{}", i.key, i.value, i.update_user.user_id))
                .collect();
            format!("extra {room_id} {}", i.join(","))
        }
        Event::CapturedSoundLevelUpdate { level, vad } => {
            format!("captured_level {:.0} {vad}", level)
        }
        Event::PlayerSyncRecvSEI {
            stream_id, data, ..
        } => format!("sei {stream_id} {}", String::from_utf8_lossy(data)),
        Event::RemoteMicStateUpdate { stream_id, state } => format!("mic {stream_id} {state}"),
        Event::PlayerVideoLayerChanged {
            stream_id,
            layer,
            reason,
        } => format!("layer {stream_id} {layer} {reason:?}"),
        Event::PlayerVideoSizeChanged {
            stream_id,
            width,
            height,
        } => format!("size {stream_id} {width}x{height}"),
        Event::RemoteCameraStateUpdate { stream_id, state } => {
            format!("camera {stream_id} {state}")
        }
        Event::NetworkQuality {
            user_id,
            upstream,
            downstream,
        } => format!("quality {user_id:?} {upstream} {downstream}"),
        Event::RemoteSoundLevelUpdate { levels } => {
            let l: Vec<String> = levels.iter().map(|(s, l)| format!("{s}={l:.0}")).collect();
            format!("remote_levels {}", l.join(","))
        }
        Event::RoomStreamExtraInfoUpdate { room_id, streams } => {
            let s: Vec<String> = streams
                .iter()
                .map(|s| format!("{}={}", s.stream_id, s.extra_info))
                .collect();
            format!("stream_extra {room_id} {}", s.join(","))
        }
        Event::PublisherUpdateStreamExtraInfoResult {
            channel,
            error_code,
            ..
        } => format!("stream_extra_set {channel:?} {error_code}"),
        Event::RoomSetExtraInfoResult {
            room_id,
            key,
            error_code,
            ..
        } => format!("extra_set {room_id} {key} {error_code}"),
        Event::DeviceError {
            channel,
            device,
            error_code,
            ..
        } => format!("device {channel:?} {device:?} {error_code}"),
        Event::PublisherStateUpdate {
            stream_id,
            state,
            error_code,
            ..
        } => format!("publisher {stream_id} {state:?} {error_code}"),
        Event::PlayerStateUpdate {
            stream_id,
            state,
            error_code,
            ..
        } => format!("player {stream_id} {state:?} {error_code}"),
        Event::PlayerRecvVideoFirstFrame { stream_id, .. } => format!("first_video {stream_id}"),
        Event::PlayerRecvAudioFirstFrame { stream_id } => format!("first_audio {stream_id}"),
        Event::PlayerRenderVideoFirstFrame { stream_id } => format!("rendered {stream_id}"),
        Event::PublisherQualityUpdate {
            stream_id,
            send_fps,
            ..
        } => format!("pub_quality {stream_id} {send_fps:.0}"),
        Event::PlayerQualityUpdate {
            stream_id,
            decode_fps,
            packets_lost,
            ..
        } => format!("play_quality {stream_id} {decode_fps:.0} {packets_lost}"),
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Collects events up to and including the first whose brief form starts with `prefix`.
/// Panics with what it saw if none comes within [`WAIT`].
pub fn until(engine: &Engine, prefix: &str) -> Vec<String> {
    until_within(engine, prefix, WAIT)
}

/// [`until`], waiting up to `wait`.
pub fn until_within(engine: &Engine, prefix: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.events().recv_timeout(left) {
            Ok(e) => {
                let b = brief(&e);
                let done = b.starts_with(prefix);
                seen.push(b);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no event starting with {prefix:?} within {wait:?}; saw {seen:?}"),
        }
    }
}

/// Collects events until one starting with each of `prefixes` has been seen, in any order
/// (for things that happen concurrently). Panics with what it saw if they do not all come
/// within [`WAIT`].
pub fn until_all(engine: &Engine, prefixes: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut missing: Vec<&str> = prefixes.to_vec();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.events().recv_timeout(left) {
            Ok(e) => {
                let b = brief(&e);
                missing.retain(|p| !b.starts_with(p));
                seen.push(b);
            }
            Err(_) => panic!("no events starting with {missing:?} within {WAIT:?}; saw {seen:?}"),
        }
    }
    seen
}

/// Every event that arrives within `dur`.
pub fn drain_for(engine: &Engine, dur: Duration) -> Vec<String> {
    let deadline = Instant::now() + dur;
    let mut seen = Vec::new();
    while let Ok(e) = engine
        .events()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        seen.push(brief(&e));
    }
    seen
}

/// What an application would believe about one room after applying events.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct RoomView {
    pub users: BTreeSet<String>,
    pub streams: BTreeSet<String>,
}

impl RoomView {
    pub fn apply(&mut self, brief: &str) {
        let parts: Vec<&str> = brief.split(' ').collect();
        if parts.len() < 4 {
            return;
        }
        let items = parts[3]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from);
        let set = match parts[0] {
            "user" => &mut self.users,
            "stream" => &mut self.streams,
            _ => return,
        };
        for item in items {
            if parts[2] == "ADD" {
                set.insert(item);
            } else {
                set.remove(&item);
            }
        }
    }

    pub fn of(users: &[&str], streams: &[&str]) -> RoomView {
        RoomView {
            users: users.iter().map(|s| s.to_string()).collect(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A relay config with a second app and a token-only first app, for auth tests.
pub fn two_app_config() -> (RelayConfig, AppSign, AppSign) {
    let (a, b) = (AppSign::random(), AppSign::random());
    let config = RelayConfig {
        apps: vec![
            AppConfig {
                app_id: APP_ID,
                app_sign: a.clone(),
                allow_app_sign: false,
                cross_room_play: false,
            },
            AppConfig {
                app_id: 2,
                app_sign: b.clone(),
                allow_app_sign: true,
                cross_room_play: false,
            },
        ],
        limits: Limits::default(),
        rtc: Default::default(),
        tls: None,
        metrics_listen: None,
        cluster: None,
    };
    (config, a, b)
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A relay config serving app [`APP_ID`] with `sign` (the app sign allowed), written to a
/// fresh temporary directory named after `tag`; the file's path.
pub fn app_config_file(tag: &str, sign: &AppSign) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[[apps]]\napp_id = {APP_ID}\napp_sign = \"{}\"\nallow_app_sign = true\n",
            sign.to_hex()
        ),
    )
    .expect("config");
    config
}

/// `onair serve --config CONFIG --listen LISTEN EXTRA…` in its own process (to be killed with
/// SIGKILL), its output discarded; returns once it accepts connections.
pub fn serve_process(
    config: &std::path::Path,
    listen: SocketAddr,
    extra: &[&str],
) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &listen.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("onair serve");
    answering(listen);
    child
}

/// Waits until `addr` accepts TCP connections (at most 10 s); when it did.
pub fn answering(addr: SocketAddr) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the relay on {addr} did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Instant::now()
}
