//! The relay's configuration: its apps (ID, sign, policy) and its limits, read from TOML.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use onair_protocol::token::AppSign;

/// One app the relay serves.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The app ID clients present in `hello`.
    pub app_id: u32,
    /// The app's secret: signs tokens, and is the credential for app-sign login.
    pub app_sign: AppSign,
    /// Whether clients may log in with the app sign instead of a token: a development
    /// convenience (the app sign lets a client claim any user ID, with publish rights). Off in
    /// config files unless set; on for the development app `onair serve` makes without one.
    pub allow_app_sign: bool,
    /// Whether a session may play streams of rooms it is not logged into (as long as it is in
    /// some room of the app): cross-room co-hosting, where a host in room A plays a host in
    /// room B. Off: a session plays only streams of its own rooms.
    pub cross_room_play: bool,
}

/// Limits that keep one client from hurting the others.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest signaling message answered with an error rather than a closed connection.
    pub max_message_bytes: usize,
    /// Rooms per app.
    pub max_rooms_per_app: usize,
    /// Users per room.
    pub max_users_per_room: usize,
    /// Users (room seats) per app, across all its rooms.
    pub max_users_per_app: usize,
    /// Rooms one connection may be logged into.
    pub max_rooms_per_session: usize,
    /// Streams one connection may publish.
    pub max_streams_per_session: usize,
    /// Sustained requests per second per connection.
    pub requests_per_second: f64,
    /// Requests a connection may send in a burst.
    pub request_burst: f64,
    /// Consecutive error responses after which the connection is closed.
    pub max_consecutive_errors: u32,
    /// How often clients are asked to send heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A session not heard from for this long is removed with its streams; a WHIP/WHEP
    /// resource whose media connection has carried nothing for this long likewise.
    pub heartbeat_timeout_ms: u64,
    /// Signaling connections plus WHIP/WHEP resources, in total.
    pub max_connections: usize,
    /// Signaling connections plus WHIP/WHEP resources from one IP address.
    pub max_connections_per_ip: usize,
    /// Sessions one user ID may be logged in from at once, per app (each WHIP/WHEP resource
    /// is a session).
    pub max_sessions_per_user: usize,
    /// WHIP/WHEP resources per app.
    pub max_http_sessions_per_app: usize,
    /// WHIP/WHEP resources per user ID (per token's user).
    pub max_http_sessions_per_user: usize,
    /// Streams one session may play at once (one peer connection each).
    pub max_plays_per_session: usize,
    /// A media peer connection that does not reach Connected this long after the relay's
    /// answer is closed and its stream or play freed.
    pub connect_timeout_ms: u64,
    /// Sustained HTTP requests per second per IP address (WHIP, WHEP, resources, `/live`,
    /// `/metrics`; not the `/ws` upgrade, which has the connection limits). Over it: 429.
    pub http_requests_per_second: f64,
    /// HTTP requests an address may send in a burst.
    pub http_request_burst: f64,
    /// Largest SDP offer accepted (WHIP/WHEP bodies and `publish`/`play` offers).
    pub max_sdp_bytes: usize,
    /// How long before a room token expires its session is warned (`token_will_expire`).
    pub token_warning_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_rooms_per_app: 10_000,
            max_users_per_room: 10_000,
            max_users_per_app: 100_000,
            max_rooms_per_session: 64,
            max_streams_per_session: 8,
            requests_per_second: 50.0,
            request_burst: 200.0,
            max_consecutive_errors: 32,
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 30_000,
            max_connections: 20_000,
            max_connections_per_ip: 1_024,
            max_sessions_per_user: 16,
            max_http_sessions_per_app: 2_000,
            max_http_sessions_per_user: 4,
            max_plays_per_session: 32,
            connect_timeout_ms: 10_000,
            http_requests_per_second: 20.0,
            http_request_burst: 60.0,
            max_sdp_bytes: 64 * 1024,
            token_warning_s: 30,
        }
    }
}

/// The relay's whole configuration.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    /// The apps served.
    pub apps: Vec<AppConfig>,
    /// Limits.
    pub limits: Limits,
    /// The SFU's media network.
    pub rtc: RtcConfig,
    /// Serve HTTPS and `wss://` with this certificate (`[tls] cert, key`, `--tls-cert`,
    /// `--self-signed`); None: plain HTTP.
    pub tls: Option<crate::tls::TlsIdentity>,
    /// Serve `/metrics` on this address (plain HTTP) instead of the public one
    /// (`[metrics] listen`, `onair serve --metrics-listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Run as a node of a cluster on Redis (`[cluster]`, `onair serve --redis`); None: a
    /// single relay.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Where the SFU's media goes (`[rtc]` in the config file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// The address media sockets bind (default: the listen address; listening on all
    /// interfaces binds every interface).
    pub bind_ip: Option<std::net::IpAddr>,
    /// 1:1 NAT: the addresses the world reaches this relay at. Host candidates carry them
    /// instead of the bound addresses (`onair serve --public-ip`).
    pub public_ips: Vec<std::net::IpAddr>,
    /// No FEC repair packets to players (`no_fec = true`, `onair serve --no-fec`): losses
    /// are repaired by NACK alone, and a lossy player's link carries no extra packets.
    pub no_fec: bool,
    /// Media sockets bind only ports in this range (`udp_port_range = [50000, 60000]`,
    /// `--udp-port-range 50000-60000`): one firewall rule opens the relay's media. Given
    /// without `udp_port`, every connection gets its own port of the range (no shared port).
    pub udp_port_range: Option<(u16, u16)>,
    /// Every client's connection on this one UDP port (`udp_port = 7882`, `--udp-port`; 0:
    /// one port chosen at start-up). Default: the listen port + 2 (7880 → 7882; an ephemeral
    /// listen port → an ephemeral media port), unless only `udp_port_range` is set.
    pub udp_port: Option<u16>,
    /// STUN/TURN servers handed to every client as they are (`[[rtc.ice_servers]]`).
    pub ice_servers: Vec<onair_protocol::IceServer>,
    /// A TURN server sharing a secret with the relay (coturn's `use-auth-secret`): each
    /// client gets credentials minted for its session (`[rtc.turn]`).
    pub turn: Option<TurnConfig>,
}

/// A TURN server with REST-style credentials (`[rtc.turn]`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:host:port` (and `turns:`/`?transport=tcp` variants) of the server.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (coturn `static-auth-secret`).
    pub secret: String,
    /// How long minted credentials are valid, seconds (default one day).
    #[serde(default = "TurnConfig::default_ttl")]
    pub ttl_s: u64,
}

impl TurnConfig {
    fn default_ttl() -> u64 {
        86_400
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl_s", &self.ttl_s)
            .finish()
    }
}

impl RtcConfig {
    /// The ICE servers for a client session `user` at `now_unix` (seconds): the static ones,
    /// then the TURN server with credentials minted for it.
    pub fn ice_servers_for(&self, user: &str, now_unix: u64) -> Vec<onair_protocol::IceServer> {
        let mut out = self.ice_servers.clone();
        if let Some(turn) = &self.turn {
            let (username, credential) = onair_protocol::ice::turn_rest_credentials(
                &turn.secret,
                user,
                now_unix + turn.ttl_s,
            );
            out.push(onair_protocol::IceServer {
                urls: turn.urls.clone(),
                username,
                credential,
            });
        }
        out
    }

    /// The shared media port of a relay listening on port `listen_port`, if it shares one.
    pub fn shared_port(&self, listen_port: u16) -> Option<u16> {
        match (self.udp_port, self.udp_port_range) {
            (Some(port), _) => Some(port),
            (None, Some(_)) => None,
            (None, None) if listen_port == 0 => Some(0),
            (None, None) => Some(listen_port.checked_add(2).unwrap_or(0)),
        }
    }

    /// The SFU's media network for a relay listening on `listen`.
    pub fn network(&self, listen: std::net::IpAddr) -> onair_transport::peer::MediaNetwork {
        let mut net =
            onair_transport::peer::MediaNetwork::for_listen(self.bind_ip.unwrap_or(listen));
        net.public_ips = self.public_ips.clone();
        net.udp_port_range = self.udp_port_range;
        net
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid.
    #[error("invalid relay config: {0}")]
    Parse(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    apps: Vec<FileApp>,
    #[serde(default)]
    rtc: RtcConfig,
    #[serde(default)]
    tls: Option<FileTls>,
    #[serde(default)]
    metrics: Option<FileMetrics>,
    #[serde(default)]
    cluster: Option<crate::cluster::ClusterConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: std::net::SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    app_id: u32,
    app_sign: String,
    #[serde(default)]
    allow_app_sign: bool,
    #[serde(default)]
    cross_room_play: bool,
}

impl RelayConfig {
    /// A config serving one app.
    pub fn single_app(app_id: u32, app_sign: AppSign) -> Self {
        RelayConfig {
            apps: vec![AppConfig {
                app_id,
                app_sign,
                allow_app_sign: true,
                cross_room_play: false,
            }],
            limits: Limits::default(),
            rtc: RtcConfig::default(),
            tls: None,
            metrics_listen: None,
            cluster: None,
        }
    }

    /// Parses TOML; returns the config and the `listen` address if the file sets one.
    pub fn from_toml(text: &str) -> Result<(RelayConfig, Option<String>), ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut apps = Vec::new();
        for app in file.apps {
            let sign = AppSign::from_hex(&app.app_sign).ok_or_else(|| {
                ConfigError::Parse(format!(
                    "app {}: app_sign must be 64 hex characters",
                    app.app_id
                ))
            })?;
            if apps.iter().any(|a: &AppConfig| a.app_id == app.app_id) {
                return Err(ConfigError::Parse(format!(
                    "app {} listed twice",
                    app.app_id
                )));
            }
            apps.push(AppConfig {
                app_id: app.app_id,
                app_sign: sign,
                allow_app_sign: app.allow_app_sign,
                cross_room_play: app.cross_room_play,
            });
        }
        if apps.is_empty() {
            return Err(ConfigError::Parse("no [[apps]] configured".into()));
        }
        let tls = match file.tls {
            Some(t) => Some(
                crate::tls::TlsIdentity::from_pem_files(&t.cert, &t.key)
                    .map_err(|e| ConfigError::Parse(format!("[tls]: {e}")))?,
            ),
            None => None,
        };
        Ok((
            RelayConfig {
                apps,
                limits: file.limits,
                rtc: file.rtc,
                tls,
                metrics_listen: file.metrics.map(|m| m.listen),
                cluster: file.cluster,
            },
            file.listen,
        ))
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<(RelayConfig, Option<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apps_and_limits() {
        let text = format!(
            "listen = \"127.0.0.1:9000\"\n[limits]\nheartbeat_timeout_ms = 1000\n[[apps]]\napp_id = 5\napp_sign = \"{}\"\nallow_app_sign = false\n",
            "11".repeat(32)
        );
        let (cfg, listen) = RelayConfig::from_toml(&text).expect("valid");
        assert_eq!(listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(cfg.apps[0].app_id, 5);
        assert!(!cfg.apps[0].allow_app_sign);
        assert_eq!(cfg.limits.heartbeat_timeout_ms, 1000);
        assert_eq!(cfg.limits.max_users_per_room, 10_000);
        assert_eq!(cfg.rtc, RtcConfig::default());
    }

    #[test]
    fn rtc_addresses_follow_the_listen_address() {
        let text = format!(
            "[rtc]\npublic_ips = [\"203.0.113.7\"]\n[[apps]]\napp_id = 5\napp_sign = \"{}\"\n",
            "11".repeat(32)
        );
        let (cfg, _) = RelayConfig::from_toml(&text).expect("valid");
        let any = std::net::IpAddr::from([0, 0, 0, 0]);
        let net = cfg.rtc.network(any);
        assert_eq!(net.bind, [any], "every interface");
        assert_eq!(net.public_ips, [std::net::IpAddr::from([203, 0, 113, 7])]);
        assert!(!net.mdns, "the relay needs no multicast");
        assert!(cfg.rtc.ice_servers_for("s1", 100).is_empty());
        let one = std::net::IpAddr::from([10, 77, 0, 1]);
        assert_eq!(RtcConfig::default().network(one).bind, [one]);
    }

    #[test]
    fn turn_credentials_are_minted_per_session() {
        let text = format!(
            "[[rtc.ice_servers]]\nurls = [\"stun:10.77.0.1:3478\"]\n[rtc.turn]\nurls = [\"turn:10.77.0.1:3478\"]\nsecret = \"s3cret\"\nttl_s = 60\n[[apps]]\napp_id = 5\napp_sign = \"{}\"\n",
            "11".repeat(32)
        );
        let (cfg, _) = RelayConfig::from_toml(&text).expect("valid");
        let servers = cfg.rtc.ice_servers_for("7", 1_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:10.77.0.1:3478"]);
        assert_eq!(servers[1].username, "1060:7");
        assert_eq!(
            (servers[1].username.clone(), servers[1].credential.clone()),
            onair_protocol::ice::turn_rest_credentials("s3cret", "7", 1060)
        );
        assert!(
            !format!("{:?}", cfg.rtc).contains("s3cret"),
            "the secret is never logged"
        );
    }

    #[test]
    fn config_files_allow_app_sign_login_and_cross_room_play_only_when_they_say_so() {
        let text = format!(
            "[[apps]]\napp_id = 5\napp_sign = \"{}\"\n[[apps]]\napp_id = 6\napp_sign = \"{}\"\nallow_app_sign = true\ncross_room_play = true\n",
            "11".repeat(32),
            "22".repeat(32)
        );
        let (cfg, _) = RelayConfig::from_toml(&text).expect("valid");
        assert!(
            !cfg.apps[0].allow_app_sign,
            "tokens only unless the file says"
        );
        assert!(!cfg.apps[0].cross_room_play);
        assert!(cfg.apps[1].allow_app_sign && cfg.apps[1].cross_room_play);
        // The development app (no config file) allows the sign.
        assert!(RelayConfig::single_app(1, AppSign::random()).apps[0].allow_app_sign);
    }

    #[test]
    fn refuses_bad_files() {
        assert!(RelayConfig::from_toml("[[apps]]\napp_id = 1\napp_sign = \"xyz\"\n").is_err());
        assert!(RelayConfig::from_toml("").is_err());
        assert!(RelayConfig::from_toml("nonsense = 1\n").is_err());
    }
}
