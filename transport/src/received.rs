//! Interceptors that count arriving packets. [`ReceivedCount`] counts every packet arriving on a connection (RTP and RTCP): proof of
//! life while ICE says "disconnected". ICE judges a path by its STUN checks alone; on a link
//! losing most packets the checks fail for seconds on end while media still gets through, and
//! a connection that still receives is not lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::interceptor::TaggedPacket;

use crate::tap::{Tap, TapHooks};

/// Counts inbound packets into a shared counter; passes everything on.
pub type ReceivedCount = Tap<ReceivedHooks>;

/// The hooks of [`ReceivedCount`].
pub struct ReceivedHooks {
    received: Arc<AtomicU64>,
}

/// A counter adding to `received`.
pub fn received_count(received: Arc<AtomicU64>) -> ReceivedCount {
    Tap::new(ReceivedHooks { received })
}

impl TapHooks for ReceivedHooks {
    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        self.received.fetch_add(1, Ordering::Relaxed);
        Some(msg)
    }
}

/// Counts the inbound packets the FEC decoder rebuilt (above it in the chain); passes
/// everything on.
pub type FecRecoveredCount = Tap<FecRecoveredHooks>;

/// The hooks of [`FecRecoveredCount`].
pub struct FecRecoveredHooks {
    recovered: Arc<AtomicU64>,
    totals: Option<Arc<crate::fec::FecTotals>>,
}

/// A counter adding to `recovered` (and to `totals`: the owner's, over its connections).
pub fn fec_recovered_count(
    recovered: Arc<AtomicU64>,
    totals: Option<Arc<crate::fec::FecTotals>>,
) -> FecRecoveredCount {
    Tap::new(FecRecoveredHooks { recovered, totals })
}

impl TapHooks for FecRecoveredHooks {
    fn on_read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if msg
            .message
            .attributes
            .iter()
            .any(|a| matches!(a, rtc::interceptor::Attribute::RecoveredByFec))
        {
            self.recovered.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = &self.totals {
                t.rebuilt.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(msg)
    }
}
