//! Where the client commands get the relay address and app credentials: flags, then
//! `ONAIR_SERVER` / `ONAIR_APP_ID` / `ONAIR_APP_SIGN`, then the development app.

use anyhow::bail;
use clap::Args;

use onair::dev_app;

/// Flags shared by the commands that talk to a relay.
#[derive(Args, Clone, Debug)]
pub struct CredentialArgs {
    /// The relay, ws://host:port.
    #[arg(long, env = "ONAIR_SERVER", default_value = "ws://127.0.0.1:7880")]
    pub server: String,
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
        Ok(Credentials {
            server: self.server.clone(),
            app_id,
            app_sign,
        })
    }
}

impl Credentials {
    /// An engine for these credentials.
    pub fn engine(self) -> anyhow::Result<onair_engine::Engine> {
        Ok(onair_engine::Engine::create(onair_engine::EngineProfile {
            app_id: self.app_id,
            app_sign: self.app_sign.unwrap_or_default(),
            server: self.server,
            ..Default::default()
        })?)
    }
}
