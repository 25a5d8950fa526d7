//! A retransmission budget: an interceptor below the NACK responder that lets through, per
//! stream, at most [`RESEND_SHARE`] resends for each packet first sent (with a burst of
//! [`BURST`]), trimming what NACKs ask beyond that. On a link that drops most of what it is
//! sent (a thin pipe overrun), a receiver asks for nearly everything, repeatedly: answering
//! every request multiplied what the relay sent eight times over and kept the link jammed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rtc::interceptor::{Attribute, Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

use crate::nack_count::nacked_seqs;
use crate::tap::{Tap, TapHooks};

/// Resends allowed per packet first sent: repairing 50 % loss through two rounds of
/// retransmission fits; an overrun link's requests do not.
pub const RESEND_SHARE: f64 = 1.0;
/// Resends a stream may owe at once (a loss burst right after a quiet spell is answered).
pub const BURST: f64 = 200.0;

/// The budget interceptor.
pub type NackBudget = Tap<NackBudgetHooks>;

/// The share in thousandths of [`RESEND_SHARE`] when nobody lowered it.
pub const FULL_SHARE: u32 = 1000;

/// What the connection's owner tells the budget (shared; atomics, read per packet).
#[derive(Debug)]
pub struct ResendControl {
    /// The share of [`RESEND_SHARE`] (and of [`BURST`]) allowed now, in thousandths: the
    /// owner lowers it on a link it knows to be full, where resends compete with the media
    /// for the same capacity and keep the link congested.
    pub share: AtomicU32,
    /// No resends of a stream's packets sent before this one: `1 << 48 | ssrc << 16 | seq`
    /// (0: none). The owner sets it where a stream became another encoding (a simulcast
    /// switch): the receiver starts over at the new keyframe, and the old packets it still
    /// asks for would only fill the link.
    floor: AtomicU64,
    /// While set (`1 << 32 | ssrc`), no resends of any stream but `ssrc` (0: all may be
    /// resent). The owner sets it while the link holds a standing queue: a resend joins the
    /// back of it, and the sound's resends come too late for its short buffer while they keep
    /// the queue standing; the picture's are still needed (a lost packet of the new layer's
    /// keyframe costs everything up to the next one).
    only: AtomicU64,
}

impl Default for ResendControl {
    fn default() -> Self {
        ResendControl {
            share: AtomicU32::new(FULL_SHARE),
            floor: AtomicU64::new(0),
            only: AtomicU64::new(0),
        }
    }
}

impl ResendControl {
    /// Resends of `ssrc` only (None: of every stream) from now on.
    pub fn resend_only(&self, ssrc: Option<u32>) {
        self.only.store(
            ssrc.map_or(0, |s| 1 << 32 | u64::from(s)),
            Ordering::Relaxed,
        );
    }

    /// Whether resends of `ssrc` are refused by [`Self::resend_only`].
    fn refused(&self, ssrc: u32) -> bool {
        let only = self.only.load(Ordering::Relaxed);
        only != 0 && only as u32 != ssrc
    }

    /// No resends of `ssrc`'s packets before `seq` from now on.
    pub fn set_floor(&self, ssrc: u32, seq: u16) {
        self.floor.store(
            1 << 48 | u64::from(ssrc) << 16 | u64::from(seq),
            Ordering::Relaxed,
        );
    }

    /// Whether a resend of `ssrc`'s `seq` is below the floor (at most [`FLOOR_REACH`] below:
    /// sequence numbers wrap, and further back than that nothing is asked for any more).
    fn below_floor(&self, ssrc: u32, seq: u16) -> bool {
        let floor = self.floor.load(Ordering::Relaxed);
        if floor == 0 || (floor >> 16) as u32 != ssrc {
            return false;
        }
        let behind = (floor as u16).wrapping_sub(seq);
        behind != 0 && behind <= FLOOR_REACH
    }

    /// `ssrc` sent `seq` for the first time: a floor [`FLOOR_REACH`] packets behind is done
    /// with (its stream's numbers would come round to it again).
    fn sent(&self, ssrc: u32, seq: u16) {
        let floor = self.floor.load(Ordering::Relaxed);
        if floor != 0 && (floor >> 16) as u32 == ssrc {
            let ahead = seq.wrapping_sub(floor as u16);
            if (FLOOR_REACH..0x8000).contains(&ahead) {
                let _ = self
                    .floor
                    .compare_exchange(floor, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

/// How far below a floor resends are refused, and how far past it the floor lasts (packets):
/// seconds of any layer, longer than a receiver asks for a packet.
const FLOOR_REACH: u16 = 3_000;

/// The hooks of [`NackBudget`]: per media SSRC, the resends it may still send.
#[derive(Default)]
pub struct NackBudgetHooks {
    tokens: HashMap<u32, f64>,
    control: Arc<ResendControl>,
    /// Sequence numbers left unanswered so far (for the logs and tests).
    pub trimmed: u64,
}

/// A budget with no stream known yet, told by `control`.
pub fn nack_budget(control: Arc<ResendControl>) -> NackBudget {
    Tap::new(NackBudgetHooks {
        control,
        ..NackBudgetHooks::default()
    })
}

impl NackBudgetHooks {
    /// The resends per packet sent allowed now, and the most that may be owed.
    fn allowance(&self) -> (f64, f64) {
        let share = f64::from(self.control.share.load(Ordering::Relaxed).min(FULL_SHARE))
            / f64::from(FULL_SHARE);
        (RESEND_SHARE * share, (BURST * share).max(4.0))
    }

    /// A packet of `ssrc` sent for the first time.
    fn sent(&mut self, ssrc: u32) {
        let (per_packet, most) = self.allowance();
        let t = self.tokens.entry(ssrc).or_insert(most);
        *t = (*t + per_packet).min(most);
    }

    /// The NACK with only what the budget allows (None: nothing).
    fn trim(&mut self, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let (_, most) = self.allowance();
        let tokens = self.tokens.entry(nack.media_ssrc).or_insert(most);
        *tokens = tokens.min(most);
        let mut kept = Vec::new();
        let refused = self.control.refused(nack.media_ssrc);
        for seq in nacked_seqs(nack) {
            if refused || self.control.below_floor(nack.media_ssrc, seq) {
                self.trimmed += 1;
            } else if *tokens >= 1.0 {
                *tokens -= 1.0;
                kept.push(seq);
            } else {
                self.trimmed += 1;
            }
        }
        (!kept.is_empty()).then(|| TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&kept),
        })
    }
}

impl TapHooks for NackBudgetHooks {
    fn on_write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(p) = &msg.message.packet
            && !msg
                .message
                .attributes
                .iter()
                .any(|a| matches!(a, Attribute::Retransmission))
        {
            self.sent(p.header.ssrc);
            self.control.sent(p.header.ssrc, p.header.sequence_number);
        }
        Some(msg)
    }

    fn on_read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        let Packet::Rtcp(packets) = &mut msg.message.packet else {
            return Some(msg);
        };
        if !packets
            .iter()
            .any(|p| p.as_any().downcast_ref::<TransportLayerNack>().is_some())
        {
            return Some(msg);
        }
        let before = packets.len();
        let mut out: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(before);
        for p in packets.drain(..) {
            match p.as_any().downcast_ref::<TransportLayerNack>() {
                Some(nack) => {
                    if let Some(kept) = self.trim(nack) {
                        out.push(Box::new(kept));
                    }
                }
                None => out.push(p),
            }
        }
        if out.is_empty() {
            return None;
        }
        *packets = out;
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(seqs: &[u16]) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        }
    }

    #[test]
    fn nothing_before_the_floor_is_resent_and_a_lower_share_owes_less() {
        let control = Arc::new(ResendControl::default());
        let mut h = NackBudgetHooks {
            control: control.clone(),
            ..NackBudgetHooks::default()
        };
        control.set_floor(7, 100);
        let kept = h.trim(&nack(&[97, 98, 99, 100, 101])).expect("some kept");
        assert_eq!(nacked_seqs(&kept).collect::<Vec<_>>(), vec![100, 101]);
        // Another stream is not affected; the floor wraps with the numbers.
        let other = TransportLayerNack {
            media_ssrc: 8,
            ..nack(&[5])
        };
        assert!(h.trim(&other).is_some());
        control.set_floor(7, 2);
        let kept = h.trim(&nack(&[65_534, 65_535, 2, 3])).expect("kept");
        assert_eq!(nacked_seqs(&kept).collect::<Vec<_>>(), vec![2, 3]);
        // Far ahead of the floor (the numbers come round again) nothing is refused, and once
        // the stream is FLOOR_REACH past it the floor is gone.
        assert!(!control.below_floor(7, 2u16.wrapping_add(40_000)));
        assert!(!control.below_floor(7, 2u16.wrapping_sub(FLOOR_REACH + 1)));
        control.sent(7, 2 + 100);
        assert!(control.below_floor(7, 1), "still there");
        control.sent(7, 2 + FLOOR_REACH);
        assert!(!control.below_floor(7, 1), "expired");
        // A quarter share: at most a quarter of the burst owed.
        control.share.store(250, Ordering::Relaxed);
        let all: Vec<u16> = (1000..1250).collect();
        let kept = h.trim(&nack(&all)).expect("kept");
        assert_eq!(nacked_seqs(&kept).count(), (BURST / 4.0) as usize);
    }

    #[test]
    fn resends_of_one_stream_only_while_told() {
        let control = Arc::new(ResendControl::default());
        let mut h = NackBudgetHooks {
            control: control.clone(),
            ..NackBudgetHooks::default()
        };
        let sound = TransportLayerNack {
            media_ssrc: 8,
            ..nack(&[5, 6])
        };
        control.resend_only(Some(7));
        assert!(h.trim(&sound).is_none());
        assert_eq!(h.trimmed, 2);
        assert!(h.trim(&nack(&[5])).is_some(), "the picture's still go");
        control.resend_only(None);
        assert!(h.trim(&sound).is_some());
    }

    #[test]
    fn requests_beyond_the_budget_are_trimmed_and_sending_refills_it() {
        let mut h = NackBudgetHooks::default();
        let all: Vec<u16> = (0..250).collect();
        let kept = h.trim(&nack(&all)).expect("some kept");
        assert_eq!(nacked_seqs(&kept).count(), BURST as usize);
        assert_eq!(h.trimmed, 50);
        assert!(h.trim(&nack(&[300])).is_none(), "the budget is spent");
        // Ten packets sent: ten resends allowed.
        for _ in 0..10 {
            h.sent(7);
        }
        let kept = h
            .trim(&nack(&(400..420).collect::<Vec<_>>()))
            .expect("kept");
        assert_eq!(
            nacked_seqs(&kept).collect::<Vec<_>>(),
            (400..410).collect::<Vec<_>>()
        );
        // Another stream has its own budget.
        let other = TransportLayerNack {
            media_ssrc: 8,
            ..nack(&[1, 2, 3])
        };
        assert_eq!(nacked_seqs(&h.trim(&other).expect("kept")).count(), 3);
    }
}
