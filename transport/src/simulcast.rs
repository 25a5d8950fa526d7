//! Simulcast at the SFU, sans I/O: which layer a publisher's video track or RID is, where an
//! H.264 keyframe starts in RTP, and the per-player forwarder that switches layers only at a
//! keyframe of the target layer and rewrites sequence numbers and timestamps so the player sees
//! one continuous stream (its SSRC is the player track's own).

use std::time::{Duration, Instant};

use rtc::rtp;

use crate::link_meter::CONGESTIVE_QUEUE_MS;

/// Layers a stream may have: 0 is the full picture, 1 and 2 smaller ones.
pub const MAX_LAYERS: usize = 3;

/// Packets of the target layer held while waiting for its keyframe to start (one access unit).
const MAX_PENDING: usize = 1024;

/// The layer a publisher's video stream is: by its RID (`f`, `h`, `q` as browsers name them,
/// or `0`–`2`), else by its track ID's suffix (`…-video-1`, `…-video-2`; anything else is the
/// full picture).
pub fn layer_of(rid: Option<&str>, track_id: &str) -> usize {
    if let Some(rid) = rid.filter(|r| !r.is_empty()) {
        return match rid {
            "h" | "m" | "1" | "mid" => 1,
            "q" | "l" | "2" | "low" => 2,
            _ => 0,
        };
    }
    match track_id.rsplit_once("-video-") {
        Some((_, "1")) => 1,
        Some((_, "2")) => 2,
        _ => 0,
    }
}

/// Whether an H.264 RTP payload carries the start of a keyframe: an SPS or IDR slice as a single
/// NAL unit, inside a STAP-A, or at the start of an FU-A.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    carries_nal(payload, |nal_type| nal_type == 5 || nal_type == 7)
}

/// The sequence parameter set an H.264 RTP payload carries whole (a single NAL unit or inside
/// a STAP-A), without its size prefix.
pub fn rtp_sps(payload: &[u8]) -> Option<&[u8]> {
    let head = *payload.first()?;
    match head & 0x1f {
        7 => Some(payload),
        24 => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                let nal = payload.get(i + 2..i + 2 + size)?;
                if nal.first().is_some_and(|h| h & 0x1f == 7) {
                    return Some(nal);
                }
                i += 2 + size;
            }
            None
        }
        _ => None,
    }
}

/// Whether an H.264 RTP payload carries (or begins a fragment of) a NAL unit `key` accepts.
fn carries_nal(payload: &[u8], key: impl Fn(u8) -> bool) -> bool {
    let Some(&head) = payload.first() else {
        return false;
    };
    match head & 0x1f {
        // STAP-A: 16-bit sizes, then NAL units.
        24 => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                if payload.get(i + 2).is_some_and(|h| key(h & 0x1f)) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the start bit and the fragmented unit's type.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && key(fu & 0x1f)),
        t => key(t),
    }
}

/// What the forwarder did with a packet.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Packets to send to the player now, rewritten, in order.
    pub packets: Vec<rtp::Packet>,
    /// The layer the player now gets, when this packet completed a switch.
    pub switched_to: Option<usize>,
}

/// One player's video: the layer it gets and the rewriting that hides switches.
#[derive(Debug)]
pub struct LayerForwarder {
    current: Option<usize>,
    target: usize,
    /// Packets of the target layer at `pending_ts`, held until one shows a keyframe starts.
    pending: Vec<rtp::Packet>,
    pending_ts: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// The last packet sent: its sequence number and timestamp after rewriting, and when.
    last_out: Option<(u16, u32, Instant)>,
}

impl LayerForwarder {
    /// A forwarder that starts with `target` at its next keyframe.
    pub fn new(target: usize) -> Self {
        LayerForwarder {
            current: None,
            target: target.min(MAX_LAYERS - 1),
            pending: Vec::new(),
            pending_ts: None,
            seq_offset: 0,
            ts_offset: 0,
            last_out: None,
        }
    }

    /// The layer being sent, once the first keyframe went out.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer it is switching to (or sending).
    pub fn target(&self) -> usize {
        self.target
    }

    /// Asks for `layer` from its next keyframe on; the current layer goes on meanwhile.
    /// Returns whether that is a change (the caller asks the publisher for a keyframe).
    pub fn set_target(&mut self, layer: usize) -> bool {
        let layer = layer.min(MAX_LAYERS - 1);
        if layer == self.target {
            return false;
        }
        self.target = layer;
        self.pending.clear();
        self.pending_ts = None;
        self.current != Some(layer)
    }

    /// Stops sending (the player asked for no video); the next keyframe of the target after
    /// that resumes, numbered on from the last packet sent.
    pub fn pause(&mut self) {
        self.current = None;
        self.pending.clear();
        self.pending_ts = None;
    }

    /// The sequence number the next packet sent will carry (None before the first).
    pub fn next_seq(&self) -> Option<u16> {
        self.last_out.map(|(seq, ..)| seq.wrapping_add(1))
    }

    /// Whether a switch waits for a keyframe of the target layer.
    pub fn switching(&self) -> bool {
        self.current != Some(self.target)
    }

    /// A packet of `layer` arrived from the publisher.
    pub fn push(&mut self, layer: usize, packet: rtp::Packet, now: Instant) -> Forwarded {
        let mut out = Forwarded::default();
        if Some(layer) == self.current && layer == self.target {
            out.packets.push(self.rewrite(packet, now));
            return out;
        }
        if layer != self.target {
            // The old layer goes on until the new one's keyframe; other layers are not ours.
            if Some(layer) == self.current {
                out.packets.push(self.rewrite(packet, now));
            }
            return out;
        }
        // The target layer, not yet switched to: hold its access unit until a keyframe starts.
        let ts = packet.header.timestamp;
        if self.pending_ts != Some(ts) {
            self.pending.clear();
            self.pending_ts = Some(ts);
        }
        let key = starts_keyframe(&packet.payload);
        if self.pending.len() < MAX_PENDING {
            self.pending.push(packet);
        }
        if !key {
            return out;
        }
        // Switch: the held packets follow the last one sent without a gap, a moment later.
        let first = &self.pending[0].header;
        let (seq, ts) = match self.last_out {
            Some((seq, last_ts, at)) => {
                let elapsed = now.saturating_duration_since(at).as_micros() as u64;
                let ticks = ((elapsed * 90 / 1000) as u32).max(1);
                (seq.wrapping_add(1), last_ts.wrapping_add(ticks))
            }
            None => (first.sequence_number, first.timestamp),
        };
        self.seq_offset = seq.wrapping_sub(first.sequence_number);
        self.ts_offset = ts.wrapping_sub(first.timestamp);
        self.current = Some(layer);
        self.pending_ts = None;
        for p in std::mem::take(&mut self.pending) {
            out.packets.push(self.rewrite(p, now));
        }
        out.switched_to = Some(layer);
        out
    }

    fn rewrite(&mut self, mut packet: rtp::Packet, now: Instant) -> rtp::Packet {
        packet.header.sequence_number = packet.header.sequence_number.wrapping_add(self.seq_offset);
        packet.header.timestamp = packet.header.timestamp.wrapping_add(self.ts_offset);
        let newer = self
            .last_out
            .is_none_or(|(seq, ..)| packet.header.sequence_number.wrapping_sub(seq) < 0x8000);
        if newer {
            self.last_out = Some((packet.header.sequence_number, packet.header.timestamp, now));
        }
        packet
    }
}

/// A layer fits a link when its bitrate times this is within the estimate.
const FIT_HEADROOM: f64 = 1.15;
/// How long the link must lose nothing before a probe for the next layer up.
pub const UP_HOLD: Duration = Duration::from_millis(1500);
/// Just after a probe stepped up, the hold before probing for the next layer: the link has
/// just carried the new layer's rate without loss, and a viewer whose cap was lifted should
/// not wait out a full [`UP_HOLD`] per layer.
pub const UP_HOLD_AFTER_UP: Duration = Duration::from_millis(500);
/// Within [`REGROW_WITHIN`] of a step down, a standing queue at least [`FULL_QUEUE_MS`] that
/// grew this much (ms) from the least since the step is the new layer's own: the link is
/// full again.
pub const REGROW_MS: f64 = 80.0;
/// How long after a step down a queue that builds again counts as the new layer's (a layer
/// just over the link builds its queue slowly: 44 to 131 ms over 2.5 s on a 400 kbit/s link).
pub const REGROW_WITHIN: Duration = Duration::from_secs(5);
/// The queue after a step down is watched from this long after it: what stands before is the
/// old layer's, still draining (or still reported: feedback comes a round late).
pub const REGROW_FROM: Duration = Duration::from_millis(400);

/// After a failed trial of a layer (left within [`TRIAL`] of stepping up to it), the wait
/// before trying it again (doubling each time it fails again, up to [`MAX_RETRY_AFTER`]): the
/// estimate is not a measurement of capacity above what is being sent (GCC climbs while
/// nothing congests), so an up-step is a trial, and a failed trial must not repeat every few
/// seconds. A layer held longer than [`TRIAL`] and then left (the link changed) waits only
/// for [`UP_HOLD`] of fitting again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest wait before trying a layer again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(240);
/// After a failed probe (cheap: the picture never changed), the wait before the next one,
/// doubling up to [`MAX_REPROBE_AFTER`].
pub const REPROBE_AFTER: Duration = Duration::from_secs(4);
/// The longest wait between probes: a link capped for minutes is tried every half minute
/// (a probe it cannot carry costs a hitch at most), so the picture comes back within that
/// once the cap is lifted (with [`MAX_RETRY_AFTER`], four minutes).
pub const MAX_REPROBE_AFTER: Duration = Duration::from_secs(32);
/// How long a probe runs: the link carries the better layer's rate in duplicates of the
/// packets it gets (ramped up over the first 0.8 s, `pacer::PROBE_RAMP`), and the losses show
/// whether it fits; what is judged at the end was sent up to two or three feedback rounds
/// before (losses are held for `late_acks::GRACE`).
pub const PROBE_TIME: Duration = Duration::from_millis(1500);
/// A layer left this soon after stepping up to it was a failed trial (and backs off); one
/// held longer was left because the link changed, and may come back as soon as it fits.
pub const TRIAL: Duration = Duration::from_secs(15);
/// After a step down, the time the switch takes to show in the link's figures (the new
/// layer starts at its next keyframe; until then the old one's losses still come in).
pub const SETTLE: Duration = Duration::from_millis(2500);
/// A link losing this share of what it is sent is full: what arrives is its capacity.
pub const CONGESTED_LOSS: f64 = 0.10;
/// A probe that makes the path queue this much (ms) has found the link's capacity (at 60 ms
/// the relay heard of it when a 200 ms queue was already overflowing: the 600 kbit/s
/// viewer's picture froze for a second one probe in ten).
pub const PROBE_QUEUE_MS: f64 = 40.0;
/// A standing queue this long (ms) means the link is full, before it loses a tenth: what
/// arrives is its capacity. Jitter on a path moves single packets, not every packet of a
/// batch, so it does not stand; a link this far behind is.
pub const FULL_QUEUE_MS: f64 = 100.0;
/// With a standing queue, a link delivering less than this share of the video sent is full.
const STANDING_SHORTFALL: f64 = 0.8;
/// A link delivering less than this share of the video sent while every packet queues at
/// least [`SHORT_QUEUE_MS`] and some are lost is full before its queue stands for
/// [`FULL_QUEUE_MS`]: a 600 kbit/s link sent 720p (1.07 Mbit/s) delivered 519 kbit/s, lost
/// 7 % and had an 88 ms standing queue half a second after the start.
const HALF_DELIVERED: f64 = 0.6;
/// See [`HALF_DELIVERED`] (ms).
const SHORT_QUEUE_MS: f64 = 50.0;
/// Packets the transport-wide feedback must cover for its loss figure to stand alone.
pub const FED_BACK_PACKETS: u64 = 20;
/// Up-steps only while the link loses less than this.
pub const CLEAN_LOSS: f64 = 0.02;
/// How much of each sample's loss (and queue) the chooser's outside-probe averages take in.
const BASE_LOSS_GAIN: f64 = 0.25;
/// A round trip this much above the lowest seen means a queue is building.
pub const QUEUE_RTT_MS: f64 = 100.0;
/// What arrives over a full link, shared out: a layer must fit in this share of it.
const DELIVERED_SHARE: f64 = 0.9;
/// How long a full link's measured capacity keeps probes for layers above it away (a link
/// that gets better is found once it has passed).
pub const CAPACITY_MEMORY: Duration = Duration::from_secs(4);

impl LinkSample {
    /// Whether the link shows it is full: a tenth lost, or a standing queue while what the
    /// feedback says arrived falls well short of the video sent (a queue another flow
    /// fills, or a keyframe's draining on a link that carries the layer, arrives as sent),
    /// or a shorter standing queue with losses while not even [`HALF_DELIVERED`] arrives.
    pub fn full(&self) -> bool {
        let short =
            |share: f64| self.delivered_bps > 0.0 && self.delivered_bps < self.sent_bps * share;
        self.congested_loss()
            || (self.standing_queue_ms >= FULL_QUEUE_MS && short(STANDING_SHORTFALL))
            || (self.standing_queue_ms >= SHORT_QUEUE_MS
                && self.wire_loss >= CLEAN_LOSS
                && short(HALF_DELIVERED))
    }

    /// Whether losses say anything of congestion here: with no transport-wide feedback in the
    /// sample there is no queue figure, and they do; with some, only while the path holds a
    /// standing queue of [`CONGESTIVE_QUEUE_MS`] (see [`Self::congested_loss`]).
    pub fn loss_counts(&self) -> bool {
        self.wire_packets == 0 || self.standing_queue_ms >= CONGESTIVE_QUEUE_MS
    }

    /// The packets the loss figure ([`Self::worst_loss`]) is a share of (0: not known).
    pub fn loss_sample(&self) -> u64 {
        if self.fed_back() {
            self.wire_packets
        } else {
            self.loss_packets
        }
    }

    /// Whether the loss figure is surely ([`surely_above`]) a congested share, on a path that
    /// queues: a drop-tail bottleneck fills before it drops, and losses with no standing
    /// queue of [`CONGESTIVE_QUEUE_MS`] are the path's own (a lossy radio link), which a
    /// smaller layer would not cure (40 % random loss took an Auto player to 180p, paced and
    /// without FEC, at 3 fps with 4 s freezes, where 720p with FEC played 12–16 fps). Without
    /// transport-wide feedback there is no queue figure, and the NACKs' loss counts alone.
    pub fn congested_loss(&self) -> bool {
        (surely_above(self.wire_loss, self.wire_packets, CONGESTED_LOSS)
            || (!self.fed_back() && surely_above(self.loss, self.loss_packets, CONGESTED_LOSS)))
            && self.loss_counts()
    }

    /// The share lost: what the player's transport-wide feedback reported missing where it
    /// covered the sample (it comes a round trip after sending, and counts each packet once,
    /// audio included; a NACK may ask for a packet that was only late), else the larger of
    /// that and what the player NACKed.
    pub fn worst_loss(&self) -> f64 {
        if self.fed_back() {
            self.wire_loss
        } else {
            self.loss.max(self.wire_loss)
        }
    }

    /// Whether the transport-wide feedback covered enough packets to judge the loss by.
    pub fn fed_back(&self) -> bool {
        self.wire_packets >= FED_BACK_PACKETS
    }

    /// What the link carries when it is full: what the feedback said arrived, else what was
    /// sent less what was lost.
    pub fn full_capacity(&self) -> f64 {
        if self.delivered_bps > 0.0 {
            self.delivered_bps
        } else {
            self.sent_bps * (1.0 - self.loss)
        }
    }
}

/// What the relay knows of a player's link at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkSample {
    /// The congestion controller's estimate, bits/s (0: none yet).
    pub estimate_bps: f64,
    /// Video sent to the player, bits/s (resends included).
    pub sent_bps: f64,
    /// Share of the video the player reported lost (its latest receiver report).
    pub loss: f64,
    /// Round trip from the receiver reports, ms (0: not measured).
    pub rtt_ms: f64,
    /// What the player's transport-wide feedback acknowledged, bits/s (audio, resends and
    /// probe copies included; 0: no feedback).
    pub delivered_bps: f64,
    /// Share of the packets that feedback covered reported missing (on the wire, before
    /// any repair; 0 without feedback).
    pub wire_loss: f64,
    /// The queue the latest feedback showed on the path, ms (one-way delay over the fastest
    /// lately; 0 without feedback).
    pub queue_ms: f64,
    /// The queue every packet met over the last few feedback batches, ms (see
    /// `link_meter::LinkMeter::standing_us`; 0 without feedback).
    pub standing_queue_ms: f64,
    /// The packets `loss` is a share of (0: not known, the share is taken as it is).
    pub loss_packets: u64,
    /// The packets `wire_loss` is a share of (0: not known).
    pub wire_packets: u64,
}

/// Whether `share` of `packets` lost is surely above `threshold`, not a few unlucky packets of
/// a link that loses less: more than two standard deviations (Poisson) above what a link
/// losing `threshold` would lose (10 of 50, 5 of 20). Half a second of 720p is about 50 video
/// packets; a link losing 5 % at random loses 2–3 of them and sometimes 5 or 6 (over a tenth),
/// which stepped a player down to 180p.
pub fn surely_above(share: f64, packets: u64, threshold: f64) -> bool {
    if packets == 0 {
        return share >= threshold;
    }
    let n = packets as f64;
    let expected = threshold * n;
    share * n >= expected + 2.0 * expected.sqrt()
}

/// The relay's choice of layer for a player in Auto. Down at once when the link shows
/// congestion — it loses a tenth of what it is sent behind a standing queue (then what
/// arrives is its capacity; losses with no queue are the path's own), or
/// the estimate fell below the layer while a queue builds (the round trip grew) — to the best
/// layer that fits. Up one layer at a time, only after a clean link for [`UP_HOLD`] and a
/// probe ([`Self::decide`]: duplicates fill the link up to the next layer's rate for
/// [`PROBE_TIME`], and it may lose no more than the link does outside probes, nor queue 40 ms
/// more), and not back to a layer whose trial just failed
/// until a backoff passed (hysteresis: a link that wavers does not make the picture flap).
/// GCC's estimate alone moves nothing: after a congested spell its loss half sits far below
/// the link for many seconds, and on a link it is not filling it climbs far above it.
#[derive(Debug, Default)]
pub struct LayerChooser {
    better_since: Option<(usize, Instant)>,
    /// The layer last left for lack of bandwidth, when it may be tried again, and the wait
    /// that gave.
    left: Option<(usize, Instant, Duration)>,
    /// The layer last stepped up to, and when.
    entered: Option<(usize, Instant)>,
    /// The last step down.
    stepped_down: Option<Instant>,
    /// The least standing queue seen since the last step down (from [`REGROW_FROM`] after it),
    /// ms: a queue that grows back from it within [`REGROW_WITHIN`] says the new layer does
    /// not fit either.
    settle_low: Option<f64>,
    /// Whether the last settle was a step down's (a failed probe's is not watched).
    regrow_armed: bool,
    /// A probe just stepped up and the link has stayed clean since: the next probe waits
    /// only [`UP_HOLD_AFTER_UP`].
    just_up: bool,
    /// The lowest round trip seen, ms.
    min_rtt_ms: Option<f64>,
    /// A probe for a better layer running: the layer, and when it started.
    probe: Option<(usize, Instant)>,
    /// The loss the link shows outside probes (a moving average): a probe fails on losses
    /// only where they count ([`LinkSample::loss_counts`]) or surely rise above this. A lossy
    /// radio link losing a fifth of everything at random failed every probe on its own
    /// losses, and a player stepped down at the onset of its loss stayed down for good.
    base_loss: f64,
    /// The queue the link shows outside probes (a moving average of `queue_ms`, ms): a probe
    /// fails on a queue [`PROBE_QUEUE_MS`] above it. A path whose delay jitters by ±40 ms
    /// reads 30–45 ms of "queue" in every batch's mean and failed every probe on it.
    base_queue: f64,
    /// The player's transport-wide feedback has covered a sample: from then on a sample it
    /// has not covered with [`FED_BACK_PACKETS`] (it lags the sending by a round trip; a
    /// 50 ms check during a probe often comes before it) is judged on what it did cover, not
    /// on the NACKs' share, which (each packet asked for again and again) read 80–100 % on a
    /// link losing 40 % and failed every probe of a 180p player there.
    feedback_seen: bool,
    /// After a failed probe: not before this, and the wait that gave.
    reprobe: Option<(Instant, Duration)>,
    /// What the link delivered the last time it was full (bits/s), and when: no probe for a
    /// layer that does not fit in it for [`CAPACITY_MEMORY`].
    capacity: Option<(f64, Instant)>,
}

/// The chooser's answer for one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The layer to send.
    pub layer: usize,
    /// While set, the forwarder pads the link up to this layer's rate with duplicates of the
    /// packets it sends (a probe; the picture does not change).
    pub probe: Option<usize>,
}

impl LayerChooser {
    /// What the link delivered the last time it was full (bits/s), while that is fresh
    /// ([`CAPACITY_MEMORY`]).
    pub fn capacity_bps(&self, now: Instant) -> Option<f64> {
        self.capacity
            .filter(|(_, at)| now.saturating_duration_since(*at) < CAPACITY_MEMORY)
            .map(|(c, _)| c)
    }

    /// The layer to send now and whether to probe for a better one, given the one being sent,
    /// what is known of the link and each layer's bitrate as it arrives from the publisher
    /// (None: not sent).
    pub fn decide(
        &mut self,
        current: usize,
        link: LinkSample,
        rates_bps: [Option<f64>; MAX_LAYERS],
        now: Instant,
    ) -> Choice {
        self.feedback_seen |= link.wire_packets > 0;
        let link = if self.feedback_seen && !link.fed_back() {
            LinkSample {
                loss: 0.0,
                loss_packets: 0,
                ..link
            }
        } else {
            link
        };
        // A probe running: once it ran its time, up if the link
        // carried the better layer (it lost no more than the link's own and queued no more
        // than [`PROBE_QUEUE_MS`] above the link's own), else back off.
        if let Some((up, started)) = self.probe {
            // Losses fail it where they show congestion, or where they rose with its rate
            // (a policer drops without queueing).
            let loss = link.worst_loss();
            let failing = (link.loss_counts() && loss >= CLEAN_LOSS * 2.0)
                || surely_above(loss, link.loss_sample(), self.base_loss + CLEAN_LOSS * 2.0);
            // A queue building fails it too, before the link drops anything.
            let queue_built = link.queue_ms >= self.base_queue + PROBE_QUEUE_MS;
            let failed = failing || queue_built || rates_bps[up].is_none();
            if failed {
                self.probe = None;
                // A sample of a few packets says little of a rate: it is not kept.
                let measured = link.fed_back() || link.loss_packets >= FED_BACK_PACKETS;
                if (link.full() || queue_built) && measured && link.full_capacity() > 0.0 {
                    // The probe filled the link (lost or queued): what arrived is its capacity
                    // (at most; the sample began before the probe reached its rate), and the
                    // pace keeps within it while the queue drains.
                    self.capacity = Some((link.full_capacity(), now));
                }
                let wait = self
                    .reprobe
                    .map_or(REPROBE_AFTER, |(_, w)| (w * 2).min(MAX_REPROBE_AFTER));
                self.reprobe = Some((now + wait, wait));
                self.better_since = None;
                // The losses the probe caused are not the layer's: they pass before any
                // step down.
                self.stepped_down = Some(now);
                // The queue the probe built may go on growing for a round after it: that is
                // not the layer's.
                self.settle_low = None;
                self.regrow_armed = false;
                return Choice {
                    layer: current,
                    probe: None,
                };
            } else if now.saturating_duration_since(started) >= PROBE_TIME {
                self.probe = None;
                self.reprobe = None;
                self.better_since = None;
                self.entered = Some((up, now));
                self.just_up = true;
                return Choice {
                    layer: up,
                    probe: None,
                };
            } else {
                return Choice {
                    layer: current,
                    probe: Some(up),
                };
            }
        }
        // The averages take in only what the link shows while nothing congests it (a queue
        // left from before a step down is not the link's own).
        let settling = self.settling(now);
        if link.loss_sample() > 0
            && !link.full()
            && link.standing_queue_ms < CONGESTIVE_QUEUE_MS
            && !settling
        {
            self.base_loss += (link.worst_loss() - self.base_loss) * BASE_LOSS_GAIN;
            self.base_queue += (link.queue_ms - self.base_queue) * BASE_LOSS_GAIN;
        }
        let held = (self.better_since, self.entered);
        let layer = self.choose(current, link, rates_bps, now);
        if layer < current {
            // Up-steps go through a probe first, and not into a layer the link was just
            // measured too thin for.
            let too_thin = self.capacity.is_some_and(|(c, at)| {
                now.saturating_duration_since(at) < CAPACITY_MEMORY
                    && rates_bps[layer].is_some_and(|r| r > c * DELIVERED_SHARE)
            });
            if too_thin || self.reprobe.is_some_and(|(until, _)| now < until) {
                // The link has held clean: the probe starts once nothing stands in its way,
                // not a further hold after that.
                if held.0.is_some_and(|(l, _)| l == layer) {
                    self.better_since = held.0;
                }
                self.entered = held.1;
                return Choice {
                    layer: current,
                    probe: None,
                };
            }
            // The layer being sent keeps its record of when it was stepped up to (a probe
            // that fails does not make its own failure later look like a changed link).
            self.entered = held.1;
            self.just_up = false;
            self.probe = Some((layer, now));
            return Choice {
                layer: current,
                probe: Some(layer),
            };
        }
        if layer > current {
            self.reprobe = None;
        }
        Choice { layer, probe: None }
    }

    /// Whether a step down is still showing in the link's figures ([`SETTLE`]).
    fn settling(&self, now: Instant) -> bool {
        self.stepped_down
            .is_some_and(|t| now.saturating_duration_since(t) < SETTLE)
    }

    /// The layer to send now, given the one being sent, what is known of the link and each
    /// layer's bitrate as it arrives from the publisher (None: not sent); up-steps without a
    /// probe.
    pub fn choose(
        &mut self,
        current: usize,
        link: LinkSample,
        rates_bps: [Option<f64>; MAX_LAYERS],
        now: Instant,
    ) -> usize {
        if link.rtt_ms > 0.0 {
            self.min_rtt_ms = Some(self.min_rtt_ms.map_or(link.rtt_ms, |m| m.min(link.rtt_ms)));
        }
        let sent: Vec<usize> = (0..MAX_LAYERS)
            .filter(|l| rates_bps[*l].is_some())
            .collect();
        let Some(&smallest) = sent.last() else {
            return current;
        };
        let fits = |capacity: f64| {
            sent.iter()
                .copied()
                .find(|l| rates_bps[*l].is_some_and(|r| r <= capacity))
                .unwrap_or(smallest)
        };
        let Some(rate) = rates_bps[current] else {
            // Its layer is no longer sent: the best the estimate fits.
            self.better_since = None;
            return if link.estimate_bps > 0.0 {
                fits(link.estimate_bps / FIT_HEADROOM)
            } else {
                current
            };
        };
        let settling = self.settling(now);
        // The least queue since the old layer's packets had a round to drain (what is queued
        // at the step, and for a moment after it, is still theirs).
        let since_down = self.stepped_down.map(|t| now.saturating_duration_since(t));
        let low = match (self.settle_low, since_down) {
            (Some(l), _) => Some(l.min(link.standing_queue_ms)),
            (None, Some(d)) if d >= REGROW_FROM && self.regrow_armed => {
                Some(link.standing_queue_ms)
            }
            _ => None,
        };
        self.settle_low = low;
        // A queue that drains after a step down and then builds again, batch after batch, is
        // the new layer overrunning the link (on a 400 kbit/s link the 360p layer and its
        // sound arrived at nine tenths of what was sent, losing nothing, while the queue grew
        // from 50 to 220 ms over two seconds); it steps down again, settling or not.
        let regrowing = since_down.is_some_and(|d| d < REGROW_WITHIN)
            && link.delivered_bps > 0.0
            && low.is_some_and(|low| {
                link.standing_queue_ms >= FULL_QUEUE_MS && link.standing_queue_ms >= low + REGROW_MS
            });
        let queued = self
            .min_rtt_ms
            .is_some_and(|m| link.rtt_ms > m + QUEUE_RTT_MS);
        let capacity = if link.full() || regrowing {
            if link.full_capacity() > 0.0 {
                self.capacity = Some((link.full_capacity(), now));
            }
            Some(link.full_capacity() * DELIVERED_SHARE)
        } else if link.estimate_bps > 0.0 && link.estimate_bps < rate && queued {
            Some(link.estimate_bps)
        } else {
            None
        };
        if let Some(capacity) = capacity
            && (!settling || regrowing)
        {
            // A queue regrowing is the layer being sent overrunning the link, whatever the
            // rates say (what arrived counts the sound and the packets' overhead beside it:
            // 360p at 300 kbit/s "fit" the 341 kbit/s a 400 kbit/s link delivered while its
            // queue grew by 90 ms): at least one layer down.
            let below = sent.iter().copied().find(|l| *l > current);
            let best = match below {
                Some(below) if regrowing => fits(capacity).max(below),
                _ => fits(capacity),
            };
            if best > current {
                // Down at once. A layer just stepped up to was a trial that failed: it
                // waits before it is tried again (longer each time); one held for a while was
                // left because the link changed, and comes back once it fits again.
                self.better_since = None;
                let trial = self.entered.is_some_and(|(l, at)| {
                    l == current && now.saturating_duration_since(at) < TRIAL
                });
                let wait = match self.left {
                    _ if !trial => Duration::ZERO,
                    Some((l, _, w)) if l == current && w >= RETRY_AFTER => {
                        (w * 2).min(MAX_RETRY_AFTER)
                    }
                    _ => RETRY_AFTER,
                };
                self.left = Some((current, now + wait, wait));
                self.just_up = false;
                self.entered = None;
                self.stepped_down = Some(now);
                self.settle_low = None;
                self.regrow_armed = true;
                return best;
            }
        }
        // Up: one layer at a time, once it has fitted on a clean link for UP_HOLD, and not
        // into a layer still backing off.
        let up = sent.iter().copied().filter(|l| *l < current).max();
        // Losses on a path with no standing queue are its own, not the layer's (see
        // `LinkSample::congested_loss`): the probe tests whether they rise with the rate.
        let clean = (!link.loss_counts() || link.worst_loss() < CLEAN_LOSS)
            && link.standing_queue_ms < FULL_QUEUE_MS
            && !queued
            && !settling;
        // The estimate is no guide here: GCC climbs far above a link it is not filling, and
        // after a lossy spell it sits far below one for many seconds. A clean link is the
        // cue; the probe (see [`Self::decide`]) is the test.
        let Some(up) = up.filter(|_| clean) else {
            self.better_since = None;
            self.just_up = false;
            return current;
        };
        if self
            .left
            .is_some_and(|(l, until, _)| up <= l && now < until)
        {
            self.better_since = None;
            return current;
        }
        let hold = if self.just_up {
            UP_HOLD_AFTER_UP
        } else {
            UP_HOLD
        };
        match self.better_since {
            Some((layer, since)) if layer == up && now.saturating_duration_since(since) >= hold => {
                self.better_since = None;
                self.entered = Some((up, now));
                up
            }
            Some((layer, _)) if layer == up => current,
            _ => {
                self.better_since = Some((up, now));
                current
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32, payload: &[u8]) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.payload = bytes::Bytes::copy_from_slice(payload);
        p
    }

    const SEI: &[u8] = &[0x06, 5, 1, 0x80];
    const STAP_SPS_PPS: &[u8] = &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
    const IDR_START: &[u8] = &[0x7c, 0x85, 1, 2];
    const P_SLICE: &[u8] = &[0x41, 0x9a, 1];

    #[test]
    fn keyframe_starts_and_layers_are_recognised() {
        assert!(starts_keyframe(STAP_SPS_PPS));
        assert!(starts_keyframe(IDR_START));
        assert!(starts_keyframe(&[0x65, 0x88]));
        assert!(starts_keyframe(&[0x67, 0x42]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 1])); // an IDR fragment that is not the start
        assert!(!starts_keyframe(P_SLICE));
        assert!(!starts_keyframe(SEI));
        assert!(!starts_keyframe(&[]));
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x06])); // a STAP-A cut short
        assert_eq!(layer_of(Some("f"), "x"), 0);
        assert_eq!(layer_of(Some("h"), "x"), 1);
        assert_eq!(layer_of(Some("q"), "x"), 2);
        assert_eq!(layer_of(None, "cam-video"), 0);
        assert_eq!(layer_of(None, "cam-video-1"), 1);
        assert_eq!(layer_of(Some(""), "cam-video-2"), 2);
    }

    #[test]
    fn the_sps_is_read_from_a_single_nal_or_a_stap_a() {
        assert_eq!(rtp_sps(&[0x67, 0x42, 0, 2]), Some(&[0x67, 0x42, 0, 2][..]));
        assert_eq!(rtp_sps(STAP_SPS_PPS), Some(&[0x67, 0x42][..]));
        assert_eq!(rtp_sps(IDR_START), None);
        assert_eq!(rtp_sps(&[]), None);
        // A STAP-A whose size runs past its end.
        assert_eq!(rtp_sps(&[0x78, 0, 9, 0x67, 1]), None);
    }

    #[test]
    fn a_switch_waits_for_the_targets_keyframe_and_leaves_no_gap() {
        let t0 = Instant::now();
        let mut f = LayerForwarder::new(0);
        // Nothing before layer 0's first keyframe.
        assert!(f.push(0, packet(100, 9000, P_SLICE), t0).packets.is_empty());
        assert_eq!(f.next_seq(), None);
        // A keyframe: SEI, SPS/PPS, IDR at one timestamp; the SEI is held, then all go.
        assert!(f.push(0, packet(101, 12000, SEI), t0).packets.is_empty());
        let out = f.push(0, packet(102, 12000, STAP_SPS_PPS), t0);
        assert_eq!(out.switched_to, Some(0));
        let seqs: Vec<u16> = out
            .packets
            .iter()
            .map(|p| p.header.sequence_number)
            .collect();
        assert_eq!(seqs, [101, 102]);
        assert_eq!(f.push(0, packet(103, 15000, P_SLICE), t0).packets.len(), 1);
        // Ask for layer 2: layer 0 goes on, layer 2's P-frames are dropped until its keyframe.
        assert_eq!(f.next_seq(), Some(104));
        assert!(f.set_target(2));
        assert!(f.switching());
        assert_eq!(f.push(0, packet(104, 18000, P_SLICE), t0).packets.len(), 1);
        assert!(f.push(2, packet(7000, 500, P_SLICE), t0).packets.is_empty());
        assert!(f.push(2, packet(7001, 3500, SEI), t0).packets.is_empty());
        let later = t0 + Duration::from_millis(20);
        let out = f.push(2, packet(7002, 3500, IDR_START), later);
        assert_eq!(out.switched_to, Some(2));
        let got: Vec<(u16, u32)> = out
            .packets
            .iter()
            .map(|p| (p.header.sequence_number, p.header.timestamp))
            .collect();
        // Continuing 104 at 18000 + 20 ms (1800 ticks).
        assert_eq!(got, [(105, 19800), (106, 19800)]);
        // Layer 0 is no longer sent; layer 2 goes on, rewritten.
        assert!(
            f.push(0, packet(105, 21000, P_SLICE), later)
                .packets
                .is_empty()
        );
        let out = f.push(2, packet(7003, 6500, P_SLICE), later);
        assert_eq!(out.packets[0].header.sequence_number, 107);
        assert_eq!(out.packets[0].header.timestamp, 22800);
        // Asking for the layer being sent changes nothing.
        assert!(!f.set_target(2));
    }

    /// A link with an estimate and nothing lost.
    fn est(bps: f64) -> LinkSample {
        LinkSample {
            estimate_bps: bps,
            sent_bps: 0.0,
            loss: 0.0,
            rtt_ms: 20.0,
            ..LinkSample::default()
        }
    }

    /// A full link: `sent` sent, `loss` of it lost, the estimate collapsed.
    fn full(sent: f64, loss: f64) -> LinkSample {
        LinkSample {
            estimate_bps: 100_000.0,
            sent_bps: sent,
            loss,
            rtt_ms: 20.0,
            ..LinkSample::default()
        }
    }

    #[test]
    fn the_chooser_steps_down_on_congestion_and_up_one_layer_after_the_link_held() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let mut c = LayerChooser::default();
        assert_eq!(c.choose(0, est(0.0), rates, t0), 0, "nothing known yet");
        assert_eq!(c.choose(0, est(2_000_000.0), rates, t0), 0);
        // A low estimate alone (GCC after a lossy spell) is no reason to go down.
        assert_eq!(c.choose(0, est(300_000.0), rates, t0), 0);
        // 60 % of 1.5 Mbps lost: 600 kbit/s arrive, and 360p fits in them.
        assert_eq!(
            c.choose(0, full(1_500_000.0, 0.6), rates, t0),
            1,
            "down at once"
        );
        // Until the switch shows, the old layer's losses do not count.
        assert_eq!(c.choose(1, full(1_500_000.0, 0.7), rates, t0 + ms(500)), 1);
        // A queue: the estimate under the layer and the round trip up.
        let queued = LinkSample {
            estimate_bps: 300_000.0,
            sent_bps: 500_000.0,
            loss: 0.0,
            rtt_ms: 200.0,
            ..LinkSample::default()
        };
        assert_eq!(c.choose(1, queued, rates, t0 + s(3)), 2);
        assert_eq!(
            c.choose(2, full(150_000.0, 0.5), rates, t0 + s(4)),
            2,
            "nothing fits: the smallest"
        );
        // Layers left because the link changed come back after UP_HOLD of a clean link, one at
        // a time (the estimate is no guide: see `decide` for the probe); a loss restarts the
        // wait.
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(6)), 2);
        let lossy = LinkSample {
            loss: 0.05,
            ..est(3_000_000.0)
        };
        assert_eq!(c.choose(2, lossy, rates, t0 + s(7)), 2);
        assert_eq!(c.choose(2, est(100_000.0), rates, t0 + s(8)), 2);
        assert_eq!(c.choose(2, lossy, rates, t0 + s(9)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(10)), 2);
        assert_eq!(
            c.choose(2, est(3_000_000.0), rates, t0 + s(12)),
            1,
            "one layer up"
        );
        // Leaving it at once was a failed trial: not retried for RETRY_AFTER, however good
        // the estimate.
        assert_eq!(c.choose(1, full(500_000.0, 0.5), rates, t0 + s(13)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(20)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(42)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(43)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(45)), 1);
        // Failing again doubles the wait (60 s).
        assert_eq!(c.choose(1, full(500_000.0, 0.5), rates, t0 + s(46)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(100)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(106)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(108)), 1);
        // Held past TRIAL, it is left because the link changed: back as soon as it fits.
        assert_eq!(c.choose(1, est(700_000.0), rates, t0 + s(130)), 1);
        assert_eq!(c.choose(1, full(500_000.0, 0.5), rates, t0 + s(131)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(134)), 2);
        assert_eq!(c.choose(2, est(3_000_000.0), rates, t0 + s(136)), 1);
        // A layer the publisher does not send is never chosen.
        let two = [Some(1_500_000.0), None, Some(150_000.0)];
        let mut c = LayerChooser::default();
        assert_eq!(c.choose(0, full(1_500_000.0, 0.6), two, t0), 2);
        assert_eq!(
            c.choose(1, est(3_000_000.0), two, t0),
            0,
            "its layer vanished"
        );
    }

    #[test]
    fn an_up_step_waits_for_a_clean_probe_and_a_failed_probe_backs_off() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let mut c = LayerChooser::default();
        assert_eq!(c.decide(2, est(0.0), rates, t0).probe, None);
        // Clean for UP_HOLD: a probe for layer 1, the picture unchanged.
        let p = c.decide(2, est(0.0), rates, t0 + UP_HOLD);
        assert_eq!(
            p,
            Choice {
                layer: 2,
                probe: Some(1)
            }
        );
        // A loss during it: the probe stops, and the next waits REPROBE_AFTER.
        let lossy = LinkSample {
            loss: 0.2,
            ..est(0.0)
        };
        let at = t0 + UP_HOLD + ms(500);
        assert_eq!(
            c.decide(2, lossy, rates, at),
            Choice {
                layer: 2,
                probe: None
            }
        );
        let later = at + REPROBE_AFTER - ms(100);
        assert_eq!(c.decide(2, est(0.0), rates, later).probe, None);
        // A probe that builds a queue fails too.
        let mut q = LayerChooser::default();
        assert_eq!(q.decide(2, est(0.0), rates, t0).probe, None);
        assert_eq!(q.decide(2, est(0.0), rates, t0 + UP_HOLD).probe, Some(1));
        let queued = LinkSample {
            queue_ms: PROBE_QUEUE_MS,
            delivered_bps: 450_000.0,
            wire_packets: FED_BACK_PACKETS,
            ..est(0.0)
        };
        // The same from a sample of five packets fails the probe but is no measure.
        let mut short = LayerChooser::default();
        short.decide(2, est(0.0), rates, t0);
        assert_eq!(
            short.decide(2, est(0.0), rates, t0 + UP_HOLD).probe,
            Some(1)
        );
        let few = LinkSample {
            wire_packets: 5,
            ..queued
        };
        assert_eq!(
            short.decide(2, few, rates, t0 + UP_HOLD + ms(300)).probe,
            None
        );
        assert_eq!(short.capacity_bps(t0 + UP_HOLD + ms(300)), None);
        assert_eq!(
            q.decide(2, queued, rates, t0 + UP_HOLD + ms(300)).probe,
            None
        );
        // What the queued link delivered is its capacity (at most): the pace keeps within it.
        assert_eq!(q.capacity_bps(t0 + UP_HOLD + ms(300)), Some(450_000.0));
        // Then clean again for UP_HOLD, a probe that holds for PROBE_TIME: up.
        let start = at + REPROBE_AFTER + UP_HOLD;
        assert_eq!(c.decide(2, est(0.0), rates, at + REPROBE_AFTER).probe, None);
        assert_eq!(c.decide(2, est(0.0), rates, start).probe, Some(1));
        assert_eq!(c.decide(2, est(0.0), rates, start + ms(500)).probe, Some(1));
        assert_eq!(
            c.decide(2, est(0.0), rates, start + PROBE_TIME),
            Choice {
                layer: 1,
                probe: None
            }
        );
        // Just stepped up on a clean probe: the next probe after the shorter hold.
        let up = start + PROBE_TIME + ms(100);
        assert_eq!(c.decide(1, est(0.0), rates, up).probe, None);
        assert_eq!(
            c.decide(1, est(0.0), rates, up + UP_HOLD_AFTER_UP).probe,
            Some(0)
        );
    }

    #[test]
    fn probes_on_a_link_capped_for_minutes_come_every_half_minute() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let lossy = LinkSample {
            loss: 0.2,
            ..est(0.0)
        };
        let mut c = LayerChooser::default();
        let mut t = t0;
        let mut probes = Vec::new();
        // Ten minutes of a link that loses whatever the probe adds.
        while t < t0 + Duration::from_secs(600) {
            if c.decide(2, est(0.0), rates, t).probe == Some(1) {
                probes.push(t);
                t += ms(250);
                assert_eq!(c.decide(2, lossy, rates, t).probe, None);
            }
            t += ms(250);
        }
        let gaps: Vec<u64> = probes.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        // 4, 8, 16, then 32 s apart (plus the hold and the probe's own quarter second).
        assert!(gaps.len() >= 15, "{gaps:?}");
        assert!(gaps[..3].iter().all(|g| *g < 32), "{gaps:?}");
        assert!(gaps[4..].iter().all(|g| (32..=34).contains(g)), "{gaps:?}");
    }

    #[test]
    fn a_probe_held_back_by_a_backoff_starts_when_it_ends() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let lossy = LinkSample {
            loss: 0.2,
            ..est(0.0)
        };
        let mut c = LayerChooser::default();
        let mut t = t0;
        let mut failed = Vec::new();
        // Every 250 ms a clean sample, but each probe meets a loss and fails: twice.
        while failed.len() < 2 {
            if c.decide(2, est(0.0), rates, t).probe == Some(1) {
                t += ms(250);
                assert_eq!(c.decide(2, lossy, rates, t).probe, None);
                failed.push(t);
            }
            t += ms(250);
            assert!(t < t0 + Duration::from_secs(30));
        }
        // The second failure doubled the wait; the link stays clean, its hold runs out during
        // the wait, and the probe starts the moment the wait ends.
        let until = failed[1] + REPROBE_AFTER * 2;
        while t < until {
            assert_eq!(c.decide(2, est(0.0), rates, t).probe, None, "{t:?}");
            t += ms(250);
        }
        assert_eq!(t, until);
        assert_eq!(c.decide(2, est(0.0), rates, t).probe, Some(1));
    }

    #[test]
    fn what_a_full_link_delivered_picks_the_layer_and_keeps_probes_above_it_away() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let mut c = LayerChooser::default();
        // The full layer sent at 1.5 Mbps; the feedback says 250 kbit/s arrived and a third
        // went missing, before any NACK told of it: straight to the layer that fits.
        let jammed = LinkSample {
            estimate_bps: 5_000_000.0,
            sent_bps: 1_500_000.0,
            loss: 0.0,
            rtt_ms: 0.0,
            delivered_bps: 250_000.0,
            wire_loss: 0.33,
            queue_ms: 0.0,
            standing_queue_ms: 0.0,
            ..Default::default()
        };
        assert_eq!(c.decide(0, jammed, rates, t0).layer, 2);
        // Clean on the small layer: no probe for the middle one while the measurement is
        // fresh (it would fill the link again), one once it is old.
        let mut t = t0 + SETTLE;
        while t < t0 + CAPACITY_MEMORY - ms(100) {
            assert_eq!(c.decide(2, est(0.0), rates, t).probe, None, "{t:?}");
            t += ms(250);
        }
        // The link held clean all along: the probe starts as soon as the measurement is old.
        assert_eq!(
            c.decide(2, est(0.0), rates, t0 + CAPACITY_MEMORY).probe,
            Some(1)
        );
    }

    #[test]
    fn a_queue_that_builds_again_after_a_step_down_steps_down_again() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rates = [Some(1_500_000.0), Some(300_000.0), Some(100_000.0)];
        // A 400 kbit/s link the full layer overran: 430 kbit/s arrived in a short window, and
        // the middle layer seems to fit beside the sound.
        let full = LinkSample {
            estimate_bps: 5_000_000.0,
            sent_bps: 1_000_000.0,
            delivered_bps: 430_000.0,
            wire_loss: 0.3,
            queue_ms: 230.0,
            standing_queue_ms: 150.0,
            ..LinkSample::default()
        };
        let on = |standing: f64| LinkSample {
            estimate_bps: 5_000_000.0,
            sent_bps: 330_000.0,
            delivered_bps: 300_000.0,
            queue_ms: standing + 20.0,
            standing_queue_ms: standing,
            ..LinkSample::default()
        };
        let mut c = LayerChooser::default();
        assert_eq!(c.decide(0, full, rates, t0).layer, 1);
        // On it the queue drains to 50 ms, then builds again, nothing lost and nine tenths
        // of what is sent arriving: down again while the first step still settles.
        assert_eq!(c.decide(1, on(50.0), rates, t0 + ms(500)).layer, 1);
        assert_eq!(
            c.decide(1, on(100.0), rates, t0 + ms(1_000)).layer,
            1,
            "grown 50 ms"
        );
        assert_eq!(c.decide(1, on(145.0), rates, t0 + ms(1_300)).layer, 2);
        // Slower, after the settling time: down again too, while it is the step's.
        let mut slow = LayerChooser::default();
        assert_eq!(slow.decide(0, full, rates, t0).layer, 1);
        assert_eq!(slow.decide(1, on(44.0), rates, t0 + ms(500)).layer, 1);
        assert_eq!(slow.decide(1, on(98.0), rates, t0 + SETTLE).layer, 1);
        assert_eq!(
            slow.decide(1, on(131.0), rates, t0 + SETTLE + ms(500))
                .layer,
            2
        );
        // What arrives (the sound and the packets' overhead besides) says the layer fits:
        // the regrowing queue says it does not.
        let roomy = |standing: f64| LinkSample {
            delivered_bps: 341_000.0,
            ..on(standing)
        };
        let mut r = LayerChooser::default();
        assert_eq!(r.decide(0, full, rates, t0).layer, 1);
        assert_eq!(r.decide(1, roomy(123.0), rates, t0 + ms(1_000)).layer, 1);
        assert_eq!(r.decide(1, roomy(159.0), rates, t0 + ms(2_000)).layer, 1);
        assert_eq!(r.decide(1, roomy(210.0), rates, t0 + ms(3_000)).layer, 2);
        // A queue that only drains after the step: the layer stays.
        let mut d = LayerChooser::default();
        assert_eq!(d.decide(0, full, rates, t0).layer, 1);
        for (i, standing) in [140.0, 120.0, 90.0, 40.0].into_iter().enumerate() {
            let at = t0 + ms(500 * (i as u64 + 1));
            assert_eq!(d.decide(1, on(standing), rates, at).layer, 1, "{standing}");
        }
        // The queue a failed probe leaves grows on for a round after it: not the layer's,
        // even within REGROW_WITHIN of a step down.
        let mut p = LayerChooser::default();
        assert_eq!(p.decide(0, full, rates, t0).layer, 1);
        let mut t = t0 + ms(500);
        while p.decide(1, est(0.0), rates, t).probe != Some(0) {
            t += ms(250);
            assert!(t < t0 + ms(4_500), "no probe");
        }
        let ended = LinkSample {
            queue_ms: PROBE_QUEUE_MS,
            ..on(20.0)
        };
        assert_eq!(p.decide(1, ended, rates, t + ms(250)).probe, None);
        assert_eq!(p.decide(1, on(20.0), rates, t + ms(750)).layer, 1);
        assert_eq!(p.decide(1, on(150.0), rates, t + ms(1_250)).layer, 1);
    }

    #[test]
    fn a_standing_queue_is_a_full_link_before_it_loses_a_tenth() {
        let t0 = Instant::now();
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        // 600 kbit/s arrive of 1.5 Mbps sent, 5 % lost so far, every packet 200 ms queued.
        let queued = LinkSample {
            estimate_bps: 5_000_000.0,
            sent_bps: 1_500_000.0,
            delivered_bps: 600_000.0,
            wire_loss: 0.05,
            queue_ms: 220.0,
            standing_queue_ms: 200.0,
            ..LinkSample::default()
        };
        assert!(queued.full());
        assert_eq!(
            LayerChooser::default().decide(0, queued, rates, t0).layer,
            1
        );
        // A keyframe's burst queues its tail only: no standing queue, nothing moves.
        let burst = LinkSample {
            standing_queue_ms: 0.0,
            ..queued
        };
        assert!(!burst.full());
        assert_eq!(LayerChooser::default().decide(0, burst, rates, t0).layer, 0);
        // A standing queue on a link that delivers what it is sent (another flow fills the
        // queue, or a keyframe drains): not full.
        let carried = LinkSample {
            delivered_bps: 1_450_000.0,
            ..queued
        };
        assert!(!carried.full());
        assert_eq!(
            LayerChooser::default().decide(0, carried, rates, t0).layer,
            0
        );
        // Without feedback a queue says nothing of the capacity.
        let blind = LinkSample {
            delivered_bps: 0.0,
            ..queued
        };
        assert!(!blind.full());
        // A shorter standing queue (88 ms) with 7 % lost: full only while less than 60 % of
        // what was sent arrives (a 600 kbit/s link sent 720p, at the start of a run).
        let starting = LinkSample {
            sent_bps: 1_066_000.0,
            delivered_bps: 519_000.0,
            wire_loss: 0.07,
            loss: 0.07,
            queue_ms: 208.0,
            standing_queue_ms: 88.0,
            ..queued
        };
        assert!(starting.full());
        // That run's layer rates: 360p fits in what arrived.
        let run = [Some(1_066_000.0), Some(336_000.0), Some(107_000.0)];
        assert_eq!(
            LayerChooser::default().decide(0, starting, run, t0).layer,
            1
        );
        for not_full in [
            LinkSample {
                delivered_bps: 700_000.0,
                ..starting
            },
            LinkSample {
                wire_loss: 0.01,
                loss: 0.01,
                ..starting
            },
            LinkSample {
                standing_queue_ms: 40.0,
                ..starting
            },
        ] {
            assert!(!not_full.full(), "{not_full:?}");
        }
    }

    #[test]
    fn sequence_numbers_wrap_and_upstream_gaps_stay_gaps() {
        let t0 = Instant::now();
        let mut f = LayerForwarder::new(1);
        let out = f.push(1, packet(65535, 0, IDR_START), t0);
        assert_eq!(out.packets[0].header.sequence_number, 65535);
        // 0 was lost upstream: the player sees the same gap and asks for it.
        let out = f.push(1, packet(1, 3000, P_SLICE), t0);
        assert_eq!(out.packets[0].header.sequence_number, 1);
    }

    #[test]
    fn random_loss_and_jitter_without_a_queue_neither_step_down_nor_fail_probes() {
        let ms = |n: u64| Duration::from_millis(n);
        let t0 = Instant::now();
        let rates = [Some(900_000.0), Some(300_000.0), Some(100_000.0)];
        // A fifth of everything lost at random, no standing queue, a delay that jitters by
        // ±40 ms (each batch's mean reads 45 ms over the fastest): a lossy radio link.
        let lossy = |sent: f64| LinkSample {
            queue_ms: 45.0,
            estimate_bps: 2_000_000.0,
            sent_bps: sent,
            delivered_bps: sent * 0.8,
            wire_loss: 0.2,
            wire_packets: 60,
            loss: 0.2,
            loss_packets: 50,
            rtt_ms: 20.0,
            ..LinkSample::default()
        };
        let mut c = LayerChooser::default();
        for i in 0..40 {
            let choice = c.decide(0, lossy(900_000.0), rates, t0 + ms(250 * i));
            assert_eq!(choice.layer, 0, "stays on the full picture");
        }
        // Behind a standing queue the same losses are congestion: down.
        let queued = LinkSample {
            standing_queue_ms: 60.0,
            ..lossy(900_000.0)
        };
        assert_eq!(c.decide(0, queued, rates, t0 + ms(10_000)).layer, 1);
        // Stepped down at the onset (no feedback yet, the NACKs said half was lost), the
        // player comes back once the probe shows the link loses no more at the better rate.
        let mut d = LayerChooser::default();
        let onset = LinkSample {
            wire_packets: 0,
            delivered_bps: 0.0,
            wire_loss: 0.0,
            loss: 0.5,
            ..lossy(900_000.0)
        };
        assert_eq!(d.decide(0, onset, rates, t0).layer, 1);
        let mut layer = 1;
        let mut probed = false;
        for i in 1..120 {
            let choice = d.decide(layer, lossy(300_000.0), rates, t0 + ms(250 * i));
            probed |= choice.probe.is_some();
            layer = choice.layer;
            if layer == 0 {
                break;
            }
        }
        assert!(
            probed && layer == 0,
            "back on the full picture after a probe"
        );
        // A probe during which the losses rise with the rate (a policer) fails.
        let mut e = LayerChooser::default();
        e.decide(0, onset, rates, t0);
        let mut failed = false;
        for i in 1..120 {
            let at = t0 + ms(250 * i);
            let probing = e.probe.is_some();
            let sample = if probing {
                LinkSample {
                    wire_loss: 0.45,
                    ..lossy(900_000.0)
                }
            } else {
                lossy(300_000.0)
            };
            let choice = e.decide(1, sample, rates, at);
            assert_eq!(choice.layer, 1, "never up");
            if probing && choice.probe.is_none() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the probe ran and failed");
    }

    #[test]
    fn a_link_losing_a_few_packets_at_random_is_not_full() {
        // Half a second of 720p on a link losing 5 % at random: 6 of 50 video packets asked
        // for (12 %) in an unlucky half second.
        let unlucky = LinkSample {
            sent_bps: 1_000_000.0,
            loss: 0.12,
            loss_packets: 50,
            wire_loss: 0.08,
            wire_packets: 75,
            delivered_bps: 950_000.0,
            ..Default::default()
        };
        assert!(!unlucky.full(), "{unlucky:?}");
        // A link too thin for the layer: 30 of 75 lost behind the queue it filled.
        let thin = LinkSample {
            loss: 0.4,
            wire_loss: 0.4,
            standing_queue_ms: CONGESTIVE_QUEUE_MS,
            ..unlucky
        };
        assert!(thin.full(), "{thin:?}");
        // The same losses with no queue: a lossy path, not a full one (a smaller layer would
        // lose as much).
        let lossy = LinkSample {
            standing_queue_ms: CONGESTIVE_QUEUE_MS - 1.0,
            ..thin
        };
        assert!(!lossy.full(), "{lossy:?}");
        // Many NACKs where the feedback saw few missing: packets that were only late (a NACK
        // may ask for one; the feedback reports it arrived).
        let late = LinkSample {
            loss: 0.4,
            ..unlucky
        };
        assert!(!late.full(), "{late:?}");
        // Without feedback, the NACKs tell.
        let unfed = LinkSample {
            wire_loss: 0.0,
            wire_packets: 0,
            delivered_bps: 0.0,
            ..late
        };
        assert!(unfed.full(), "{unfed:?}");
        assert!(surely_above(0.3, 75, CONGESTED_LOSS));
        assert!(!surely_above(0.12, 50, CONGESTED_LOSS));
        // Without a sample size the share is taken as it is.
        assert!(surely_above(0.12, 0, CONGESTED_LOSS));
    }
}
