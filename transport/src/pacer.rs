//! A send pacer (sans-I/O): spreads a player's packets at a rate instead of writing a keyframe's
//! burst at line rate. On a thin link a keyframe written at once overruns the bottleneck's
//! queue, its packets are lost, their resends and the keyframe requests that follow add more
//! bursts, and the relay reads the link as far thinner than it is.

use std::time::{Duration, Instant};

/// Packets may go out together up to this much ahead of the paced schedule (after a quiet
/// spell a frame's packets leave at once; a keyframe is spread).
pub const BURST: Duration = Duration::from_millis(20);
/// A packet is never scheduled further out than this: beyond it the rate is wrong (the layer
/// grew) and the schedule starts again from now. (A caller that waits for each packet before
/// handing over the next keeps the schedule short; the backlog then sits before it, which the
/// caller bounds itself, see [`Pacer::restart`].)
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

    /// Forgets the schedule: the next packet goes at once (the caller found packets piling
    /// up behind the pacer).
    pub fn restart(&mut self) {
        self.next = None;
    }

    /// Sends nothing before `until` (at most [`MAX_HOLD`] after `now`; only while pacing): a
    /// link known to hold a queue lets it drain before what comes next.
    pub fn hold(&mut self, until: Instant, now: Instant) {
        if self.rate_bps.is_none() {
            return;
        }
        let until = until.min(now + MAX_HOLD);
        self.next = Some(self.next.map_or(until, |n| n.max(until)));
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

/// A probe's padding ramps up over this long: the losses it causes show a feedback round
/// (half a second and more on a thin link) after they happen, so a probe that jumps to the
/// better layer's rate has overrun the link's queue for that long before it is stopped.
pub const PROBE_RAMP: Duration = Duration::from_millis(800);

/// Copies of each packet sent while probing (sans-I/O): `extra` copies per packet at full
/// strength (fractional: 1.5 is one copy, then two, in turn), reached after [`PROBE_RAMP`].
#[derive(Debug, Default)]
pub struct Padding {
    /// Copies per packet at full strength, and when the probe began (None: not probing).
    probe: Option<(f64, Instant)>,
    credit: f64,
}

impl Padding {
    /// Probes with `extra` copies per packet at full strength (0 or less: stops). A probe
    /// already running keeps its start.
    pub fn set(&mut self, extra: f64, now: Instant) {
        if extra <= 0.0 {
            self.probe = None;
            self.credit = 0.0;
            return;
        }
        let started = self.probe.map_or(now, |(_, at)| at);
        self.probe = Some((extra, started));
    }

    /// Whether a probe runs.
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// How many copies to send after a packet sent at `now`.
    pub fn copies(&mut self, now: Instant) -> usize {
        let Some((extra, started)) = self.probe else {
            return 0;
        };
        let ramp = (now.saturating_duration_since(started).as_secs_f64()
            / PROBE_RAMP.as_secs_f64())
        .min(1.0);
        self.credit += extra * ramp;
        let whole = self.credit.floor();
        self.credit -= whole;
        whole as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_ramps_up_to_its_strength_and_stops() {
        let mut pad = Padding::default();
        let t0 = Instant::now();
        assert_eq!(pad.copies(t0), 0);
        pad.set(2.5, t0);
        // 100 packets in the first tenth of the ramp: few copies.
        let early: usize = (0..100)
            .map(|i| pad.copies(t0 + PROBE_RAMP / 10 * i / 100))
            .sum();
        assert!(early <= 15, "{early}");
        // Past the ramp: 2.5 copies a packet on average.
        let late: usize = (0..100).map(|_| pad.copies(t0 + PROBE_RAMP * 2)).sum();
        assert!((249..=251).contains(&late), "{late}");
        // Setting it again keeps the start; zero stops it.
        pad.set(1.0, t0 + PROBE_RAMP * 3);
        assert!(pad.probing());
        assert_eq!(pad.copies(t0 + PROBE_RAMP * 3), 1);
        pad.set(0.0, t0);
        assert!(!pad.probing());
        assert_eq!(pad.copies(t0 + PROBE_RAMP * 4), 0);
    }

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
    fn a_hold_keeps_what_comes_next_back_for_a_while_and_never_past_the_cap() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut unpaced = Pacer::default();
        unpaced.hold(t0 + ms(200), t0);
        assert_eq!(unpaced.admit(1200, t0), t0, "no rate, no hold");
        let mut p = Pacer::default();
        p.set_rate(Some(960_000.0)); // 1200 bytes take 10 ms
        p.hold(t0 + ms(200), t0);
        assert_eq!(p.admit(1200, t0 + ms(50)), t0 + ms(200));
        assert_eq!(p.admit(1200, t0 + ms(50)), t0 + ms(210));
        // A hold past the cap is cut to it.
        let mut p = Pacer::default();
        p.set_rate(Some(960_000.0));
        p.hold(t0 + ms(2_000), t0);
        assert_eq!(p.admit(1200, t0), t0 + MAX_HOLD);
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
