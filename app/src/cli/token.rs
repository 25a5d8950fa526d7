//! `onair token`: mints a login token (the seed's "temporary token") for a user.

use anyhow::{Context as _, bail};
use clap::Args;
use onair_engine::token::{self, AppSign, Claims};

use onair::dev_app;

/// `onair token` flags.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The app ID.
    #[arg(long, env = "ONAIR_APP_ID", default_value_t = dev_app::DEV_APP_ID)]
    app_id: u32,
    /// The user the token is for.
    #[arg(long)]
    user_id: String,
    /// Limit the token to one room.
    #[arg(long)]
    room: Option<String>,
    /// Grant the publish privilege.
    #[arg(long)]
    publish: bool,
    /// Limit publishing to these stream IDs (repeatable; ZEGO token04's `stream_id_list`).
    #[arg(long = "stream-id", requires = "publish")]
    stream_ids: Vec<String>,
    /// Lifetime, e.g. 90s, 15m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// The app sign (default: the development app's, for app 1).
    #[arg(long, env = "ONAIR_APP_SIGN", hide_env_values = true)]
    app_sign: Option<String>,
}

/// Prints the token on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let sign_hex = match args.app_sign {
        Some(s) => s,
        None if args.app_id == dev_app::DEV_APP_ID => dev_app::load()
            .map(|s| s.to_hex())
            .context("no --app-sign given and no development app yet: run `onair serve` once")?,
        None => bail!("--app-sign is required for app {}", args.app_id),
    };
    let sign = AppSign::from_hex(&sign_hex).context("the app sign must be 64 hex characters")?;
    onair_engine::ids::check_user_id(&args.user_id)
        .map_err(|c| anyhow::anyhow!("{}: {}", c, c.cause()))?;
    if let Some(room) = &args.room {
        onair_engine::ids::check_room_id(room)
            .map_err(|c| anyhow::anyhow!("{}: {}", c, c.cause()))?;
    }
    let ttl = token::parse_ttl(&args.ttl).context("--ttl: use a number with s, m, h or d")?;
    let mut claims = Claims::new(args.app_id, args.user_id, token::unix_now(), ttl);
    claims.room_id = args.room;
    claims.privilege.publish = args.publish;
    for id in &args.stream_ids {
        onair_engine::ids::check_stream_id(id)
            .map_err(|c| anyhow::anyhow!("{}: {}", c, c.cause()))?;
    }
    claims.stream_id_list = (!args.stream_ids.is_empty()).then_some(args.stream_ids);
    println!("{}", token::mint(&claims, &sign));
    Ok(())
}
