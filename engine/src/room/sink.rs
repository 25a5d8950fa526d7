//! Where engine events go: a bounded channel that never blocks the engine, and an optional
//! callback to wake a UI.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::room::events::Event;

/// A callback run after each event (to wake a UI).
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

/// Where events go: a bounded channel that never blocks the engine. If the application stops
/// draining it, new events are dropped and counted rather than stalling the connection.
#[derive(Clone)]
pub struct EventSink {
    tx: crossbeam_channel::Sender<Event>,
    dropped: Arc<AtomicU64>,
    notifier: Arc<parking_lot::Mutex<Option<Notifier>>>,
}

impl EventSink {
    /// A sink holding up to `capacity` undrained events, and its receiver.
    pub fn new(capacity: usize) -> (EventSink, crossbeam_channel::Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            EventSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                notifier: Arc::new(parking_lot::Mutex::new(None)),
            },
            rx,
        )
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        tracing::debug!(%event, "engine event");
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let notifier = self.notifier.lock().clone();
        if let Some(n) = notifier {
            n();
        }
    }

    /// Events dropped because the application did not drain them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Calls `f` after every event (for example to wake a UI).
    pub fn set_notifier(&self, f: Option<Notifier>) {
        *self.notifier.lock() = f;
    }
}
