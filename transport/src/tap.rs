//! A pass-through interceptor with hooks: the queues, polling and stream binding every one of
//! our small interceptors needs, so each of them says only what it does to a packet.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What an interceptor does to packets on their way in (from the wire) and out (to it).
/// Returning `None` drops the packet.
pub trait TapHooks: Send + Sync + 'static {
    /// An inbound packet.
    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }
    /// An outbound packet.
    fn on_write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }
    /// A stream the remote sends was bound (its SSRC and negotiated extensions).
    fn on_bind_remote(&mut self, _info: &StreamInfo) {}
}

/// An interceptor running `H` on every packet.
#[derive(Default)]
pub struct Tap<H> {
    /// The hooks.
    pub hooks: H,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
}

impl<H: TapHooks> Tap<H> {
    /// An interceptor around `hooks`.
    pub fn new(hooks: H) -> Tap<H> {
        Tap {
            hooks,
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
        }
    }
}

impl<H: TapHooks> Protocol<TaggedPacket, TaggedPacket, ()> for Tap<H> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(msg) = self.hooks.on_read(msg) {
            self.inbound.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(msg) = self.hooks.on_write(msg) {
            self.outbound.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.outbound.pop_front()
    }
}

impl<H: TapHooks> Interceptor for Tap<H> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.hooks.on_bind_remote(info);
    }
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
