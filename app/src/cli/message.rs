//! `onair message` and `onair room-info`: log into a room, send one room message (broadcast,
//! barrage or custom command) or set one key of the room's extra info, print the result, leave.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use onair_engine::{Engine, Event, RoomConfig, RoomStateChangedReason, User};

use crate::cli::credentials::CredentialArgs;

/// `onair message` flags.
#[derive(Args, Debug)]
pub struct MessageArgs {
    /// The room.
    #[arg(long)]
    room: String,
    /// Send TEXT as a broadcast message (reliable; ≤ 1 KiB, 10 a second per room).
    #[arg(long, value_name = "TEXT", group = "what")]
    broadcast: Option<String>,
    /// Send TEXT as a barrage message (≤ 1 KiB, 20 a second per room).
    #[arg(long, value_name = "TEXT", group = "what")]
    barrage: Option<String>,
    /// Send TEXT as a custom command (to --to, or everyone).
    #[arg(long, value_name = "TEXT", group = "what")]
    command: Option<String>,
    /// The custom command's recipients (user IDs, comma-separated).
    #[arg(long, value_delimiter = ',', requires = "command")]
    to: Vec<String>,
    #[command(flatten)]
    common: RoomArgs,
}

/// `onair room-info` flags.
#[derive(Args, Debug)]
pub struct RoomInfoArgs {
    /// The room.
    #[arg(long)]
    room: String,
    /// Set KEY=VALUE in the room's extra info (≤ 128-byte keys, ≤ 4 KiB values, ≤ 10 keys).
    #[arg(long, value_name = "KEY=VALUE")]
    set: Option<String>,
    #[command(flatten)]
    common: RoomArgs,
}

/// Who logs in.
#[derive(Args, Debug)]
pub struct RoomArgs {
    /// User ID (default: cli-<pid>).
    #[arg(long)]
    user: Option<String>,
    /// A login token instead of the app sign.
    #[arg(long, env = "ONAIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    credentials: CredentialArgs,
}

const WAIT: Duration = Duration::from_secs(10);

/// Logs into `room`; returns the engine and the room's extra info seen at login.
fn join(room: &str, args: RoomArgs) -> anyhow::Result<(Engine, Vec<String>)> {
    let creds = args.credentials.resolve()?;
    let engine = creds.engine(true)?;
    let user = args
        .user
        .unwrap_or_else(|| format!("cli-{}", std::process::id()));
    engine.login_room(
        room,
        User::new(user),
        RoomConfig {
            token: args.token,
            is_user_status_notify: false,
        },
    );
    let deadline = Instant::now() + WAIT;
    let mut info = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.events().recv_timeout(left) {
            Ok(Event::RoomStateChanged {
                reason: RoomStateChangedReason::Logined,
                ..
            }) => break,
            Ok(Event::RoomStateChanged {
                reason: RoomStateChangedReason::LoginFailed,
                error_code,
                ..
            }) => bail!("login failed: {error_code}"),
            Ok(e @ Event::RoomExtraInfoUpdate { .. }) => info.push(e.to_string()),
            Ok(_) => {}
            Err(_) => bail!("no login within {WAIT:?}"),
        }
    }
    // Extra info arrives right after the login's answer.
    while let Ok(e) = engine.events().recv_timeout(Duration::from_millis(200)) {
        if let Event::RoomExtraInfoUpdate { .. } = e {
            info.push(e.to_string());
        }
    }
    Ok((engine, info))
}

/// Waits for the result of call `seq`: Ok(message ID) or the error code.
fn result_of(engine: &Engine, seq: u64) -> anyhow::Result<Result<u64, u32>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine
            .events()
            .recv_timeout(left)
            .context("no result in time")?
        {
            Event::IMSendResult {
                seq: s,
                error_code,
                message_id,
                ..
            } if s == seq => {
                return Ok(if error_code == 0 {
                    Ok(message_id)
                } else {
                    Err(error_code)
                });
            }
            Event::RoomSetExtraInfoResult {
                seq: s, error_code, ..
            } if s == seq => {
                return Ok(if error_code == 0 {
                    Ok(0)
                } else {
                    Err(error_code)
                });
            }
            _ => {}
        }
    }
}

fn refused(code: u32) -> anyhow::Error {
    match onair_engine::ErrorCode::from_code(code) {
        Some(c) => anyhow::anyhow!("refused: {code} {}: {}", c.name(), c.cause()),
        None => anyhow::anyhow!("refused: {code}"),
    }
}

/// Runs `onair message`.
pub fn run_message(args: MessageArgs) -> anyhow::Result<()> {
    let (engine, _) = join(&args.room, args.common)?;
    let seq = match (&args.broadcast, &args.barrage, &args.command) {
        (Some(t), _, _) => engine.send_broadcast_message(&args.room, t),
        (_, Some(t), _) => engine.send_barrage_message(&args.room, t),
        (_, _, Some(t)) => {
            let to: Vec<&str> = args.to.iter().map(String::as_str).collect();
            engine.send_custom_command(&args.room, t, &to)
        }
        _ => bail!("give --broadcast, --barrage or --command"),
    };
    let result = result_of(&engine, seq)?;
    engine.logout_all_rooms();
    engine.destroy();
    match result {
        Ok(id) => {
            println!("sent: message_id={id}");
            Ok(())
        }
        Err(code) => Err(refused(code)),
    }
}

/// Runs `onair room-info`: prints the room's extra info, or sets a key.
pub fn run_room_info(args: RoomInfoArgs) -> anyhow::Result<()> {
    let (engine, info) = join(&args.room, args.common)?;
    let outcome = match &args.set {
        Some(kv) => {
            let (key, value) = kv.split_once('=').context("--set KEY=VALUE")?;
            let seq = engine.set_room_extra_info(&args.room, key, value);
            result_of(&engine, seq)?.map(|_| println!("set: {key}"))
        }
        None => {
            if info.is_empty() {
                println!("room {}: no extra info", args.room);
            }
            for line in info {
                println!("{line}");
            }
            Ok(())
        }
    };
    engine.logout_all_rooms();
    engine.destroy();
    outcome.map_err(refused)
}
