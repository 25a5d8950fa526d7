//! Sans-I/O state machines for one publish session and one play session.
//!
//! They own no peer connection, socket, task or clock: the connection task feeds them what
//! happened (a command, the relay's answer, a peer connection's state, the time) and carries out
//! the [`Action`]s they return, as `RelayState` does on the relay side. Every decision the seed's
//! publisher and player flows make lives here: the state sequences (NoPublish → PublishRequesting
//! → Publishing, NoPlay → PlayRequesting → Playing), which relay refusals are final, how long a
//! negotiation may take ([`SessionTimers::connect_timeout`]), riding out a disconnected
//! connection ([`SessionTimers::disconnect_grace`], with an ICE restart after
//! [`ICE_RESTART_AFTER`]), retrying with a backoff (1 s, 2 s, 4 s … up
//! to [`RETRY_MAX`], reset once media flows), ignoring reports from an older negotiation (its
//! *generation*), and the first-frame timing.

use std::time::{Duration, Instant};

use crate::error::{ErrorCode, WireError};
use crate::live::PeerLink;
use crate::room::events::{Event, PlayerState, PublisherState};

/// How long the first retry after a failure waits; each further failure in a row doubles it.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest wait between two attempts after failures.
pub const RETRY_MAX: Duration = Duration::from_secs(16);

/// The longest wait between two looks for a stream that does not exist yet (the room's
/// announcement of the stream also wakes the player at once).
pub const STREAM_POLL_MAX: Duration = Duration::from_secs(2);

/// The default [`SessionTimers::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection disconnected this long gets an ICE restart (fresh credentials on the same
/// connection, answered by the relay) before it can count as lost; from the first restart it
/// has the connect timeout to come back.
pub const ICE_RESTART_AFTER: Duration = Duration::from_millis(1500);

/// While it stays disconnected, the restart is tried again this often: a restart made while
/// the path is still down spends its connectivity checks (about 2 s of them) and then waits for
/// nothing, so a later one must find the path when it is back.
pub const ICE_RESTART_EVERY: Duration = Duration::from_secs(3);

/// The default [`SessionTimers::disconnect_grace`].
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// The wait before attempt number `failures + 1` after `failures` failures in a row:
/// 1 s, 2 s, 4 s, 8 s, then 16 s for good.
pub fn backoff(failures: u32) -> Duration {
    // Past 2^16 the cap holds anyway; the shift must not overflow.
    RETRY_AFTER
        .saturating_mul(1 << failures.min(16))
        .min(RETRY_MAX)
}

/// How long a session waits for things that may never happen (from the connection settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimers {
    /// How long the offer and the relay's answer may take, and then (from the answer on) the
    /// peer connection until it is connected; past it the attempt fails with
    /// PublishConnectTimeout / PlayConnectTimeout and is retried.
    pub connect_timeout: Duration,
    /// How long a connection that was up may stay disconnected before it counts as lost.
    pub disconnect_grace: Duration,
}

impl Default for SessionTimers {
    fn default() -> Self {
        SessionTimers {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
        }
    }
}

/// What the connection task must do for a session.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Report an event to the application.
    Emit(Event),
    /// Create a peer connection and its offer for `generation`, then call `offer_ready` or
    /// `offer_failed`.
    Offer {
        /// The negotiation this offer belongs to.
        generation: u64,
    },
    /// Send the publish (or play) request carrying the offer made for `generation`.
    SendRequest {
        /// The negotiation.
        generation: u64,
    },
    /// Apply the relay's answer and start the media (encoders, or decoders), then call
    /// `accept_failed` if that fails.
    Accept {
        /// The negotiation.
        generation: u64,
        /// The relay's SDP answer.
        sdp: String,
    },
    /// Restart ICE on the peer connection of `generation` (a restart offer to the relay, its
    /// answer applied); nothing to report back: the connection's state tells.
    RestartIce {
        /// The negotiation whose connection restarts.
        generation: u64,
    },
    /// Close the peer connection and stop its media threads.
    DropPeer,
    /// Tell the relay this session no longer publishes (or plays) the stream.
    SendStop,
    /// The local channel no longer publishes (capture may stop).
    ReleaseChannel,
}

/// Where a session's negotiation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No peer connection; negotiate when the link and a room are ready.
    Idle,
    /// An offer is being made (within the connect timeout, with the request).
    Offering,
    /// The offer went to the relay; waiting for its answer (within the connect timeout).
    Requested,
    /// The answer was applied; waiting for the connection to come up (within the connect
    /// timeout, counted afresh from the answer).
    Connecting,
    /// Media flows.
    Up,
    /// Media flowed, but the connection is disconnected: still Publishing / Playing for the
    /// application, lost unless it is connected again by this time.
    Disconnected(Instant),
    /// A negotiation failed; try again at this time.
    RetryAt(Instant),
    /// Over for good (stopped, or refused with a final error).
    Ended,
}

/// A timer of the current attempt that ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// No answer from the relay (Offering, Requested) within the connect timeout.
    Answer,
    /// No connection (Connecting) within the connect timeout after the answer.
    Connect,
    /// Disconnected for longer than the grace.
    Grace,
}

/// What a peer connection report means for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerChange {
    /// Nothing to report (stale, repeated, a disconnect being waited out, or back within the
    /// grace).
    Nothing,
    /// Connected for the first time: media flows.
    Up,
    /// Gone for good.
    Lost,
}

/// The part both machines share: phase, generation, timers, backoff and the seed's state with
/// its events.
#[derive(Debug)]
struct Core<S> {
    stream_id: String,
    state: S,
    phase: Phase,
    generation: u64,
    timers: SessionTimers,
    /// When Offering / Requested / Connecting gives up.
    deadline: Option<Instant>,
    /// Failures in a row since media last flowed (the backoff's exponent).
    failures: u32,
    /// When a disconnected connection gets its next ICE restart.
    restart_at: Option<Instant>,
    /// ICE restarts during the current disconnection.
    restarts: u32,
    /// When packets last arrived while disconnected (see `on_traffic`).
    last_traffic: Option<Instant>,
}

impl<S: Copy + PartialEq> Core<S> {
    fn new(stream_id: &str, state: S, timers: SessionTimers) -> Self {
        Core {
            stream_id: stream_id.to_string(),
            state,
            phase: Phase::Idle,
            generation: 0,
            timers,
            deadline: None,
            failures: 0,
            restart_at: None,
            restarts: 0,
            last_traffic: None,
        }
    }

    /// Whether a report about `generation` is about the current negotiation.
    fn current(&self, generation: u64) -> bool {
        generation == self.generation && self.phase != Phase::Ended
    }

    /// A report that the peer connection of `generation` is `link` at `now`. A report that does
    /// not fit the phase is stale: after our own drop, the closing connection's reports are not
    /// news even though their generation is current. Disconnected while connecting changes
    /// nothing (the connect timeout runs on).
    fn on_peer(&mut self, generation: u64, link: PeerLink, now: Instant) -> PeerChange {
        if !self.current(generation) {
            return PeerChange::Nothing;
        }
        match (self.phase, link) {
            (Phase::Connecting, PeerLink::Up) => {
                self.phase = Phase::Up;
                self.deadline = None;
                self.failures = 0;
                PeerChange::Up
            }
            (Phase::Up, PeerLink::Disconnected) => {
                self.phase = Phase::Disconnected(now + self.timers.disconnect_grace);
                self.restart_at = Some(now + ICE_RESTART_AFTER);
                self.restarts = 0;
                PeerChange::Nothing
            }
            (Phase::Disconnected(_), PeerLink::Up) => {
                self.phase = Phase::Up;
                self.restart_at = None;
                PeerChange::Nothing
            }
            (Phase::Connecting | Phase::Up | Phase::Disconnected(_), PeerLink::Down) => {
                PeerChange::Lost
            }
            _ => PeerChange::Nothing,
        }
    }

    /// A connection disconnected for [`ICE_RESTART_AFTER`]: restart ICE, again every
    /// [`ICE_RESTART_EVERY`] while it stays disconnected; from the first restart on, the
    /// connection has the connect timeout before it counts as lost.
    fn restart_due(&mut self, now: Instant) -> Option<Action> {
        let Phase::Disconnected(at) = self.phase else {
            return None;
        };
        // Past the deadline the connection is lost, not restarted once more.
        if now >= at || self.restart_at.is_none_or(|r| now < r) {
            return None;
        }
        // Media still arrives (ICE judges by its checks alone, which a very lossy link fails):
        // a restart would drop the working pair until new checks pass. Later, if it stops.
        if let Some(t) = self.last_traffic
            && now.saturating_duration_since(t) < ICE_RESTART_AFTER
        {
            self.restart_at = Some(t + ICE_RESTART_AFTER);
            return None;
        }
        self.restart_at = Some(now + ICE_RESTART_EVERY);
        if self.restarts == 0 {
            self.phase = Phase::Disconnected(at.max(now + self.timers.connect_timeout));
        }
        self.restarts += 1;
        Some(Action::RestartIce {
            generation: self.generation,
        })
    }

    /// Packets still arrived (by `now`) on a connection ICE calls disconnected: it is not
    /// lost, and the grace runs again from now.
    fn on_traffic(&mut self, now: Instant) {
        if let Phase::Disconnected(at) = self.phase {
            self.last_traffic = Some(now);
            self.phase = Phase::Disconnected(at.max(now + self.timers.disconnect_grace));
        }
    }

    fn negotiate_if_ready(
        &mut self,
        ready: bool,
        next_generation: &mut u64,
        now: Instant,
    ) -> Vec<Action> {
        if !ready || self.phase != Phase::Idle {
            return Vec::new();
        }
        *next_generation += 1;
        self.generation = *next_generation;
        self.phase = Phase::Offering;
        self.deadline = Some(now + self.timers.connect_timeout);
        vec![Action::Offer {
            generation: self.generation,
        }]
    }

    /// The relay's answer was accepted at `now`: the connection has the connect timeout to
    /// come up.
    fn connecting(&mut self, now: Instant) {
        self.phase = Phase::Connecting;
        self.deadline = Some(now + self.timers.connect_timeout);
    }

    /// An offer for an old negotiation is dropped; the current one goes to the relay.
    fn offer_ready(&mut self, generation: u64) -> Vec<Action> {
        if !self.current(generation) || self.phase != Phase::Offering {
            return vec![Action::DropPeer];
        }
        self.phase = Phase::Requested;
        vec![Action::SendRequest { generation }]
    }

    /// A retry that is due makes the session ready to negotiate again; a timer of the current
    /// attempt that ran out is returned for the session to fail the attempt.
    fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        let due = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        match self.phase {
            Phase::RetryAt(at) if now >= at => {
                self.phase = Phase::Idle;
                None
            }
            Phase::Offering | Phase::Requested if due(self.deadline) => Some(Expired::Answer),
            Phase::Connecting if due(self.deadline) => Some(Expired::Connect),
            Phase::Disconnected(at) if now >= at => Some(Expired::Grace),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Disconnected(at) => Some(self.restart_at.map_or(at, |r| r.min(at))),
            Phase::RetryAt(at) => Some(at),
            Phase::Offering | Phase::Requested | Phase::Connecting => self.deadline,
            Phase::Idle | Phase::Up | Phase::Ended => None,
        }
    }

    /// The attempt failed at `now`: try again after the backoff, which doubles for the next
    /// failure in a row.
    fn retry(&mut self, now: Instant) {
        self.restart_at = None;
        self.phase = Phase::RetryAt(now + backoff(self.failures));
        self.deadline = None;
        self.failures = self.failures.saturating_add(1);
    }

    /// Waiting, not failing (the stream is not there yet): look again soon, at the latest after
    /// [`STREAM_POLL_MAX`], and without backing off further (a retry already due sooner stays).
    fn poll_again(&mut self, now: Instant) {
        let at = now + backoff(self.failures).min(STREAM_POLL_MAX);
        self.phase = match self.phase {
            Phase::RetryAt(due) => Phase::RetryAt(due.min(at)),
            _ => Phase::RetryAt(at),
        };
        self.deadline = None;
    }

    /// Why the attempt's timer ran out, for `extended_data`.
    fn expired_message(&self, expired: Expired) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        match expired {
            Expired::Answer => format!(
                "the relay did not answer within {:.1} s",
                secs(self.timers.connect_timeout)
            ),
            Expired::Connect => format!(
                "the media connection did not come up within {:.1} s",
                secs(self.timers.connect_timeout)
            ),
            Expired::Grace => format!(
                "the media connection stayed disconnected for {:.1} s",
                secs(self.timers.disconnect_grace)
            ),
        }
    }
}

/// The seed's `extendedData`: `{}` or `{"message": …}`.
pub fn extended_data(message: &str) -> String {
    if message.is_empty() {
        "{}".to_string()
    } else {
        serde_json::json!({ "message": message }).to_string()
    }
}

/// Publish refusals that retrying cannot fix.
pub fn is_final_publish_error(code: u32) -> bool {
    [
        ErrorCode::StreamIdTaken,
        ErrorCode::PublishNotAuthorized,
        ErrorCode::NotLoggedIn,
        ErrorCode::InvalidStreamId,
        ErrorCode::TooManyStreams,
        ErrorCode::ExtraInfoTooLong,
    ]
    .iter()
    .any(|c| c.code() == code)
}

/// One stream being published: NoPublish → PublishRequesting → Publishing, retried until it is
/// stopped or refused for good.
#[derive(Debug)]
pub struct PublishSession {
    core: Core<PublisherState>,
}

impl PublishSession {
    /// A session for `stream_id` waiting as `timers` say, and its first event
    /// (PublishRequesting).
    pub fn start(stream_id: &str, timers: SessionTimers) -> (Self, Vec<Action>) {
        let mut s = PublishSession {
            core: Core::new(stream_id, PublisherState::NoPublish, timers),
        };
        let mut out = Vec::new();
        s.set_state(PublisherState::PublishRequesting, 0, "", &mut out);
        (s, out)
    }

    /// The seed's state.
    pub fn state(&self) -> PublisherState {
        self.core.state
    }

    /// Where the negotiation stands.
    pub fn phase(&self) -> Phase {
        self.core.phase
    }

    /// The current negotiation's generation.
    pub fn generation(&self) -> u64 {
        self.core.generation
    }

    /// Whether the session is over (the owner removes it).
    pub fn is_ended(&self) -> bool {
        self.core.phase == Phase::Ended
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Packets still arrive (by `now`) on the connection: a disconnection is not a loss yet.
    pub fn on_traffic(&mut self, now: Instant) {
        self.core.on_traffic(now);
    }

    /// Time passed: a retry that is due makes the session ready to negotiate again; an attempt
    /// that took too long (no answer or no connection within the connect timeout) fails with
    /// PublishConnectTimeout, and a connection disconnected for longer than the grace is lost;
    /// both are retried.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(restart) = self.core.restart_due(now) {
            return vec![restart];
        }
        let Some(expired) = self.core.handle_timeout(now) else {
            return out;
        };
        let code = match expired {
            Expired::Answer | Expired::Connect => ErrorCode::PublishConnectTimeout,
            Expired::Grace => ErrorCode::MediaNegotiationFailed,
        };
        let message = self.core.expired_message(expired);
        self.fail(code.code(), &message, now, &mut out);
        out
    }

    /// Starts a negotiation if none runs or waits and `ready` (connected, room logged in) at
    /// `now`. `next_generation` is the engine-wide counter, so no two negotiations share a
    /// number.
    pub fn negotiate_if_ready(
        &mut self,
        ready: bool,
        next_generation: &mut u64,
        now: Instant,
    ) -> Vec<Action> {
        self.core.negotiate_if_ready(ready, next_generation, now)
    }

    /// The offer for `generation` is ready: send it.
    pub fn offer_ready(&mut self, generation: u64) -> Vec<Action> {
        self.core.offer_ready(generation)
    }

    /// Making the offer failed.
    pub fn offer_failed(&mut self, generation: u64, message: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) {
            return out;
        }
        let code = ErrorCode::MediaNegotiationFailed.code();
        self.set_state(PublisherState::PublishRequesting, code, message, &mut out);
        self.core.retry(now);
        out
    }

    /// The relay answered the publish request of `generation`.
    pub fn on_answer(
        &mut self,
        generation: u64,
        answer: Result<String, WireError>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) || self.core.phase != Phase::Requested {
            return out;
        }
        match answer {
            Ok(sdp) => {
                self.core.connecting(now);
                out.push(Action::Accept { generation, sdp });
            }
            Err(e) if is_final_publish_error(e.code) => {
                out.push(Action::DropPeer);
                self.set_state(PublisherState::NoPublish, e.code, &e.message, &mut out);
                out.push(Action::ReleaseChannel);
                self.core.phase = Phase::Ended;
            }
            Err(e) => {
                out.push(Action::DropPeer);
                self.set_state(
                    PublisherState::PublishRequesting,
                    e.code,
                    &e.message,
                    &mut out,
                );
                self.core.retry(now);
            }
        }
        out
    }

    /// Applying the answer or starting the encoders failed.
    pub fn accept_failed(&mut self, generation: u64, message: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) {
            return out;
        }
        let code = ErrorCode::MediaNegotiationFailed.code();
        self.fail(code, message, now, &mut out);
        out
    }

    /// The peer connection of `generation` is `link` at `now`: connected, Publishing; down,
    /// lost and retried; disconnected, still Publishing while it has the grace to come back
    /// (back in time, nothing is reported).
    pub fn on_peer(&mut self, generation: u64, link: PeerLink, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.core.on_peer(generation, link, now) {
            PeerChange::Nothing => {}
            PeerChange::Up => self.set_state(PublisherState::Publishing, 0, "", &mut out),
            PeerChange::Lost => {
                let code = ErrorCode::MediaNegotiationFailed.code();
                self.fail(code, "media connection lost", now, &mut out);
            }
        }
        out
    }

    /// The relay ended this stream's media (its ingest failed). Already waiting to retry (our
    /// side saw the loss first), it is reported but not counted as a second failure.
    pub fn on_relay_stopped(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.core.phase == Phase::Ended {
            return out;
        }
        out.push(Action::DropPeer);
        self.set_state(PublisherState::PublishRequesting, code, reason, &mut out);
        if !matches!(self.core.phase, Phase::RetryAt(_)) {
            self.core.retry(now);
        }
        out
    }

    /// The relay no longer knows this engine's session (it restarted, or the session
    /// expired): whatever media there was is gone with it. Publish again at once, with no
    /// backoff.
    pub fn on_relay_session_lost(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.core.phase == Phase::Ended || self.core.phase == Phase::Idle {
            return out;
        }
        out.push(Action::DropPeer);
        let code = ErrorCode::RelaySessionLost.code();
        self.set_state(
            PublisherState::PublishRequesting,
            code,
            "the relay lost this session; publishing again",
            &mut out,
        );
        self.core.failures = 0;
        self.core.phase = Phase::Idle;
        out
    }

    /// The current attempt failed with `code`: drop it, tell the relay, retry after the
    /// backoff.
    fn fail(&mut self, code: u32, message: &str, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::DropPeer);
        self.set_state(PublisherState::PublishRequesting, code, message, out);
        out.push(Action::SendStop);
        self.core.retry(now);
    }

    /// Stop publishing for good; `tell_relay` is false when the room was left (the relay ends
    /// the stream itself).
    pub fn stop(&mut self, tell_relay: bool) -> Vec<Action> {
        let mut out = vec![Action::DropPeer];
        if tell_relay {
            out.push(Action::SendStop);
        }
        out.push(Action::ReleaseChannel);
        self.core.phase = Phase::Ended;
        self.core.state = PublisherState::NoPublish;
        out.push(Action::Emit(Event::PublisherStateUpdate {
            stream_id: self.core.stream_id.clone(),
            state: PublisherState::NoPublish,
            error_code: 0,
            extended_data: "{}".into(),
        }));
        out
    }

    fn set_state(
        &mut self,
        state: PublisherState,
        code: u32,
        message: &str,
        out: &mut Vec<Action>,
    ) {
        if self.core.state == state && code == 0 {
            return;
        }
        self.core.state = state;
        out.push(Action::Emit(publisher_event(
            &self.core.stream_id,
            state,
            code,
            message,
        )));
    }
}

/// A `PublisherStateUpdate` event.
pub fn publisher_event(stream_id: &str, state: PublisherState, code: u32, message: &str) -> Event {
    Event::PublisherStateUpdate {
        stream_id: stream_id.to_string(),
        state,
        error_code: code,
        extended_data: extended_data(message),
    }
}

/// Whether a play refused or stopped by the relay with `code` is over for good: this session
/// may not play the stream (not in its room, kicked, token expired) or plays too many already.
/// Asking again would get the same answer; the app decides what to do (log in, renew).
pub fn refusal_is_final(code: u32) -> bool {
    [
        ErrorCode::PlayNotAuthorized,
        ErrorCode::KickedOut,
        ErrorCode::TokenExpiredKicked,
        ErrorCode::TooManyPlays,
    ]
    .iter()
    .any(|c| c.code() == code)
}

/// One stream being played: NoPlay → PlayRequesting → Playing. A stream that does not exist
/// yet is waited for (looked up again every second or two, and at once when the room announces
/// it).
#[derive(Debug)]
pub struct PlaySession {
    core: Core<PlayerState>,
    requested_at: Instant,
}

impl PlaySession {
    /// A session for `stream_id` asked for at `now`, waiting as `timers` say, and its first
    /// event (PlayRequesting).
    pub fn start(stream_id: &str, timers: SessionTimers, now: Instant) -> (Self, Vec<Action>) {
        let mut s = PlaySession {
            core: Core::new(stream_id, PlayerState::NoPlay, timers),
            requested_at: now,
        };
        let mut out = Vec::new();
        s.set_state(PlayerState::PlayRequesting, 0, "", &mut out);
        (s, out)
    }

    /// The seed's state.
    pub fn state(&self) -> PlayerState {
        self.core.state
    }

    /// Where the negotiation stands.
    pub fn phase(&self) -> Phase {
        self.core.phase
    }

    /// The current negotiation's generation.
    pub fn generation(&self) -> u64 {
        self.core.generation
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Packets still arrive (by `now`) on the connection: a disconnection is not a loss yet.
    pub fn on_traffic(&mut self, now: Instant) {
        self.core.on_traffic(now);
    }

    /// Time passed: a retry that is due makes the session ready to negotiate again; an attempt
    /// that took too long (no answer or no connection within the connect timeout) fails with
    /// PlayConnectTimeout, and a connection disconnected for longer than the grace is lost;
    /// both are retried.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        if let Some(restart) = self.core.restart_due(now) {
            return vec![restart];
        }
        let Some(expired) = self.core.handle_timeout(now) else {
            return Vec::new();
        };
        let code = match expired {
            Expired::Answer | Expired::Connect => ErrorCode::PlayConnectTimeout,
            Expired::Grace => ErrorCode::PlayNegotiationFailed,
        };
        let message = self.core.expired_message(expired);
        self.lost(code.code(), &message, now)
    }

    /// Starts a negotiation if none runs or waits and `ready` (connected, in a room) at `now`.
    pub fn negotiate_if_ready(
        &mut self,
        ready: bool,
        next_generation: &mut u64,
        now: Instant,
    ) -> Vec<Action> {
        self.core.negotiate_if_ready(ready, next_generation, now)
    }

    /// The room announced the stream: a session waiting for it asks again now, and a later
    /// failure backs off from the start.
    pub fn on_stream_added(&mut self) {
        if matches!(self.core.phase, Phase::RetryAt(_)) {
            self.core.phase = Phase::Idle;
            self.core.failures = 0;
        }
    }

    /// The offer for `generation` is ready: send it.
    pub fn offer_ready(&mut self, generation: u64) -> Vec<Action> {
        self.core.offer_ready(generation)
    }

    /// Making the offer failed.
    pub fn offer_failed(&mut self, generation: u64, message: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) {
            return out;
        }
        let code = ErrorCode::PlayNegotiationFailed.code();
        self.set_state(PlayerState::PlayRequesting, code, message, &mut out);
        self.core.retry(now);
        out
    }

    /// The relay answered the play request of `generation`.
    pub fn on_answer(
        &mut self,
        generation: u64,
        answer: Result<String, WireError>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) || self.core.phase != Phase::Requested {
            return out;
        }
        match answer {
            Ok(sdp) => {
                self.core.connecting(now);
                out.push(Action::Accept { generation, sdp });
            }
            Err(e) if e.code == ErrorCode::StreamNotFound.code() => {
                // Not there yet (or gone): wait for it to appear, and look again now and then.
                out.push(Action::DropPeer);
                self.core.poll_again(now);
            }
            Err(e) if refusal_is_final(e.code) => return self.refused(e.code, &e.message),
            Err(e) => {
                out.push(Action::DropPeer);
                self.set_state(PlayerState::PlayRequesting, e.code, &e.message, &mut out);
                self.core.retry(now);
            }
        }
        out
    }

    /// Applying the answer or starting the decoders failed.
    pub fn accept_failed(&mut self, generation: u64, message: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) {
            return out;
        }
        out.push(Action::DropPeer);
        let code = ErrorCode::PlayNegotiationFailed.code();
        self.set_state(PlayerState::PlayRequesting, code, message, &mut out);
        self.core.retry(now);
        out
    }

    /// The peer connection of `generation` is `link` at `now`: connected, Playing; down, lost
    /// and retried; disconnected, still Playing while it has the grace to come back (back in
    /// time, nothing is reported).
    pub fn on_peer(&mut self, generation: u64, link: PeerLink, now: Instant) -> Vec<Action> {
        match self.core.on_peer(generation, link, now) {
            PeerChange::Nothing => Vec::new(),
            PeerChange::Up => {
                let mut out = Vec::new();
                self.set_state(PlayerState::Playing, 0, "", &mut out);
                out
            }
            PeerChange::Lost => {
                let code = ErrorCode::PlayNegotiationFailed.code();
                self.lost(code, "media connection lost", now)
            }
        }
    }

    /// The relay stopped this play: the stream ended (StreamNotFound; it is waited for again),
    /// failed (retried), or may no longer be played here (ended: see [`refusal_is_final`]).
    pub fn on_relay_stopped(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        if self.core.phase == Phase::Ended {
            return Vec::new();
        }
        if refusal_is_final(code) {
            return self.refused(code, reason);
        }
        self.lost(code, reason, now)
    }

    /// Whether the session has ended (stopped, or refused for good).
    pub fn is_ended(&self) -> bool {
        self.core.phase == Phase::Ended
    }

    /// The relay will not let this session play the stream: NoPlay with `code`, no retry.
    fn refused(&mut self, code: u32, reason: &str) -> Vec<Action> {
        let mut out = vec![Action::DropPeer];
        self.core.phase = Phase::Ended;
        self.set_state(PlayerState::NoPlay, code, reason, &mut out);
        out
    }

    /// The relay no longer knows this engine's session (it restarted, or the session
    /// expired): ask for the stream again at once (it is waited for until its publisher is
    /// back).
    pub fn on_relay_session_lost(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.core.phase == Phase::Ended || self.core.phase == Phase::Idle {
            return out;
        }
        out.push(Action::DropPeer);
        self.requested_at = now;
        let code = ErrorCode::RelaySessionLost.code();
        self.set_state(
            PlayerState::PlayRequesting,
            code,
            "the relay lost this session; playing again",
            &mut out,
        );
        self.core.failures = 0;
        self.core.phase = Phase::Idle;
        out
    }

    /// The play is lost with `code`: back to PlayRequesting, and the first-frame clock
    /// restarts. A stream that is gone is waited for; any other loss is a failure and backs
    /// off, unless a retry is already scheduled (the same loss seen from both sides).
    fn lost(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        let mut out = vec![Action::DropPeer];
        self.requested_at = now;
        self.set_state(PlayerState::PlayRequesting, code, reason, &mut out);
        if code == ErrorCode::StreamNotFound.code() {
            self.core.poll_again(now);
        } else if !matches!(self.core.phase, Phase::RetryAt(_)) {
            self.core.retry(now);
        }
        out
    }

    /// The decoder of `generation` produced its first video frame at `now`.
    pub fn on_first_video_frame(&mut self, generation: u64, now: Instant) -> Vec<Action> {
        if !self.core.current(generation) {
            return Vec::new();
        }
        let elapsed_ms = now.saturating_duration_since(self.requested_at).as_millis() as u64;
        vec![Action::Emit(Event::PlayerRecvVideoFirstFrame {
            stream_id: self.core.stream_id.clone(),
            elapsed_ms,
        })]
    }

    /// The decoder of `generation` produced its first audio frame.
    pub fn on_first_audio_frame(&mut self, generation: u64) -> Vec<Action> {
        if !self.core.current(generation) {
            return Vec::new();
        }
        vec![Action::Emit(Event::PlayerRecvAudioFirstFrame {
            stream_id: self.core.stream_id.clone(),
        })]
    }

    /// Stop playing.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut out = vec![Action::DropPeer, Action::SendStop];
        self.core.phase = Phase::Ended;
        self.set_state(PlayerState::NoPlay, 0, "", &mut out);
        out
    }

    fn set_state(&mut self, state: PlayerState, code: u32, message: &str, out: &mut Vec<Action>) {
        if self.core.state == state && code == 0 {
            return;
        }
        self.core.state = state;
        out.push(Action::Emit(Event::PlayerStateUpdate {
            stream_id: self.core.stream_id.clone(),
            state,
            error_code: code,
            extended_data: extended_data(message),
        }));
    }
}

#[cfg(test)]
mod tests;
