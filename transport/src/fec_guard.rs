//! Keeps a leg's repair packets within the room its link has: a standing queue on the path
//! (`LinkMeter::standing_long_us`) says the media and its repairs fill the link, and then repairs
//! stop for a while and may come back at half the share they had, growing again slowly
//! (additive increase, multiplicative decrease, as a congestion controller treats its rate).
//! A queue that stands again soon after repairs came back doubles the next hold: the media
//! alone nearly fills that link. A queue that still stands a second after the repairs
//! stopped is kept full by something else, the resends of what it drops: the owner cuts
//! those too ([`Allowed::resends_cut`]) until it drains.
//!
//! Without it a single-layer player's link that loses a little and has little room to spare
//! collapses: its losses raise the repair share, the repairs fill the queue, the queue drops
//! more, and the share and the NACKs rise with it (`onair bench weaknet --rate-kbit 1200
//! --loss 0.02`: 92–96 % stall with repairs against 1.5 % without, before this guard).
//! Random loss on a link with room (the bad and terrible cells) builds no standing queue, so
//! the guard leaves it alone: NACKs alone could not tell the two apart.

use std::time::{Duration, Instant};

use crate::fec::MAX_SHARE;

/// A standing queue at least this long trips the guard (half of what a layered player's
/// chooser calls a full link, `simulcast::FULL_QUEUE_MS`: repairs are what yields first).
pub const TRIP_QUEUE_MS: f64 = crate::simulcast::FULL_QUEUE_MS / 2.0;
/// Repairs stay off this long after the queue was last seen standing (it drains of the
/// repairs already sent; the media alone may fit).
pub const HOLD: Duration = Duration::from_secs(2);
/// A queue still standing this long after a trip cuts the resends.
pub const DRAIN: Duration = Duration::from_secs(1);
/// A trip within this long of the last hold's end doubles the next hold (up to
/// [`MAX_HOLD`]): a link the media alone nearly fills stands a queue again as soon as a few
/// repairs come back, and each time the player's delay grows with it.
pub const BACKOFF_WITHIN: Duration = Duration::from_secs(10);
/// The longest hold.
pub const MAX_HOLD: Duration = Duration::from_secs(64);
/// How much the ceiling on the share grows per second without a standing queue: from nothing
/// back to the most in 15 s (a link that keeps filling is held off by the doubling hold).
pub const REGROW_PER_SEC: f64 = 0.1;

/// What the guard allows now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allowed {
    /// Whether repair packets may be sent at all.
    pub repairs: bool,
    /// The most repair packets per media packet.
    pub ceiling: f64,
    /// Whether resends should be cut (the queue outlived the repairs that built it).
    pub resends_cut: bool,
}

/// The guard of one leg (sans I/O: fed the standing queue and the share now and then).
#[derive(Debug)]
pub struct FecGuard {
    ceiling: f64,
    hold_until: Option<Instant>,
    /// When the guard last tripped.
    tripped_at: Option<Instant>,
    /// When the last hold ended (repairs were allowed again).
    released: Option<Instant>,
    /// The hold now.
    hold: Duration,
    last: Option<Instant>,
    trips: u64,
    /// The sender's running total of repair packets at the last [`Self::sent_since`].
    repairs_seen: u64,
    /// A step found no standing queue while repairs went out: a queue from then on is one
    /// they may have built. (One already there when they began is the path's: its delay
    /// stepped up, as when the bench's impairment comes on, or a route changes.)
    armed: bool,
}

impl Default for FecGuard {
    fn default() -> Self {
        FecGuard {
            ceiling: MAX_SHARE,
            hold_until: None,
            tripped_at: None,
            released: None,
            hold: HOLD,
            last: None,
            trips: 0,
            repairs_seen: 0,
            armed: false,
        }
    }
}

impl FecGuard {
    /// Steps the guard at `now`: the link shows a standing queue of `standing_ms`, and the
    /// sender's repair share is `share`.
    pub fn step(&mut self, standing_ms: f64, share: f64, now: Instant) -> Allowed {
        // The ceiling grows only while repairs are allowed: from the last step or the end
        // of the hold, whichever came later.
        let since = match (self.last, self.hold_until) {
            (Some(last), Some(end)) => Some(last.max(end)),
            (last, end) => last.or(end),
        };
        let elapsed = since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last = Some(now);
        let holding = self.hold_until.is_some_and(|t| now < t);
        if standing_ms < TRIP_QUEUE_MS && share > 0.0 {
            self.armed = true;
        }
        // A queue while no repairs go out, or one already standing when they began, is not
        // theirs (the media alone, or the path's delay grown): nothing to hold or cut. One
        // that stands on through a hold keeps it.
        if standing_ms >= TRIP_QUEUE_MS && ((self.armed && share > 0.0) || holding) {
            if !holding {
                self.armed = false;
                self.tripped_at = Some(now);
                // Newly tripped: the share that filled the link, halved, is the most it gets
                // back (what it sends now, not a ceiling it never reached).
                self.ceiling = (share.min(self.ceiling) / 2.0).max(0.0);
                self.trips += 1;
                self.hold = match self.released {
                    Some(at) if now.saturating_duration_since(at) < BACKOFF_WITHIN => {
                        (self.hold * 2).min(MAX_HOLD)
                    }
                    _ => HOLD,
                };
            }
            self.hold_until = Some(now + self.hold);
            return Allowed {
                repairs: false,
                ceiling: self.ceiling,
                resends_cut: self
                    .tripped_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= DRAIN),
            };
        }
        if holding {
            return Allowed {
                repairs: false,
                ceiling: self.ceiling,
                resends_cut: false,
            };
        }
        if let Some(end) = self.hold_until.take() {
            self.released = Some(end);
        }
        self.ceiling = (self.ceiling + REGROW_PER_SEC * elapsed.as_secs_f64()).min(MAX_SHARE);
        Allowed {
            repairs: true,
            ceiling: self.ceiling,
            resends_cut: false,
        }
    }

    /// Whether any repair packet went out since the last call, from the sender's running
    /// total: the share the sender reports lags (it is set once a second, and not while
    /// repairs are held off), and a queue while none went out is not theirs.
    pub fn sent_since(&mut self, repairs_total: u64) -> bool {
        let sent = repairs_total > self.repairs_seen;
        self.repairs_seen = repairs_total;
        sent
    }

    /// Whether repairs are held off now (the link held a queue they built).
    pub fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    /// How long repairs stay off after a standing queue now.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// How often a standing queue tripped the guard.
    pub fn trips(&self) -> u64 {
        self.trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn random_loss_without_a_queue_is_left_alone() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        for i in 0..100 {
            // Jitter shows as a queue now and then, never a standing one.
            let a = g.step(10.0, 1.5, t0 + ms(500 * i));
            assert!(a.repairs);
            assert_eq!(a.ceiling, MAX_SHARE);
        }
        assert_eq!(g.trips(), 0);
    }

    #[test]
    fn a_standing_queue_stops_repairs_and_halves_what_comes_back() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        assert!(g.step(0.0, 0.6, t0).repairs);
        let a = g.step(80.0, 0.6, t0 + ms(500));
        assert!(!a.repairs);
        assert!((a.ceiling - 0.3).abs() < 1e-9);
        // Still standing while held: the hold runs on, the ceiling is not halved again.
        let a = g.step(60.0, 0.0, t0 + ms(1000));
        assert!(!a.repairs);
        assert!((a.ceiling - 0.3).abs() < 1e-9);
        assert_eq!(g.trips(), 1);
        // Drained, but within the hold of the last standing queue.
        assert!(!g.step(0.0, 0.0, t0 + ms(2500)).repairs);
        // After it: back, at the halved ceiling, growing slowly.
        let a = g.step(0.0, 0.0, t0 + ms(3000));
        assert!(a.repairs);
        assert!((a.ceiling - 0.3).abs() < 1e-9, "{a:?}");
        let a = g.step(0.0, 0.3, t0 + ms(5_000));
        assert!((a.ceiling - 0.5).abs() < 0.02, "{a:?}");
        // Up to the most there is, no further.
        let a = g.step(0.0, 0.3, t0 + ms(100_000));
        assert_eq!(a.ceiling, MAX_SHARE);
    }

    #[test]
    fn a_queue_that_outlives_the_repairs_cuts_the_resends_until_it_drains() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        assert!(g.step(0.0, 0.5, t0).repairs);
        let a = g.step(150.0, 0.5, t0 + ms(500));
        assert!(!a.repairs && !a.resends_cut);
        assert!(!g.step(150.0, 0.5, t0 + ms(1000)).resends_cut);
        // A second on, still standing: resends are what keeps it full. The hold runs on.
        for i in 3..40 {
            let a = g.step(150.0, 0.5, t0 + ms(500 * i));
            assert!(!a.repairs && a.resends_cut, "{i}");
        }
        assert_eq!(g.trips(), 1);
        // Drained: resends at once, repairs after the hold.
        let a = g.step(0.0, 0.5, t0 + ms(20_000));
        assert!(!a.repairs && !a.resends_cut);
        assert!(g.step(0.0, 0.5, t0 + ms(20_000) + HOLD).repairs);
    }

    #[test]
    fn trips_soon_after_a_hold_double_the_next_and_a_calm_spell_resets_it() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut holds = Vec::new();
        for _ in 0..8 {
            // Repairs going out on a link without a queue, then one builds.
            assert!(g.step(0.0, 0.2, now).repairs);
            now += ms(500);
            assert!(!g.step(120.0, 0.2, now).repairs);
            holds.push(g.hold());
            // Held for all of it, released, and tripped again a second later.
            now += g.hold() - ms(1);
            assert!(!g.step(0.0, 0.0, now).repairs);
            now += ms(1);
            assert!(g.step(0.0, 0.0, now).repairs);
            now += ms(1000);
        }
        let secs: Vec<u64> = holds.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 64, 64]);
        // Calm for longer than the backoff window: the next trip holds the shortest time.
        now += BACKOFF_WITHIN;
        assert!(g.step(0.0, 0.2, now).repairs);
        assert!(!g.step(120.0, 0.2, now + ms(500)).repairs);
        assert_eq!(g.hold(), HOLD);
    }

    #[test]
    fn trips_in_a_row_take_the_ceiling_down_to_nothing() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut share = 1.5;
        for _ in 0..12 {
            assert!(g.step(0.0, share, now).repairs);
            now += ms(500);
            assert!(!g.step(150.0, share, now).repairs);
            now += g.hold() + ms(100);
            let a = g.step(0.0, 0.0, now);
            assert!(a.repairs);
            share = a.ceiling;
        }
        assert_eq!(g.trips(), 12);
        assert!(share < crate::fec::MIN_SHARE, "{share}");
    }

    #[test]
    fn repairs_count_as_sent_only_when_the_total_grew() {
        let mut g = FecGuard::default();
        assert!(!g.sent_since(0));
        assert!(g.sent_since(5));
        assert!(!g.sent_since(5));
        assert!(g.sent_since(6));
    }

    #[test]
    fn a_queue_while_no_repairs_go_out_is_not_theirs() {
        let mut g = FecGuard::default();
        let t0 = Instant::now();
        // The path's delay grew (or the media alone fills it) before any repair was sent.
        for i in 0..10 {
            let a = g.step(90.0, 0.0, t0 + ms(500 * i));
            assert!(a.repairs);
            assert_eq!(a.ceiling, MAX_SHARE);
        }
        assert_eq!(g.trips(), 0);
        // Repairs begin while the queue still stands (the path's delay stepped up): not
        // theirs either.
        for i in 10..20 {
            assert!(g.step(90.0, 0.5, t0 + ms(500 * i)).repairs);
        }
        assert_eq!(g.trips(), 0);
        // It drains into the new base; a queue after that is.
        assert!(g.step(5.0, 0.5, t0 + ms(10_000)).repairs);
        assert!(!g.step(90.0, 0.5, t0 + ms(10_500)).repairs);
        assert_eq!(g.trips(), 1);
    }
}
