//! An interceptor that counts the packets a remote reports missing in its NACKs, on their way
//! in, before the NACK responder resends them: the publisher's view of the link's loss.

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
}

/// A counter adding to `nacked`.
pub fn nack_count(nacked: Arc<AtomicU64>) -> NackCount {
    Tap::new(NackCountHooks { nacked })
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
    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let n: u64 = packets.iter().map(|p| nacked_packets(p.as_ref())).sum();
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
    }
}
