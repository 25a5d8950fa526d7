//! `onair bench fanout`: how many players one relay feeds a 720p 1.5 Mbps stream with no loss,
//! and the relay's CPU per player. The relay runs as its own `onair serve` process so its CPU is
//! measured alone (from /proc); the publisher is an engine and the players are bare WebRTC
//! receivers that count RTP packets and gaps without decoding, all in this process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use onair_engine::protocol::{RequestBody, ResponseBody};
use onair_engine::signal::SignalClient;
use onair_engine::token::AppSign;
use onair_engine::transport::peer;
use onair_engine::{
    Engine, EngineProfile, Event, PublishChannel, PublisherState, RoomConfig, User, VideoConfig,
    VideoPreset,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

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
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
) -> anyhow::Result<(
    SignalClient,
    Arc<dyn webrtc::peer_connection::PeerConnection>,
)> {
    let (mut c, _) =
        SignalClient::join(&url, 1, "fanout", User::new(format!("p{i}")), &sign).await?;
    let ip = c.local_ip().context("local ip")?;
    let (pc, mut ev) = peer::new_peer(ip).await?;
    peer::add_receivers(&pc, &[RtpCodecKind::Video]).await?;
    let offer = pc.create_offer(None).await?;
    let sdp = peer::finish_local(&pc, &mut ev, offer).await?;
    let ResponseBody::Play { sdp: answer, .. } = c
        .request(RequestBody::Play {
            stream_id: "fanout-cam".into(),
            sdp,
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
    let dir = std::env::temp_dir().join(format!("onair-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nrequests_per_second = 100000.0\nrequest_burst = 100000.0\nmax_users_per_room = 100000\n\n[[apps]]\napp_id = 1\napp_sign = \"{}\"\n",
            sign.to_hex()
        ),
    )?;
    let mut relay = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = relay.stdout.take().context("relay stdout")?;
    let mut url = None;
    for line in BufReader::new(stdout).lines().take(5) {
        let line = line?;
        if let Some(rest) = line.strip_prefix("relay listening: signaling ") {
            url = rest.split(' ').next().map(String::from);
            break;
        }
    }
    let url = url.context("the relay did not start")?;
    let result = measure(&args, &url, &sign, relay.id());
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir_all(&dir);
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
    url: &str,
    sign: &AppSign,
    relay_pid: u32,
) -> anyhow::Result<serde_json::Value> {
    let host = Engine::create(EngineProfile {
        app_id: 1,
        app_sign: sign.to_hex(),
        server: url.to_string(),
        ..Default::default()
    })?;
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P720)
            .with_fps(30)
            .with_bitrate_kbps(1500),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut players = Vec::new();
    let mut steps = Vec::new();
    let mut best = 0usize;
    let mut best_cpu = f64::NAN;
    let mut first_pps: Option<f64> = None;
    for &target in &args.steps {
        // Add players up to the target; each counts its own packets.
        while players.len() < target {
            let i = players.len();
            let c = Arc::new(Counters {
                packets: AtomicU64::new(0),
                lost: AtomicU64::new(0),
            });
            let p = runtime.block_on(player(url.to_string(), sign.to_hex(), i, c.clone()))?;
            players.push((p, c));
        }
        std::thread::sleep(Duration::from_secs(1)); // let the newest connect
        let snapshot = |ps: &Vec<(_, Arc<Counters>)>| -> (u64, u64) {
            ps.iter()
                .fold((0, 0), |(p, l), (_, c): &(_, Arc<Counters>)| {
                    (
                        p + c.packets.load(Ordering::Relaxed),
                        l + c.lost.load(Ordering::Relaxed),
                    )
                })
        };
        let (p0, l0) = snapshot(&players);
        let cpu0 = cpu_seconds(relay_pid).unwrap_or(0.0);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(relay_pid).unwrap_or(0.0) - cpu0) / elapsed * 100.0;
        let (p1, l1) = snapshot(&players);
        let lost = l1 - l0;
        let packets = p1 - p0;
        let per_player_pps = packets as f64 / elapsed / target as f64;
        steps.push(json!({
            "players": target,
            "relay_cpu_pct": (cpu * 10.0).round() / 10.0,
            "relay_cpu_pct_per_player": (cpu / target as f64 * 1000.0).round() / 1000.0,
            "packets_per_s_per_player": per_player_pps.round(),
            "loss": lost,
        }));
        // Sustained means no gaps and every player keeping up with the stream's packet rate.
        let reference = *first_pps.get_or_insert(per_player_pps);
        if lost > 0 || per_player_pps < reference * 0.95 {
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
        "stream": "720p30 1.5 Mbps",
        "players": best,
        "loss": 0,
        "relay_cpu_pct_per_player": (best_cpu * 1000.0).round() / 1000.0,
        "steps": steps,
    }))
}
