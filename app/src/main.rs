//! `onair`: the Onair studio and command line.
//!
//! `onair` (or `onair studio`) opens the studio on an embedded relay, `onair serve` runs the relay, `onair watch` logs into rooms and prints every event,
//! `onair token` mints a login token, `onair errors` prints the error-code table, and
//! `onair bench NAME --json` measures a hot path.

mod bench;
mod cli;
use onair::studio;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "onair",
    version,
    about = "Onair: ultra-low-latency live streaming (relay, tools and studio)"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the studio (what `onair` with no command does): broadcast, monitor rooms, debug states.
    Studio(studio::StudioArgs),
    /// Run the relay: rooms, users, streams, token auth and heartbeats over WebSocket signaling.
    Serve(cli::serve::ServeArgs),
    /// Log into rooms and print every engine event as a line.
    Watch(cli::watch::WatchArgs),
    /// Publish a stream (test source, camera or file) through the relay.
    Publish(cli::live::PublishArgs),
    /// Play a stream and print its states (and stats with --stats).
    Play(cli::live::PlayArgs),
    /// Send a room message: --broadcast, --barrage, or --command to --to users.
    Message(cli::message::MessageArgs),
    /// Print a room's extra info, or set a key (--set KEY=VALUE).
    RoomInfo(cli::message::RoomInfoArgs),
    /// Mint a login token (an HS256 JWT signed with the app sign).
    Token(cli::token::TokenArgs),
    /// Print the error-code table (`--markdown` writes docs/ERRORS.md's text).
    Errors {
        /// Print the Markdown document instead of a plain list.
        #[arg(long)]
        markdown: bool,
    },
    /// List cameras (with their modes) and microphones.
    Devices,
    /// Measure a hot path and print the figures.
    Bench(bench::BenchArgs),
    /// Impair a link: serve an NFQUEUE, dropping and delaying its packets (root; test hosts).
    #[command(hide = true)]
    Impair(onair::netlab::impair::ImpairArgs),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The WebRTC stack logs expected start-up noise (packets before DTLS completes) as
        // warnings; keep it to errors unless asked.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error,webrtc=error",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match args.command {
        None => studio::run(studio::StudioArgs::default()),
        Some(Command::Studio(a)) => studio::run(a),
        Some(Command::Serve(a)) => cli::serve::run(a),
        Some(Command::Watch(a)) => cli::watch::run(a),
        Some(Command::Token(a)) => cli::token::run(a),
        Some(Command::Message(a)) => cli::message::run_message(a),
        Some(Command::RoomInfo(a)) => cli::message::run_room_info(a),
        Some(Command::Publish(a)) => cli::live::publish(a),
        Some(Command::Play(a)) => cli::live::play(a),
        Some(Command::Errors { markdown }) => {
            cli::errors::run(markdown);
            Ok(())
        }
        Some(Command::Devices) => cli::devices::run(),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Impair(a)) => onair::netlab::impair::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onair: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
