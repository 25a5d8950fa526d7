//! An interceptor that hands inbound keyframe requests (PLI, FIR) to the application and lets
//! every other inbound RTCP packet end at the interceptor chain, where NACK and reports are
//! already handled (attributes riding on them, like the bandwidth estimate, still go up, on an
//! empty carrier). Our publishers answer them with an IDR; the SFU forwards them upstream.

use rtc::interceptor::{Attribute, Packet, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use crate::tap::{Tap, TapHooks};

/// Marks PLI and FIR for delivery to the application.
pub type KeyframeRequests = Tap<KeyframeRequestHooks>;

/// The hooks of [`KeyframeRequests`].
#[derive(Default)]
pub struct KeyframeRequestHooks;

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl TapHooks for KeyframeRequestHooks {
    fn on_read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if wanted.is_empty() {
                // An attribute carrier (the bandwidth estimate rides on the feedback packet
                // that produced it) goes on empty, so the attribute reaches the stats and the
                // packet itself reaches no one; anything else ends here.
                if msg.message.attributes.is_empty() {
                    return None;
                }
                msg.message.packet = Packet::Rtcp(Vec::new());
                return Some(msg);
            }
            msg.message.packet = Packet::Rtcp(wanted);
            msg.message.add(Attribute::DeliverToApplication);
        }
        Some(msg)
    }
}
