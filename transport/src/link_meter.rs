//! What the remote's transport-wide feedback says arrived: a congestion controller around GCC
//! that also keeps running totals of the bytes and packets the receiver acknowledged and of
//! the packets it reported missing. Over an interval, the acknowledged bytes are what the link
//! delivered; when the link is full that is its capacity, known one feedback round after the
//! fact. NACKs tell the same later and less exactly: a receiver asks for a packet only after a
//! gap shows and its repair timer ran, and its requests do not cover audio or resends.

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

    fn add(&self, reports: &[PacketReport]) {
        let (mut bytes, mut arrived, mut lost) = (0u64, 0u64, 0u64);
        for r in reports {
            if r.arrived {
                bytes += r.size as u64;
                arrived += 1;
            } else {
                lost += 1;
            }
        }
        self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.acked_packets.fetch_add(arrived, Ordering::Relaxed);
        self.lost_packets.fetch_add(lost, Ordering::Relaxed);
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
}

impl MeteredGcc {
    /// GCC starting at `initial` bits/s within `min..=max`, counting into `meter`.
    pub fn new(initial: f64, min: f64, max: f64, meter: Arc<LinkMeter>) -> Self {
        MeteredGcc {
            gcc: Gcc::new(initial, min, max),
            meter,
        }
    }
}

impl BandwidthEstimator for MeteredGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.meter.add(reports);
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
