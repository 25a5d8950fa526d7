//! A retransmission budget: an interceptor below the NACK responder that lets through, per
//! stream, at most [`RESEND_SHARE`] resends for each packet first sent (with a burst of
//! [`BURST`]), trimming what NACKs ask beyond that. On a link that drops most of what it is
//! sent (a thin pipe overrun), a receiver asks for nearly everything, repeatedly: answering
//! every request multiplied what the relay sent eight times over and kept the link jammed.

use std::collections::HashMap;

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

/// The hooks of [`NackBudget`]: per media SSRC, the resends it may still send.
#[derive(Default)]
pub struct NackBudgetHooks {
    tokens: HashMap<u32, f64>,
    /// Sequence numbers left unanswered so far (for the logs and tests).
    pub trimmed: u64,
}

/// A budget with no stream known yet.
pub fn nack_budget() -> NackBudget {
    Tap::new(NackBudgetHooks::default())
}

impl NackBudgetHooks {
    /// A packet of `ssrc` sent for the first time.
    fn sent(&mut self, ssrc: u32) {
        let t = self.tokens.entry(ssrc).or_insert(BURST);
        *t = (*t + RESEND_SHARE).min(BURST);
    }

    /// The NACK with only what the budget allows (None: nothing).
    fn trim(&mut self, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let tokens = self.tokens.entry(nack.media_ssrc).or_insert(BURST);
        let mut kept = Vec::new();
        for seq in nacked_seqs(nack) {
            if *tokens >= 1.0 {
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
