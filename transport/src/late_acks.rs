//! What the remote's transport-wide feedback itself said of each packet, beside rtc's send
//! history. That history (`rtpfb/history.rs`, `take_reports`) reports every packet below the
//! highest acknowledged one that has no acknowledgement yet as lost, and forgets it. Two
//! things make that wrong:
//! - **Late packets.** On a path with jitter a packet overtaken by the next one arrives a
//!   moment later, and the receiver reports it arrived in its next feedback; that
//!   acknowledgement finds nothing. Up to a tenth of a 40 ± 10 ms path's packets.
//! - **Lost feedback.** A feedback packet lost on the way back takes the report of its
//!   ~100 ms of packets with it; the receiver does not repeat it, so every one of them reads
//!   as lost. On a link losing 5 % each way, that doubled the loss the relay saw (and bursts
//!   of ten "lost" in a row read as congestion).
//!
//! [`FeedbackTap`] sits nearer the wire than the congestion controller and notes, per
//! transport-wide number, what the last feedback that covered it said. The meter
//! (`link_meter::MeteredGcc`) holds each loss the history reports back for [`GRACE`]: a packet
//! some feedback reported arrived counts as arrived, one reported missing as lost, and one no
//! feedback ever covered as neither (libwebrtc's sender counts losses the same way: only what
//! a feedback reports missing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::interceptor::{Packet, TaggedPacket, convert_twcc};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use crate::tap::{Tap, TapHooks};

/// How long a packet reported lost waits for a feedback to say what became of it: the
/// receiver reports every 100 ms, and a packet that came late is in the next one.
pub const GRACE: Duration = Duration::from_millis(150);

/// Numbers remembered (a power of two dividing 65 536): sixteen seconds at 1 000 packets a
/// second, a second at 16 000, far longer than [`GRACE`] and a feedback's way back.
const RING: usize = 16_384;

/// What feedback said of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// No feedback covered it (lost with the feedback, or not yet reported).
    Nothing,
    /// Reported arrived (by any feedback, the last included).
    Arrived,
    /// Reported missing, and not arrived since.
    Missing,
}

/// What the transport-wide feedback said of each recent number (shared between the tap and
/// the meter).
#[derive(Debug)]
pub struct FeedbackSaid {
    ring: Mutex<Vec<(u16, Said)>>,
}

impl Default for FeedbackSaid {
    fn default() -> Self {
        FeedbackSaid {
            ring: Mutex::new(vec![(0, Said::Nothing); RING]),
        }
    }
}

impl FeedbackSaid {
    /// One feedback's acknowledgements, `(transport-wide number, arrived)`.
    pub fn on_feedback(&self, acks: impl IntoIterator<Item = (u16, bool)>) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        for (seq, arrived) in acks {
            let slot = &mut ring[usize::from(seq) & (RING - 1)];
            if arrived {
                *slot = (seq, Said::Arrived);
            } else if *slot != (seq, Said::Arrived) {
                // (A later feedback's "missing" does not undo an arrival: the receiver
                // reports each number from its own record.)
                *slot = (seq, Said::Missing);
            }
        }
    }

    /// What feedback said of `seq`.
    pub fn said(&self, seq: u16) -> Said {
        self.ring
            .lock()
            .ok()
            .map(|ring| ring[usize::from(seq) & (RING - 1)])
            .filter(|&(s, _)| s == seq)
            .map_or(Said::Nothing, |(_, said)| said)
    }
}

/// Reads the transport-wide feedback into a [`FeedbackSaid`]; passes everything on.
pub type FeedbackTap = Tap<FeedbackHooks>;

/// The hooks of [`FeedbackTap`].
pub struct FeedbackHooks {
    said: Arc<FeedbackSaid>,
}

/// A tap feeding `said`.
pub fn feedback_tap(said: Arc<FeedbackSaid>) -> FeedbackTap {
    Tap::new(FeedbackHooks { said })
}

impl TapHooks for FeedbackHooks {
    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(ref packets) = msg.message.packet {
            for packet in packets {
                if let Some(feedback) = packet.as_any().downcast_ref::<TransportLayerCc>() {
                    // Only the first `packet_status_count` symbols: a status vector's
                    // padding reads as "not received" past them.
                    let count = usize::from(feedback.packet_status_count);
                    self.said.on_feedback(
                        convert_twcc(feedback)
                            .into_iter()
                            .take(count)
                            .map(|a| (a.sequence_number, a.arrived)),
                    );
                }
            }
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_last_word_of_feedback_on_each_number() {
        let said = FeedbackSaid::default();
        // 10..=14 with 12 missing; then 12 arrives late and the next feedback re-reports
        // from it, 13 and 14 again and 15 new; 16 is never covered.
        said.on_feedback([(10, true), (11, true), (12, false), (13, true), (14, true)]);
        assert_eq!(said.said(12), Said::Missing);
        assert_eq!(said.said(13), Said::Arrived);
        said.on_feedback([(12, true), (13, true), (14, true), (15, true)]);
        assert_eq!(said.said(12), Said::Arrived);
        assert_eq!(said.said(16), Said::Nothing);
        // An arrival is not undone; a number from a ring ago is not this one.
        said.on_feedback([(13, false), (17, false)]);
        assert_eq!(said.said(13), Said::Arrived);
        assert_eq!(said.said(17), Said::Missing);
        assert_eq!(said.said(17 + RING as u16), Said::Nothing);
        // Across the wrap.
        said.on_feedback([(65_534, true), (65_535, false), (0, true)]);
        assert_eq!(said.said(65_535), Said::Missing);
        assert_eq!(said.said(0), Said::Arrived);
        assert_eq!(said.said(65_535 - RING as u16), Said::Nothing);
        said.on_feedback([(65_535, true)]);
        assert_eq!(said.said(65_535), Said::Arrived);
    }

    use crate::link_meter::{LinkMeter, MeteredGcc};
    use rtc::interceptor::{
        AttributedPacket, CongestionControlBuilder, Interceptor, RTPHeaderExtension, Registry,
        Slot, StreamInfo, TwccReceiverBuilder, TwccSenderBuilder,
    };
    use rtc::sansio::Protocol;

    fn media(seq: u16, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 102,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 3000,
                    ssrc: 7,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(vec![0u8; 1_000]),
            })),
        }
    }

    /// 200 packets 5 ms apart through rtc's transport-wide sender and congestion
    /// controller, to rtc's feedback receiver (every 100 ms), the feedback back. Packet 50 is
    /// held back past a feedback (jitter overtook it), packet 150 never arrives and the
    /// feedback sent at 500 ms is lost. What the meter counted lost, with the feedback tap in
    /// the sender's chain or without it.
    fn counted(with_tap: bool) -> crate::link_meter::Metered {
        let meter = Arc::new(LinkMeter::default());
        let said = Arc::new(FeedbackSaid::default());
        let mut registry = Registry::new()
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(MeteredGcc::new(
                    1e6,
                    1e5,
                    1e7,
                    meter.clone(),
                    said.clone(),
                ))
                .build(),
            );
        if with_tap {
            registry = registry.with(Slot::from(900), feedback_tap(said));
        }
        let mut sender = registry.build();
        let mut receiver = Registry::new()
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .build();
        let info = StreamInfo {
            ssrc: 7,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: crate::fec_form::TRANSPORT_CC_URI.into(),
                id: 3,
            }],
            ..Default::default()
        };
        sender.bind_local_stream(&info);
        receiver.bind_remote_stream(&info);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut held = None;
        let mut next_feedback = 100;
        for i in 0..200u16 {
            let now = ms(u64::from(i) * 5);
            sender
                .handle_write(media(i, now))
                .expect("the sender takes it");
            while let Some(mut p) = sender.poll_write() {
                p.now = ms(u64::from(i) * 5 + 20);
                match i {
                    50 => held = Some(p),
                    150 => {}
                    _ => receiver.handle_read(p).expect("the receiver takes it"),
                }
            }
            while receiver.poll_read().is_some() {}
            if u64::from(i) * 5 + 20 >= next_feedback {
                let at = ms(next_feedback);
                receiver.handle_timeout(at).expect("feedback");
                next_feedback += 100;
                // The held packet arrives just after the feedback that passed it.
                if let Some(mut p) = held.take() {
                    p.now = at + Duration::from_millis(5);
                    receiver.handle_read(p).expect("the receiver takes it");
                }
                while let Some(mut feedback) = receiver.poll_write() {
                    if next_feedback == 600 {
                        continue;
                    }
                    feedback.now = at + Duration::from_millis(20);
                    sender.handle_read(feedback).expect("the sender takes it");
                    while sender.poll_read().is_some() {}
                }
            }
        }
        sender.handle_timeout(ms(2_000)).expect("settle");
        meter.read()
    }

    #[test]
    fn a_packet_overtaken_past_a_feedback_is_no_loss_and_a_lost_one_is() {
        let with = counted(true);
        assert_eq!(with.lost_packets, 1, "only packet 150: {with:?}");
        // rtc's history wrote packet 50 off when the feedback passed it and dropped the
        // later report that it arrived; the tap's record counts it arrived.
        let without = counted(false);
        assert_eq!(with.acked_packets, without.acked_packets + 1, "{without:?}");
        // The twenty packets the lost feedback covered are neither (and the last three were
        // not reported yet): all the others arrived but 150.
        assert_eq!(with.acked_packets + 1 + 20, 200 - 3, "{with:?}");
    }
}
