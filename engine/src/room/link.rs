//! Sans-I/O bookkeeping of the signaling link: requests awaiting answers, heartbeats, the dead
//! link check, reconnect backoff and the resume ticket.
//!
//! The connection task owns the socket; this owns the clock decisions. It is told when the link
//! came up, what was sent and received, and the time; [`Link::handle_timeout`] says what to do
//! next ([`LinkDue`]), and [`Link::poll_timeout`] when to ask again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use onair_protocol::messages::ResumeTicket;

/// The first reconnect attempt waits this long after a failed one.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Reconnect attempts are never further apart than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a request in flight was, so its answer can be routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Login to a room.
    Login(String),
    /// Logout of a room.
    Logout(String),
    /// A heartbeat.
    Heartbeat,
    /// A publish offer (stream, generation).
    Publish(String, u64),
    /// A play offer (stream, generation).
    Play(String, u64),
    /// An ICE restart offer (stream, publishing, generation, its number).
    IceRestart(String, bool, u64, u64),
    /// A token renewal: a refusal is reported.
    RenewToken,
    /// A room message (room, sequence number, kind).
    Message(String, u64, onair_protocol::messages::MessageKind),
    /// A stream extra info update (sequence number, channel).
    StreamExtra(u64, onair_media::local::PublishChannel),
    /// A room extra info key (room, sequence number, key).
    ExtraInfo(String, u64, String),
    /// Anything whose answer does not matter (stop publish, stop play).
    Other,
}

/// What the link needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDue {
    /// Nothing.
    Nothing,
    /// Send a heartbeat.
    Heartbeat,
    /// The link is dead (silent relay or unanswered request): drop it and reconnect.
    Dead(&'static str),
    /// Time to (re)connect.
    Connect,
}

#[derive(Debug)]
struct Up {
    heartbeat_every: Duration,
    dead_after: Duration,
    last_rx: Instant,
    next_heartbeat: Instant,
}

/// The link's timers and requests in flight.
#[derive(Debug)]
pub struct Link {
    up: Option<Up>,
    pending: HashMap<u64, (Pending, Instant)>,
    resume: Option<ResumeTicket>,
    retry_at: Option<Instant>,
    backoff: Duration,
    request_timeout: Duration,
}

impl Link {
    /// A link that is down and not trying; requests time out after `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        Link {
            up: None,
            pending: HashMap::new(),
            resume: None,
            retry_at: None,
            backoff: BACKOFF_MIN,
            request_timeout,
        }
    }

    /// Whether the socket is up (hello answered).
    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    /// The ticket to resume the relay session with, if there was one.
    pub fn resume_ticket(&self) -> Option<ResumeTicket> {
        self.resume.clone()
    }

    /// Forget the session (the relay said it timed out: resuming cannot work).
    pub fn forget_session(&mut self) {
        self.resume = None;
    }

    /// When to try connecting next, if at all.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Connect as soon as possible (a first login while down and not already trying).
    pub fn connect_soon(&mut self, now: Instant) {
        if self.up.is_none() && self.retry_at.is_none() {
            self.retry_at = Some(now);
        }
    }

    /// The relay answered hello: the link is up with the relay's heartbeat settings.
    pub fn connected(
        &mut self,
        now: Instant,
        ticket: ResumeTicket,
        heartbeat_interval_ms: u64,
        heartbeat_timeout_ms: u64,
    ) {
        let every = Duration::from_millis(heartbeat_interval_ms.max(10));
        // Symmetric with the relay: it drops us after this long, we drop it too. A frozen
        // relay is caught sooner by the request timeout on an unanswered heartbeat.
        let dead_after = Duration::from_millis(heartbeat_timeout_ms).max(every * 3);
        self.up = Some(Up {
            heartbeat_every: every,
            dead_after,
            last_rx: now,
            next_heartbeat: now + every,
        });
        self.resume = Some(ticket);
        self.retry_at = None;
        self.backoff = BACKOFF_MIN;
    }

    /// A connect attempt failed: try again after the backoff (doubling up to [`BACKOFF_MAX`]).
    pub fn connect_failed(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The link went down. Returns the requests that were in flight (their answers will never
    /// come). With `reconnect`, the next attempt is due at once (`soon`) or after the minimum
    /// backoff.
    pub fn lost(&mut self, now: Instant, reconnect: bool, soon: bool) -> Vec<Pending> {
        self.up = None;
        self.backoff = BACKOFF_MIN;
        self.retry_at = reconnect.then(|| if soon { now } else { now + BACKOFF_MIN });
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|(p, _)| p)
            .collect()
    }

    /// Nothing to keep the link for: forget everything and stop retrying.
    pub fn go_idle(&mut self) {
        self.up = None;
        self.pending.clear();
        self.retry_at = None;
        self.resume = None;
        self.backoff = BACKOFF_MIN;
    }

    /// Whether only requests whose answers do not matter are in flight.
    pub fn only_background_pending(&self) -> bool {
        self.pending
            .values()
            .all(|(p, _)| matches!(p, Pending::Heartbeat | Pending::Other))
    }

    /// Whether a logout is still waiting for its answer.
    pub fn logout_pending(&self) -> bool {
        self.pending
            .values()
            .any(|(p, _)| matches!(p, Pending::Logout(_)))
    }

    /// Request `id` was sent at `now`.
    pub fn sent(&mut self, id: u64, what: Pending, now: Instant) {
        self.pending.insert(id, (what, now));
    }

    /// Something arrived from the relay at `now`.
    pub fn received(&mut self, now: Instant) {
        if let Some(up) = self.up.as_mut() {
            up.last_rx = now;
        }
    }

    /// The answer to request `id` arrived: what it was for.
    pub fn answered(&mut self, id: u64) -> Option<Pending> {
        self.pending.remove(&id).map(|(p, _)| p)
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Some(up) = &self.up else {
            return self.retry_at;
        };
        let oldest = self.pending.values().map(|(_, at)| *at).min();
        let slack = Duration::from_millis(1);
        [
            Some(up.next_heartbeat),
            Some(up.last_rx + up.dead_after + slack),
            oldest.map(|at| at + self.request_timeout + slack),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> LinkDue {
        let Some(up) = self.up.as_mut() else {
            return match self.retry_at {
                Some(at) if now >= at => {
                    self.retry_at = None;
                    LinkDue::Connect
                }
                _ => LinkDue::Nothing,
            };
        };
        if now.saturating_duration_since(up.last_rx) > up.dead_after {
            return LinkDue::Dead("relay silent for too long");
        }
        let timeout = self.request_timeout;
        if self
            .pending
            .values()
            .any(|(_, sent)| now.saturating_duration_since(*sent) > timeout)
        {
            return LinkDue::Dead("request timed out");
        }
        if now >= up.next_heartbeat {
            up.next_heartbeat = now + up.heartbeat_every;
            return LinkDue::Heartbeat;
        }
        LinkDue::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> ResumeTicket {
        ResumeTicket {
            session_id: 7,
            secret: "s".into(),
        }
    }

    #[test]
    fn reconnect_backoff_doubles_to_two_seconds_and_resets_on_success() {
        let t0 = Instant::now();
        let mut link = Link::new(Duration::from_secs(5));
        link.connect_soon(t0);
        assert_eq!(link.handle_timeout(t0), LinkDue::Connect);
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            link.connect_failed(now);
            let at = link.poll_timeout().expect("a retry is scheduled");
            waits.push((at - now).as_millis());
            assert_eq!(
                link.handle_timeout(at - Duration::from_millis(1)),
                LinkDue::Nothing
            );
            assert_eq!(link.handle_timeout(at), LinkDue::Connect);
            now = at;
        }
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        link.connected(now, ticket(), 1000, 10_000);
        assert!(link.is_up());
        let pending = link.lost(now, true, false);
        assert!(pending.is_empty());
        assert_eq!(
            link.poll_timeout(),
            Some(now + BACKOFF_MIN),
            "backoff reset"
        );
        assert_eq!(
            link.resume_ticket(),
            Some(ticket()),
            "the ticket survives a drop"
        );
    }

    #[test]
    fn heartbeats_follow_the_relays_interval() {
        let t0 = Instant::now();
        let mut link = Link::new(Duration::from_secs(5));
        link.connected(t0, ticket(), 500, 10_000);
        assert_eq!(link.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(
            link.handle_timeout(t0 + Duration::from_millis(499)),
            LinkDue::Nothing
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(link.handle_timeout(t1), LinkDue::Heartbeat);
        link.sent(1, Pending::Heartbeat, t1);
        link.received(t1 + Duration::from_millis(2));
        assert_eq!(link.answered(1), Some(Pending::Heartbeat));
        assert_eq!(
            link.handle_timeout(t1 + Duration::from_millis(100)),
            LinkDue::Nothing
        );
        assert_eq!(
            link.handle_timeout(t1 + Duration::from_millis(500)),
            LinkDue::Heartbeat
        );
    }

    #[test]
    fn a_silent_relay_or_an_unanswered_request_kills_the_link() {
        let t0 = Instant::now();
        let mut link = Link::new(Duration::from_secs(5));
        // A 1 s timeout is raised to three heartbeats.
        link.connected(t0, ticket(), 1000, 1000);
        link.received(t0);
        assert_eq!(
            link.handle_timeout(t0 + Duration::from_millis(3001)),
            LinkDue::Dead("relay silent for too long")
        );

        let mut link = Link::new(Duration::from_secs(2));
        link.connected(t0, ticket(), 1000, 60_000);
        link.sent(9, Pending::Login("r".into()), t0);
        let t = t0 + Duration::from_millis(2100);
        link.received(t);
        assert_eq!(link.handle_timeout(t), LinkDue::Dead("request timed out"));
        let lost = link.lost(t, true, true);
        assert_eq!(lost, [Pending::Login("r".into())]);
        assert_eq!(
            link.handle_timeout(t),
            LinkDue::Connect,
            "reconnect at once"
        );
    }

    #[test]
    fn idle_forgets_the_session_and_stops_retrying() {
        let t0 = Instant::now();
        let mut link = Link::new(Duration::from_secs(5));
        link.connected(t0, ticket(), 1000, 10_000);
        link.sent(1, Pending::Other, t0);
        assert!(link.only_background_pending());
        link.sent(2, Pending::Logout("r".into()), t0);
        assert!(!link.only_background_pending() && link.logout_pending());
        link.go_idle();
        assert!(!link.is_up());
        assert_eq!(link.poll_timeout(), None);
        assert_eq!(link.resume_ticket(), None);
        assert_eq!(
            link.handle_timeout(t0 + Duration::from_secs(60)),
            LinkDue::Nothing
        );
    }
}
