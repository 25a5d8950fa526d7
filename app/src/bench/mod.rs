//! `onair bench NAME --json`: benchmarks of the hot paths, each printing one JSON object with
//! median and p99 and the machine's core count.

mod signal;
pub mod stats;

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
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Signal(a) => signal::run(a),
    }
}
