//! Frame playout: when each complete frame goes to the decoder, so a picture repaired by NACK
//! (one or more round trips late) still shows on time instead of as a freeze and a burst.
//!
//! Each frame's transit (arrival − RTP time) is compared with the fastest transit seen lately
//! (the path's base delay); the difference is how late the frame was. The playout delay covers
//! a high quantile of the recent lateness less [`LATE_OK`] — a frame may come that much after
//! its slot, a hitch of a frame or two but not a freeze, so a rare second repair round does
//! not cost every frame its delay — and at least the median lateness. On a clean link that is
//! a fraction of a millisecond (frames go on the moment they complete, nothing held "just in
//! case"); on a lossy link about as long as the repairs most frames need. It grows as soon as
//! late frames appear and shrinks once they have left the window (ten seconds). The base is
//! the fastest transit of the last two seconds, so a path that becomes slower (a new route, a
//! queue that builds) is the new normal within two seconds rather than lateness for ten. Sans-I/O: the caller passes the
//! arrival time and holds the frame until the returned instant.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames whose lateness is remembered (ten seconds at 30 fps).
const WINDOW: usize = 300;
/// Frames the base (fastest transit) is taken over (two seconds at 30 fps).
const BASE_WINDOW: usize = 60;
/// The share of recent frames the delay covers (less [`LATE_OK`]).
const QUANTILE: f64 = 0.99;
/// Frames after a [`Playout::restart`] that go on at once and are not remembered (1.5 s at
/// 30 fps): the first frames of a new encoding come out of the jam the switch ended (the old
/// layer's queue draining, the new keyframe paced and repaired, what waited behind it
/// released in a burst). Remembered, their lateness (up to the one-second cap) held every
/// frame of the new layer that late for the ten seconds of the window.
const SETTLE_FRAMES: u32 = 45;
/// How late past its slot a frame may show: a gap of one frame interval plus this is a
/// hitch, well under the 2 × 33 ms + 50 ms that counts as a stall.
pub const LATE_OK: Duration = Duration::from_millis(30);

/// Playout scheduling of one stream.
pub struct Playout {
    clock_rate: f64,
    epoch: Instant,
    max: Duration,
    /// Last extended RTP timestamp.
    last_ts: Option<i64>,
    /// Recent transits (s), oldest first.
    transits: VecDeque<f64>,
    /// Current playout delay over the base, s.
    target: f64,
    /// Frames still to settle after a restart (see [`SETTLE_FRAMES`]).
    settling: u32,
}

impl Playout {
    /// Playout of a stream with `clock_rate` Hz timestamps, never delaying more than `max`.
    pub fn new(clock_rate: u32, max: Duration) -> Playout {
        Playout {
            clock_rate: f64::from(clock_rate.max(1)),
            epoch: Instant::now(),
            max,
            last_ts: None,
            transits: VecDeque::with_capacity(WINDOW + 1),
            target: 0.0,
            settling: 0,
        }
    }

    /// The delay added now over the fastest recent frame.
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.target)
    }

    fn extend(&mut self, ts: u32) -> i64 {
        let ext = match self.last_ts {
            None => i64::from(ts),
            Some(last) => {
                let delta = ts.wrapping_sub(last as u32) as i32;
                last + i64::from(delta)
            }
        };
        self.last_ts = Some(ext);
        ext
    }

    /// Forgets the lateness seen so far: the stream became another encoding (a simulcast
    /// layer switch), and the queue or the repairs that delayed the old one say nothing about
    /// the new one. Without it a jam before a switch to a smaller layer kept every frame of
    /// the new layer a second late for the ten seconds of the window.
    pub fn restart(&mut self) {
        self.transits.clear();
        self.target = 0.0;
        self.settling = SETTLE_FRAMES;
    }

    /// A frame with RTP timestamp `ts` is complete at `now`: when it should go on.
    pub fn schedule(&mut self, ts: u32, now: Instant) -> Instant {
        let rtp = self.extend(ts) as f64 / self.clock_rate;
        if self.settling > 0 {
            self.settling -= 1;
            return now;
        }
        let transit = now.saturating_duration_since(self.epoch).as_secs_f64() - rtp;
        if self
            .transits
            .back()
            .is_some_and(|last| (transit - last).abs() > 30.0)
        {
            // A new source or a clock jump: the history is meaningless.
            self.transits.clear();
        }
        self.transits.push_back(transit);
        if self.transits.len() > WINDOW {
            self.transits.pop_front();
        }
        let base = self
            .transits
            .iter()
            .rev()
            .take(BASE_WINDOW)
            .copied()
            .fold(f64::INFINITY, f64::min);
        let mut late: Vec<f64> = self.transits.iter().map(|t| (t - base).max(0.0)).collect();
        late.sort_by(f64::total_cmp);
        let quantile =
            |q: f64| late[((late.len() as f64 * q).ceil() as usize).clamp(1, late.len()) - 1];
        self.target = (quantile(QUANTILE) - LATE_OK.as_secs_f64())
            .max(quantile(0.5))
            .clamp(0.0, self.max.as_secs_f64());
        let due = self.epoch + Duration::from_secs_f64((rtp + base + self.target).max(0.0));
        due.max(now).min(now + self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frames_on_a_clean_link_go_on_at_once() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        for i in 0..100u32 {
            let at = t + ms(u64::from(i) * 33);
            assert!(p.schedule(i * 2970, at) - at < ms(1));
        }
        assert!(p.delay() < ms(1), "{:?}", p.delay());
    }

    #[test]
    fn repaired_frames_set_the_delay_and_then_play_on_time() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        // Every fifth frame arrives 120 ms late (a NACK round trip).
        let mut due = Vec::new();
        for i in 0..300u32 {
            let late = if i % 5 == 0 { 120 } else { 0 };
            let at = t + ms(u64::from(i) * 33 + late);
            due.push(p.schedule(i * 2970, at));
        }
        let want = ms(120) - LATE_OK;
        assert!(
            p.delay() >= want - ms(1) && p.delay() <= want + ms(1),
            "{:?}",
            p.delay()
        );
        // Once the delay is set, frames go on 33 ms apart, a repaired one at most LATE_OK
        // after its slot.
        let gaps: Vec<u128> = due[200..]
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        let most = (ms(33) + LATE_OK).as_millis() + 1;
        assert!(gaps.iter().all(|g| *g <= most), "{gaps:?}");
        assert!(gaps.iter().filter(|g| (32..=34).contains(*g)).count() > gaps.len() / 2);
    }

    #[test]
    fn the_delay_is_bounded_and_shrinks_when_the_link_recovers() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(200));
        for i in 0..50u32 {
            p.schedule(
                i * 2970,
                t + ms(u64::from(i) * 33 + if i % 4 == 0 { 0 } else { 900 }),
            );
        }
        assert_eq!(p.delay(), ms(200), "capped");
        for i in 50..400u32 {
            p.schedule(i * 2970, t + ms(u64::from(i) * 33));
        }
        assert!(p.delay() < ms(1), "{:?}", p.delay());
    }

    #[test]
    fn a_path_that_becomes_slower_is_the_new_normal_within_two_seconds() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        for i in 0..300u32 {
            let extra = if i < 150 { 0 } else { 100 };
            p.schedule(i * 2970, t + ms(u64::from(i) * 33 + extra));
        }
        assert!(p.delay() < ms(1), "{:?}", p.delay());
    }

    #[test]
    fn a_restart_forgets_the_lateness_of_the_old_encoding() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        for i in 0..60u32 {
            let late = if i % 2 == 0 { 800 } else { 0 };
            p.schedule(i * 2970, t + ms(u64::from(i) * 33 + late));
        }
        assert!(p.delay() > ms(500), "{:?}", p.delay());
        p.restart();
        for i in 60..90u32 {
            let at = t + ms(u64::from(i) * 33 + 900);
            assert!(p.schedule(i * 2970, at) - at < ms(1));
        }
        assert!(p.delay() < ms(1), "{:?}", p.delay());
    }

    #[test]
    fn the_jam_a_switch_ends_is_not_remembered() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        p.restart();
        // The new layer's first second: its keyframe 900 ms late, what waited behind it
        // released with it, then the queue drains (each frame a little less late).
        let late = |i: u32| match i {
            0..=10 => 900,
            11..=40 => 900 - (i - 10) * 30,
            _ => 0,
        };
        for i in 0..400u32 {
            let at = t + ms(u64::from(i * 33 + late(i)));
            let due = p.schedule(i * 2970, at);
            if i < SETTLE_FRAMES {
                assert_eq!(due, at, "late frames of the jam go on at once");
            }
            if i > 60 {
                assert!(p.delay() < ms(1), "frame {i}: {:?}", p.delay());
            }
        }
        // The same jam without a restart (a single encoding's own stall) is covered as
        // before: a stall the link made is lateness like any.
        let mut q = Playout::new(90_000, ms(1000));
        for i in 0..100u32 {
            q.schedule(i * 2970, t + ms(u64::from(i * 33 + late(i))));
        }
        assert!(q.delay() > ms(500), "{:?}", q.delay());
    }

    #[test]
    fn timestamps_wrap() {
        let t = Instant::now();
        let mut p = Playout::new(90_000, ms(1000));
        let start = u32::MAX - 2970 * 5;
        for i in 0..20u32 {
            let at = t + ms(u64::from(i) * 33);
            assert!(p.schedule(start.wrapping_add(i * 2970), at) - at < ms(1));
        }
    }
}
