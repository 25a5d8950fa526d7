//! Simulcast at the SFU, sans I/O: which layer a publisher's video track or RID is, where an
//! H.264 keyframe starts in RTP, and the per-player forwarder that switches layers only at a
//! keyframe of the target layer and rewrites sequence numbers and timestamps so the player sees
//! one continuous stream (its SSRC is the player track's own).

use std::time::Instant;

use rtc::rtp;

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
    let Some(&head) = payload.first() else {
        return false;
    };
    let key = |nal_type: u8| nal_type == 5 || nal_type == 7;
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
/// How long a better layer must fit before the player moves up to it.
pub const UP_HOLD: std::time::Duration = std::time::Duration::from_secs(4);

/// After stepping down from a layer, the wait before trying it again (doubling each time it
/// fails again, up to [`MAX_RETRY_AFTER`]): the estimate is not a measurement of capacity
/// above what is being sent (GCC climbs while nothing congests), so an up-step is a trial,
/// and a failed trial must not repeat every few seconds. The price: after a thin spell ends,
/// the layer it cost comes back only after this wait.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest wait before trying a layer again.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(240);

/// The relay's choice of layer for a player in Auto, from the estimate of its link: down at
/// once when the layer it gets no longer fits, up one layer at a time only after a better one
/// fitted for [`UP_HOLD`], and not back to a layer it just had to leave until a backoff
/// passed (hysteresis: a link that wavers does not make the picture flap).
#[derive(Debug, Default)]
pub struct LayerChooser {
    better_since: Option<(usize, Instant)>,
    /// The layer last left for lack of bandwidth, when it may be tried again, and the wait
    /// that gave.
    left: Option<(usize, Instant, std::time::Duration)>,
}

impl LayerChooser {
    /// The layer to send now, given the one being sent, the link's estimate (bits/s, 0 if
    /// none yet) and each layer's bitrate as it arrives from the publisher (None: not sent).
    pub fn choose(
        &mut self,
        current: usize,
        estimate_bps: f64,
        rates_bps: [Option<f64>; MAX_LAYERS],
        now: Instant,
    ) -> usize {
        if estimate_bps <= 0.0 {
            return current;
        }
        let sent: Vec<usize> = (0..MAX_LAYERS)
            .filter(|l| rates_bps[*l].is_some())
            .collect();
        let Some(&smallest) = sent.last() else {
            return current;
        };
        let best = sent
            .iter()
            .copied()
            .find(|l| rates_bps[*l].is_some_and(|r| r * FIT_HEADROOM <= estimate_bps))
            .unwrap_or(smallest);
        if rates_bps[current].is_none() {
            self.better_since = None;
            return best;
        }
        if best > current {
            // Down at once; the layer left waits before it is tried again.
            self.better_since = None;
            let wait = match self.left {
                Some((l, _, w)) if l == current => (w * 2).min(MAX_RETRY_AFTER),
                _ => RETRY_AFTER,
            };
            self.left = Some((current, now + wait, wait));
            return best;
        }
        if best == current {
            self.better_since = None;
            return current;
        }
        // Up: one layer at a time, once it has held, and not into a layer still backing off.
        let up = sent
            .iter()
            .copied()
            .filter(|l| *l < current)
            .max()
            .unwrap_or(current);
        if self
            .left
            .is_some_and(|(l, until, _)| up <= l && now < until)
        {
            self.better_since = None;
            return current;
        }
        match self.better_since {
            Some((layer, since))
                if layer == up && now.saturating_duration_since(since) >= UP_HOLD =>
            {
                self.better_since = None;
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
    use std::time::Duration;

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
    fn a_switch_waits_for_the_targets_keyframe_and_leaves_no_gap() {
        let t0 = Instant::now();
        let mut f = LayerForwarder::new(0);
        // Nothing before layer 0's first keyframe.
        assert!(f.push(0, packet(100, 9000, P_SLICE), t0).packets.is_empty());
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

    #[test]
    fn the_chooser_steps_down_at_once_and_up_one_layer_after_the_estimate_held() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let rates = [Some(1_500_000.0), Some(500_000.0), Some(150_000.0)];
        let mut c = LayerChooser::default();
        assert_eq!(c.choose(0, 0.0, rates, t0), 0, "no estimate yet");
        assert_eq!(c.choose(0, 2_000_000.0, rates, t0), 0);
        assert_eq!(c.choose(0, 600_000.0, rates, t0), 1, "down at once");
        assert_eq!(c.choose(1, 250_000.0, rates, t0), 2);
        assert_eq!(
            c.choose(2, 100_000.0, rates, t0),
            2,
            "nothing fits: the smallest"
        );
        // Layer 1 was left at t0: not retried for RETRY_AFTER, however good the estimate.
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(4)), 2);
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(29)), 2);
        // Then up one layer after UP_HOLD of fitting; a dip restarts the wait.
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(30)), 2);
        assert_eq!(c.choose(2, 100_000.0, rates, t0 + s(32)), 2);
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(33)), 2);
        assert_eq!(
            c.choose(2, 3_000_000.0, rates, t0 + s(37)),
            1,
            "one layer up"
        );
        // Failing again at layer 1 doubles its wait (60 s).
        assert_eq!(c.choose(1, 300_000.0, rates, t0 + s(38)), 2);
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(60)), 2);
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(98)), 2);
        assert_eq!(c.choose(2, 3_000_000.0, rates, t0 + s(102)), 1);
        // A layer the publisher does not send is never chosen.
        let two = [Some(1_500_000.0), None, Some(150_000.0)];
        let mut c = LayerChooser::default();
        assert_eq!(c.choose(0, 600_000.0, two, t0), 2);
        assert_eq!(c.choose(1, 3_000_000.0, two, t0), 0, "its layer vanished");
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
}
