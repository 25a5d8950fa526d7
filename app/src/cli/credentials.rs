//! Where the client commands get the relay address and app credentials: flags, then
//! `ONAIR_SERVER` / `ONAIR_APP_ID` / `ONAIR_APP_SIGN`, then the development app.

use anyhow::bail;
use clap::Args;

use onair::dev_app;

/// Flags shared by the commands that talk to a relay.
#[derive(Args, Clone, Debug)]
pub struct CredentialArgs {
    /// The relay, ws://host:port or wss://host:port; for a cluster, several nodes separated
    /// by commas (ws://a:7880,ws://b:7880): the engine moves to the next when one dies.
    #[arg(long, env = "ONAIR_SERVER", default_value = "ws://127.0.0.1:7880")]
    pub server: String,
    /// A CA certificate (PEM) to trust for wss:// besides the system's (default: the
    /// development CA made by `onair serve --self-signed`, if there is one).
    #[arg(long, env = "ONAIR_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Send media only through a TURN server (relayed candidates; the relay hands out the
    /// TURN server and credentials when it has one).
    #[arg(long)]
    pub relay_only: bool,
    /// The app ID (default: the development app made by `onair serve`).
    #[arg(long, env = "ONAIR_APP_ID")]
    pub app_id: Option<u32>,
    /// The app sign, 64 hex characters (default: the development app's).
    #[arg(long, env = "ONAIR_APP_SIGN", hide_env_values = true)]
    pub app_sign: Option<String>,
}

/// Resolved credentials.
pub struct Credentials {
    pub server: String,
    pub app_id: u32,
    pub app_sign: Option<String>,
    /// Extra CA (PEM text) to trust for wss://.
    pub ca_cert: Option<String>,
    /// Relayed candidates only.
    pub relay_only: bool,
}

impl CredentialArgs {
    /// Fills in what the flags left out from the development app.
    pub fn resolve(&self) -> anyhow::Result<Credentials> {
        let app_id = self.app_id.unwrap_or(dev_app::DEV_APP_ID);
        let app_sign = match self.app_sign.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.to_string()),
            None if app_id == dev_app::DEV_APP_ID => dev_app::load().map(|s| s.to_hex()),
            None => None,
        };
        if app_sign
            .as_deref()
            .is_some_and(|s| onair_engine::token::AppSign::from_hex(s).is_none())
        {
            bail!("the app sign must be 64 hex characters");
        }
        let ca_cert = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?,
            ),
            None => dev_app::load_ca(),
        };
        Ok(Credentials {
            server: self.server.clone(),
            app_id,
            app_sign,
            ca_cert,
            relay_only: self.relay_only,
        })
    }
}

impl Credentials {
    /// An engine for these credentials (its publishers send FEC when `publish_fec`).
    pub fn engine(self, publish_fec: bool) -> anyhow::Result<onair_engine::Engine> {
        Ok(onair_engine::Engine::create(onair_engine::EngineProfile {
            app_id: self.app_id,
            app_sign: self.app_sign.unwrap_or_default(),
            server: self.server,
            ca_cert: self.ca_cert,
            publish_fec,
            ice_transport_policy: if self.relay_only {
                onair_engine::IceTransportPolicy::Relay
            } else {
                onair_engine::IceTransportPolicy::All
            },
            ..Default::default()
        })?)
    }
}
