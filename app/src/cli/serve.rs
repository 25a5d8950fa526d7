//! `onair serve`: runs the relay until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use onair_relay::{RelayConfig, Server};

use onair::dev_app;

/// `onair serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (overrides the config's `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// TOML config with [[apps]] and [limits]; without one a development app is served.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs the relay.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, file_listen) = match &args.config {
        Some(path) => RelayConfig::load(path)?,
        None => {
            let sign = dev_app::load_or_create()?;
            println!(
                "development app: app_id={} app_sign={} (kept in {})",
                dev_app::DEV_APP_ID,
                sign.to_hex(),
                dev_app::path().display()
            );
            (RelayConfig::single_app(dev_app::DEV_APP_ID, sign), None)
        }
    };
    let listen = args
        .listen
        .or(file_listen)
        .unwrap_or_else(|| "127.0.0.1:7880".into());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("onair-relay")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::start(config, listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!(
            "relay listening: signaling {} · metrics http://{}/metrics",
            server.url(),
            server.local_addr()
        );
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        server.shutdown().await;
        Ok(())
    })
}
