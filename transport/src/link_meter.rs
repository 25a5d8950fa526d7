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

use crate::late_acks::{FeedbackSaid, GRACE, Said};

/// Running totals of what the remote's feedback reported (shared with the connection's owner).
#[derive(Debug, Default)]
pub struct LinkMeter {
    /// Bytes reported arrived.
    pub acked_bytes: AtomicU64,
    /// Packets reported arrived.
    pub acked_packets: AtomicU64,
    /// Packets reported missing.
    pub lost_packets: AtomicU64,
    /// How much longer than the fastest of the last batches the latest batch's packets took
    /// from here to the receiver, µs: the queue building on the path (one-way delays on two
    /// clocks, so only their differences mean anything). A link filled past its capacity
    /// shows it a queue's length before it drops anything.
    pub queue_us: AtomicU64,
    /// The least queue any packet met over the last [`STANDING_BATCHES`] batches, µs: a
    /// burst (a keyframe) queues its own tail for a moment, but only a link kept fuller than
    /// its capacity delays every packet, the first of each batch included, batch after batch.
    pub standing_us: AtomicU64,
    /// As [`Self::standing_us`], over the fastest packet of the last [`LONG_BASE`] rather than
    /// of a few seconds: a queue the link holds for longer than the short base remembers (a
    /// link kept full by resends) stays in sight. A step up in the path's delay reads as a
    /// queue here for as long.
    pub standing_long_us: AtomicU64,
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
    /// The queue the latest feedback showed, µs (see [`LinkMeter::queue_us`]).
    pub queue_us: u64,
    /// The standing queue, µs (see [`LinkMeter::standing_us`]).
    pub standing_us: u64,
    /// The standing queue over the long base, µs (see [`LinkMeter::standing_long_us`]).
    pub standing_long_us: u64,
}

impl LinkMeter {
    /// The totals now.
    pub fn read(&self) -> Metered {
        Metered {
            acked_bytes: self.acked_bytes.load(Ordering::Relaxed),
            acked_packets: self.acked_packets.load(Ordering::Relaxed),
            lost_packets: self.lost_packets.load(Ordering::Relaxed),
            queue_us: self.queue_us.load(Ordering::Relaxed),
            standing_us: self.standing_us.load(Ordering::Relaxed),
            standing_long_us: self.standing_long_us.load(Ordering::Relaxed),
        }
    }

    fn add(&self, bytes: u64, arrived: u64, lost: u64) {
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
    /// What the raw feedback said of each packet (rtc's history writes off late and
    /// unreported packets alike: see `late_acks`).
    said: Arc<FeedbackSaid>,
    /// Packets reported lost, each until [`GRACE`] after that report (oldest first).
    pending: VecDeque<(Instant, PacketReport)>,
    /// Reports settled between feedbacks, for GCC with the next one.
    unheard: Vec<PacketReport>,
    /// Each feedback's arrivals (bytes, packets), counted into the meter at the instant
    /// given, with the losses reported beside them.
    arrivals: VecDeque<(Instant, u64, u64)>,
    delays: OneWay,
    /// The least queue of each of the last [`STANDING_BATCHES`] batches, s.
    least: VecDeque<f64>,
    /// The same over the long base.
    least_long: VecDeque<f64>,
    /// When the last feedback came.
    last_feedback: Option<Instant>,
}

/// The path's one-way delay (up to a clock offset) from each batch of reports.
#[derive(Default)]
struct OneWay {
    /// A fixed instant one-way delays are measured from.
    epoch: Option<Instant>,
    /// The fastest packet of each of the last [`BASE_BATCHES`] batches, s.
    fastest: VecDeque<f64>,
    /// The fastest packet of each [`LONG_BUCKET`] batches before, for the last [`LONG_BASE`].
    long: VecDeque<f64>,
    /// Batches counted into the newest of `long`.
    long_count: usize,
}

/// Losses count as congestion (GCC hears them) only while the path holds a standing queue
/// of at least this (ms): a drop-tail bottleneck is full before it drops; random losses
/// come without one.
pub const CONGESTIVE_QUEUE_MS: f64 = 20.0;

/// Batches the base delay is the fastest of (a few seconds of feedback).
const BASE_BATCHES: usize = 40;
/// Batches the long base is the fastest of (half a minute of feedback), kept as the fastest
/// of every [`LONG_BUCKET`].
pub const LONG_BASE: usize = 300;
const LONG_BUCKET: usize = 10;
/// Feedback that resumes after a silence this long starts the delay bases afresh: a leg
/// metered only now and then (`gate`) would measure against a path (a route, the two clocks'
/// drift) of minutes before, and hold that silence's last reading meanwhile.
pub const FEEDBACK_GAP: std::time::Duration = std::time::Duration::from_secs(3);
/// Batches a standing queue must hold through (feedback comes every 100 ms or so: 300 ms,
/// longer than a keyframe burst's queue lasts on a link that carries the layer).
pub const STANDING_BATCHES: usize = 3;

/// What one batch of feedback showed of the path's queue, s.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Queue {
    /// The batch's packets' mean delay over the base.
    mean: f64,
    /// The least delay over the base any of them met.
    least: f64,
    /// The least delay over the long base.
    least_long: f64,
}

impl OneWay {
    /// The queue the batch's packets met over the base, if any arrived with a time.
    fn queue(&mut self, reports: &[PacketReport]) -> Option<Queue> {
        let epoch = *self
            .epoch
            .get_or_insert_with(|| reports.first().map_or_else(Instant::now, |r| r.departure));
        let delays: Vec<f64> = reports
            .iter()
            .filter_map(|r| {
                let arrival = r.arrival?.as_secs_f64();
                let departure = if r.departure >= epoch {
                    r.departure.duration_since(epoch).as_secs_f64()
                } else {
                    -epoch.duration_since(r.departure).as_secs_f64()
                };
                Some(arrival - departure)
            })
            .collect();
        let fastest = delays.iter().copied().fold(f64::INFINITY, f64::min);
        if !fastest.is_finite() {
            return None;
        }
        if self
            .fastest
            .back()
            .is_some_and(|last| (fastest - last).abs() > 30.0)
        {
            // The receiver's clock jumped (a restart): start over.
            self.fastest.clear();
            self.long.clear();
            self.long_count = 0;
        }
        match self.long.back_mut() {
            Some(last) if self.long_count < LONG_BUCKET => {
                *last = last.min(fastest);
                self.long_count += 1;
            }
            _ => {
                self.long.push_back(fastest);
                self.long_count = 1;
                if self.long.len() > LONG_BASE / LONG_BUCKET {
                    self.long.pop_front();
                }
            }
        }
        self.fastest.push_back(fastest);
        if self.fastest.len() > BASE_BATCHES {
            self.fastest.pop_front();
        }
        let base = self.fastest.iter().copied().fold(f64::INFINITY, f64::min);
        let long_base = self.long.iter().copied().fold(base, f64::min);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        Some(Queue {
            mean: (mean - base).max(0.0),
            least: (fastest - base).max(0.0),
            least_long: (fastest - long_base).max(0.0),
        })
    }
}

impl MeteredGcc {
    /// GCC starting at `initial` bits/s within `min..=max`, counting into `meter`, with the
    /// feedback a [`crate::late_acks::FeedbackTap`] nearer the wire reads into `said`.
    pub fn new(
        initial: f64,
        min: f64,
        max: f64,
        meter: Arc<LinkMeter>,
        said: Arc<FeedbackSaid>,
    ) -> Self {
        MeteredGcc {
            gcc: Gcc::new(initial, min, max),
            meter,
            arrived: Recent::default(),
            said,
            pending: VecDeque::new(),
            unheard: Vec::new(),
            arrivals: VecDeque::new(),
            delays: OneWay::default(),
            least: VecDeque::with_capacity(STANDING_BATCHES + 1),
            least_long: VecDeque::with_capacity(STANDING_BATCHES + 1),
            last_feedback: None,
        }
    }
}

impl MeteredGcc {
    /// Decides the losses held back once their [`GRACE`] is over (or sooner, once a feedback
    /// reported them arrived): one a feedback reported arrived counts as arrived (given to GCC
    /// without an arrival time: counted in its rate, not its delays); one reported missing
    /// counts as lost; one no feedback covered (its feedback was lost) counts as neither and
    /// GCC does not hear of it. Appends what GCC is to hear to `given`.
    fn settle(&mut self, now: Instant, given: &mut Vec<PacketReport>) {
        let (mut bytes, mut arrived, mut lost, mut unknown) = (0u64, 0u64, 0u64, 0u64);
        // Each held report once round the queue, in place (no allocation per feedback): the
        // ones still waiting go back in their order.
        for _ in 0..self.pending.len() {
            let Some((deadline, r)) = self.pending.pop_front() else {
                break;
            };
            // (A packet without a transport-wide number is never acknowledged by this
            // feedback, so no feedback said anything of it.)
            let said = if r.is_twcc {
                self.said.said(r.twcc_sequence_number)
            } else {
                Said::Nothing
            };
            // (A packet whose resend arrived since was lost all the same: copies are
            // told apart when their report comes, see `on_reports`.)
            if said == Said::Arrived {
                bytes += r.size as u64;
                arrived += 1;
                self.arrived.insert((r.ssrc, r.rtp_sequence_number));
                given.push(PacketReport {
                    arrived: true,
                    arrival: None,
                    ..r
                });
            } else if now < deadline {
                self.pending.push_back((deadline, r));
            } else if said == Said::Missing {
                lost += 1;
                given.push(r);
            } else {
                unknown += 1;
            }
        }
        let (mut batch_bytes, mut batch_arrived) = (0u64, 0u64);
        while let Some(&(deadline, b, n)) = self.arrivals.front()
            && now >= deadline
        {
            batch_bytes += b;
            batch_arrived += n;
            self.arrivals.pop_front();
        }
        if arrived + lost + unknown > 0 {
            tracing::trace!(
                late = arrived,
                lost,
                unknown,
                waiting = self.pending.len(),
                "losses settled"
            );
        }
        // One addition: a reader never sees the arrivals without the losses beside them.
        self.meter
            .add(bytes + batch_bytes, arrived + batch_arrived, lost);
    }
}

impl BandwidthEstimator for MeteredGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if self
            .last_feedback
            .is_some_and(|t| now.saturating_duration_since(t) >= FEEDBACK_GAP)
        {
            self.delays = OneWay::default();
            self.least.clear();
            self.least_long.clear();
            self.meter.queue_us.store(0, Ordering::Relaxed);
            self.meter.standing_us.store(0, Ordering::Relaxed);
            self.meter.standing_long_us.store(0, Ordering::Relaxed);
        }
        self.last_feedback = Some(now);
        let (mut bytes, mut arrived) = (0u64, 0u64);
        let mut given = Vec::with_capacity(reports.len() + self.unheard.len());
        given.append(&mut self.unheard);
        for r in reports {
            let key = (r.ssrc, r.rtp_sequence_number);
            if r.arrived {
                bytes += r.size as u64;
                arrived += 1;
                self.arrived.insert(key);
                given.push(r.clone());
            } else if !self.arrived.contains(key) {
                self.pending.push_back((now + GRACE, r.clone()));
            }
        }
        // Counted when the losses reported with them are (after GRACE): a short window then
        // holds the arrivals and the losses of the same packets.
        if arrived > 0 {
            self.arrivals.push_back((now + GRACE, bytes, arrived));
        }
        if let Some(queue) = self.delays.queue(&given) {
            self.meter
                .queue_us
                .store((queue.mean * 1e6) as u64, Ordering::Relaxed);
            self.least.push_back(queue.least);
            if self.least.len() > STANDING_BATCHES {
                self.least.pop_front();
            }
            let standing = if self.least.len() == STANDING_BATCHES {
                self.least.iter().copied().fold(f64::INFINITY, f64::min)
            } else {
                0.0
            };
            self.meter
                .standing_us
                .store((standing * 1e6) as u64, Ordering::Relaxed);
            self.least_long.push_back(queue.least_long);
            if self.least_long.len() > STANDING_BATCHES {
                self.least_long.pop_front();
            }
            let standing_long = if self.least_long.len() == STANDING_BATCHES {
                self.least_long
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
            } else {
                0.0
            };
            self.meter
                .standing_long_us
                .store((standing_long * 1e6) as u64, Ordering::Relaxed);
        }
        self.settle(now, &mut given);
        if arrived == 0 {
            // A feedback that only re-reported packets rtc's history had written off (a late
            // one alone): what settled waits for arrivals to go with it (a batch of losses
            // alone reads to GCC as a link losing everything).
            self.unheard = given;
            return;
        }
        // Losses on a path that holds no standing queue are the path's own (a lossy radio
        // link), not congestion's: a link filled past its capacity queues before it drops,
        // batch after batch. GCC's loss half hears none of them (it took a publisher on a
        // link losing 20 % at random to its floor while its delay half held the ceiling).
        let standing_ms = self.meter.standing_us.load(Ordering::Relaxed) as f64 / 1e3;
        let mut unqueued = 0usize;
        if standing_ms < CONGESTIVE_QUEUE_MS {
            let before = given.len();
            given.retain(|r| r.arrived);
            unqueued = before - given.len();
        }
        self.gcc.on_reports(now, &given);
        if tracing::enabled!(tracing::Level::TRACE) {
            let stats = self.gcc.stats();
            tracing::trace!(
                arrived,
                missing = reports.len() as u64 - arrived,
                given = given.len(),
                target = self.gcc.target_bitrate(),
                delay_based = ?stats.delay_based_bitrate,
                loss_based = ?stats.loss_based_bitrate,
                loss = ?stats.packet_loss,
                unqueued,
                "transport-wide feedback"
            );
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Settled for the meter now; GCC hears of them with the next feedback's arrivals (a
        // batch of losses alone would read to it as a link losing everything).
        let mut given = std::mem::take(&mut self.unheard);
        self.settle(now, &mut given);
        self.unheard = given;
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // The held losses and arrivals are settled on time even while no feedback comes.
        [
            self.gcc.poll_timeout(),
            self.pending.front().map(|(at, _)| *at),
            self.arrivals.front().map(|(at, _, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
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
    fn a_queue_building_shows_in_the_one_way_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut one = OneWay::default();
        // Batches of packets 5 ms apart; the receiver's clock is 1000 s off ours.
        let batch = |start: u64, extra: u64| -> Vec<PacketReport> {
            (0..10)
                .map(|i| PacketReport {
                    departure: t0 + ms(start + i * 5),
                    arrival: Some(Duration::from_secs(1000) + ms(start + i * 5 + 20 + extra * i)),
                    ..report(i as u16, true)
                })
                .collect()
        };
        for b in 0..5 {
            let q = one.queue(&batch(b * 50, 0)).expect("a queue figure");
            assert!(q.mean < 0.001, "{q:?}");
        }
        // Each packet 10 ms later than the one before: a queue growing by 10 ms a packet,
        // which the batch's first packet did not meet.
        let q = one.queue(&batch(250, 10)).expect("a queue figure");
        assert!((0.040..0.050).contains(&q.mean), "{q:?}");
        assert!(q.least < 0.001, "{q:?}");
        // Nothing arrived: no figure.
        assert_eq!(one.queue(&[report(1, false)]), None);
    }

    /// Feeds `gcc` batch `b`: ten packets 10 ms apart from `t0 + b × 100 ms`, packet `i`
    /// `wait(i)` ms in a queue, the feedback 120 ms after the batch began; the meter after.
    fn feed_batch(
        gcc: &mut MeteredGcc,
        meter: &LinkMeter,
        t0: Instant,
        b: u64,
        wait: &dyn Fn(u64) -> u64,
    ) -> Metered {
        let ms = Duration::from_millis;
        let reports: Vec<PacketReport> = (0..10)
            .map(|i| PacketReport {
                departure: t0 + ms(b * 100 + i * 10),
                arrival: Some(ms(b * 100 + i * 10 + 20 + wait(i))),
                ..report((b * 10 + i) as u16, true)
            })
            .collect();
        gcc.on_reports(t0 + ms(b * 100 + 120), &reports);
        meter.read()
    }

    #[test]
    fn only_a_queue_every_packet_meets_batch_after_batch_is_standing() {
        let t0 = Instant::now();
        let meter = Arc::new(LinkMeter::default());
        let mut gcc = MeteredGcc::new(1e6, 1e5, 1e7, meter.clone(), Arc::default());
        // Batch `b`: ten packets 10 ms apart, each `wait(i)` ms in a queue.
        let mut feed =
            |b: u64, wait: &dyn Fn(u64) -> u64| feed_batch(&mut gcc, &meter, t0, b, wait);
        for b in 0..4 {
            assert_eq!(feed(b, &|_| 0).standing_us, 0);
        }
        // A keyframe's burst: its tail waits up to 180 ms, its head did not.
        for b in 4..8 {
            let m = feed(b, &|i| i * 20);
            assert!(m.queue_us > 80_000, "{m:?}");
            assert_eq!(m.standing_us, 0, "{m:?}");
        }
        // A full link: every packet waits 200 ms or more. Standing from the third batch.
        let m = feed(8, &|i| 200 + i);
        assert_eq!(m.standing_us, 0, "{m:?}");
        let m = feed(9, &|i| 200 + i);
        assert_eq!(m.standing_us, 0, "{m:?}");
        let m = feed(10, &|i| 210 + i);
        assert!((199_000..=201_000).contains(&m.standing_us), "{m:?}");
        // Drained: gone at the next batch.
        assert_eq!(feed(11, &|_| 0).standing_us, 0);
    }

    #[test]
    fn a_queue_standing_past_the_short_base_stays_in_sight_of_the_long_one() {
        let t0 = Instant::now();
        let meter = Arc::new(LinkMeter::default());
        let mut gcc = MeteredGcc::new(1e6, 1e5, 1e7, meter.clone(), Arc::default());
        let mut feed = |b: u64, wait: u64| feed_batch(&mut gcc, &meter, t0, b, &|_| wait);
        for b in 0..5 {
            assert_eq!(feed(b, 0).standing_long_us, 0);
        }
        // Full for 10 s: the short base takes the queue in as the path's own after about 4 s;
        // the long one does not.
        let mut m = Metered::default();
        for b in 5..105 {
            m = feed(b, 200);
            if b >= 8 {
                assert!(
                    (199_000..=201_000).contains(&m.standing_long_us),
                    "{b} {m:?}"
                );
            }
        }
        assert_eq!(m.standing_us, 0, "{m:?}");
        // Drained: gone from both.
        assert_eq!(feed(105, 0).standing_long_us, 0);
        // Half a minute of the new delay: the long base takes it in too.
        for b in 106..(106 + LONG_BASE as u64 + LONG_BUCKET as u64) {
            m = feed(b, 100);
        }
        assert_eq!(m.standing_long_us, 0, "{m:?}");
    }

    #[test]
    fn feedback_after_a_silence_starts_the_bases_afresh() {
        let t0 = Instant::now();
        let meter = Arc::new(LinkMeter::default());
        let mut gcc = MeteredGcc::new(1e6, 1e5, 1e7, meter.clone(), Arc::default());
        let mut feed = |b: u64, wait: u64| feed_batch(&mut gcc, &meter, t0, b, &|_| wait);
        for b in 0..10 {
            feed(b, 0);
        }
        // Without a silence, a path 300 ms slower reads as a standing queue.
        for b in 10..13 {
            feed(b, 300);
        }
        assert!(meter.read().standing_long_us >= 299_000);
        // Metering resumes a minute later on that path: measured afresh, nothing standing.
        for b in 613..620 {
            let m = feed(b, 300);
            assert_eq!(m.standing_long_us, 0, "{b} {m:?}");
            assert_eq!(m.standing_us, 0, "{b} {m:?}");
        }
    }

    /// GCC fed 3 s of feedback losing every fifth packet, each batch's packets queued
    /// `wait` ms after the first 5 batches: its stats after.
    fn lossy(wait: u64) -> (EstimatorStats, f64, Metered) {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let meter = Arc::new(LinkMeter::default());
        let said = Arc::new(FeedbackSaid::default());
        let mut gcc = MeteredGcc::new(1e6, 1e5, 1e7, meter.clone(), said.clone());
        for b in 0..30u64 {
            let wait = if b < 5 { 0 } else { wait };
            let reports: Vec<PacketReport> = (0..10u64)
                .map(|i| {
                    let seq = (b * 10 + i) as u16;
                    let arrived = i % 5 != 4;
                    PacketReport {
                        departure: t0 + ms(b * 100 + i * 10),
                        arrival: arrived.then(|| ms(b * 100 + i * 10 + 20 + wait)),
                        ..report(seq, arrived)
                    }
                })
                .collect();
            said.on_feedback(reports.iter().map(|r| (r.twcc_sequence_number, r.arrived)));
            let now = t0 + ms(b * 100 + 120 + wait);
            gcc.handle_timeout(now);
            gcc.on_reports(now, &reports);
        }
        (gcc.stats(), gcc.target_bitrate(), meter.read())
    }

    #[test]
    fn random_losses_without_a_queue_are_counted_but_not_given_to_gcc() {
        // No queue: a fifth lost at random. The meter counts them; GCC's loss half does
        // not hear them, so the estimate does not sink.
        let (stats, target, m) = lossy(0);
        assert!(m.lost_packets >= 50, "{m:?}");
        assert_eq!(stats.packet_loss, Some(0.0), "{stats:?}");
        assert!(target >= 1e6, "{target} {stats:?}");
        // The same losses while every packet waits 200 ms (a full drop-tail queue): GCC
        // hears them.
        let (stats, target, m) = lossy(200);
        assert!(m.lost_packets >= 50, "{m:?}");
        assert!(stats.packet_loss.is_some_and(|l| l > 0.1), "{stats:?}");
        assert!(target < 1e6, "{target} {stats:?}");
    }

    #[test]
    fn arrivals_and_losses_are_counted_and_a_dropped_copy_is_no_loss() {
        let meter = Arc::new(LinkMeter::default());
        let said = Arc::new(FeedbackSaid::default());
        let mut gcc = MeteredGcc::new(1e6, 1e5, 1e7, meter.clone(), said.clone());
        let t0 = Instant::now();
        // 1 arrives, 2 is lost, 3 arrives and its two copies are dropped as duplicates.
        gcc.on_reports(
            t0,
            &[
                report(1, true),
                report(2, false),
                report(3, true),
                report(3, false),
                report(3, false),
            ],
        );
        // A copy whose report comes in the next feedback is no loss either; 4 is reported
        // lost, and a later feedback reports it arrived; no feedback covered 6; 2's resend
        // arrives (it was lost all the same).
        said.on_feedback([(1, true), (2, false), (3, true)]);
        let resend = PacketReport {
            twcc_sequence_number: 7,
            ..report(2, true)
        };
        gcc.on_reports(
            t0,
            &[report(3, false), report(4, false), report(6, false), resend],
        );
        said.on_feedback([(4, true)]);
        // Nothing is counted lost before the grace is over.
        gcc.handle_timeout(t0 + GRACE / 2);
        let early = meter.read();
        assert_eq!(early.lost_packets, 0, "{early:?}");
        assert_eq!(early.acked_packets, 1, "only 4, reported late: {early:?}");
        assert_eq!(gcc.poll_timeout(), Some(t0 + GRACE));
        gcc.handle_timeout(t0 + GRACE);
        assert_eq!(
            meter.read(),
            Metered {
                acked_bytes: 4_000,
                acked_packets: 4,
                lost_packets: 1,
                queue_us: 0,
                standing_us: 0,
                standing_long_us: 0,
            }
        );
        let before = Metered::default();
        assert_eq!(meter.read().since(before), (4_000, 4, 1));
    }
}
