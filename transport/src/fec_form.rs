//! The form of a media packet FEC protects: without its transport-wide sequence number, the
//! header extensions written the one way our marshalling writes them.
//!
//! The sender's FEC encoder (`Slot::FecEncoder`, 5 000) sees a packet before the transport-wide
//! number is added below it (`Slot::TwccSender`, 2 000): the number is only known when the
//! packet leaves the pacer. Its repair packets are therefore computed over packets *without*
//! that extension. The receiver gets them *with* it, so before the FEC decoder ([`TwccStrip`], 5 800,
//! above the transport-wide feedback's recorder at 5 500 that needs the number) it takes the
//! extension off again. Both sides then bring the header into [`canonical`] form, so the bytes
//! the encoder coded and the bytes the decoder decodes with are the same.

use rtc::interceptor::{Packet, StreamInfo, TaggedPacket};
use rtc::rtp::header::Header;

use crate::tap::{Tap, TapHooks};

/// The transport-wide sequence number's header extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Takes the extension numbered `strip` (if any) off `header` and writes what is left the one
/// way: no extension block when none is left, otherwise the padding its marshalling writes.
pub fn canonical(header: &mut Header, strip: Option<u8>) {
    if !header.extension {
        header.extensions.clear();
        header.extensions_padding = 0;
        return;
    }
    if let Some(id) = strip {
        header.extensions.retain(|e| e.id != id);
    }
    // An empty RFC 3550 block parses as one empty extension: none.
    header
        .extensions
        .retain(|e| !(e.id == 0 && e.payload.is_empty()));
    if header.extensions.is_empty() {
        header.extension = false;
        header.extension_profile = 0;
        header.extensions_padding = 0;
    } else {
        let len = header.get_extension_payload_len();
        header.extensions_padding = (4 - len % 4) % 4;
    }
}

/// The transport-wide number's extension id among a stream's negotiated extensions.
pub fn twcc_id(info: &StreamInfo) -> Option<u8> {
    info.rtp_header_extensions
        .iter()
        .find(|e| e.uri == TRANSPORT_CC_URI)
        .and_then(|e| u8::try_from(e.id).ok())
}

/// Takes the transport-wide number off inbound RTP (see the module's note).
pub type TwccStrip = Tap<StripHooks>;

/// The hooks of [`TwccStrip`].
#[derive(Default)]
pub struct StripHooks {
    /// The extension's id (one per connection: the number is transport-wide).
    id: Option<u8>,
}

/// A stripper; learns the extension's id as the remote's streams are bound.
pub fn twcc_strip() -> TwccStrip {
    Tap::new(StripHooks::default())
}

impl TapHooks for StripHooks {
    fn on_read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            canonical(&mut p.header, self.id);
        }
        Some(msg)
    }

    fn on_bind_remote(&mut self, info: &StreamInfo) {
        if let Some(id) = twcc_id(info) {
            self.id = Some(id);
        }
    }
}
