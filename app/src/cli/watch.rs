//! `onair watch`: logs into rooms and prints every event as a line, until Ctrl-C.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use onair_engine::{Event, RoomConfig, RoomStateChangedReason, User};

use crate::cli::credentials::CredentialArgs;

/// `onair watch` flags.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Room to log into (repeat for several).
    #[arg(long = "room", required = true)]
    rooms: Vec<String>,
    /// User ID (default: watch-<pid>).
    #[arg(long)]
    user: Option<String>,
    /// User name (default: the user ID).
    #[arg(long)]
    user_name: Option<String>,
    /// A login token instead of the app sign.
    #[arg(long, env = "ONAIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Do not ask for user join/leave updates.
    #[arg(long)]
    no_user_notify: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Also play this stream (repeat for several), so its SEI, mute states and levels are
    /// printed too (the pictures are decoded and dropped).
    #[arg(long = "play")]
    play: Vec<String>,
    /// Print sound levels every this many milliseconds (100–3000): ours (silence) and the
    /// played streams'.
    #[arg(long)]
    levels: Option<u64>,
    #[command(flatten)]
    credentials: CredentialArgs,
}

fn is_final(reason: RoomStateChangedReason) -> bool {
    matches!(
        reason,
        RoomStateChangedReason::LoginFailed
            | RoomStateChangedReason::ReconnectFailed
            | RoomStateChangedReason::KickOut
            | RoomStateChangedReason::Logout
    )
}

/// Prints events until Ctrl-C, `--duration`, or every room has ended. Exits non-zero if a
/// room ended in failure.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let creds = args.credentials.resolve()?;
    let user_id = args
        .user
        .unwrap_or_else(|| format!("watch-{}", std::process::id()));
    let user = User {
        user_name: args.user_name.unwrap_or_else(|| user_id.clone()),
        user_id,
    };
    let engine = creds.engine(true)?;
    for room in &args.rooms {
        engine.login_room(
            room,
            user.clone(),
            RoomConfig {
                token: args.token.clone(),
                is_user_status_notify: !args.no_user_notify,
            },
        );
    }
    for stream in &args.play {
        engine.start_playing_stream(stream, onair_engine::PlayerConfig::default());
    }
    if let Some(ms) = args.levels {
        engine.start_sound_level_monitor(ms.clamp(100, 3000), true);
    }
    let stop = crate::cli::ctrl_c_flag();
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut open: std::collections::BTreeSet<String> = args.rooms.iter().cloned().collect();
    let mut failed = false;
    while !stop.load(Ordering::SeqCst)
        && deadline.is_none_or(|d| Instant::now() < d)
        && !open.is_empty()
    {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        println!("{:>9.3} {event}", started.elapsed().as_secs_f64());
        if let Event::RoomStateChanged {
            room_id, reason, ..
        } = &event
            && is_final(*reason)
        {
            open.remove(room_id);
            failed |= *reason != RoomStateChangedReason::Logout;
        }
    }
    engine.logout_all_rooms();
    let until = Instant::now() + Duration::from_secs(2);
    while !open.is_empty() && Instant::now() < until {
        if let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) {
            println!("{:>9.3} {event}", started.elapsed().as_secs_f64());
            if let Event::RoomStateChanged {
                room_id, reason, ..
            } = &event
                && is_final(*reason)
            {
                open.remove(room_id);
            }
        }
    }
    engine.destroy();
    if failed {
        anyhow::bail!("a room ended in failure");
    }
    Ok(())
}
