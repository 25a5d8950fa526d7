//! A send pacer (sans-I/O): spreads a player's packets at a rate instead of writing a keyframe's
//! burst at line rate. On a thin link a keyframe written at once overruns the bottleneck's
//! queue, its packets are lost, their resends and the keyframe requests that follow add more
//! bursts, and the relay reads the link as far thinner than it is.

use std::time::{Duration, Instant};

/// Packets may go out together up to this much ahead of the paced schedule (after a quiet
/// spell a frame's packets leave at once; a keyframe is spread).
pub const BURST: Duration = Duration::from_millis(20);
/// A packet is never held longer than this: beyond it the rate is wrong (the layer grew) and
/// the schedule starts again from now.
pub const MAX_HOLD: Duration = Duration::from_millis(400);

/// A token-bucket schedule: each packet takes its size at the rate; a packet waits until the
/// ones before it would have left.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Bits/s (None: not pacing).
    rate_bps: Option<f64>,
    /// When the link is free again after what was sent.
    next: Option<Instant>,
}

impl Pacer {
    /// Paces at `rate_bps` from now on (None or 0: sends at once).
    pub fn set_rate(&mut self, rate_bps: Option<f64>) {
        self.rate_bps = rate_bps.filter(|r| *r > 0.0);
        if self.rate_bps.is_none() {
            self.next = None;
        }
    }

    /// The rate paced at (None: not pacing).
    pub fn rate_bps(&self) -> Option<f64> {
        self.rate_bps
    }

    /// When a packet of `bytes` handed over at `now` may be sent (`now` or later).
    pub fn admit(&mut self, bytes: usize, now: Instant) -> Instant {
        let Some(rate) = self.rate_bps else {
            return now;
        };
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let mut at = self.next.map_or(now, |n| n.max(earliest));
        if at.saturating_duration_since(now) > MAX_HOLD {
            at = now;
        }
        let takes = Duration::from_secs_f64(bytes as f64 * 8.0 / rate);
        self.next = Some(at + takes);
        at.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_everything_goes_at_once() {
        let mut p = Pacer::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(p.admit(1200, now), now);
        }
    }

    #[test]
    fn a_burst_is_spread_at_the_rate_and_a_quiet_spell_lets_a_frame_through() {
        let mut p = Pacer::default();
        p.set_rate(Some(960_000.0)); // 1200 bytes take 10 ms
        let t0 = Instant::now();
        // A 30-packet keyframe handed over at once leaves over 300 ms (the first two within
        // the burst allowance).
        let times: Vec<Duration> = (0..30).map(|_| p.admit(1200, t0) - t0).collect();
        assert_eq!(times[0], Duration::ZERO);
        let last = times[29].as_secs_f64();
        assert!((0.26..=0.30).contains(&last), "{last}");
        assert!(times.windows(2).all(|w| w[1] >= w[0]));
        // A second later the link is idle: a small frame goes at once.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(p.admit(1200, t1), t1);
        assert_eq!(p.admit(1200, t1), t1);
    }

    #[test]
    fn a_packet_is_never_held_past_the_cap() {
        let mut p = Pacer::default();
        p.set_rate(Some(96_000.0)); // 1200 bytes take 100 ms
        let t0 = Instant::now();
        for _ in 0..20 {
            let at = p.admit(1200, t0);
            assert!(
                at - t0 <= MAX_HOLD + Duration::from_millis(100),
                "{:?}",
                at - t0
            );
        }
        p.set_rate(None);
        assert_eq!(p.admit(1200, t0), t0);
    }
}
