//! Our NACK generator: asks the sender again for each missing RTP packet, spaced by the
//! measured repair time, a bounded number of times, and measures that repair time itself.
//!
//! rtc's generator re-asks for every missing packet at each tick (every 10 ms here) with no
//! limit, and keeps asking for a packet long given up on while it stays in its window: over a
//! 200 ms round trip one loss is asked for twenty times and the sender's responder resends it
//! twenty times, a storm that makes a lossy link lossier. This one asks for a packet once
//! when its gap is seen, again only after a repair time with no answer (the smoothed round
//! trip from NACK to resend, plus margin), at most [`MAX_NACKS`] times and for at most
//! [`MAX_AGE`], like libwebrtc's `NackRequester`. A gap is first asked for only once it is
//! older than the reordering measured on the stream (packets that filled a gap unasked): on a
//! path that reorders, asking at once would resend packets that were only late, and their
//! early arrival would read as an impossibly short repair time. While FEC fills gaps, a gap
//! also waits as long as FEC lately took (asking before a frame's repair packets came would
//! resend what they rebuild). A packet asked for a second
//! time (the first NACK or its resend was lost) is asked for twice over, in two packets, so
//! the sender resends it twice: on a link losing 20 % each way one round mends 64 % of
//! losses, a doubled one 92 %, for a few percent more traffic, and only where loss is. Where
//! the measured loss is heavy (over [`HEAVY_LOSS`]) the first ask is doubled too.
//!
//! The state machine ([`NackState`]) is sans-I/O; [`NackRequester`] is the interceptor around it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

/// How often missing packets are looked at.
pub const TICK: Duration = Duration::from_millis(5);
/// A packet is asked for at most this many times.
pub const MAX_NACKS: u8 = 10;
/// A packet missing longer than this is given up (the player has long played past it).
pub const MAX_AGE: Duration = Duration::from_millis(1_500);
/// Asks for one packet come at least this far apart. Behind a relay, a packet lost on the
/// publisher's link is not in the relay's history until the relay's own repair brings it (a
/// round trip of that link later): with a fast player link the asks were given up about
/// 65 ms after the gap (the uplink cell: 300 in 20 s), each one spending the relay's resend
/// budget on a packet it could not answer. Ten asks now span half a second at least. (The
/// jitter buffer's own wait, not this, decides when a frame is abandoned.)
pub const MIN_RETRY: Duration = Duration::from_millis(20);
/// Repair time assumed before one is measured (libwebrtc assumes a 100 ms round trip).
pub const INITIAL_REPAIR: Duration = Duration::from_millis(100);
/// A gap this long is a restart or a jump, not loss: it is not asked for.
const MAX_GAP: u64 = 1_000;

/// What the requester has done, shared with the application (counters only grow).
#[derive(Debug, Default)]
pub struct NackStats {
    /// Distinct packets seen missing.
    pub missing: AtomicU64,
    /// NACK entries sent (a packet asked for three times counts three).
    pub requests: AtomicU64,
    /// Missing packets that arrived after all (reordered or resent).
    pub repaired: AtomicU64,
    /// Of those, the ones that were only late (filled unasked, or too soon to be a resend).
    pub reordered: AtomicU64,
    /// Of those, the ones FEC rebuilt (lost on the link; neither late nor resent).
    pub rebuilt: AtomicU64,
    /// Missing packets given up on (asked for [`MAX_NACKS`] times or older than [`MAX_AGE`]).
    pub abandoned: AtomicU64,
    /// Smoothed repair time (NACK sent → packet arrived), µs; 0 until measured.
    pub repair_us: AtomicU64,
    /// How late reordered packets arrive (the most of the recent ones), µs.
    pub reorder_us: AtomicU64,
    /// The link's round trip as measured elsewhere (ICE checks), µs, set by the owner; 0 if
    /// unknown. A repair cannot be faster: NACKs are not repeated sooner, and an "answer"
    /// arriving in less than half of it was a reordered packet, not a resend.
    pub rtt_floor_us: AtomicU64,
}

impl NackStats {
    /// The measured repair time, if any.
    pub fn repair_time(&self) -> Option<Duration> {
        match self.repair_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How late reordered packets arrive.
    pub fn reorder_time(&self) -> Duration {
        Duration::from_micros(self.reorder_us.load(Ordering::Relaxed))
    }
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    since: Instant,
    nacks: u8,
    last: Option<Instant>,
}

/// One stream's missing packets.
#[derive(Debug, Default)]
struct StreamLog {
    highest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
    /// Packets FEC rebuilt lately (oldest first, at most [`REBUILT_KEPT`]): if the packet
    /// itself comes after all, it was only late.
    rebuilt: std::collections::VecDeque<u64>,
}

/// Rebuilt packets remembered per stream (a second of 720p).
const REBUILT_KEPT: usize = 256;

impl StreamLog {
    fn extend(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            return u64::from(seq) + 0x1_0000;
        };
        let base = highest & !0xFFFF;
        [base.wrapping_sub(0x1_0000), base, base + 0x1_0000]
            .map(|b| b.wrapping_add(u64::from(seq)))
            .into_iter()
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(u64::from(seq))
    }
}

/// The sans-I/O requester: packets in, NACK lists out.
#[derive(Debug)]
pub struct NackState {
    streams: HashMap<u32, StreamLog>,
    /// Smoothed repair time and its mean deviation (RFC 6298 style).
    srtt: Option<(f64, f64)>,
    /// How late recent reordered packets were (newest last).
    reorder: VecDeque<Duration>,
    /// Their 90th percentile, kept up to date as they come (read every tick).
    reorder_p90: Duration,
    /// How late gaps FEC filled unasked were (when, how late; the last [`FEC_WAIT_LIFE`]),
    /// their 90th percentile and when the last came.
    fec_waits: VecDeque<(Instant, Duration)>,
    fec_p90: Duration,
    fec_last: Option<Instant>,
    /// Packets arrived and first asks since `loss` was last updated, and when that was.
    arrived: u64,
    asked: u64,
    loss_at: Option<Instant>,
    /// Smoothed share of packets that needed a NACK.
    loss: f64,
    stats: Arc<NackStats>,
}

/// Above this share of packets needing a NACK, every ask goes out twice.
pub const HEAVY_LOSS: f64 = 0.08;

/// Reorder samples remembered.
const REORDER_SAMPLES: usize = 128;
/// The longest a gap waits for reordering before its first NACK.
const MAX_REORDER_WAIT: Duration = Duration::from_millis(80);
/// How long what FEC took to fill a gap counts for the first NACK's wait.
const FEC_WAIT_LIFE: Duration = Duration::from_secs(5);

/// The 90th percentile (nearest rank) of `samples`; zero for none.
fn p90(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut late: Vec<Duration> = samples.collect();
    late.sort_unstable();
    let rank = (late.len() * 9).div_ceil(10);
    late.get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

impl NackState {
    /// A requester reporting into `stats`.
    pub fn new(stats: Arc<NackStats>) -> NackState {
        NackState {
            streams: HashMap::new(),
            srtt: None,
            reorder: VecDeque::new(),
            reorder_p90: Duration::ZERO,
            fec_waits: VecDeque::new(),
            fec_p90: Duration::ZERO,
            fec_last: None,
            arrived: 0,
            asked: 0,
            loss_at: None,
            loss: 0.0,
            stats,
        }
    }

    /// Starts watching `ssrc`.
    pub fn watch(&mut self, ssrc: u32) {
        self.streams.entry(ssrc).or_default();
    }

    /// Stops watching `ssrc`.
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.remove(&ssrc);
    }

    fn rtt_floor(&self) -> f64 {
        self.stats.rtt_floor_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// How long to wait for an answer before asking again.
    pub fn retry_after(&self) -> Duration {
        let floor = self.rtt_floor();
        let retry = match self.srtt {
            // Smoothed repair time (never below the measured round trip) plus its deviation,
            // and 5 ms for the sender's tick: an answer later than that is more likely lost
            // than slow, and asking again costs one small packet.
            Some((srtt, var)) => {
                Duration::from_secs_f64((srtt.max(floor) + var).clamp(0.0, 2.0))
                    + Duration::from_millis(5)
            }
            None if floor > 0.0 => Duration::from_secs_f64((floor * 1.5).min(2.0)),
            None => INITIAL_REPAIR,
        };
        retry.max(MIN_RETRY)
    }

    /// A packet FEC rebuilt on `ssrc`: if it was missing it is not any more, and it says
    /// nothing of reordering or of how long a resend takes.
    pub fn on_rebuilt(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let Some(log) = self.streams.get_mut(&ssrc) else {
            return;
        };
        let ext = log.extend(seq);
        if log.highest.is_none_or(|h| ext > h) {
            // Ahead of what arrived (the last packet of a frame, rebuilt before the next
            // came): as an arrival, or the gap up to it would count it missing.
            return self.on_packet(ssrc, seq, now);
        }
        if let Some(m) = log.missing.remove(&ext) {
            self.stats.repaired.fetch_add(1, Ordering::Relaxed);
            self.stats.rebuilt.fetch_add(1, Ordering::Relaxed);
            // Unasked, the packet itself may still come (then it was only late); asked, what
            // comes later may be the resend, which says nothing.
            if m.nacks == 0 {
                // Filled unasked: while FEC keeps doing so, a new gap waits as long before
                // its first ask (a frame's repair packets come after the frame).
                let late = now.saturating_duration_since(m.since);
                self.fec_sample(late, now);
                let Some(log) = self.streams.get_mut(&ssrc) else {
                    return;
                };
                log.rebuilt.push_back(ext);
                if log.rebuilt.len() > REBUILT_KEPT {
                    log.rebuilt.pop_front();
                }
            }
        }
    }

    /// A packet arrived on `ssrc`.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let Some(log) = self.streams.get_mut(&ssrc) else {
            return;
        };
        self.arrived += 1;
        let ext = log.extend(seq);
        let Some(highest) = log.highest else {
            log.highest = Some(ext);
            return;
        };
        if ext > highest {
            if ext - highest > MAX_GAP {
                // A jump (a new sender or a long outage): start over from here.
                log.missing.clear();
            } else {
                for lost in highest + 1..ext {
                    log.missing.insert(
                        lost,
                        Missing {
                            since: now,
                            nacks: 0,
                            last: None,
                        },
                    );
                }
                self.stats
                    .missing
                    .fetch_add(ext - highest - 1, Ordering::Relaxed);
            }
            log.highest = Some(ext);
            return;
        }
        if let Some(at) = log.rebuilt.iter().position(|r| *r == ext) {
            // FEC rebuilt it before it came: it was reordered, not lost.
            log.rebuilt.remove(at);
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(m) = log.missing.remove(&ext) {
            self.stats.repaired.fetch_add(1, Ordering::Relaxed);
            let late = now.saturating_duration_since(m.since);
            let reorder = self.reorder_wait();
            match (m.nacks, m.last) {
                // Filled unasked, or so soon after it was asked that it was only reordered.
                (0, _) => self.reordered(late),
                (1, _) if late <= reorder + reorder / 2 => self.reordered(late),
                // A packet asked for once times the repair exactly; after several asks it is
                // not known which one was answered.
                (1, Some(last)) => {
                    let rtt = now.saturating_duration_since(last);
                    if rtt.as_secs_f64() < self.rtt_floor() / 2.0 {
                        self.reordered(late);
                    } else {
                        self.sample(rtt);
                    }
                }
                _ => {}
            }
        }
    }

    /// A gap FEC filled unasked `late` after it showed, at `now`.
    fn fec_sample(&mut self, late: Duration, now: Instant) {
        self.fec_waits
            .retain(|(at, _)| now.saturating_duration_since(*at) < FEC_WAIT_LIFE);
        self.fec_waits.push_back((now, late.min(MAX_REORDER_WAIT)));
        if self.fec_waits.len() > REORDER_SAMPLES {
            self.fec_waits.pop_front();
        }
        self.fec_p90 = p90(self.fec_waits.iter().map(|(_, l)| *l));
        self.fec_last = Some(now);
    }

    /// How long a new gap waits before its first NACK at `now`: the reordering's wait, or
    /// what FEC took to fill gaps lately (the 90th percentile of the last 5 s) while it
    /// fills any.
    pub fn first_wait(&self, now: Instant) -> Duration {
        let fec = match self.fec_last {
            Some(at) if now.saturating_duration_since(at) < FEC_WAIT_LIFE => self.fec_p90,
            _ => Duration::ZERO,
        };
        self.reorder_p90.max(fec)
    }

    fn reordered(&mut self, late: Duration) {
        self.stats.reordered.fetch_add(1, Ordering::Relaxed);
        self.reorder.push_back(late.min(MAX_REORDER_WAIT));
        if self.reorder.len() > REORDER_SAMPLES {
            self.reorder.pop_front();
        }
        self.reorder_p90 = p90(self.reorder.iter().copied());
        self.stats
            .reorder_us
            .store(self.reorder_p90.as_micros() as u64, Ordering::Relaxed);
    }

    /// How long a new gap waits for reordering before it is asked for: the 90th percentile
    /// of how late recent reordered packets were (0 on a path that keeps order). The few
    /// later ones are asked for needlessly, which costs a resend and saves a round trip on
    /// every real loss.
    pub fn reorder_wait(&self) -> Duration {
        self.reorder_p90
    }

    fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        self.srtt = Some(match self.srtt {
            None => (r, r / 2.0),
            Some((srtt, var)) => {
                let var = 0.75 * var + 0.25 * (srtt - r).abs();
                (0.875 * srtt + 0.125 * r, var)
            }
        });
        self.stats.repair_us.store(
            (self.srtt.map_or(0.0, |s| s.0) * 1e6) as u64,
            Ordering::Relaxed,
        );
    }

    /// The NACKs to send now: per SSRC, the sequence numbers to ask for; a second list of the
    /// ones asked for again (to be sent a second time). Marks them asked.
    pub fn due(&mut self, now: Instant) -> Vec<(u32, Vec<u16>)> {
        let mut out = Vec::new();
        for (ssrc, seqs, again) in self.due_with_retries(now) {
            out.push((ssrc, seqs));
            if !again.is_empty() {
                out.push((ssrc, again));
            }
        }
        out
    }

    /// [`Self::due`], as (SSRC, all due, those asked for before).
    fn due_with_retries(&mut self, now: Instant) -> Vec<(u32, Vec<u16>, Vec<u16>)> {
        // The loss estimate, twice a second.
        if self
            .loss_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(500))
        {
            if self.arrived + self.asked > 0 {
                let share = self.asked as f64 / (self.arrived + self.asked) as f64;
                self.loss = 0.6 * self.loss + 0.4 * share;
            }
            (self.arrived, self.asked, self.loss_at) = (0, 0, Some(now));
        }
        let heavy = self.loss > HEAVY_LOSS;
        let retry = self.retry_after();
        let first = self.first_wait(now);
        let mut out = Vec::new();
        for (&ssrc, log) in &mut self.streams {
            let before = log.missing.len();
            log.missing.retain(|ext, m| {
                let keep = m.nacks < MAX_NACKS && now.saturating_duration_since(m.since) < MAX_AGE;
                if !keep {
                    tracing::debug!(
                        seq = *ext as u16,
                        nacks = m.nacks,
                        age_ms = now.saturating_duration_since(m.since).as_millis() as u64,
                        "nack: giving up on a packet"
                    );
                }
                keep
            });
            let abandoned = (before - log.missing.len()) as u64;
            if abandoned > 0 {
                self.stats.abandoned.fetch_add(abandoned, Ordering::Relaxed);
            }
            let (mut seqs, mut again) = (Vec::new(), Vec::new());
            for (&ext, m) in &mut log.missing {
                // Each ask waits a quarter longer than the one before (1, 1.25, 1.56 … repair
                // times): when the repair time is underestimated — the link just got slower,
                // and Karn's rule leaves no clean sample while every packet is asked twice —
                // the asking still slows down past the real round trip instead of storming.
                let due = match m.last {
                    None => now.saturating_duration_since(m.since) >= first,
                    Some(t) => {
                        now.saturating_duration_since(t)
                            >= retry.mul_f64(1.25f64.powi(i32::from(m.nacks) - 1))
                    }
                };
                if due {
                    if m.nacks == 0 {
                        self.asked += 1;
                    }
                    if m.nacks > 0 || heavy {
                        again.push(ext as u16);
                    }
                    m.nacks += 1;
                    m.last = Some(now);
                    seqs.push(ext as u16);
                }
            }
            if !seqs.is_empty() {
                self.stats
                    .requests
                    .fetch_add((seqs.len() + again.len()) as u64, Ordering::Relaxed);
                out.push((ssrc, seqs, again));
            }
        }
        out
    }
}

/// The interceptor: watches streams that negotiated `nack`, sends NACKs every [`TICK`].
pub struct NackRequester {
    state: NackState,
    sender_ssrc: u32,
    next: Option<Instant>,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
}

impl NackRequester {
    /// A requester reporting into `stats`.
    pub fn new(stats: Arc<NackStats>) -> NackRequester {
        NackRequester {
            state: NackState::new(stats),
            sender_ssrc: rand::random(),
            next: None,
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackRequester {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            if msg
                .message
                .attributes
                .iter()
                .any(|a| matches!(a, rtc::interceptor::Attribute::RecoveredByFec))
            {
                self.state
                    .on_rebuilt(p.header.ssrc, p.header.sequence_number, msg.now);
            } else {
                self.state
                    .on_packet(p.header.ssrc, p.header.sequence_number, msg.now);
            }
            if self.next.is_none() {
                self.next = Some(msg.now + TICK);
            }
        }
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.outbound.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.outbound.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if self.next.is_some_and(|t| now >= t) {
            self.next = Some(now + TICK);
            for (media_ssrc, seqs) in self.state.due(now) {
                let nack = TransportLayerNack {
                    sender_ssrc: self.sender_ssrc,
                    media_ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&seqs),
                };
                self.outbound.push_back(TaggedPacket {
                    now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
                });
            }
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.next
    }
}

impl Interceptor for NackRequester {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
        {
            self.state.watch(info.ssrc);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.state.forget(info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn state() -> (NackState, Arc<NackStats>) {
        let stats = Arc::new(NackStats::default());
        let mut s = NackState::new(stats.clone());
        assert_eq!(s.retry_after(), INITIAL_REPAIR);
        s.watch(7);
        (s, stats)
    }

    #[test]
    fn a_gap_is_asked_for_once_then_again_only_after_the_repair_time() {
        let (mut s, stats) = state();
        let t = Instant::now();
        s.on_packet(7, 10, t);
        s.on_packet(7, 13, t);
        assert_eq!(s.due(t), vec![(7, vec![11, 12])]);
        assert!(
            s.due(t + ms(50)).is_empty(),
            "not again before the repair time"
        );
        assert_eq!(
            s.due(t + INITIAL_REPAIR),
            vec![(7, vec![11, 12]), (7, vec![11, 12])],
            "asked again, twice over"
        );
        assert_eq!(stats.requests.load(Ordering::Relaxed), 6);
        // The next ask waits 1.25 repair times.
        let second = t + INITIAL_REPAIR;
        assert!(s.due(second + INITIAL_REPAIR).is_empty());
        assert_eq!(s.due(second + INITIAL_REPAIR.mul_f64(1.25)).len(), 2);
        assert_eq!(stats.missing.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_answer_measures_the_repair_time_and_ends_the_asking() {
        let (mut s, stats) = state();
        let t = Instant::now();
        s.on_packet(7, 1, t);
        s.on_packet(7, 3, t);
        assert_eq!(s.due(t), vec![(7, vec![2])]);
        s.on_packet(7, 2, t + ms(40));
        assert_eq!(stats.repaired.load(Ordering::Relaxed), 1);
        assert_eq!(stats.repair_time(), Some(ms(40)));
        assert!(s.retry_after() >= ms(40) && s.retry_after() < INITIAL_REPAIR);
        assert!(s.due(t + ms(500)).is_empty());
    }

    #[test]
    fn asks_for_a_packet_come_at_least_min_retry_apart() {
        // A player a millisecond from its relay: repairs from the relay's history come back
        // at once, so the measured repair time is tiny.
        let (mut s, _stats) = state();
        let t = Instant::now();
        for i in 0..20u16 {
            let at = t + ms(u64::from(i) * 10);
            s.on_packet(7, 2 * i + 1, at);
            s.on_packet(7, 2 * i + 3, at);
            let _ = s.due(at);
            s.on_packet(7, 2 * i + 2, at + ms(1));
        }
        assert_eq!(s.retry_after(), MIN_RETRY);
        // A packet the relay does not have yet (lost on the publisher's link) is still being
        // asked for 300 ms on, and not every few milliseconds.
        let t = t + ms(1_000);
        s.on_packet(7, 42, t);
        s.on_packet(7, 44, t);
        let asks = (0..60u64)
            .filter(|i| !s.due(t + ms(i * 5)).is_empty())
            .count();
        assert!((5..=9).contains(&asks), "{asks} asks in 300 ms");
        assert!(!s.due(t + ms(300)).is_empty() || !s.due(t + ms(330)).is_empty());
    }

    #[test]
    fn a_packet_fec_rebuilt_ends_the_asking_and_measures_nothing() {
        let (mut s, stats) = state();
        let t = Instant::now();
        s.on_packet(7, 1, t);
        s.on_packet(7, 4, t);
        assert_eq!(s.due(t), vec![(7, vec![2, 3])]);
        // 2 rebuilt 5 ms after its ask: not a resend (no repair time), not a reordering.
        s.on_rebuilt(7, 2, t + ms(5));
        assert_eq!(stats.repair_time(), None);
        assert_eq!(stats.reordered.load(Ordering::Relaxed), 0);
        assert_eq!(stats.rebuilt.load(Ordering::Relaxed), 1);
        assert_eq!(stats.repaired.load(Ordering::Relaxed), 1);
        assert_eq!(s.due(t + INITIAL_REPAIR), vec![(7, vec![3]), (7, vec![3])]);
        // 5 rebuilt before anything after it arrived: never missing.
        s.on_rebuilt(7, 5, t + ms(6));
        s.on_packet(7, 6, t + ms(7));
        assert_eq!(stats.missing.load(Ordering::Relaxed), 2);
        // A rebuilt copy of a packet that arrived changes nothing.
        s.on_rebuilt(7, 6, t + ms(8));
        assert_eq!(stats.rebuilt.load(Ordering::Relaxed), 1);
        // 2 was asked for: what comes for it later (the resend) changes nothing.
        s.on_packet(7, 2, t + ms(30));
        assert_eq!(stats.reordered.load(Ordering::Relaxed), 0);
        assert_eq!(stats.repaired.load(Ordering::Relaxed), 1);
        // 8 rebuilt before it was asked for, and then it comes itself: it was late, not lost
        // (the link's loss leaves it out).
        s.on_packet(7, 9, t + ms(40));
        s.on_rebuilt(7, 8, t + ms(41));
        s.on_packet(7, 8, t + ms(45));
        assert_eq!(stats.reordered.load(Ordering::Relaxed), 1);
        assert_eq!(stats.rebuilt.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn gaps_fec_fills_unasked_teach_the_next_gap_to_wait_for_fec() {
        let (mut s, _) = state();
        let t = Instant::now();
        s.on_packet(7, 1, t);
        assert_eq!(s.reorder_wait(), Duration::ZERO);
        // Ten frames whose lost packet FEC rebuilt 30 ms after its gap showed, before it
        // was due to be asked (each gap looked at only at the rebuild).
        let mut seq = 1u16;
        let mut now = t;
        for _ in 0..10 {
            now += ms(33);
            s.on_packet(7, seq + 2, now);
            s.on_rebuilt(7, seq + 1, now + ms(30));
            seq += 2;
        }
        // Not a reordering (a resend's timing is judged as before)…
        assert_eq!(s.reorder_wait(), Duration::ZERO);
        assert_eq!(s.first_wait(now + ms(30)), ms(30));
        // …but the next gap is asked for only once FEC has had that long.
        now += ms(40);
        s.on_packet(7, seq + 2, now);
        assert!(s.due(now + ms(20)).is_empty());
        assert_eq!(s.due(now + ms(30)), vec![(7, vec![seq + 1])]);
        // FEC quiet for 5 s: gaps are asked for at once again.
        let later = now + FEC_WAIT_LIFE;
        assert_eq!(s.first_wait(later), Duration::ZERO);
        s.on_packet(7, seq + 5, later);
        // (Asked twice: half the packets went missing, heavy loss.)
        assert_eq!(s.due(later).first(), Some(&(7, vec![seq + 3, seq + 4])));
    }

    #[test]
    fn a_packet_is_given_up_after_max_nacks_or_max_age() {
        let (mut s, stats) = state();
        let t = Instant::now();
        s.on_packet(7, 1, t);
        s.on_packet(7, 3, t);
        let mut asked = 0;
        let mut now = t;
        for _ in 0..1000 {
            asked += s.due_with_retries(now).len();
            now += ms(5);
        }
        assert!(asked >= 5 && asked <= usize::from(MAX_NACKS), "{asked}");
        assert_eq!(stats.abandoned.load(Ordering::Relaxed), 1);
        // Age alone ends it too.
        s.on_packet(7, 5, now);
        assert!(!s.due(now).is_empty());
        assert!(s.due(now + MAX_AGE).is_empty());
    }

    #[test]
    fn reordering_delays_the_first_ask_and_is_not_taken_for_repair() {
        let (mut s, stats) = state();
        let t = Instant::now();
        s.on_packet(7, 1, t);
        s.on_packet(7, 3, t);
        // 2 arrives 20 ms late before anyone asked: reordering.
        s.on_packet(7, 2, t + ms(20));
        assert_eq!(s.reorder_wait(), ms(20));
        assert_eq!(stats.reorder_time(), ms(20));
        assert_eq!(stats.repair_time(), None, "not a repair");
        // The next gap waits those 20 ms before it is asked for.
        s.on_packet(7, 5, t + ms(100));
        assert!(s.due(t + ms(110)).is_empty());
        assert_eq!(s.due(t + ms(120)), vec![(7, vec![4])]);
        // Arriving just after the ask is still reordering, not a 1 ms round trip.
        s.on_packet(7, 4, t + ms(121));
        assert_eq!(stats.repair_time(), None);
    }

    #[test]
    fn the_round_trip_floor_keeps_the_repair_time_honest() {
        let (mut s, stats) = state();
        stats.rtt_floor_us.store(40_000, Ordering::Relaxed);
        assert_eq!(s.retry_after(), ms(60), "1.5 round trips before any repair");
        let t = Instant::now();
        s.on_packet(7, 1, t);
        s.on_packet(7, 3, t);
        assert_eq!(s.due(t).len(), 1);
        // An "answer" 5 ms after the ask, on a 40 ms path, was only reordered.
        s.on_packet(7, 2, t + ms(5));
        assert_eq!(stats.repair_time(), None);
        assert!(s.retry_after() >= ms(40));
    }

    #[test]
    fn heavy_loss_doubles_even_the_first_ask() {
        let (mut s, _) = state();
        let t = Instant::now();
        // One packet in five needs asking for, for a second.
        let mut seq = 0u16;
        let mut now = t;
        let mut doubled_first = false;
        for _ in 0..100 {
            s.on_packet(7, seq, now);
            s.on_packet(7, seq + 2, now);
            seq += 3;
            let due = s.due(now);
            doubled_first |=
                due.len() == 2 && due.iter().all(|(_, q)| q.len() == 1 && q[0] == seq - 2);
            // The resend arrives before anything is asked again.
            s.on_packet(7, seq - 2, now + ms(5));
            now += ms(10);
        }
        assert!(s.loss > HEAVY_LOSS, "{}", s.loss);
        assert!(doubled_first, "a new gap is asked for twice over");
    }

    #[test]
    fn wraps_and_jumps() {
        let (mut s, _) = state();
        let t = Instant::now();
        s.on_packet(7, 65534, t);
        s.on_packet(7, 1, t);
        assert_eq!(s.due(t), vec![(7, vec![65535, 0])]);
        // A jump far ahead is a restart, not thousands of losses.
        s.on_packet(7, 30_000, t);
        assert!(s.due(t + ms(500)).is_empty());
        // A stream not watched (no nack negotiated) is ignored.
        s.on_packet(9, 1, t);
        s.on_packet(9, 5, t);
        assert!(s.due(t).is_empty());
    }
}
