//! `onair bench fanout`: how many players one relay feeds a 720p 1.5 Mbps stream with no loss,
//! and the relay's CPU per player. The relay runs as its own `onair serve` process so its CPU is
//! measured alone (from /proc); the publisher is an engine and the players are bare WebRTC
//! receivers that count RTP packets and gaps without decoding, all in this process.
//! `--nodes N` runs N relays as a cluster on a `redis-server` of its own: the publisher on the
//! first, players spread over all of them (the others pull the stream from the first), each
//! node's CPU measured alone, and the cascade's extra delay from two decoding viewers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use onair_engine::messages::{RequestBody, ResponseBody};
use onair_engine::signal::SignalClient;
use onair_engine::token::AppSign;
use onair_engine::{
    Engine, EngineProfile, Event, PublishChannel, PublisherState, RoomConfig, User, VideoConfig,
    VideoPreset,
};
use onair_transport::peer;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

use super::relay_proc::{RelayProcess, cpu_seconds};
use super::stats;

/// `onair bench fanout` flags.
#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Player counts to try, in order; stops at the first with loss.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400")]
    steps: Vec<usize>,
    /// Seconds measured at each step.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The publisher sends three simulcast layers and the players ask for them in turn
    /// (big, small, smallest): the relay's cost per player with layers.
    #[arg(long)]
    simulcast: bool,
    /// With --simulcast: every player asks for Auto (the relay estimates each player's link
    /// and picks its layer, reading the connection's stats every 500 ms) instead of a fixed
    /// layer.
    #[arg(long, requires = "simulcast")]
    auto: bool,
    /// Relays in a cluster (on a redis-server this benchmark starts); players are spread
    /// over them and the publisher is on the first.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Each connection on its own UDP port (the relay's `udp_port_range`) instead of the
    /// shared media port, to compare the two.
    #[arg(long)]
    own_ports: bool,
}

/// A `redis-server` of the benchmark's own on a free loopback port.
struct RedisProcess {
    child: std::process::Child,
    port: u16,
}

impl RedisProcess {
    fn start() -> anyhow::Result<RedisProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("redis-server (apt install redis-server)")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisProcess { child, port })
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Counters {
    packets: AtomicU64,
    lost: AtomicU64,
}

async fn player(
    url: String,
    sign: String,
    i: usize,
    counters: Arc<Counters>,
    video_layer: onair_engine::messages::VideoLayer,
) -> anyhow::Result<(
    SignalClient,
    Arc<dyn webrtc::peer_connection::PeerConnection>,
)> {
    let (mut c, _) =
        SignalClient::join(&url, 1, "fanout", User::new(format!("p{i}")), &sign).await?;
    let ip = c.local_ip().context("local ip")?;
    let (pc, mut ev) = peer::new_peer(&peer::MediaNetwork::on(ip)).await?;
    peer::add_receivers(&pc, &[RtpCodecKind::Video]).await?;
    let offer = pc.create_offer(None).await?;
    let sdp = peer::finish_local(&pc, &mut ev, offer).await?;
    let ResponseBody::Play { sdp: answer, .. } = c
        .request(RequestBody::Play {
            stream_id: "fanout-cam".into(),
            sdp,
            video_layer,
        })
        .await?
    else {
        bail!("unexpected play answer");
    };
    pc.set_remote_description(peer::answer(answer)?).await?;
    tokio::spawn(async move {
        while let Some(track) = ev.tracks.recv().await {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut last: Option<u16> = None;
                while let Some(e) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = e {
                        counters.packets.fetch_add(1, Ordering::Relaxed);
                        if let Some(l) = last {
                            let gap = p.header.sequence_number.wrapping_sub(l);
                            if gap > 1 && gap < 0x8000 {
                                counters
                                    .lost
                                    .fetch_add(u64::from(gap - 1), Ordering::Relaxed);
                            }
                        }
                        last = Some(p.header.sequence_number);
                    }
                }
            });
        }
    });
    Ok((c, pc))
}

/// Runs the benchmark.
pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    // The relay, as its own process.
    let sign = AppSign::random();
    // The players' signaling clients send no heartbeats (this measures media, not
    // signaling): sessions must not expire during the run.
    let config = format!(
        "[limits]\nrequests_per_second = 100000.0\nrequest_burst = 100000.0\nmax_users_per_room = 100000\nheartbeat_timeout_ms = 3600000\nmax_connections_per_ip = 1000000\nmax_connections = 1000000\n\n[[apps]]\napp_id = 1\napp_sign = \"{}\"\nallow_app_sign = true\n",
        sign.to_hex()
    );
    let config = if args.own_ports {
        format!("[rtc]\nudp_port_range = [20000, 39999]\n\n{config}")
    } else {
        config
    };
    let nodes = args.nodes.max(1);
    let redis = if nodes > 1 {
        Some(RedisProcess::start()?)
    } else {
        None
    };
    let mut relays = Vec::new();
    for n in 0..nodes {
        let cluster = match &redis {
            Some(r) => format!(
                "\n[cluster]\nredis = \"redis://127.0.0.1:{}/\"\nnode_id = \"n{n}\"\n",
                r.port
            ),
            None => String::new(),
        };
        relays.push(RelayProcess::start(
            &format!("fanout-n{n}"),
            &format!("{config}{cluster}"),
        )?);
    }
    let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
    let pids: Vec<u32> = relays.iter().map(|r| r.pid()).collect();
    let result = measure(&args, &urls, &sign, &pids);
    drop(relays);
    drop(redis);
    let report = result?;
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn measure(
    args: &FanoutArgs,
    urls: &[String],
    sign: &AppSign,
    pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let url = urls[0].as_str();
    let host = Engine::create(EngineProfile {
        app_id: 1,
        app_sign: sign.to_hex(),
        server: url.to_string(),
        ..Default::default()
    })?;
    let layers = if args.simulcast { 3 } else { 1 };
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P720)
            .with_fps(30)
            .with_bitrate_kbps(1500)
            .simulcast(layers),
    );
    host.login_room("fanout", User::new("host"), RoomConfig::default());
    host.start_publishing_stream("fanout-cam", PublishChannel::Main);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match host
            .events()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Event::PublisherStateUpdate {
                state: PublisherState::Publishing,
                ..
            }) => break,
            Ok(_) => {}
            Err(_) => bail!("the host never started publishing"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // The cascade: capture → decoded on the publisher's node and on another one.
    let cascade = if urls.len() > 1 {
        Some(json!({
            "same_node": viewer_delay(&urls[0], sign)?,
            "other_node": viewer_delay(&urls[1], sign)?,
        }))
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut players = Vec::new();
    let mut steps = Vec::new();
    let mut best = 0usize;
    let mut best_cpu = f64::NAN;
    let mut total_lost = 0u64;
    for &target in &args.steps {
        // Add players up to the target; each counts its own packets.
        while players.len() < target {
            let i = players.len();
            let c = Arc::new(Counters {
                packets: AtomicU64::new(0),
                lost: AtomicU64::new(0),
            });
            use onair_engine::messages::VideoLayer;
            let layer = if args.auto {
                VideoLayer::Auto
            } else if args.simulcast {
                [VideoLayer::Big, VideoLayer::Small, VideoLayer::Smallest][i % 3]
            } else {
                VideoLayer::Big
            };
            let at = urls[i % urls.len()].clone();
            let p = runtime.block_on(player(at, sign.to_hex(), i, c.clone(), layer))?;
            players.push((p, c));
        }
        // Every player connected and receiving before the step is measured (hundreds of new
        // connections take a few seconds on two cores), then one more second to settle.
        let connect_deadline = Instant::now() + Duration::from_secs(60);
        while players
            .iter()
            .any(|(_, c): &(_, Arc<Counters>)| c.packets.load(Ordering::Relaxed) == 0)
            && Instant::now() < connect_deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        // Per player: packets and gaps so far.
        let snapshot = |ps: &Vec<(_, Arc<Counters>)>| -> Vec<(u64, u64)> {
            ps.iter()
                .map(|(_, c): &(_, Arc<Counters>)| {
                    (
                        c.packets.load(Ordering::Relaxed),
                        c.lost.load(Ordering::Relaxed),
                    )
                })
                .collect()
        };
        let _ = host.events().try_iter().count();
        let s0 = snapshot(&players);
        let cpu0: Vec<f64> = pids
            .iter()
            .map(|p| cpu_seconds(*p).unwrap_or(0.0))
            .collect();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let elapsed = t0.elapsed().as_secs_f64();
        let node_cpu: Vec<f64> = pids
            .iter()
            .zip(&cpu0)
            .map(|(p, c0)| (cpu_seconds(*p).unwrap_or(0.0) - c0) / elapsed * 100.0)
            .collect();
        let cpu: f64 = node_cpu.iter().sum();
        let per_node: Vec<serde_json::Value> = node_cpu
            .iter()
            .enumerate()
            .map(|(n, c)| {
                let here = (0..target).filter(|i| i % pids.len() == n).count();
                json!({
                    "node": n,
                    "players": here,
                    "relay_cpu_pct": (c * 10.0).round() / 10.0,
                    "relay_cpu_pct_per_player": (c / here.max(1) as f64 * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        let s1 = snapshot(&players);
        // What the publisher sent meanwhile (its once-a-second reports).
        let sent_fps: Vec<f64> = host
            .events()
            .try_iter()
            .filter_map(|e| match e {
                Event::PublisherQualityUpdate { send_fps, .. } => Some(send_fps),
                _ => None,
            })
            .collect();
        let publisher_fps = sent_fps.iter().sum::<f64>() / sent_fps.len().max(1) as f64;
        let received: Vec<u64> = s0.iter().zip(&s1).map(|(a, b)| b.0 - a.0).collect();
        let lost: u64 = s0.iter().zip(&s1).map(|(a, b)| b.1 - a.1).sum();
        total_lost += lost;
        // Compared within a layer (players i, i + layers, … get the same one).
        let (mut most, mut fewest, mut share) = (0u64, 0u64, 1.0f64);
        for l in 0..layers as usize {
            let group: Vec<u64> = received
                .iter()
                .copied()
                .skip(l)
                .step_by(layers as usize)
                .collect();
            let hi = group.iter().copied().max().unwrap_or(0);
            let lo = group.iter().copied().min().unwrap_or(0);
            if hi == 0 {
                continue;
            }
            if (lo as f64 / hi as f64) < share || most == 0 {
                share = lo as f64 / hi as f64;
                (most, fewest) = (hi, lo);
            }
        }
        let mean = received.iter().sum::<u64>() as f64 / received.len().max(1) as f64;
        steps.push(json!({
            "players": target,
            "relay_cpu_pct": (cpu * 10.0).round() / 10.0,
            "relay_cpu_pct_per_player": (cpu / target as f64 * 1000.0).round() / 1000.0,
            "packets_per_s_per_player": (mean / elapsed).round(),
            "slowest_player_share": if most > 0 { ((fewest as f64 / most as f64) * 1000.0).round() / 1000.0 } else { 0.0 },
            "publisher_fps": (publisher_fps * 10.0).round() / 10.0,
            "loss": lost,
            "nodes": per_node,
        }));
        // Sustained: no gaps, and every player received at least 95 % of what the best-served
        // player did in the same seconds (the stream's rate as it left the relay; if the
        // publisher itself slows down on a starved machine, all players slow together).
        if lost > 0 || most == 0 || (fewest as f64) < most as f64 * 0.95 {
            break;
        }
        best = target;
        best_cpu = cpu / target as f64;
    }
    drop(players);
    host.destroy();
    Ok(json!({
        "bench": "fanout",
        "cores": stats::cores(),
        "stream": if args.auto { "720p30 1.5 Mbps + 360p + 180p (every player Auto)" } else if args.simulcast { "720p30 1.5 Mbps + 360p + 180p (players spread over the layers)" } else { "720p30 1.5 Mbps" },
        "players": best,
        // Packets every player missed, over every measured step (the last step may be the one
        // that lost: that is where the climb stops).
        "loss": total_lost,
        "relay_cpu_pct_per_player": (best_cpu * 1000.0).round() / 1000.0,
        "nodes": urls.len(),
        "media_port": if args.own_ports { "one per connection" } else { "shared" },
        "cascade_delay_ms": cascade,
        "steps": steps,
    }))
}

/// An engine on `url` plays the stream for 5 s: capture → decoded delay (ms) p50/p99, from
/// the stamp burned into the test pattern.
fn viewer_delay(url: &str, sign: &AppSign) -> anyhow::Result<serde_json::Value> {
    let viewer = Engine::create(EngineProfile {
        app_id: 1,
        app_sign: sign.to_hex(),
        server: url.to_string(),
        ..Default::default()
    })?;
    viewer.login_room("fanout", User::new("delay-viewer"), RoomConfig::default());
    let frames = viewer.play_frames("fanout-cam");
    viewer.start_playing_stream("fanout-cam", onair_engine::PlayerConfig::default());
    let first = Instant::now();
    while frames.recv_timeout(Duration::from_millis(200)).is_none() {
        if first.elapsed() > Duration::from_secs(15) {
            bail!("no picture at {url}");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let _ = frames.latest();
    let t0 = Instant::now();
    let mut delays = Vec::new();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(200))
            && let Some(s) = onair_engine::media::stamp::read(&f)
        {
            delays.push(
                onair_engine::media::frame::wall_clock_us().saturating_sub(s.capture_time_us)
                    as f64
                    / 1000.0,
            );
        }
    }
    viewer.destroy();
    Ok(stats::summary(delays))
}
