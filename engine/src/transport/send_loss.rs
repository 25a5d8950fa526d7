//! An interceptor that drops a share of outgoing RTP packets on the wire side of the chain, to
//! try the recovery paths (NACK resends, keyframe requests, bandwidth estimation) on a lossy
//! link without a lossy network. It sits below the send history (`Slot::CongestionControl`),
//! so a dropped packet was numbered, recorded and buffered for resending like any other: the
//! receiver reports it missing and NACKs it, exactly as for a packet lost in the network.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Drops each outgoing RTP packet with probability `share` (0..1). RTCP always passes.
pub struct SendLoss {
    share: f64,
    rng: u64,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
    /// RTP packets dropped so far.
    pub dropped: u64,
}

impl SendLoss {
    /// A dropper for `share` of the packets (clamped to 0..=1).
    pub fn new(share: f64) -> SendLoss {
        SendLoss {
            share: share.clamp(0.0, 1.0),
            rng: rand::random::<u64>() | 1,
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
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

impl Protocol<TaggedPacket, TaggedPacket, ()> for SendLoss {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_)) && self.next_unit() < self.share {
            self.dropped += 1;
            return Ok(());
        }
        self.outbound.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.outbound.pop_front()
    }
}

impl Interceptor for SendLoss {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_dropped_is_the_share_asked_for() {
        let mut s = SendLoss::new(0.2);
        let n = 100_000;
        let dropped = (0..n).filter(|_| s.next_unit() < s.share).count();
        let share = dropped as f64 / f64::from(n);
        assert!((share - 0.2).abs() < 0.01, "{share}");
        assert_eq!(SendLoss::new(0.0).share, 0.0);
        assert_eq!(SendLoss::new(7.0).share, 1.0);
    }
}
