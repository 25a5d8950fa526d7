//! An interceptor that drops a share of outgoing RTP packets on the wire side of the chain, to
//! try the recovery paths (NACK resends, keyframe requests, bandwidth estimation) on a lossy
//! link without a lossy network. It sits below the send history (`Slot::CongestionControl`),
//! so a dropped packet was numbered, recorded and buffered for resending like any other: the
//! receiver reports it missing and NACKs it, exactly as for a packet lost in the network.

use rtc::interceptor::{Packet, TaggedPacket};

use crate::tap::{Tap, TapHooks};

/// Drops each outgoing RTP packet with a given probability. RTCP always passes.
pub type SendLoss = Tap<SendLossHooks>;

/// The hooks of [`SendLoss`].
pub struct SendLossHooks {
    share: f64,
    rng: u64,
    /// RTP packets dropped so far.
    pub dropped: u64,
}

/// A dropper for `share` of the packets (clamped to 0..=1).
pub fn send_loss(share: f64) -> SendLoss {
    Tap::new(SendLossHooks::new(share))
}

impl SendLossHooks {
    fn new(share: f64) -> SendLossHooks {
        SendLossHooks {
            share: share.clamp(0.0, 1.0),
            rng: rand::random::<u64>() | 1,
            dropped: 0,
        }
    }

    /// A uniform number in 0..1 (xorshift; no lock, no allocation per packet).
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl TapHooks for SendLossHooks {
    fn on_write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if matches!(msg.message.packet, Packet::Rtp(_)) && self.next_unit() < self.share {
            self.dropped += 1;
            return None;
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_dropped_is_the_share_asked_for() {
        let mut s = SendLossHooks::new(0.2);
        let n = 100_000;
        let dropped = (0..n).filter(|_| s.next_unit() < s.share).count();
        let share = dropped as f64 / f64::from(n);
        assert!((share - 0.2).abs() < 0.01, "{share}");
        assert_eq!(SendLossHooks::new(0.0).share, 0.0);
        assert_eq!(SendLossHooks::new(7.0).share, 1.0);
    }
}
