//! What the remote's transport-wide feedback says arrived: a congestion controller around GCC
//! that also keeps running totals of the bytes and packets the receiver acknowledged and of
//! the packets it reported missing. Over an interval, the acknowledged bytes are what the link
//! delivered; when the link is full that is its capacity, known one feedback round after the
//! fact. NACKs tell the same later and less exactly: a receiver asks for a packet only after a
//! gap shows and its repair timer ran, and its requests do not cover audio or resends.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// Running totals of what the remote's feedback reported (shared with the connection's owner).
#[derive(Debug, Default)]
pub struct LinkMeter {
    /// Bytes reported arrived.
    pub acked_bytes: AtomicU64,
    /// Packets reported arrived.
    pub acked_packets: AtomicU64,
    /// Packets reported missing.
    pub lost_packets: AtomicU64,
}

/// The totals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metered {
    /// Bytes reported arrived.
    pub acked_bytes: u64,
    /// Packets reported arrived.
    pub acked_packets: u64,
    /// Packets reported missing.
    pub lost_packets: u64,
}

impl LinkMeter {
    /// The totals now.
    pub fn read(&self) -> Metered {
        Metered {
            acked_bytes: self.acked_bytes.load(Ordering::Relaxed),
            acked_packets: self.acked_packets.load(Ordering::Relaxed),
            lost_packets: self.lost_packets.load(Ordering::Relaxed),
        }
    }

    fn add(&self, reports: &[PacketReport], arrived_recently: &mut Recent) {
        let (mut bytes, mut arrived, mut lost) = (0u64, 0u64, 0u64);
        for r in reports {
            let key = (r.ssrc, r.rtp_sequence_number);
            if r.arrived {
                bytes += r.size as u64;
                arrived += 1;
                arrived_recently.insert(key);
            } else if !arrived_recently.contains(key) {
                lost += 1;
            }
        }
        self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.acked_packets.fetch_add(arrived, Ordering::Relaxed);
        self.lost_packets.fetch_add(lost, Ordering::Relaxed);
    }
}

/// The (SSRC, RTP sequence number) of the packets that arrived lately. A copy of a packet
/// that already arrived (a probe's padding duplicates every packet) is dropped by the
/// receiver's SRTP replay check before its feedback records it, so it is reported missing:
/// that is not a loss of the link.
#[derive(Default)]
struct Recent {
    set: HashSet<(u32, u16)>,
    order: VecDeque<(u32, u16)>,
}

/// How many arrivals [`Recent`] remembers (a few hundred milliseconds at the highest rates).
const RECENT: usize = 2_048;

impl Recent {
    fn insert(&mut self, key: (u32, u16)) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > RECENT
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, key: (u32, u16)) -> bool {
        self.set.contains(&key)
    }
}

impl Metered {
    /// What changed from `before` to `self`: (bytes arrived, packets arrived, packets missing).
    pub fn since(self, before: Metered) -> (u64, u64, u64) {
        (
            self.acked_bytes.saturating_sub(before.acked_bytes),
            self.acked_packets.saturating_sub(before.acked_packets),
            self.lost_packets.saturating_sub(before.lost_packets),
        )
    }
}

/// GCC, with every report it is given counted into a [`LinkMeter`].
pub struct MeteredGcc {
    gcc: Gcc,
    meter: Arc<LinkMeter>,
    arrived: Recent,
}

impl MeteredGcc {
    /// GCC starting at `initial` bits/s within `min..=max`, counting into `meter`.
    pub fn new(initial: f64, min: f64, max: f64, meter: Arc<LinkMeter>) -> Self {
        MeteredGcc {
            gcc: Gcc::new(initial, min, max),
            meter,
            arrived: Recent::default(),
        }
    }
}

impl BandwidthEstimator for MeteredGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.meter.add(reports, &mut self.arrived);
        self.gcc.on_reports(now, reports);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(seq: u16, arrived: bool) -> PacketReport {
        let now = Instant::now();
        PacketReport {
            ssrc: 7,
            id: u64::from(seq),
            rtp_sequence_number: seq,
            is_twcc: true,
            twcc_sequence_number: seq,
            size: 1_000,
            arrived,
            departure: now,
            arrival: arrived.then_some(Duration::ZERO),
            ecn: Default::default(),
        }
    }

    #[test]
    fn arrivals_and_losses_are_counted_and_a_dropped_copy_is_no_loss() {
        let meter = LinkMeter::default();
        let mut recent = Recent::default();
        // 1 arrives, 2 is lost, 3 arrives and its two copies are dropped as duplicates.
        meter.add(
            &[
                report(1, true),
                report(2, false),
                report(3, true),
                report(3, false),
                report(3, false),
            ],
            &mut recent,
        );
        // A copy whose report comes in the next feedback is no loss either.
        meter.add(&[report(3, false), report(4, false)], &mut recent);
        assert_eq!(
            meter.read(),
            Metered {
                acked_bytes: 2_000,
                acked_packets: 2,
                lost_packets: 2,
            }
        );
        let before = Metered::default();
        assert_eq!(meter.read().since(before), (2_000, 2, 2));
    }
}
