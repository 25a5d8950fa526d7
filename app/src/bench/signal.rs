//! `onair bench signal`: login latency of a lone client and of N concurrent clients (connect,
//! WebSocket handshake, hello, login), and the signaling messages
//! per second one relay answers. Relay and clients run in this process on this machine's cores,
//! so the throughput is what the relay sustains while also paying for its clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use onair_engine::User;
use onair_engine::messages::{RequestBody, ServerMessage};
use onair_engine::signal::SignalClient;
use onair_engine::token::AppSign;
use onair_relay::{Limits, RelayConfig, Server};
use serde_json::json;

use super::stats;

/// `onair bench signal` flags.
#[derive(Args, Debug)]
pub struct SignalArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Rooms they spread over.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Sequential logins of a lone client, measured first.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Requests each client keeps in flight during the throughput phase.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Print one JSON object (the default output is the same object, pretty-printed).
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: SignalArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&args))?;
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn bench(args: &SignalArgs) -> anyhow::Result<serde_json::Value> {
    let sign = AppSign::random();
    let mut config = RelayConfig::single_app(1, sign.clone());
    config.limits = Limits {
        requests_per_second: 1e9,
        request_burst: 1e9,
        max_users_per_room: args.clients + 1,
        ..Limits::default()
    };
    let server = Server::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = server.url();
    let sign_hex = sign.to_hex();

    // Phase 0: one client logs in and out again and again: the latency of a lone login.
    let mut lone_ms = Vec::with_capacity(args.sequential);
    for i in 0..args.sequential {
        let t0 = Instant::now();
        let (mut client, _) =
            SignalClient::join(&url, 1, "lone", User::new(format!("lone{i}")), &sign_hex).await?;
        lone_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        client
            .request(RequestBody::Logout {
                room_id: "lone".into(),
            })
            .await?;
        client.close().await;
    }

    // Phase 1: every client connects and logs in at once.
    let start = Arc::new(tokio::sync::Barrier::new(args.clients));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let (url, sign_hex, start) = (url.clone(), sign_hex.clone(), start.clone());
        let room = format!("bench-{}", i % args.rooms.max(1));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let t0 = Instant::now();
            let (client, _) =
                SignalClient::join(&url, 1, &room, User::new(format!("u{i}")), &sign_hex).await?;
            Ok::<_, onair_engine::EngineError>((client, t0.elapsed().as_secs_f64() * 1e3))
        }));
    }
    let mut clients = Vec::with_capacity(args.clients);
    let mut login_ms = Vec::with_capacity(args.clients);
    for t in tasks {
        let (client, ms) = t.await?.context("a bench client failed to log in")?;
        clients.push(client);
        login_ms.push(ms);
    }

    // Phase 2: every client keeps `window` heartbeats in flight for `seconds`.
    let answered = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.seconds);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let (answered, window) = (answered.clone(), args.window.max(1));
        tasks.push(tokio::spawn(async move {
            let mut in_flight = 0usize;
            loop {
                let sending = t0.elapsed() < duration;
                while sending && in_flight < window {
                    if client.send(RequestBody::Heartbeat).await.is_err() {
                        return;
                    }
                    in_flight += 1;
                }
                if in_flight == 0 {
                    break;
                }
                match client.recv().await {
                    Some(Ok(ServerMessage::Response { .. })) => {
                        in_flight -= 1;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            client.close().await;
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let total = answered.load(Ordering::Relaxed);
    server.shutdown().await;
    Ok(json!({
        "bench": "signal",
        "cores": stats::cores(),
        "clients": args.clients,
        "rooms": args.rooms,
        "login_ms": stats::summary(login_ms),
        "lone_login_ms": stats::summary(lone_ms),
        "messages_per_s": (total as f64 / elapsed).round(),
        "requests_answered": total,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
    }))
}
