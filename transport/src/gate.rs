//! An interceptor's outbound work only while a condition holds: a write passes it by
//! otherwise (reads, timeouts and stream bindings always reach it). A single-layer player's
//! leg meters its link (transport-wide numbers, the congestion controller's history, the
//! receiver's feedback) only while repair packets are in use, where `fec_guard` needs it: on
//! a clean link the metering cost the relay a seventh more CPU per player for nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Whether a [`Gated`] interceptor works on writes now.
pub type Open = Arc<dyn Fn() -> bool + Send + Sync>;

/// `inner`, on writes only while `open` says so.
pub struct Gated<I> {
    inner: I,
    open: Open,
    /// What goes out, in order: packets passed by and what the inner one put out.
    passed: VecDeque<TaggedPacket>,
}

impl<I> Gated<I> {
    /// `inner` gated by `open`.
    pub fn new(inner: I, open: Open) -> Gated<I> {
        Gated {
            inner,
            open,
            passed: VecDeque::new(),
        }
    }
}

impl<I: Interceptor> Gated<I> {
    fn drain_inner(&mut self) {
        while let Some(m) = self.inner.poll_write() {
            self.passed.push_back(m);
        }
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for Gated<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inner.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inner.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // One queue out, in the order packets came, whichever way each went.
        let result = if (self.open)() {
            self.inner.handle_write(msg)
        } else {
            self.passed.push_back(msg);
            Ok(())
        };
        self.drain_inner();
        result
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.drain_inner();
        self.passed.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.inner.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.inner.poll_timeout()
    }
}

impl<I: Interceptor> Interceptor for Gated<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rtc::interceptor::{AttributedPacket, Packet, TwccSenderBuilder};

    fn packet(seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    ssrc: 7,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0u8; 10].into(),
            })),
        }
    }

    #[test]
    fn writes_pass_by_while_closed_and_are_numbered_while_open() {
        let open = Arc::new(AtomicBool::new(false));
        let flag = open.clone();
        let mut g = Gated::new(
            TwccSenderBuilder::new().build(),
            Arc::new(move || flag.load(Ordering::Relaxed)),
        );
        g.bind_local_stream(&StreamInfo {
            ssrc: 7,
            rtp_header_extensions: vec![rtc::interceptor::RTPHeaderExtension {
                uri: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
                    .into(),
                id: 5,
            }],
            ..Default::default()
        });
        let numbered = |g: &mut Gated<_>| -> Vec<(u16, bool)> {
            let mut out = Vec::new();
            while let Some(m) = g.poll_write() {
                if let Packet::Rtp(p) = m.message.packet {
                    out.push((
                        p.header.sequence_number,
                        p.header.get_extension(5).is_some(),
                    ));
                }
            }
            out
        };
        g.handle_write(packet(1)).expect("takes it");
        assert_eq!(numbered(&mut g), [(1, false)]);
        open.store(true, Ordering::Relaxed);
        g.handle_write(packet(2)).expect("takes it");
        g.handle_write(packet(3)).expect("takes it");
        assert_eq!(numbered(&mut g), [(2, true), (3, true)]);
        open.store(false, Ordering::Relaxed);
        g.handle_write(packet(4)).expect("takes it");
        assert_eq!(numbered(&mut g), [(4, false)]);
        // Flipping between writes keeps their order.
        for seq in 5..9 {
            open.store(seq % 2 == 0, Ordering::Relaxed);
            g.handle_write(packet(seq)).expect("takes it");
        }
        assert_eq!(
            numbered(&mut g),
            [(5, false), (6, true), (7, false), (8, true)]
        );
    }
}
