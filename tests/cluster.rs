//! Relays as a cluster on a real Redis (Debian's `redis-server`, started by each test on a
//! free port): room events, duplicate users and stream IDs across nodes, a stream pulled from
//! the node it is published on, a node killed with SIGKILL, and Redis going away.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{APP_ID, TestRelay, quiet, until, until_within};
use onair_engine::media::stamp;
use onair_engine::token::AppSign;
use onair_engine::{
    Engine, EngineProfile, PlayerConfig, PublishChannel, RoomConfig, User, VideoConfig, VideoPreset,
};
use onair_relay::RelayConfig;
use onair_relay::cluster::ClusterConfig;

const MAIN: PublishChannel = PublishChannel::Main;

/// The cases run one at a time: each runs several relays and engines, and its timings (a
/// lease's expiry, a failover) would stretch on two cores shared with another case.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `redis-server` of our own, gone with the value.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: common::free_port(),
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (make test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (its data goes with it, as with a crash of a server without persistence).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One relay node of the cluster, in this process.
fn node(redis: &Redis, id: &str, sign: &AppSign) -> TestRelay {
    let mut config = RelayConfig::single_app(APP_ID, sign.clone());
    config.cluster = Some(ClusterConfig {
        redis: redis.url(),
        node_id: id.into(),
        advertise: None,
    });
    TestRelay::start_config(config, sign.clone())
}

fn engine_at(url: &str, sign: &AppSign) -> Engine {
    Engine::create(EngineProfile {
        app_id: APP_ID,
        app_sign: sign.to_hex(),
        server: url.to_string(),
        ..Default::default()
    })
    .expect("engine")
}

fn notify() -> RoomConfig {
    common::notify()
}

fn login(e: &Engine, room: &str, user: &str, config: RoomConfig) {
    e.login_room(room, User::new(user), config);
    until(e, &format!("state {room} LOGINED"));
}

/// Waits (up to `wait`) for an event starting with `prefix`; whether it came.
fn saw(e: &Engine, prefix: &str, wait: Duration) -> bool {
    until_within(e, prefix, wait)
        .last()
        .is_some_and(|l| l.starts_with(prefix))
}

#[test]
fn rooms_span_nodes_users_and_stream_ids_are_unique_cluster_wide() {
    let _one = one_at_a_time();
    let redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    let b = node(&redis, "b", &sign);
    let alice = engine_at(&a.url(), &sign);
    login(&alice, "r", "alice", notify());
    // Bob on node B: Alice (node A) hears him; he learns of her from the room's record.
    let bob = engine_at(&b.url(), &sign);
    login(&bob, "r", "bob", notify());
    assert!(saw(&alice, "user r ADD bob", Duration::from_secs(5)));
    assert!(saw(&bob, "user r ADD alice", Duration::from_secs(5)));
    // Room data crosses nodes: messages, commands to some users, the room's extra info.
    alice.send_broadcast_message("r", "hello from A");
    assert!(saw(
        &bob,
        "broadcast r alice:hello from A",
        Duration::from_secs(5)
    ));
    bob.send_custom_command("r", "ping", &["alice"]);
    assert!(saw(&alice, "command r bob:ping", Duration::from_secs(5)));
    bob.set_room_extra_info("r", "topic", "cluster");
    assert!(saw(
        &alice,
        "extra r topic=cluster@bob",
        Duration::from_secs(5)
    ));
    // A stream on A is listed on B; the same stream ID on B is refused (1003028).
    alice.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(15));
    alice.start_publishing_stream("cam", MAIN);
    until(&alice, "publisher cam Publishing");
    assert!(saw(&bob, "stream r ADD cam@alice", Duration::from_secs(5)));
    alice.set_stream_extra_info(MAIN, "live now");
    assert!(saw(
        &bob,
        "stream_extra r cam=live now",
        Duration::from_secs(5)
    ));
    let carol = engine_at(&b.url(), &sign);
    login(&carol, "r2", "carol", quiet());
    carol.start_publishing_stream("cam", MAIN);
    assert!(
        saw(
            &carol,
            "publisher cam NoPublish 1003028",
            Duration::from_secs(5)
        ),
        "the stream ID is Alice's, on another node"
    );
    // The same user logging in on B kicks the session on A (1002050); the room keeps her.
    let alice2 = engine_at(&b.url(), &sign);
    login(&alice2, "r", "alice", quiet());
    assert!(saw(
        &alice,
        "state r KICK_OUT 1002050",
        Duration::from_secs(5)
    ));
    assert!(saw(
        &bob,
        "stream r DELETE cam@alice",
        Duration::from_secs(5)
    ));
    let seen = common::drain_for(&bob, Duration::from_millis(800));
    assert!(
        !seen.iter().any(|l| l.starts_with("user r DELETE alice")),
        "Alice stays in the room (now on B): {seen:?}"
    );
    // Leaving on B reaches A's members.
    let dave = engine_at(&a.url(), &sign);
    login(&dave, "r", "dave", notify());
    // (the room's other nodes arrive right after the login, read from its record)
    common::until_all(&dave, &["user r ADD bob", "user r ADD alice"]);
    bob.logout_room("r");
    assert!(saw(&dave, "user r DELETE bob", Duration::from_secs(5)));
}

#[test]
fn a_viewer_on_another_node_plays_the_stream_pulled_from_the_hosts_node() {
    let _one = one_at_a_time();
    let redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    let b = node(&redis, "b", &sign);
    let c = node(&redis, "c", &sign);
    let host = engine_at(&a.url(), &sign);
    host.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    login(&host, "live", "host", quiet());
    host.start_publishing_stream("cam", MAIN);
    until(&host, "publisher cam Publishing");
    // One viewer on the host's node, one on each other node: the same frames, in order.
    let near = engine_at(&a.url(), &sign);
    let far = engine_at(&b.url(), &sign);
    let third = engine_at(&c.url(), &sign);
    login(&near, "live", "near", quiet());
    login(&far, "live", "far", quiet());
    login(&third, "live", "third", quiet());
    assert!(saw(
        &far,
        "stream live ADD cam@host",
        Duration::from_secs(5)
    ));
    assert!(saw(
        &third,
        "stream live ADD cam@host",
        Duration::from_secs(5)
    ));
    let near_frames = near.play_frames("cam");
    let far_frames = far.play_frames("cam");
    let third_frames = third.play_frames("cam");
    near.start_playing_stream("cam", PlayerConfig::default());
    far.start_playing_stream("cam", PlayerConfig::default());
    third.start_playing_stream("cam", PlayerConfig::default());
    until(&near, "first_video cam");
    until(&far, "first_video cam");
    until(&third, "first_video cam");
    let (far_numbers, far_delays) = measure(&far_frames);
    let (near_numbers, near_delays) = measure(&near_frames);
    assert!(
        far_numbers.len() >= 70,
        "about 90 frames in 3 s: {}",
        far_numbers.len()
    );
    // B pulls the stream from A, and says so.
    let metrics = b.metrics();
    assert!(
        metrics.contains("onair_cluster_pulled_streams 1"),
        "{metrics}"
    );
    assert!(metrics.contains("onair_cluster_up 1"), "{metrics}");
    assert!(
        far_numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "every frame, in order, through two relays: {far_numbers:?}"
    );
    assert!(near_numbers.len() >= 70);
    let (third_numbers, _) = measure(&third_frames);
    assert!(
        third_numbers.len() >= 70 && third_numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the third node's viewer too: {third_numbers:?}"
    );
    let p50 = |d: &[f64]| d[d.len() / 2];
    eprintln!(
        "capture → decoded: same node p50 {:.1} ms, other node p50 {:.1} ms (p99 {:.1} / {:.1})",
        p50(&near_delays),
        p50(&far_delays),
        near_delays[near_delays.len() * 99 / 100],
        far_delays[far_delays.len() * 99 / 100],
    );
    assert!(
        p50(&far_delays) <= p50(&near_delays) + 5.0,
        "one more hop on loopback costs little"
    );
    // The host stops: the far viewer waits, and plays again when the stream is back.
    host.stop_publishing_stream(MAIN);
    assert!(saw(
        &far,
        "player cam PlayRequesting",
        Duration::from_secs(5)
    ));
    host.start_publishing_stream("cam", MAIN);
    assert!(saw(&far, "player cam Playing", Duration::from_secs(10)));
    let _ = far_frames.latest();
    assert!(far_frames.recv_timeout(Duration::from_secs(5)).is_some());
}

/// The outcome of a login: its LOGINED or LOGIN_FAILED event.
fn login_outcome(e: &Engine, room: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = e.events().recv_timeout(left).expect("a login outcome");
        let b = common::brief(&event);
        if b.starts_with(&format!("state {room} LOGINED"))
            || b.starts_with(&format!("state {room} LOGIN_FAILED"))
        {
            return b;
        }
    }
}

/// Three seconds of frames: their numbers and capture → decoded delays (sorted, ms).
fn measure(
    frames: &onair_engine::media::channel::FrameReceiver<
        onair_engine::media::frame::SharedVideoFrame,
    >,
) -> (Vec<u64>, Vec<f64>) {
    let _ = frames.latest();
    let t0 = Instant::now();
    let (mut numbers, mut delays) = (Vec::new(), Vec::new());
    while t0.elapsed() < Duration::from_secs(3) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(200)) {
            let s = stamp::read(&f).expect("stamp");
            numbers.push(s.frame_number as u64);
            delays.push(
                onair_engine::media::frame::wall_clock_us().saturating_sub(s.capture_time_us)
                    as f64
                    / 1000.0,
            );
        }
    }
    delays.sort_by(f64::total_cmp);
    (numbers, delays)
}

/// `onair serve` as a cluster node in its own process (to be killed with SIGKILL).
fn node_process(redis: &Redis, id: &str, sign: &AppSign) -> (Child, String) {
    let config = common::app_config_file(&format!("cluster-{id}"), sign);
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let child = common::serve_process(&config, addr, &["--redis", &redis.url(), "--node-id", id]);
    (child, format!("ws://{addr}"))
}

#[test]
fn a_killed_node_leaves_its_rooms_and_its_clients_move_to_another_node() {
    let _one = one_at_a_time();
    let redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    let (mut b, b_url) = node_process(&redis, "b", &sign);
    let c = node(&redis, "c", &sign);
    let both = format!("{b_url},{}", c.url());
    // Alice on A publishes; a viewer on B (B, then C) plays her stream.
    let alice = engine_at(&a.url(), &sign);
    alice.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    login(&alice, "r", "alice", notify());
    alice.start_publishing_stream("cam", MAIN);
    until(&alice, "publisher cam Publishing");
    let viewer = engine_at(&both, &sign);
    login(&viewer, "r", "viewer", quiet());
    let frames = viewer.play_frames("cam");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");
    // Bob publishes on B only; Hana on B (B, then C), and Alice plays Hana.
    let bob = engine_at(&b_url, &sign);
    bob.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(15));
    login(&bob, "r", "bob", quiet());
    bob.start_publishing_stream("bcam", MAIN);
    let hana = engine_at(&both, &sign);
    hana.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    login(&hana, "r", "hana", quiet());
    hana.start_publishing_stream("hcam", MAIN);
    until(&hana, "publisher hcam Publishing");
    common::until_all(&alice, &["stream r ADD bcam@bob", "stream r ADD hcam@hana"]);
    let hana_frames = alice.play_frames("hcam");
    alice.start_playing_stream("hcam", PlayerConfig::default());
    until(&alice, "first_video hcam");

    let killed = Instant::now();
    b.kill().expect("SIGKILL");
    let _ = b.wait();
    // The viewer moves to C and plays Alice again.
    let seen = until_within(&viewer, "player cam Playing", Duration::from_secs(5));
    assert!(
        seen.iter()
            .any(|l| l.starts_with("player cam PlayRequesting")),
        "the play started over on another node: {seen:?}"
    );
    let _ = frames.latest();
    assert!(
        frames.recv_timeout(Duration::from_secs(5)).is_some(),
        "the viewer on the killed node plays again through C within 5 s"
    );
    let resumed = killed.elapsed();
    // Hana moves to C and publishes again by herself; Alice (on A) plays her from C.
    let _ = hana_frames.latest();
    let t0 = Instant::now();
    while hana_frames
        .recv_timeout(Duration::from_millis(200))
        .is_none()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "Hana's stream is back through C"
        );
    }
    let republished = killed.elapsed();
    // Bob could not move: his user and stream leave A's room when B's lease runs out.
    let seen = until_within(&alice, "stream r DELETE bcam@bob", Duration::from_secs(10));
    let after = killed.elapsed();
    assert!(
        seen.iter().any(|l| l == "user r DELETE bob"),
        "Bob leaves the room with his stream: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("DELETE") && l.contains("hana")),
        "Hana never left the room (she moved): {seen:?}"
    );
    eprintln!(
        "node B killed: viewer playing again after {resumed:?}, Hana's stream back after \
         {republished:?}, Bob gone from A's room after {after:?}"
    );
    assert!(
        after <= Duration::from_secs(7),
        "a lease of 4 s, checked every second: {after:?}"
    );
    // Bob's stream ID is free again: published on A now.
    let carol = engine_at(&a.url(), &sign);
    carol.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(15));
    login(&carol, "r", "carol", quiet());
    carol.start_publishing_stream("bcam", MAIN);
    assert!(saw(
        &carol,
        "publisher bcam Publishing",
        Duration::from_secs(10)
    ));
}

#[test]
fn without_redis_logins_are_refused_media_flows_on_and_everything_resumes() {
    let _one = one_at_a_time();
    let mut redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    let b = node(&redis, "b", &sign);
    let host = engine_at(&a.url(), &sign);
    host.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    login(&host, "live", "host", quiet());
    host.start_publishing_stream("cam", MAIN);
    until(&host, "publisher cam Publishing");
    let far = engine_at(&b.url(), &sign);
    login(&far, "live", "far", notify());
    assert!(saw(
        &far,
        "stream live ADD cam@host",
        Duration::from_secs(5)
    ));
    let frames = far.play_frames("cam");
    far.start_playing_stream("cam", PlayerConfig::default());
    until(&far, "first_video cam");
    // Redis goes away: within a lease renewal, new logins are refused with 1000021.
    redis.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        a.metrics().contains("onair_cluster_up 0"),
        "{}",
        a.metrics()
    );
    let late = engine_at(&a.url(), &sign);
    late.login_room("live", User::new("late"), quiet());
    assert_eq!(
        login_outcome(&late, "live"),
        "state live LOGIN_FAILED 1000021",
        "a login without Redis is refused with its code"
    );
    // Media already flowing (through both nodes) is unaffected.
    let _ = frames.latest();
    let t0 = Instant::now();
    let mut got = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        if frames.recv_timeout(Duration::from_millis(200)).is_some() {
            got += 1;
        }
    }
    assert!(got >= 60, "about 90 frames in 3 s without Redis: {got}");
    // Redis is back (empty, as after a crash): logins work again, and the nodes write their
    // rooms back, so a newcomer on B still sees the host's stream and the host.
    // (down for 10 s in all)
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    assert!(
        frames.recv_timeout(Duration::from_secs(1)).is_some(),
        "still playing after 10 s without Redis"
    );
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = engine_at(&a.url(), &sign);
    loop {
        again.login_room("live", User::new("again"), quiet());
        let seen = login_outcome(&again, "live");
        if seen.starts_with("state live LOGINED") {
            break;
        }
        assert!(Instant::now() < deadline, "logins accepted again: {seen:?}");
        again.logout_room("live");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw(&far, "user live ADD again", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_secs(3));
    let newcomer = engine_at(&b.url(), &sign);
    newcomer.login_room("live", User::new("newcomer"), quiet());
    let _ = frames.latest();
    assert!(frames.recv_timeout(Duration::from_secs(2)).is_some());
    assert!(
        saw(
            &newcomer,
            "stream live ADD cam@host",
            Duration::from_secs(5)
        ),
        "the stream is listed on B after Redis came back"
    );
}

/// `onair_users` from a node's `/metrics`.
fn users_on(node: &TestRelay) -> u64 {
    node.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("onair_users "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn dispatch_names_the_node_carrying_the_room_and_a_stopped_node_leaves_at_once() {
    let _one = one_at_a_time();
    let redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    let mut b = node(&redis, "b", &sign);
    let bob = engine_at(&b.url(), &sign);
    bob.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(15));
    login(&bob, "r", "bob", quiet());
    bob.start_publishing_stream("cam", MAIN);
    until(&bob, "publisher cam Publishing");
    std::thread::sleep(Duration::from_millis(1500)); // (both leases renewed with their load)
    // Any node names B for room r: it carries the room's stream.
    let answer = common::http_at(a.addr, "GET", "/dispatch?app_id=1&room_id=r", &[], "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let named: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(named["node_id"], "b", "{}", answer.body);
    assert_eq!(named["url"], format!("{}/ws", b.url()));
    // An engine given the dispatch URL logs in there.
    let before = users_on(&b);
    let viewer = engine_at(&format!("http://{}/dispatch", a.addr), &sign);
    login(&viewer, "r", "viewer", quiet());
    assert_eq!(users_on(&b), before + 1, "the viewer is on B");
    viewer.start_playing_stream("cam", PlayerConfig::default());
    until(&viewer, "first_video cam");
    // B stops (gracefully): A's members see its users go within a couple of seconds, not
    // after the lease would have expired.
    let alice = engine_at(&a.url(), &sign);
    login(&alice, "r", "alice", notify());
    common::until_all(&alice, &["user r ADD bob", "user r ADD viewer"]);
    let stopped = Instant::now();
    let stopping = std::thread::spawn(move || b.stop());
    let seen = until_within(&alice, "stream r DELETE cam@bob", Duration::from_secs(5));
    eprintln!(
        "node B stopped: its users left A's room after {:?}",
        stopped.elapsed()
    );
    assert!(
        seen.iter().any(|l| l.starts_with("user r DELETE")),
        "{seen:?}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "a stopped node's lease goes with it; nobody waits for it to expire"
    );
    stopping.join().expect("stopped");
}

/// A TCP relay between a node and Redis that the test can cut, as a network partition
/// would, and heal.
struct Cut {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cut {
    fn to(port: u16) -> Cut {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let me = listener.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if flag.load(Ordering::SeqCst) {
                    continue; // refused while cut
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = [0u8; 16384];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cut { port: me, cut }
    }

    fn set(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_node_cut_off_from_redis_leaves_the_rooms_and_comes_back_when_healed() {
    let _one = one_at_a_time();
    let redis = Redis::start();
    let sign = AppSign::random();
    let a = node(&redis, "a", &sign);
    // Node B reaches Redis through a link the test cuts.
    let link = Cut::to(redis.port);
    let mut config = RelayConfig::single_app(APP_ID, sign.clone());
    config.cluster = Some(ClusterConfig {
        redis: format!("redis://127.0.0.1:{}/", link.port),
        node_id: "b".into(),
        advertise: None,
    });
    let b = TestRelay::start_config(config, sign.clone());
    let alice = engine_at(&a.url(), &sign);
    login(&alice, "r", "alice", notify());
    let bob = engine_at(&b.url(), &sign);
    login(&bob, "r", "bob", notify());
    assert!(saw(&alice, "user r ADD bob", Duration::from_secs(5)));
    // Cut: seen from A, B is gone (its lease runs out); B admits no new login.
    let cut = Instant::now();
    link.set(true);
    assert!(saw(&alice, "user r DELETE bob", Duration::from_secs(8)));
    eprintln!("B cut off: gone from A's room after {:?}", cut.elapsed());
    let late = engine_at(&b.url(), &sign);
    late.login_room("r", User::new("late"), quiet());
    assert_eq!(login_outcome(&late, "r"), "state r LOGIN_FAILED 1000021");
    // Healed: B's users are back in A's room, and B admits logins again.
    link.set(false);
    assert!(saw(&alice, "user r ADD bob", Duration::from_secs(8)));
    let later = engine_at(&b.url(), &sign);
    later.login_room("r", User::new("later"), quiet());
    assert_eq!(login_outcome(&later, "r"), "state r LOGINED 0");
    assert!(saw(&alice, "user r ADD later", Duration::from_secs(5)));
}
