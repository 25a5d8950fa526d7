//! `onair bench NAME --json`: benchmarks of the hot paths, each printing one JSON object with
//! median and p99 and the machine's core count.

mod chromium;
mod fanout;
mod fec;
mod latency;
mod media;
mod relay_proc;
mod signal;
mod soak;
pub mod stats;
mod ui;
mod weaknet;

use clap::{Args, Subcommand};

/// `onair bench` flags.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand, Debug)]
enum Which {
    /// Login latency with N concurrent clients, and signaling messages per second.
    Signal(signal::SignalArgs),
    /// H.264 encode+decode latency at 720p and 1080p, 1080p throughput, frame-channel cost.
    Media(media::MediaArgs),
    /// Capture → decoded delay through the relay, its encode+decode floor, first-frame time.
    Latency(latency::LatencyArgs),
    /// Reed–Solomon repair packets: encode and rebuild time per frame and per keyframe, beside
    /// FlexFEC XOR, and what one player's repairs cost the relay.
    Fec(fec::FecArgs),
    /// Players one relay feeds without loss, and its CPU per player.
    Fanout(fanout::FanoutArgs),
    /// The studio's UI frame time with 16 remote 720p streams playing, and frame upload cost.
    Ui(ui::UiArgs),
    /// Playback over impaired links (loss, bursts, delay, jitter, rate caps) between network
    /// namespaces: stalls, freezes, delay, audio, keyframe requests per cell (root).
    Weaknet(weaknet::WeaknetArgs),
    /// Users churning through rooms for minutes with media flowing: the relay's memory, files,
    /// threads and tasks must come back to their level after a warm-up round.
    Soak(soak::SoakArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Signal(a) => signal::run(a),
        Which::Media(a) => media::run(a),
        Which::Latency(a) => latency::run(a),
        Which::Fanout(a) => fanout::run(a),
        Which::Fec(a) => fec::run(a),
        Which::Ui(a) => ui::run(a),
        Which::Weaknet(a) => weaknet::run(a),
        Which::Soak(a) => soak::run(a),
    }
}
