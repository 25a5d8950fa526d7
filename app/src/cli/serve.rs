//! `onair serve`: runs the relay until Ctrl-C.

/// Prints a line to stdout, ignoring a closed stdout: a relay keeps serving when whoever
/// started it stops reading its banner (`println!` would panic on the broken pipe).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
    /// Serve wss:// and HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve wss:// with a development certificate for localhost and the listen addresses,
    /// signed by a development CA kept in ~/.config/onair/ (which the client commands trust).
    #[arg(long, conflicts_with = "tls_cert")]
    self_signed: bool,
    /// Extra names (host names or addresses) for the --self-signed certificate.
    #[arg(long = "tls-name", requires = "self_signed")]
    tls_names: Vec<String>,
    /// The address peers reach this relay at through a 1:1 NAT (repeatable); media
    /// candidates carry it instead of the local address.
    #[arg(long = "public-ip")]
    public_ips: Vec<std::net::IpAddr>,
    /// No FEC repair packets to players: losses are repaired by NACK alone (`[rtc] no_fec`).
    #[arg(long)]
    no_fec: bool,
    /// Every client's media on this one UDP port (default: the listen port + 2, e.g. 7882;
    /// 0: one port chosen at start-up).
    #[arg(long)]
    udp_port: Option<u16>,
    /// Give each connection its own UDP port in FIRST-LAST, e.g. 50000-60000 (with
    /// --udp-port: only the connections this relay offers, i.e. pulls from other nodes).
    #[arg(long, value_parser = parse_port_range)]
    udp_port_range: Option<(u16, u16)>,
    /// A TURN server sharing --turn-secret with the relay (coturn `use-auth-secret`); each
    /// client gets credentials minted for its session. Repeatable (`turn:host:3478`, …).
    #[arg(long = "turn", requires = "turn_secret")]
    turn_urls: Vec<String>,
    /// The secret shared with the TURN server (`static-auth-secret`).
    #[arg(
        long,
        env = "ONAIR_TURN_SECRET",
        hide_env_values = true,
        requires = "turn_urls"
    )]
    turn_secret: Option<String>,
    /// Serve /metrics on this address (plain HTTP, e.g. 127.0.0.1:9464) and not on the public
    /// listen address (overrides the config's `[metrics] listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Run as a node of a cluster on this Redis (`redis://host:port[/db]`): rooms, users and
    /// stream IDs are shared with the other nodes, and streams are pulled between them.
    #[arg(long, requires = "node_id")]
    redis: Option<String>,
    /// This node's ID in the cluster (unique; letters, digits, '-', '_', '.').
    #[arg(long, requires = "redis")]
    node_id: Option<String>,
    /// Where clients reach this node, as /dispatch hands it out (default: the signaling URL
    /// it listens on), e.g. wss://node-a.example.com/ws.
    #[arg(long, requires = "redis")]
    advertise: Option<String>,
}

/// Runs the relay.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, file_listen) = match &args.config {
        Some(path) => RelayConfig::load(path)?,
        None => {
            let sign = dev_app::load_or_create()?;
            say!(
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
    if !args.public_ips.is_empty() {
        config.rtc.public_ips = args.public_ips.clone();
    }
    if args.no_fec {
        config.rtc.no_fec = true;
    }
    if let Some(at) = args.metrics_listen {
        config.metrics_listen = Some(at);
    }
    let metrics_at = config.metrics_listen;
    if let (Some(redis), Some(node_id)) = (&args.redis, &args.node_id) {
        config.cluster = Some(onair_relay::cluster::ClusterConfig {
            redis: redis.clone(),
            node_id: node_id.clone(),
            advertise: args.advertise.clone(),
        });
    }
    let cluster_line = config
        .cluster
        .as_ref()
        .map(|c| format!("cluster node {} on {}", c.node_id, c.redis));
    if let Some(range) = args.udp_port_range {
        config.rtc.udp_port_range = Some(range);
    }
    if let Some(port) = args.udp_port {
        config.rtc.udp_port = Some(port);
    }
    if let Some(secret) = &args.turn_secret {
        config.rtc.turn = Some(onair_relay::config::TurnConfig {
            urls: args.turn_urls.clone(),
            secret: secret.clone(),
            ttl_s: 86_400,
        });
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(onair_relay::tls::TlsIdentity::from_pem_files(cert, key)?);
    }
    if args.self_signed {
        config.tls = Some(self_signed(listen, &args.tls_names)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("onair-relay")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::start(config, listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        let metrics = match metrics_at {
            Some(at) => format!("http://{at}/metrics"),
            None => format!("{scheme}://{}/metrics", server.local_addr()),
        };
        say!(
            "relay listening: signaling {} · metrics {metrics}",
            server.url()
        );
        say!("{}", media_line(&server));
        if let Some(line) = &cluster_line {
            say!("{line}");
        }
        tokio::signal::ctrl_c().await?;
        say!("stopping");
        server.shutdown().await;
        Ok(())
    })
}

/// A development certificate for `listen` (and `names`), signed by the development CA, which
/// is made once and kept beside the development app.
fn self_signed(
    listen: SocketAddr,
    names: &[String],
) -> anyhow::Result<onair_relay::tls::TlsIdentity> {
    use onair_relay::tls::{DevCertificates, listen_names};
    let mut all = listen_names(listen);
    all.extend(names.iter().cloned());
    let kept = match (
        std::fs::read_to_string(dev_app::ca_path()),
        std::fs::read_to_string(dev_app::ca_key_path()),
    ) {
        (Ok(ca), Ok(key)) => Some((ca, key)),
        _ => None,
    };
    let (certs, ca_key) =
        DevCertificates::generate_with(kept.as_ref().map(|(c, k)| (c.as_str(), k.as_str())), &all)?;
    dev_app::write_private(&dev_app::ca_key_path(), &ca_key)?;
    std::fs::write(dev_app::ca_path(), &certs.ca_pem)
        .with_context(|| format!("writing {}", dev_app::ca_path().display()))?;
    say!(
        "development TLS certificate for {} · CA in {} (client commands trust it; elsewhere pass --ca-cert)",
        all.join(", "),
        dev_app::ca_path().display()
    );
    Ok(certs.identity()?)
}

/// Where media goes, for the start-up banner.
fn media_line(server: &Server) -> String {
    let net = server.media_network();
    let mut line = match &net.udp_mux {
        Some(mux) => {
            let at: Vec<String> = mux.0.addresses().iter().map(|a| a.to_string()).collect();
            format!(
                "media: UDP {} (one port for every connection)",
                at.join(", ")
            )
        }
        None => {
            let bind: Vec<String> = net.bind.iter().map(|ip| ip.to_string()).collect();
            let ports = match net.udp_port_range {
                Some((first, last)) => format!("ports {first}-{last}"),
                None => "ephemeral ports".into(),
            };
            format!(
                "media: UDP on {} ({ports}, one per connection)",
                bind.join(", ")
            )
        }
    };
    if !net.public_ips.is_empty() {
        let public: Vec<String> = net.public_ips.iter().map(|ip| ip.to_string()).collect();
        line.push_str(&format!(" · advertised as {}", public.join(", ")));
    }
    if let Some(turn) = server.turn_urls() {
        line.push_str(&format!(
            " · TURN {} (credentials per session)",
            turn.join(", ")
        ));
    }
    line
}

/// `50000-60000` → (50000, 60000).
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?}: expected FIRST-LAST, e.g. 50000-60000"))?;
    let first: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let last: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if first == 0 || last < first {
        return Err(format!("{text:?}: need 1 <= FIRST <= LAST"));
    }
    Ok((first, last))
}
