//! `onair bench soak`: many users churning through a relay for minutes — logging in and out of
//! rooms, publishing and stopping streams, some vanishing without a word (their sessions expire),
//! while real publishers send media and players come and go — with the relay's memory (resident
//! and the allocator's heap in use), open files, threads and runtime tasks sampled every second.
//! After the load, every user gone and every closed connection finished closing, the heap,
//! files, threads and tasks must come back to where they stood after a warm-up round (±10 %,
//! or a small slack): nothing leaks.
//!
//! The relay is its own `onair serve` process, measured from /proc and its `/metrics`; the
//! users are bare signaling clients on one runtime; the publishers are engines (test source)
//! and the players bare WebRTC receivers, as in `bench fanout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
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

use super::relay_proc::{RelayProcess, open_fds, rss_kib_and_threads};
use super::stats;

/// `onair bench soak` flags.
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Minutes of load (after a one-minute warm-up round).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Users churning through rooms.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Rooms they spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Publishers sending media (engines, 360p test source at 15 fps).
    #[arg(long, default_value_t = 3)]
    publishers: usize,
    /// Players coming and going on those streams at any time.
    #[arg(long, default_value_t = 24)]
    players: usize,
    /// Seconds of the warm-up round.
    #[arg(long, default_value_t = 60.0)]
    warmup_seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One sample of the relay process.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    /// The relay's heap in use (`onair_heap_in_use_bytes`), KiB.
    heap_kib: u64,
    threads: u64,
    fds: u64,
    tasks: u64,
    sessions: u64,
    connections: u64,
    players: u64,
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn sample(pid: u32, metrics_url: &str) -> Option<Sample> {
    let (rss_kib, threads) = rss_kib_and_threads(pid)?;
    let text = http_get(metrics_url).ok()?;
    Some(Sample {
        rss_kib,
        heap_kib: metric(&text, "onair_heap_in_use_bytes") / 1024,
        threads,
        fds: open_fds(pid)?,
        tasks: metric(&text, "onair_runtime_tasks"),
        sessions: metric(&text, "onair_sessions"),
        connections: metric(&text, "onair_connections"),
        players: metric(&text, "onair_players"),
    })
}

/// A plain HTTP GET over loopback (the relay's `/metrics`).
fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Work done by the users, for the report.
#[derive(Default)]
struct Tally {
    logins: AtomicU64,
    publishes: AtomicU64,
    plays: AtomicU64,
    vanished: AtomicU64,
    errors: AtomicU64,
}

/// Drops whatever events the relay queued for `c` (room news the user does not read).
async fn drain(c: &mut SignalClient) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), c.recv()).await {}
}

/// One user: connect, log into a room, publish and stop now and then, move rooms, beat; leave
/// politely or vanish; again, until `stop`.
async fn user(
    i: usize,
    url: String,
    sign: String,
    rooms: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut rng = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    // Spread the first connections over two seconds.
    tokio::time::sleep(Duration::from_millis(next(2000))).await;
    while !stop.load(Ordering::Relaxed) {
        let room = format!("soak-{}", next(rooms as u64));
        let joined = SignalClient::join(&url, 1, &room, User::new(format!("u{i}")), &sign).await;
        let Ok((mut c, _)) = joined else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tally.logins.fetch_add(1, Ordering::Relaxed);
        let mut room = room;
        for _ in 0..(3 + next(6)) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 + next(2500))).await;
            drain(&mut c).await;
            let body = match next(5) {
                0 => {
                    tally.publishes.fetch_add(1, Ordering::Relaxed);
                    RequestBody::Publish {
                        room_id: room.clone(),
                        stream_id: format!("s{i}"),
                        extra_info: "soak".into(),
                        sdp: None,
                    }
                }
                1 => RequestBody::StopPublish {
                    stream_id: format!("s{i}"),
                },
                2 => {
                    let _ = c
                        .request(RequestBody::Logout {
                            room_id: room.clone(),
                        })
                        .await;
                    room = format!("soak-{}", next(rooms as u64));
                    tally.logins.fetch_add(1, Ordering::Relaxed);
                    RequestBody::Login {
                        room_id: room.clone(),
                        user: User::new(format!("u{i}")),
                        token: None,
                        app_sign: Some(sign.clone()),
                        is_user_status_notify: false,
                    }
                }
                _ => RequestBody::Heartbeat,
            };
            let _ = c.request(body).await;
        }
        if next(5) == 0 {
            // Vanish: no logout, no close frame; the relay notices the dead socket and the
            // session expires after the heartbeat timeout.
            tally.vanished.fetch_add(1, Ordering::Relaxed);
            drop(c);
        } else {
            let _ = c
                .request(RequestBody::Logout {
                    room_id: room.clone(),
                })
                .await;
            c.close().await;
        }
        tokio::time::sleep(Duration::from_millis(200 + next(800))).await;
    }
}

/// One player: joins the stream's room, plays for a few seconds as a bare WebRTC receiver,
/// leaves; again, until `stop`.
async fn player(
    i: usize,
    url: String,
    sign: String,
    streams: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut n = i;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let s = n % streams.max(1);
        let played = async {
            let (mut c, _) = SignalClient::join(
                &url,
                1,
                &format!("stage-{s}"),
                User::new(format!("p{i}")),
                &sign,
            )
            .await?;
            let ip = c.local_ip().ok_or_else(|| anyhow::anyhow!("no local ip"))?;
            let (pc, mut ev) = peer::new_peer(&peer::MediaNetwork::on(ip)).await?;
            peer::add_receivers(&pc, &[RtpCodecKind::Video, RtpCodecKind::Audio]).await?;
            let offer = pc.create_offer(None).await?;
            let sdp = peer::finish_local(&pc, &mut ev, offer).await?;
            let ResponseBody::Play { sdp: answer, .. } = c
                .request(RequestBody::Play {
                    stream_id: format!("stage-cam-{s}"),
                    sdp,
                    video_layer: Default::default(),
                })
                .await?
            else {
                bail!("unexpected play answer");
            };
            pc.set_remote_description(peer::answer(answer)?).await?;
            // Read (and drop) what arrives, as a player would.
            let reader = tokio::spawn(async move {
                while let Some(track) = ev.tracks.recv().await {
                    tokio::spawn(async move { while track.poll().await.is_some() {} });
                }
            });
            let until = Instant::now() + Duration::from_secs(3 + (n % 8) as u64);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                drain(&mut c).await;
                let _ = c.request(RequestBody::Heartbeat).await;
            }
            let _ = pc.close().await;
            reader.abort();
            c.close().await;
            Ok(())
        };
        match played.await {
            Ok(()) => tally.plays.fetch_add(1, Ordering::Relaxed),
            Err(_) => tally.errors.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A publishing engine on stream `stage-cam-{s}`.
fn publisher(url: &str, sign: &AppSign, s: usize) -> anyhow::Result<Engine> {
    let e = Engine::create(EngineProfile {
        app_id: 1,
        app_sign: sign.to_hex(),
        server: url.to_string(),
        ..Default::default()
    })?;
    e.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P360)
            .with_fps(15)
            .with_bitrate_kbps(400),
    );
    e.login_room(
        &format!("stage-{s}"),
        User::new(format!("host{s}")),
        RoomConfig::default(),
    );
    e.start_publishing_stream(&format!("stage-cam-{s}"), PublishChannel::Main);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match e
            .events()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Event::PublisherStateUpdate {
                state: PublisherState::Publishing,
                ..
            }) => return Ok(e),
            Ok(_) => {}
            Err(_) => bail!("publisher {s} never started"),
        }
    }
}

/// Runs the load for `seconds`, sampling every second; returns the samples.
fn load(
    args: &SoakArgs,
    url: &str,
    sign: &AppSign,
    pid: u32,
    metrics_url: &str,
    seconds: f64,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<Sample>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..args.users {
        tasks.push(runtime.spawn(user(
            i,
            url.to_string(),
            sign.to_hex(),
            args.rooms,
            stop.clone(),
            tally.clone(),
        )));
    }
    for i in 0..args.players {
        tasks.push(runtime.spawn(player(
            i,
            url.to_string(),
            sign.to_hex(),
            args.publishers,
            stop.clone(),
            tally.clone(),
        )));
    }
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(s) = sample(pid, metrics_url) {
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(samples)
}

/// Waits until the relay holds only the publishers' sessions and no play (vanished users
/// expire after the heartbeat timeout), then until closed connections have finished closing:
/// its tasks and heap stop falling (no new low for [`SETTLED_FOR`]; before the SFU stopped
/// a closed connection's watchdog at once, that took 10–15 s). Returns the sample and the
/// seconds that last wait took.
fn settle(pid: u32, metrics_url: &str, publishers: u64) -> anyhow::Result<(Sample, f64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sample(pid, metrics_url);
        if s.is_some_and(|s| s.sessions <= publishers && s.players == 0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the relay still holds sessions a minute after the load: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cannot = || anyhow::anyhow!("cannot sample the relay");
    let started = Instant::now();
    let mut low = sample(pid, metrics_url).ok_or_else(cannot)?;
    let mut last_low = started;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = sample(pid, metrics_url).ok_or_else(cannot)?;
        // A new low: fewer tasks, or a heap at least 5 % smaller.
        if s.tasks < low.tasks || s.heap_kib * 20 < low.heap_kib * 19 {
            low = s;
            last_low = Instant::now();
        }
        if last_low.elapsed() >= SETTLED_FOR || started.elapsed() >= Duration::from_secs(60) {
            return Ok((s, last_low.duration_since(started).as_secs_f64()));
        }
    }
}

/// How long the relay's tasks and heap must hold without a new low to count as settled.
const SETTLED_FOR: Duration = Duration::from_secs(5);

fn sample_json(s: &Sample) -> serde_json::Value {
    json!({
        "rss_mib": s.rss_kib as f64 / 1024.0,
        "heap_in_use_mib": s.heap_kib as f64 / 1024.0,
        "fds": s.fds,
        "threads": s.threads,
        "tasks": s.tasks,
        "sessions": s.sessions,
    })
}

/// How far the relay's heap in use may end above its baseline (KiB), at least: what the
/// publishers' live sessions fill after the warm-up (their resend histories and keyframe
/// caches; 3.0 → 4.3–5.3 MiB whether the load ran 6 s or 3 min, 2026-11-28, heaptrack: all
/// of it held by the sessions still up).
const HEAP_SLACK_KIB: u64 = 4 * 1024;

/// `end` within ±10 % of `base`, or within `slack` for small counts.
fn within(base: u64, end: u64, slack: u64) -> bool {
    let allowed = (base as f64 * 0.10).max(slack as f64);
    (end as f64 - base as f64).abs() <= allowed
}

/// Runs the benchmark.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let sign = AppSign::random();
    let relay = RelayProcess::start(
        "soak",
        &format!(
            "[limits]\nheartbeat_timeout_ms = 5000\nmax_connections_per_ip = 1000000\nmax_connections = 1000000\nmax_sessions_per_user = 1000\nrequests_per_second = 1000.0\nrequest_burst = 1000.0\nhttp_requests_per_second = 1000.0\nhttp_request_burst = 1000.0\n\n[[apps]]\napp_id = 1\napp_sign = \"{}\"\nallow_app_sign = true\n",
            sign.to_hex()
        ),
    )?;
    let metrics_url = format!("{}/metrics", relay.http_base());
    let pid = relay.pid();
    let (fresh, _) = settle(pid, &metrics_url, 0)?;
    let publishers: Vec<Engine> = (0..args.publishers)
        .map(|s| publisher(&relay.url, &sign, s))
        .collect::<anyhow::Result<_>>()?;
    let tally = Arc::new(Tally::default());
    // Warm-up: one round of the same load, so one-time allocations (pools, caches, the
    // allocator's arenas) are made before the baseline.
    load(
        &args,
        &relay.url,
        &sign,
        pid,
        &metrics_url,
        args.warmup_seconds,
        &tally,
    )?;
    let (baseline, baseline_closing_s) = settle(pid, &metrics_url, args.publishers as u64)?;
    let t0 = Instant::now();
    let samples = load(
        &args,
        &relay.url,
        &sign,
        pid,
        &metrics_url,
        args.minutes * 60.0,
        &tally,
    )?;
    let loaded_seconds = t0.elapsed().as_secs_f64();
    let (end, end_closing_s) = settle(pid, &metrics_url, args.publishers as u64)?;
    drop(publishers);
    drop(relay);

    let series = |f: fn(&Sample) -> f64| stats::summary(samples.iter().map(f).collect());
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    // Resident memory is not judged: glibc keeps what the load's bursts made its arenas grow
    // to (61–68 MiB after the warm-up, 69–74 MiB at the end, not growing with the load's
    // length: 70.8 MiB after 30 s, 74.4 after 90 s, 74.3 after 180 s). The heap in use is
    // what a leak raises.
    let checks = json!({
        "heap": within(baseline.heap_kib, end.heap_kib, HEAP_SLACK_KIB),
        "fds": within(baseline.fds, end.fds, 4),
        "threads": within(baseline.threads, end.threads, 2),
        "tasks": within(baseline.tasks, end.tasks, 4),
    });
    let back = ["heap", "fds", "threads", "tasks"]
        .iter()
        .all(|k| checks[k].as_bool() == Some(true));
    let report = json!({
        "bench": "soak",
        "cores": stats::cores(),
        "minutes": args.minutes,
        "loaded_seconds": loaded_seconds,
        "users": args.users,
        "rooms": args.rooms,
        "publishers": args.publishers,
        "players": args.players,
        "logins": tally.logins.load(Ordering::Relaxed),
        "publishes": tally.publishes.load(Ordering::Relaxed),
        "plays": tally.plays.load(Ordering::Relaxed),
        "vanished": tally.vanished.load(Ordering::Relaxed),
        "client_errors": tally.errors.load(Ordering::Relaxed),
        "fresh": sample_json(&fresh),
        "baseline": sample_json(&baseline),
        "end": sample_json(&end),
        // Seconds after the last session ended until the tasks and heap stopped falling
        // (closed connections finishing).
        "closing_seconds": {"baseline": baseline_closing_s, "end": end_closing_s},
        "under_load": {
            "rss_mib": series(|s| s.rss_kib as f64 / 1024.0),
            "heap_in_use_mib": series(|s| s.heap_kib as f64 / 1024.0),
            "fds": series(|s| s.fds as f64),
            "tasks": series(|s| s.tasks as f64),
            "sessions": series(|s| s.sessions as f64),
            "connections": series(|s| s.connections as f64),
            "players": series(|s| s.players as f64),
            "peak_rss_mib": peak(|s| s.rss_kib) as f64 / 1024.0,
            "peak_sessions": peak(|s| s.sessions),
        },
        "back_to_baseline": checks,
        "ok": back,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !back {
        bail!("the relay did not come back to its baseline after the load");
    }
    Ok(())
}
