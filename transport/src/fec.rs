//! Forward error correction on a sending leg: Reed–Solomon repair packets (`rs_fec`, on the
//! stream's FlexFEC repair SSRC; the receiver's `RsFecReceiver` rebuilds what they cover) after
//! each frame, as many as the receiver's losses call for and none on a clean link. Any `k`
//! repair packets of a frame rebuild any `k` of its lost packets.
//!
//! The amount follows what the receiver still asks for: each second, the share of the packets
//! sent that its NACKs named. Above [`RAISE_ABOVE`] the repair share grows, below
//! [`LOWER_BELOW`] it shrinks slowly back to nothing. What FEC rebuilt before the receiver's
//! NACK timer ran is never asked for, so the share settles where the repairs leave little for
//! NACK; a link that stops losing stops costing anything within seconds. The owner may forbid
//! it ([`FecControl::allow`]): on a link known to be thin, the losses are the link's capacity
//! and repair packets would only add to them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use crate::nack_count::nacked_seqs;

/// How often the repair share is reconsidered.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A window whose packets were asked for more than this share raises the repair share. Low:
/// a frame FEC could not rebuild waits a round trip for its resend, and the player's playout
/// delay covers all but the latest 1 % of frames, so more than about one frame in 200 needing
/// a resend costs every frame a round trip of delay.
pub const RAISE_ABOVE: f64 = 0.005;
/// A window whose packets were asked for less than this share lowers it.
pub const LOWER_BELOW: f64 = 0.0015;
/// The most repair packets per media packet (three for every two). With an MDS code a frame
/// of four packets and six repairs survives the loss of any six of the ten: on a link losing
/// 20 % at random, all but one frame in a thousand.
pub const MAX_SHARE: f64 = 1.5;
/// The least repair share once losses showed (one repair packet for every ten).
pub const MIN_SHARE: f64 = 0.1;
/// How much of the share a clean window takes off.
const DECAY: f64 = 0.75;
/// Media packets one repair block covers at most (a frame is one block; a larger one is
/// split, each part with its own repair packets).
const MAX_BLOCK: usize = 48;
/// Windows with fewer packets sent than this say nothing (audio-only, a paused layer).
const MIN_WINDOW_PACKETS: u32 = 20;

/// What the owner of the leg tells the sender and reads back (shared; atomics).
#[derive(Debug)]
pub struct FecControl {
    allowed: AtomicBool,
    /// The most repair share the owner allows, in thousandths (`fec_guard`).
    ceiling: AtomicU32,
    /// The repair share now, in thousandths (the most of any stream the sender protects).
    share: AtomicU32,
    /// Repair bytes per media byte over the last window, in thousandths (the most of any
    /// stream): what the repair packets cost beside the media.
    overhead: AtomicU32,
    /// Repair packets sent.
    pub repair_packets: AtomicU64,
}

impl Default for FecControl {
    fn default() -> Self {
        FecControl {
            allowed: AtomicBool::new(true),
            ceiling: AtomicU32::new((MAX_SHARE * 1000.0) as u32),
            share: AtomicU32::new(0),
            overhead: AtomicU32::new(0),
            repair_packets: AtomicU64::new(0),
        }
    }
}

impl FecControl {
    /// Whether repair packets may be sent (the owner forbids them on a link known to be
    /// thin: there a loss is the link's capacity, and repairs would add to the load).
    pub fn allow(&self, allowed: bool) {
        self.allowed.store(allowed, Ordering::Relaxed);
    }

    /// The most repair packets per media packet the sender may send (under [`MIN_SHARE`]:
    /// none, since a frame's block gets at least one whenever it gets any). The share over
    /// it is cut at once.
    pub fn set_ceiling(&self, ceiling: f64) {
        self.ceiling.store(
            (ceiling.clamp(0.0, MAX_SHARE) * 1000.0).round() as u32,
            Ordering::Relaxed,
        );
    }

    /// Whether repairs are in use: a share above nothing, or held off by the owner (a
    /// `fec_guard` watching the link for them).
    pub fn in_use(&self) -> bool {
        self.share.load(Ordering::Relaxed) > 0 || !self.allowed.load(Ordering::Relaxed)
    }

    /// The ceiling [`Self::set_ceiling`] set.
    pub fn ceiling(&self) -> f64 {
        f64::from(self.ceiling.load(Ordering::Relaxed)) / 1000.0
    }

    /// The repair share now (repair packets per media packet).
    pub fn share(&self) -> f64 {
        f64::from(self.share.load(Ordering::Relaxed)) / 1000.0
    }

    /// Repair bytes per media byte over the last window: a block of one packet still gets a
    /// whole repair packet, so at low rates this is well above [`Self::share`].
    pub fn overhead(&self) -> f64 {
        f64::from(self.overhead.load(Ordering::Relaxed)) / 1000.0
    }
}

/// What every connection of one owner (a relay) did with FEC, for its metrics.
#[derive(Debug, Default)]
pub struct FecTotals {
    /// Repair packets sent.
    pub repair_sent: AtomicU64,
    /// Packets the FEC decoders rebuilt.
    pub rebuilt: AtomicU64,
    /// Times a player's link held a queue its repairs built (`fec_guard`: repairs held off).
    pub guard_trips: AtomicU64,
}

/// The share of repair packets per media packet after a window in which `asked` of `sent`
/// packets were asked for again, from `share`.
pub fn next_share(share: f64, sent: u32, asked: usize) -> f64 {
    if sent < MIN_WINDOW_PACKETS {
        return share;
    }
    let residual = asked as f64 / f64::from(sent);
    if residual > RAISE_ABOVE {
        // Twice what still went missing, and at least a step up from where it was.
        (residual * 2.0)
            .max(share * 1.5)
            .clamp(MIN_SHARE, MAX_SHARE)
    } else if residual < LOWER_BELOW {
        let lower = share * DECAY;
        if lower < MIN_SHARE / 2.0 { 0.0 } else { lower }
    } else {
        share
    }
}

/// Repair packets for a block of `n` media packets at `share`.
pub fn repairs_for(n: usize, share: f64) -> u32 {
    if share <= 0.0 || n == 0 {
        return 0;
    }
    ((n as f64 * share).ceil() as u32).clamp(1, 2 * n as u32)
}

/// One protected media stream.
struct Protected {
    /// The repair SSRC and the next repair packet's sequence number.
    ssrc_fec: u32,
    seq: u16,
    /// The newest media sequence number sent.
    last_seq: Option<u16>,
    block: Vec<rtc::rtp::Packet>,
    /// The transport-wide number's extension id (taken off the protected copies).
    twcc: Option<u8>,
    share: f64,
    window_start: Option<Instant>,
    sent: u32,
    asked: HashSet<u16>,
    /// Media and repair bytes sent in the window.
    media_bytes: u64,
    repair_bytes: u64,
    /// Repair bytes per media byte in the last window.
    overhead: f64,
}

impl Protected {
    /// Repair packets for what the block holds (it is emptied).
    fn flush(&mut self, allowed: bool) -> Vec<rtc::rtp::Packet> {
        let k = if allowed {
            repairs_for(self.block.len(), self.share)
        } else {
            0
        };
        let out = if k > 0 {
            crate::rs_fec::repair_packets(&self.block, k as usize, self.ssrc_fec, &mut self.seq)
        } else {
            Vec::new()
        };
        self.block.clear();
        out
    }
}

/// The send-side FEC interceptor (at `Slot::FecEncoder`, above the NACK responder: its
/// resends do not pass here, and its history keeps the repair packets like any). Its repair
/// packets cover the media without the transport-wide number the sender adds below it; the
/// receiver takes that off before decoding (`fec_form`).
pub struct FecSender {
    control: Arc<FecControl>,
    totals: Option<Arc<FecTotals>>,
    streams: HashMap<u32, Protected>,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
}

/// A sender told by `control` (its repair packets also counted into `totals`).
pub fn fec_sender(control: Arc<FecControl>, totals: Option<Arc<FecTotals>>) -> FecSender {
    FecSender {
        control,
        totals,
        streams: HashMap::new(),
        inbound: VecDeque::new(),
        outbound: VecDeque::new(),
    }
}

impl FecSender {
    fn write_media(&mut self, msg: TaggedPacket) {
        let Packet::Rtp(p) = &msg.message.packet else {
            self.outbound.push_back(msg);
            return;
        };
        let allowed = self.control.allowed.load(Ordering::Relaxed);
        let ceiling = self.control.ceiling();
        let ceiling = if ceiling < MIN_SHARE { 0.0 } else { ceiling };
        let Some(s) = self.streams.get_mut(&p.header.ssrc) else {
            self.outbound.push_back(msg);
            return;
        };
        if !allowed {
            // Forbidden: when allowed again it starts from nothing, not from the share or
            // the losses the link had before.
            s.share = 0.0;
            s.sent = 0;
            s.asked.clear();
            s.window_start = None;
        }
        s.share = s.share.min(ceiling);
        let now = msg.now;
        let seq = p.header.sequence_number;
        let mut repairs = Vec::new();
        if let Some(last) = s.last_seq {
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 || ahead > u16::MAX / 2 {
                // A copy of a packet sent (a probe's padding) or one sent late (the relay's
                // upstream repair brought it after the frame): sent as it is, without closing
                // the block the frame after it is building.
                self.outbound.push_back(msg);
                return;
            }
            if ahead != 1 {
                // Not the next packet (a gap the forwarder kept from upstream): a block covers
                // a consecutive run, so the one so far is closed here.
                repairs.extend(s.flush(allowed));
            }
        }
        s.last_seq = Some(seq);
        s.sent += 1;
        s.media_bytes += (p.header.marshal_size() + p.payload.len()) as u64;
        // Packets are kept for a block only while repairs are made (no copy per packet on
        // a clean link).
        if allowed && s.share > 0.0 {
            // Protected as the receiver will hold it: without the transport-wide number
            // (added below, see `fec_form`), in the one written form.
            let mut copy = p.clone();
            crate::fec_form::canonical(&mut copy.header, s.twcc);
            s.block.push(copy);
        } else {
            s.block.clear();
        }
        if p.header.marker || s.block.len() >= MAX_BLOCK {
            repairs.extend(s.flush(allowed));
        }
        s.repair_bytes += repairs
            .iter()
            .map(|r| (r.header.marshal_size() + r.payload.len()) as u64)
            .sum::<u64>();
        // The window: what was asked for of what was sent decides the share.
        let start = *s.window_start.get_or_insert(now);
        if allowed && now.saturating_duration_since(start) >= WINDOW {
            let before = s.share;
            s.share = next_share(s.share, s.sent, s.asked.len()).min(ceiling);
            if s.share != before {
                tracing::debug!(
                    ssrc = p.header.ssrc,
                    sent = s.sent,
                    asked = s.asked.len(),
                    share = s.share,
                    repair_packets = self.control.repair_packets.load(Ordering::Relaxed),
                    "fec share"
                );
            }
            s.overhead = if s.media_bytes > 0 {
                s.repair_bytes as f64 / s.media_bytes as f64
            } else {
                0.0
            };
            s.sent = 0;
            s.media_bytes = 0;
            s.repair_bytes = 0;
            s.asked.clear();
            s.window_start = Some(now);
            // One control for every stream of the connection (a publisher's simulcast
            // layers): the most any of them calls for.
            let (share, overhead) = self.streams.values().fold((0.0f64, 0.0f64), |(a, b), p| {
                (a.max(p.share), b.max(p.overhead))
            });
            self.control
                .share
                .store((share * 1000.0).round() as u32, Ordering::Relaxed);
            self.control
                .overhead
                .store((overhead * 1000.0).round() as u32, Ordering::Relaxed);
        }
        let transport = msg.transport;
        self.outbound.push_back(msg);
        self.control
            .repair_packets
            .fetch_add(repairs.len() as u64, Ordering::Relaxed);
        if let Some(t) = &self.totals {
            t.repair_sent
                .fetch_add(repairs.len() as u64, Ordering::Relaxed);
        }
        for r in repairs {
            self.outbound.push_back(TaggedPacket {
                now,
                transport,
                message: AttributedPacket::new(Packet::Rtp(r)),
            });
        }
    }

    fn read_feedback(&mut self, msg: &TaggedPacket) {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            return;
        };
        for p in packets {
            if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>()
                && let Some(s) = self.streams.get_mut(&nack.media_ssrc)
            {
                // Bounded: at most the packets of one window are remembered.
                for seq in nacked_seqs(nack) {
                    if s.asked.len() as u32 <= s.sent {
                        s.asked.insert(seq);
                    }
                }
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FecSender {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_feedback(&msg);
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_media(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.outbound.pop_front()
    }
}

impl Interceptor for FecSender {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        // Only a stream the answer gave a repair flow (a FlexFEC SSRC and payload type; the
        // packets carry our own, see `rs_fec`).
        if let (Some(ssrc_fec), Some(_)) = (info.ssrc_fec, info.payload_type_fec) {
            self.streams.insert(
                info.ssrc,
                Protected {
                    ssrc_fec,
                    seq: rand::random(),
                    last_seq: None,
                    block: Vec::new(),
                    twcc: crate::fec_form::twcc_id(info),
                    share: 0.0,
                    window_start: None,
                    sent: 0,
                    asked: HashSet::new(),
                    media_bytes: 0,
                    repair_bytes: 0,
                    overhead: 0.0,
                },
            );
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a receiver (`RsFecReceiver`, repair SSRC 9 for media SSRC 7) rebuilds from
    /// `packets`, in that order.
    fn rebuilt_from(packets: impl IntoIterator<Item = rtc::rtp::Packet>) -> Vec<rtc::rtp::Packet> {
        let mut d = crate::rs_fec::RsFecReceiver::new();
        d.bind_remote_stream(&StreamInfo {
            ssrc: 7,
            ssrc_fec: Some(9),
            payload_type_fec: Some(118),
            ..Default::default()
        });
        let mut out = Vec::new();
        for p in packets {
            d.handle_read(tagged(p, Instant::now())).expect("takes it");
            while let Some(m) = d.poll_read() {
                let rebuilt = m
                    .message
                    .attributes
                    .iter()
                    .any(|a| matches!(a, rtc::interceptor::Attribute::RecoveredByFec));
                if let (true, Packet::Rtp(p)) = (rebuilt, m.message.packet) {
                    out.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn the_share_rises_with_what_is_still_asked_for_and_falls_back_to_nothing() {
        // Nothing asked: nothing sent.
        assert_eq!(next_share(0.0, 300, 0), 0.0);
        // 5 % asked for: twice that.
        let s = next_share(0.0, 300, 15);
        assert!((s - 0.1).abs() < 1e-9, "{s}");
        // Still 3 % asked with it on: up half again at least.
        let s = next_share(s, 300, 9);
        assert!((s - 0.15).abs() < 1e-9, "{s}");
        // Heavy loss: capped.
        assert_eq!(next_share(s, 300, 290), MAX_SHARE);
        // Between the bounds: held.
        assert_eq!(next_share(0.2, 1000, 5), 0.2);
        // A clean link: down step by step, then off.
        let mut s = MAX_SHARE;
        let mut windows = 0;
        while s > 0.0 {
            s = next_share(s, 300, 0);
            windows += 1;
        }
        assert!((5..=15).contains(&windows), "{windows}");
        // Too few packets to judge (audio only, a paused layer): unchanged.
        assert_eq!(next_share(0.3, 5, 5), 0.3);
    }

    #[test]
    fn a_late_or_copied_packet_passes_unprotected_and_splits_no_block() {
        let t0 = Instant::now();
        let (mut s, control) = sender();
        let mut seq = 0u16;
        // Losses asked for until the share is on.
        send_frames(&mut s, t0, 0..40, &mut seq, |_| true, media);
        while s.poll_write().is_some() {}
        assert!(control.share() > 0.0);
        // A frame of six, with a late packet (from before it) and a copy in the middle.
        let start = seq;
        for i in 0..6u16 {
            s.handle_write(tagged(
                media(start + i, i == 5),
                t0 + Duration::from_millis(1400),
            ))
            .expect("the interceptor takes it");
            if i == 2 {
                for late in [start - 7, start + 2] {
                    s.handle_write(tagged(media(late, false), t0 + Duration::from_millis(1400)))
                        .expect("the interceptor takes it");
                }
            }
        }
        let mut repairs = Vec::new();
        let mut media_out = 0;
        while let Some(p) = s.poll_write() {
            if let Packet::Rtp(r) = p.message.packet {
                if r.header.ssrc == 9 {
                    repairs.push(r);
                } else {
                    media_out += 1;
                }
            }
        }
        assert_eq!(media_out, 8, "every packet goes on");
        // One block of the six: every repair names the frame's first packet.
        assert!(!repairs.is_empty());
        assert!(
            repairs.iter().all(
                |r| u16::from_be_bytes([r.payload[6], r.payload[7]]) == start && r.payload[3] == 5
            ),
            "one block of six"
        );
    }

    #[test]
    fn the_ceiling_caps_the_share_at_once_and_below_the_least_share_stops_repairs() {
        let t0 = Instant::now();
        let (mut s, control) = sender();
        let mut seq = 0u16;
        // Losses asked for, window after window: the share climbs well over a third.
        send_frames(&mut s, t0, 0..200, &mut seq, |_| true, media);
        while s.poll_write().is_some() {}
        assert!(control.share() > 0.5, "{}", control.share());
        let repairs_of = |s: &mut FecSender| {
            let mut n = 0;
            while let Some(p) = s.poll_write() {
                if let Packet::Rtp(r) = p.message.packet
                    && r.header.ssrc == 9
                {
                    n += 1;
                }
            }
            n
        };
        // Capped at a third: a frame of six gets two repairs, from its first frame on.
        control.set_ceiling(1.0 / 3.0);
        send_frames(&mut s, t0, 200..201, &mut seq, |_| true, media);
        assert_eq!(repairs_of(&mut s), 2);
        // Still asked for, window after window: the share stays under the ceiling.
        send_frames(&mut s, t0, 201..300, &mut seq, |_| true, media);
        assert!(control.share() <= 0.334, "{}", control.share());
        assert!(repairs_of(&mut s) <= 2 * 99);
        // Under the least share: none at all.
        control.set_ceiling(MIN_SHARE / 2.0);
        send_frames(&mut s, t0, 300..340, &mut seq, |_| true, media);
        assert_eq!(repairs_of(&mut s), 0);
        // Lifted: back up as the losses call for.
        control.set_ceiling(MAX_SHARE);
        send_frames(&mut s, t0, 340..400, &mut seq, |_| true, media);
        assert!(repairs_of(&mut s) > 0);
    }

    #[test]
    fn repair_packets_per_block() {
        assert_eq!(repairs_for(6, 0.0), 0);
        assert_eq!(repairs_for(6, 0.1), 1);
        assert_eq!(repairs_for(6, 0.5), 3);
        assert_eq!(repairs_for(1, 0.5), 1);
        assert_eq!(repairs_for(4, MAX_SHARE), 6);
        assert_eq!(repairs_for(1, MAX_SHARE), 2);
        assert_eq!(repairs_for(0, 0.5), 0);
    }

    fn media(seq: u16, marker: bool) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 102,
                sequence_number: seq,
                timestamp: u32::from(seq / 6) * 3000,
                ssrc: 7,
                marker,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![seq as u8; 900 + usize::from(seq % 7) * 50]),
        }
    }

    fn tagged(p: rtc::rtp::Packet, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(p)),
        }
    }

    /// Frames `frames` (33 ms apart from `t0`, six packets each, numbered on from `seq`)
    /// through `s`, made by `make`; while `ask(frame)`, the receiver asks for one packet in
    /// 20 (5 %).
    fn send_frames(
        s: &mut FecSender,
        t0: Instant,
        frames: std::ops::Range<u64>,
        seq: &mut u16,
        ask: impl Fn(u64) -> bool,
        make: impl Fn(u16, bool) -> rtc::rtp::Packet,
    ) {
        for f in frames {
            for i in 0..6 {
                if ask(f) && seq.is_multiple_of(20) {
                    s.handle_read(nack(&[seq.wrapping_sub(1)]))
                        .expect("the interceptor takes it");
                }
                s.handle_write(tagged(
                    make(*seq, i == 5),
                    t0 + Duration::from_millis(f * 33),
                ))
                .expect("the interceptor takes it");
                *seq += 1;
            }
        }
    }

    fn sender() -> (FecSender, Arc<FecControl>) {
        let control = Arc::new(FecControl::default());
        let mut s = fec_sender(control.clone(), None);
        s.bind_local_stream(&StreamInfo {
            ssrc: 7,
            ssrc_fec: Some(9),
            payload_type_fec: Some(118),
            ..Default::default()
        });
        (s, control)
    }

    fn nack(seqs: &[u16]) -> TaggedPacket {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers(seqs),
        };
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
        }
    }

    #[test]
    fn a_lossy_receiver_gets_repairs_that_rebuild_its_losses_and_a_clean_one_none() {
        let t0 = Instant::now();
        let (mut s, control) = sender();
        let mut out = Vec::new();
        let mut seq = 0u16;
        // 1.2 s of 30 frames a second, six packets each, nothing asked: no repairs.
        send_frames(&mut s, t0, 0..36, &mut seq, |_| false, media);
        while let Some(p) = s.poll_write() {
            out.push(p);
        }
        assert_eq!(out.len(), 216, "media only");
        assert_eq!(control.share(), 0.0);
        // The receiver asks for 5 % of the next second's packets.
        let start = seq;
        let mut media_sent = Vec::new();
        send_frames(&mut s, t0, 36..72, &mut seq, |_| true, media);
        assert!(control.share() > 0.0, "{}", control.share());
        // The frames after: each followed by its repair packets, on the repair SSRC.
        let mut repairs = Vec::new();
        send_frames(&mut s, t0, 72..80, &mut seq, |_| false, media);
        while let Some(p) = s.poll_write() {
            if let Packet::Rtp(r) = p.message.packet {
                if r.header.ssrc == 9 {
                    repairs.push(r);
                } else if r.header.sequence_number >= start {
                    media_sent.push(r);
                }
            }
        }
        assert!(!repairs.is_empty());
        assert!(control.repair_packets.load(Ordering::Relaxed) as usize == repairs.len());
        // A receiver that lost one packet of the last frame rebuilds it from the rest.
        let last_frame: Vec<_> = media_sent[media_sent.len() - 6..].to_vec();
        let lost = last_frame[2].clone();
        let rebuilt = rebuilt_from(
            last_frame
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, p)| p)
                .chain(repairs.iter().rev().take(3).cloned()),
        );
        assert!(
            rebuilt
                .iter()
                .any(|p| p.header.sequence_number == lost.header.sequence_number
                    && p.payload == lost.payload),
            "not rebuilt"
        );
        // Forbidden (a thin link): no more repairs.
        control.allow(false);
        for i in 0..6 {
            s.handle_write(tagged(media(seq, i == 5), t0 + Duration::from_millis(2700)))
                .expect("the interceptor takes it");
            seq += 1;
        }
        let mut after = 0;
        while let Some(p) = s.poll_write() {
            if let Packet::Rtp(r) = p.message.packet {
                after += usize::from(r.header.ssrc == 9);
            }
        }
        assert_eq!(after, 0);
    }

    /// What `TwccSender` (below the FEC sender) and the wire do to a media packet: a
    /// transport-wide number among its other extensions, then marshalled and parsed again.
    fn numbered_on_the_wire(mut p: rtc::rtp::Packet, n: u16) -> rtc::rtp::Packet {
        use rtc::shared::marshal::{Marshal, Unmarshal};
        p.header
            .set_extension(3, bytes::Bytes::from(n.to_be_bytes().to_vec()))
            .expect("a one-byte extension");
        let raw = p.marshal().expect("marshals");
        rtc::rtp::Packet::unmarshal(&mut &raw[..]).expect("parses")
    }

    #[test]
    fn repairs_rebuild_a_packet_that_left_with_a_transport_wide_number() {
        let t0 = Instant::now();
        let control = Arc::new(FecControl::default());
        let mut s = fec_sender(control.clone(), None);
        let info = StreamInfo {
            ssrc: 7,
            ssrc_fec: Some(9),
            payload_type_fec: Some(118),
            rtp_header_extensions: vec![rtc::interceptor::RTPHeaderExtension {
                uri: crate::fec_form::TRANSPORT_CC_URI.into(),
                id: 3,
            }],
            ..Default::default()
        };
        s.bind_local_stream(&info);
        // Media with an extension of its own (a mid, as the sender writes it); the receiver
        // asks for 5 % of it until the share rises.
        let with_mid = |seq: u16, marker: bool| {
            let mut p = media(seq, marker);
            p.header
                .set_extension(1, bytes::Bytes::from_static(b"0"))
                .expect("a one-byte extension");
            p
        };
        let mut seq = 0u16;
        send_frames(&mut s, t0, 0..40, &mut seq, |_| true, with_mid);
        while s.poll_write().is_some() {}
        assert!(control.share() > 0.0, "{}", control.share());
        let start = seq;
        for i in 0..6 {
            s.handle_write(tagged(
                with_mid(seq, i == 5),
                t0 + Duration::from_millis(1400),
            ))
            .expect("the interceptor takes it");
            seq += 1;
        }
        let (mut frame, mut repairs) = (Vec::new(), Vec::new());
        while let Some(p) = s.poll_write() {
            if let Packet::Rtp(r) = p.message.packet {
                if r.header.ssrc == 9 {
                    repairs.push(r);
                } else if r.header.sequence_number >= start {
                    let n = 500 + r.header.sequence_number;
                    frame.push(numbered_on_the_wire(r, n));
                }
            }
        }
        assert_eq!(frame.len(), 6);
        assert!(!repairs.is_empty());
        let lost = 2;
        // The receiver, with and without the number taken off before decoding.
        let rebuild = |strip: bool| {
            let mut tap = crate::fec_form::twcc_strip();
            tap.bind_remote_stream(&info);
            let mut media = Vec::new();
            for p in frame
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lost)
                .map(|(_, p)| p)
            {
                let mut p = p.clone();
                if strip {
                    tap.handle_read(tagged(p, t0)).expect("the tap takes it");
                    let Some(TaggedPacket {
                        message:
                            AttributedPacket {
                                packet: Packet::Rtp(q),
                                ..
                            },
                        ..
                    }) = tap.poll_read()
                    else {
                        panic!("the tap passes RTP on")
                    };
                    p = q;
                }
                media.push(p);
            }
            rebuilt_from(media.into_iter().chain(repairs.iter().cloned()))
        };
        let want = &frame[lost];
        let rebuilt = rebuild(true);
        let got = rebuilt
            .iter()
            .find(|p| p.header.sequence_number == want.header.sequence_number)
            .expect("rebuilt");
        assert_eq!(got.payload, want.payload);
        assert_eq!(got.header.timestamp, want.header.timestamp);
        assert_eq!(got.header.marker, want.header.marker);
        assert_eq!(
            got.header.get_extension(1),
            Some(bytes::Bytes::from_static(b"0"))
        );
        assert_eq!(got.header.get_extension(3), None);
        // Left on, the number makes every rebuilt packet wrong.
        assert!(
            !rebuild(false)
                .iter()
                .any(|p| p.header.sequence_number == want.header.sequence_number
                    && p.payload == want.payload),
            "rebuilt right without taking the number off: the test proves nothing"
        );
    }

    #[test]
    fn the_overhead_counts_repair_bytes_and_is_at_least_the_share() {
        let t0 = Instant::now();
        let (mut s, control) = sender();
        let mut seq = 0u16;
        // A second with 5 % asked for (the share rises after it), then two with nothing
        // asked (it decays, slowly).
        send_frames(&mut s, t0, 0..100, &mut seq, |f| f < 36, media);
        while s.poll_write().is_some() {}
        let (share, overhead) = (control.share(), control.overhead());
        assert!(share > 0.0, "{share}");
        // Whole repair packets per frame, each as large as the largest packet it covers.
        assert!(
            overhead >= share * 0.9,
            "overhead {overhead}, share {share}"
        );
        assert!(overhead <= 1.1, "overhead {overhead}");
    }
}
