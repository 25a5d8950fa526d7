//! Frame channels: bounded, lock-free hand-offs that drop the oldest frame rather than wait.
//!
//! Latency is the product: a slow consumer must never stall its producer or make frames queue
//! up. When the channel is full, [`FrameSender::send`] removes the oldest queued frame (counted
//! in [`ChannelStats::dropped`]) and puts the new one in. Built on crossbeam's bounded channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

/// Counters every channel keeps; shown in stats.
#[derive(Debug, Default)]
pub struct ChannelStats {
    sent: AtomicU64,
    dropped: AtomicU64,
    receivers: std::sync::atomic::AtomicUsize,
}

impl ChannelStats {
    /// Frames put in.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Frames thrown away because the consumer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The producing end.
#[derive(Debug)]
pub struct FrameSender<T> {
    tx: Sender<T>,
    /// Kept to pop the oldest frame when full.
    rx: Receiver<T>,
    stats: Arc<ChannelStats>,
}

impl<T> Clone for FrameSender<T> {
    fn clone(&self) -> Self {
        FrameSender {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The consuming end.
#[derive(Debug)]
pub struct FrameReceiver<T> {
    rx: Receiver<T>,
    stats: Arc<ChannelStats>,
}

impl<T> Drop for FrameReceiver<T> {
    fn drop(&mut self) {
        self.stats.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T> Clone for FrameReceiver<T> {
    fn clone(&self) -> Self {
        self.stats.receivers.fetch_add(1, Ordering::AcqRel);
        FrameReceiver {
            rx: self.rx.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// A channel holding at most `capacity` frames (at least 1).
pub fn frame_channel<T>(capacity: usize) -> (FrameSender<T>, FrameReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let stats = Arc::new(ChannelStats::default());
    stats.receivers.store(1, Ordering::Release);
    (
        FrameSender {
            tx,
            rx: rx.clone(),
            stats: stats.clone(),
        },
        FrameReceiver { rx, stats },
    )
}

impl<T> FrameSender<T> {
    /// Hands `frame` on at once. If the channel is full the oldest queued frame is dropped.
    /// Returns false only if every receiver is gone.
    pub fn send(&self, frame: T) -> bool {
        if self.stats.receivers.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut frame = frame;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        // A consumer may take frames between our attempts; a few rounds always suffice.
        for _ in 0..8 {
            match self.tx.try_send(frame) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    frame = back;
                    if self.rx.try_recv().is_ok() {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The channel's counters.
    pub fn stats(&self) -> &Arc<ChannelStats> {
        &self.stats
    }
}

impl<T> FrameReceiver<T> {
    /// The oldest waiting frame, if any; never blocks.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// The newest waiting frame, discarding older ones (counted as dropped): what a renderer
    /// wants. Never blocks.
    pub fn latest(&self) -> Option<T> {
        let mut newest = None;
        loop {
            match self.rx.try_recv() {
                Ok(f) => {
                    if newest.replace(f).is_some() {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return newest,
            }
        }
    }

    /// Waits up to `timeout` for a frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The channel's counters.
    pub fn stats(&self) -> &Arc<ChannelStats> {
        &self.stats
    }
}

/// One producer, any number of frame channels: a capture thread hands each frame to every
/// subscriber (preview, encoder) without copying it. Subscribers whose receivers are gone are
/// pruned on the next send.
pub struct Fanout<T> {
    senders: parking_lot::Mutex<Vec<FrameSender<T>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout {
            senders: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Fanout<T> {
    /// A new subscriber holding at most `capacity` frames.
    pub fn subscribe(&self, capacity: usize) -> FrameReceiver<T> {
        let (tx, rx) = frame_channel(capacity);
        self.senders.lock().push(tx);
        rx
    }

    /// Hands `frame` to every subscriber (cloning the handle, which for `Arc`s is a count).
    pub fn send(&self, frame: &T) {
        self.senders.lock().retain(|tx| tx.send(frame.clone()));
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        let mut senders = self.senders.lock();
        senders.retain(|tx| tx.stats.receivers.load(Ordering::Acquire) > 0);
        senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_full_channel_drops_the_oldest_and_never_blocks() {
        let (tx, rx) = frame_channel::<u32>(3);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(tx.send(i));
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "send never waits");
        assert_eq!(tx.len(), 3);
        assert_eq!(rx.stats().dropped(), 997);
        assert_eq!(rx.stats().sent(), 1000);
        assert_eq!(
            (rx.try_recv(), rx.try_recv(), rx.try_recv()),
            (Some(997), Some(998), Some(999))
        );
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn latest_takes_the_newest() {
        let (tx, rx) = frame_channel::<u32>(4);
        for i in 0..3 {
            tx.send(i);
        }
        assert_eq!(rx.latest(), Some(2));
        assert_eq!(rx.stats().dropped(), 2);
        assert_eq!(rx.latest(), None);
    }

    #[test]
    fn a_slow_consumer_sees_only_recent_frames_in_order() {
        let (tx, rx) = frame_channel::<u64>(2);
        let producer = std::thread::spawn(move || {
            let t0 = Instant::now();
            for i in 0..20_000u64 {
                tx.send(i);
            }
            t0.elapsed()
        });
        let mut got = Vec::new();
        while got.len() < 50 {
            if let Some(f) = rx.recv_timeout(Duration::from_millis(200)) {
                got.push(f);
                std::thread::sleep(Duration::from_micros(200));
            } else {
                break;
            }
        }
        let took = producer.join().expect("producer");
        assert!(
            took < Duration::from_secs(2),
            "the producer was never held up: {took:?}"
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept: {got:?}");
        assert!(rx.stats().dropped() > 0);
        assert_eq!(rx.stats().sent(), 20_000);
    }

    #[test]
    fn send_reports_a_gone_receiver() {
        let (tx, rx) = frame_channel::<u8>(1);
        let rx2 = rx.clone();
        drop(rx);
        assert!(tx.send(1), "a clone still listens");
        drop(rx2);
        assert!(!tx.send(2), "nobody listens");
        assert_eq!(tx.stats().sent(), 1);
    }
}
