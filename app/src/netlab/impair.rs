//! `onair impair`: a link impairment on a kernel NFQUEUE. Every packet the queue's iptables
//! rule sends here is dropped (random or Gilbert–Elliott burst loss) or held for a one-way
//! delay with jitter and then released to the kernel, which reorders packets whenever the
//! jitter is larger than the gap between them — as a real path does. The kernel has no netem
//! here; this is the part of netem the weak-network tests need, on real packets.
//!
//! [`Impairment`] decides (sans-I/O, seeded); [`run`] is the loop around the queue.

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a link does to packets, per direction.
#[derive(Args, Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LinkSpec {
    /// Share of packets lost, 0–1.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Mean length of a loss burst in packets (1 = independent losses; > 1 = Gilbert–Elliott
    /// bursts with the same overall loss).
    #[arg(long, default_value_t = 1.0)]
    pub burst: f64,
    /// One-way delay added, ms.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u32,
    /// Jitter: each packet's delay is `delay ± jitter` (uniform), ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u32,
}

impl LinkSpec {
    /// A link that does nothing.
    pub const CLEAN: LinkSpec = LinkSpec {
        loss: 0.0,
        burst: 1.0,
        delay_ms: 0,
        jitter_ms: 0,
    };

    /// Whether the link changes anything.
    pub fn is_clean(&self) -> bool {
        self.loss <= 0.0 && self.delay_ms == 0 && self.jitter_ms == 0
    }
}

/// The decision for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Drop,
    /// Released after this long.
    After(Duration),
}

/// The seeded loss and delay model of one direction of a link.
pub struct Impairment {
    spec: LinkSpec,
    rng: StdRng,
    /// Gilbert–Elliott: in the bad (losing) state.
    bad: bool,
}

impl Impairment {
    /// The model of `spec`, random from `seed`.
    pub fn new(spec: LinkSpec, seed: u64) -> Impairment {
        Impairment {
            spec,
            rng: StdRng::seed_from_u64(seed),
            bad: false,
        }
    }

    /// What happens to the next packet.
    pub fn fate(&mut self) -> Fate {
        let loss = self.spec.loss.clamp(0.0, 1.0);
        let lost = if self.spec.burst <= 1.0 || loss >= 1.0 {
            self.rng.random_bool(loss)
        } else {
            // Two states: the bad one loses every packet and is left with probability
            // 1/burst (mean stay = burst packets); the good one is left with the probability
            // that makes the long-run share of bad packets `loss`.
            let leave_bad = 1.0 / self.spec.burst;
            let enter_bad = (loss * leave_bad / (1.0 - loss)).clamp(0.0, 1.0);
            self.bad = if self.bad {
                !self.rng.random_bool(leave_bad)
            } else {
                self.rng.random_bool(enter_bad)
            };
            self.bad
        };
        if lost {
            return Fate::Drop;
        }
        let jitter = f64::from(self.spec.jitter_ms);
        let delay = f64::from(self.spec.delay_ms)
            + if jitter > 0.0 {
                self.rng.random_range(-jitter..=jitter)
            } else {
                0.0
            };
        Fate::After(Duration::from_secs_f64(delay.max(0.0) / 1e3))
    }
}

/// `onair impair` flags.
#[derive(Args, Debug)]
pub struct ImpairArgs {
    /// The NFQUEUE number to serve (the iptables rule's `--queue-num`).
    #[arg(long)]
    pub queue: u16,
    /// Seed of the loss and jitter draws (runs with one seed drop the same packets).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What to do to the packets.
    #[command(flatten)]
    pub link: LinkSpec,
}

struct Held {
    at: Instant,
    order: u64,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first out of the max-heap.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// Serves the queue until killed. Prints `impair ready queue=N` once bound, so a caller adds
/// its iptables rule only when packets will be taken.
pub fn run(args: ImpairArgs) -> anyhow::Result<()> {
    let mut queue = nfq::Queue::open()
        .map_err(|e| anyhow::anyhow!("opening a netfilter queue socket (needs root): {e}"))?;
    queue
        .bind(args.queue)
        .map_err(|e| anyhow::anyhow!("binding NFQUEUE {}: {e}", args.queue))?;
    // Metadata only (the verdict does not need the bytes) and room for a second of traffic.
    queue.set_copy_range(args.queue, 0)?;
    queue.set_queue_max_len(args.queue, 8_192)?;
    queue.set_nonblocking(true);
    let mut model = Impairment::new(args.link, args.seed);
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut order = 0u64;
    println!("impair ready queue={}", args.queue);
    loop {
        let mut idle = true;
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    idle = false;
                    match model.fate() {
                        Fate::Drop => {
                            msg.set_verdict(nfq::Verdict::Drop);
                            queue.verdict(msg)?;
                        }
                        Fate::After(d) if d.is_zero() => {
                            msg.set_verdict(nfq::Verdict::Accept);
                            queue.verdict(msg)?;
                        }
                        Fate::After(d) => {
                            order += 1;
                            held.push(Held {
                                at: Instant::now() + d,
                                order,
                                msg,
                            });
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(anyhow::anyhow!("reading NFQUEUE {}: {e}", args.queue)),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.at <= now) {
            if let Some(mut h) = held.pop() {
                h.msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(h.msg)?;
            }
        }
        if idle {
            // No poll(2) without unsafe code: a short sleep bounds the added error to ~0.3 ms.
            let until_next = held.peek().map_or(Duration::from_micros(300), |h| {
                h.at.saturating_duration_since(now)
            });
            std::thread::sleep(until_next.min(Duration::from_micros(300)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(loss: f64, burst: f64) -> LinkSpec {
        LinkSpec {
            loss,
            burst,
            ..LinkSpec::CLEAN
        }
    }

    /// Share lost and mean burst length over `n` packets.
    fn measure(spec: LinkSpec, n: usize) -> (f64, f64) {
        let mut m = Impairment::new(spec, 7);
        let (mut lost, mut bursts, mut in_burst) = (0usize, 0usize, false);
        for _ in 0..n {
            let drop = m.fate() == Fate::Drop;
            lost += usize::from(drop);
            if drop && !in_burst {
                bursts += 1;
            }
            in_burst = drop;
        }
        (lost as f64 / n as f64, lost as f64 / bursts.max(1) as f64)
    }

    #[test]
    fn random_loss_is_the_share_asked_for_in_short_bursts() {
        let (share, burst) = measure(spec(0.2, 1.0), 100_000);
        assert!((share - 0.2).abs() < 0.01, "{share}");
        assert!(burst < 1.4, "independent losses: mean burst {burst}");
    }

    #[test]
    fn burst_loss_keeps_the_share_and_makes_the_bursts() {
        let (share, burst) = measure(spec(0.1, 5.0), 200_000);
        assert!((share - 0.1).abs() < 0.01, "{share}");
        assert!((burst - 5.0).abs() < 0.5, "mean burst {burst}");
    }

    #[test]
    fn delay_and_jitter_stay_in_their_window_and_spread() {
        let mut m = Impairment::new(
            LinkSpec {
                delay_ms: 100,
                jitter_ms: 30,
                ..LinkSpec::CLEAN
            },
            3,
        );
        let delays: Vec<Duration> = (0..10_000)
            .map(|_| match m.fate() {
                Fate::After(d) => d,
                Fate::Drop => Duration::MAX,
            })
            .collect();
        let (lo, hi) = (Duration::from_millis(70), Duration::from_millis(130));
        assert!(delays.iter().all(|d| *d >= lo && *d <= hi));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(75)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(125)));
        assert!(LinkSpec::CLEAN.is_clean());
        assert_eq!(
            Impairment::new(LinkSpec::CLEAN, 1).fate(),
            Fate::After(Duration::ZERO),
            "a clean link passes every packet at once"
        );
    }
}
