//! An interceptor that counts the packets a remote reports missing in its NACKs, on their way
//! in, before the NACK responder resends them: the publisher's view of the link's loss. A
//! packet asked for again (its resend was lost too) counts once: this is packets lost, not
//! NACK entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::tap::{Tap, TapHooks};

/// Adds the packets each inbound NACK names to a shared counter; passes everything on.
pub type NackCount = Tap<NackCountHooks>;

/// The hooks of [`NackCount`].
pub struct NackCountHooks {
    nacked: Arc<AtomicU64>,
    /// Per media SSRC, the sequence numbers already counted (the last [`REMEMBERED`]).
    seen: HashMap<u32, (HashSet<u16>, VecDeque<u16>)>,
}

/// How many NACKed sequence numbers a stream remembers to count each once (a few seconds of
/// heavy loss; older ones have wrapped out of any receiver's window).
const REMEMBERED: usize = 2_048;

/// A counter adding to `nacked`.
pub fn nack_count(nacked: Arc<AtomicU64>) -> NackCount {
    Tap::new(NackCountHooks {
        nacked,
        seen: HashMap::new(),
    })
}

/// The sequence numbers a NACK names.
pub fn nacked_seqs(nack: &TransportLayerNack) -> impl Iterator<Item = u16> + '_ {
    nack.nacks.iter().flat_map(|p| {
        std::iter::once(p.packet_id).chain(
            (0..16u16)
                .filter(|i| p.lost_packets & (1 << i) != 0)
                .map(|i| p.packet_id.wrapping_add(i + 1)),
        )
    })
}

impl NackCountHooks {
    /// Counts the packets of `nack` not counted before.
    fn count_new(&mut self, nack: &TransportLayerNack) -> u64 {
        tracing::trace!(ssrc = nack.media_ssrc, seqs = ?nacked_seqs(nack).collect::<Vec<_>>(), "nack in");
        let (set, order) = self.seen.entry(nack.media_ssrc).or_default();
        let mut new = 0;
        for seq in nacked_seqs(nack) {
            if set.insert(seq) {
                new += 1;
                order.push_back(seq);
                if order.len() > REMEMBERED
                    && let Some(old) = order.pop_front()
                {
                    set.remove(&old);
                }
            }
        }
        new
    }
}

/// Sequence numbers a NACK packet names (0 for any other RTCP packet).
pub fn nacked_packets(packet: &dyn rtc::rtcp::Packet) -> u64 {
    packet
        .as_any()
        .downcast_ref::<TransportLayerNack>()
        .map_or(0, |n| {
            n.nacks
                .iter()
                .map(|p| 1 + u64::from(p.lost_packets.count_ones()))
                .sum()
        })
}

impl TapHooks for NackCountHooks {
    fn on_write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(p) = &msg.message.packet
            && msg
                .message
                .attributes
                .iter()
                .any(|a| matches!(a, rtc::interceptor::Attribute::Retransmission))
        {
            tracing::trace!(
                seq = p.header.sequence_number,
                ssrc = p.header.ssrc,
                "resend out"
            );
        }
        Some(msg)
    }

    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let n: u64 = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                .map(|n| self.count_new(n))
                .sum();
            if n > 0 {
                self.nacked.fetch_add(n, Ordering::Relaxed);
            }
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn a_nack_counts_its_packet_and_its_bitmask() {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![
                NackPair {
                    packet_id: 10,
                    lost_packets: 0b101,
                },
                NackPair {
                    packet_id: 40,
                    lost_packets: 0,
                },
            ],
        };
        assert_eq!(nacked_packets(&nack), 4);
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        assert_eq!(nacked_packets(&pli), 0);
        // Counted once however often it is asked for.
        let mut hooks = NackCountHooks {
            nacked: Arc::new(AtomicU64::new(0)),
            seen: HashMap::new(),
        };
        assert_eq!(hooks.count_new(&nack), 4);
        assert_eq!(hooks.count_new(&nack), 0);
        assert_eq!(nacked_seqs(&nack).collect::<Vec<_>>(), [10, 11, 13, 40]);
    }
}
