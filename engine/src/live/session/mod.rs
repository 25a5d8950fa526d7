//! Sans-I/O state machines for one publish session and one play session.
//!
//! They own no peer connection, socket, task or clock: the connection task feeds them what
//! happened (a command, the relay's answer, a peer connection's state, the time) and carries out
//! the [`Action`]s they return, as `RelayState` does on the relay side. Every decision the seed's
//! publisher and player flows make lives here: the state sequences (NoPublish → PublishRequesting
//! → Publishing, NoPlay → PlayRequesting → Playing), which relay refusals are final, retrying
//! after a second, ignoring reports from an older negotiation (its *generation*), and the
//! first-frame timing.

use std::time::{Duration, Instant};

use crate::error::{ErrorCode, WireError};
use crate::room::events::{Event, PlayerState, PublisherState};

/// How long a failed negotiation waits before the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// An offer is being made.
    Offering,
    /// The offer went to the relay; waiting for its answer.
    Requested,
    /// The answer was applied; waiting for the connection to come up.
    Connecting,
    /// Media flows.
    Up,
    /// A negotiation failed; try again at this time.
    RetryAt(Instant),
    /// Over for good (stopped, or refused with a final error).
    Ended,
}

/// The part both machines share: phase, generation and the seed's state with its events.
#[derive(Debug)]
struct Core<S> {
    stream_id: String,
    state: S,
    phase: Phase,
    generation: u64,
}

impl<S: Copy + PartialEq> Core<S> {
    /// Whether a report about `generation` is about the current negotiation.
    fn current(&self, generation: u64) -> bool {
        generation == self.generation && self.phase != Phase::Ended
    }

    /// Whether a peer connection report fits the phase: "up" only while connecting, "down"
    /// only while connecting or up (after our own drop, the closing connection's reports are
    /// stale even though their generation is current).
    fn peer_report_applies(&self, up: bool) -> bool {
        match self.phase {
            Phase::Connecting => true,
            Phase::Up => !up,
            _ => false,
        }
    }

    fn negotiate_if_ready(&mut self, ready: bool, next_generation: &mut u64) -> Vec<Action> {
        if !ready || self.phase != Phase::Idle {
            return Vec::new();
        }
        *next_generation += 1;
        self.generation = *next_generation;
        self.phase = Phase::Offering;
        vec![Action::Offer {
            generation: self.generation,
        }]
    }

    /// An offer for an old negotiation is dropped; the current one goes to the relay.
    fn offer_ready(&mut self, generation: u64) -> Vec<Action> {
        if !self.current(generation) || self.phase != Phase::Offering {
            return vec![Action::DropPeer];
        }
        self.phase = Phase::Requested;
        vec![Action::SendRequest { generation }]
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Phase::RetryAt(at) = self.phase
            && now >= at
        {
            self.phase = Phase::Idle;
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::RetryAt(at) => Some(at),
            _ => None,
        }
    }

    fn retry(&mut self, now: Instant) {
        self.phase = Phase::RetryAt(now + RETRY_AFTER);
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
    /// A session for `stream_id`, and its first event (PublishRequesting).
    pub fn start(stream_id: &str) -> (Self, Vec<Action>) {
        let mut s = PublishSession {
            core: Core {
                stream_id: stream_id.to_string(),
                state: PublisherState::NoPublish,
                phase: Phase::Idle,
                generation: 0,
            },
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

    /// Time passed: a retry that is due makes the session ready to negotiate again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// Starts a negotiation if none runs or waits and `ready` (connected, room logged in).
    /// `next_generation` is the engine-wide counter, so no two negotiations share a number.
    pub fn negotiate_if_ready(&mut self, ready: bool, next_generation: &mut u64) -> Vec<Action> {
        self.core.negotiate_if_ready(ready, next_generation)
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
                self.core.phase = Phase::Connecting;
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
        out.push(Action::DropPeer);
        let code = ErrorCode::MediaNegotiationFailed.code();
        self.set_state(PublisherState::PublishRequesting, code, message, &mut out);
        out.push(Action::SendStop);
        self.core.retry(now);
        out
    }

    /// The peer connection of `generation` came up (`up`) or went down.
    pub fn on_peer(&mut self, generation: u64, up: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.core.current(generation) || !self.core.peer_report_applies(up) {
            return out;
        }
        if up {
            self.core.phase = Phase::Up;
            self.set_state(PublisherState::Publishing, 0, "", &mut out);
        } else {
            out.push(Action::DropPeer);
            let code = ErrorCode::MediaNegotiationFailed.code();
            self.set_state(
                PublisherState::PublishRequesting,
                code,
                "media connection lost",
                &mut out,
            );
            out.push(Action::SendStop);
            self.core.retry(now);
        }
        out
    }

    /// The relay ended this stream's media (its ingest failed).
    pub fn on_relay_stopped(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.core.phase == Phase::Ended {
            return out;
        }
        out.push(Action::DropPeer);
        self.set_state(PublisherState::PublishRequesting, code, reason, &mut out);
        self.core.retry(now);
        out
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

/// One stream being played: NoPlay → PlayRequesting → Playing. A stream that does not exist
/// yet is waited for (looked up again every second, and at once when the room announces it).
#[derive(Debug)]
pub struct PlaySession {
    core: Core<PlayerState>,
    requested_at: Instant,
}

impl PlaySession {
    /// A session for `stream_id` asked for at `now`, and its first event (PlayRequesting).
    pub fn start(stream_id: &str, now: Instant) -> (Self, Vec<Action>) {
        let mut s = PlaySession {
            core: Core {
                stream_id: stream_id.to_string(),
                state: PlayerState::NoPlay,
                phase: Phase::Idle,
                generation: 0,
            },
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

    /// Time passed: a retry that is due makes the session ready to negotiate again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// Starts a negotiation if none runs or waits and `ready` (connected, in a room).
    pub fn negotiate_if_ready(&mut self, ready: bool, next_generation: &mut u64) -> Vec<Action> {
        self.core.negotiate_if_ready(ready, next_generation)
    }

    /// The room announced the stream: a session waiting for it asks again now.
    pub fn on_stream_added(&mut self) {
        if matches!(self.core.phase, Phase::RetryAt(_)) {
            self.core.phase = Phase::Idle;
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
                self.core.phase = Phase::Connecting;
                out.push(Action::Accept { generation, sdp });
            }
            Err(e) => {
                // Not there yet (or gone): wait for it to appear, and look again now and then.
                out.push(Action::DropPeer);
                if e.code != ErrorCode::StreamNotFound.code() {
                    self.set_state(PlayerState::PlayRequesting, e.code, &e.message, &mut out);
                }
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

    /// The peer connection of `generation` came up (`up`) or went down.
    pub fn on_peer(&mut self, generation: u64, up: bool, now: Instant) -> Vec<Action> {
        if !self.core.current(generation) || !self.core.peer_report_applies(up) {
            return Vec::new();
        }
        if up {
            let mut out = Vec::new();
            self.core.phase = Phase::Up;
            self.set_state(PlayerState::Playing, 0, "", &mut out);
            out
        } else {
            let code = ErrorCode::PlayNegotiationFailed.code();
            self.lost(code, "media connection lost", now)
        }
    }

    /// The relay stopped this play (the stream ended).
    pub fn on_relay_stopped(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        if self.core.phase == Phase::Ended {
            return Vec::new();
        }
        self.lost(code, reason, now)
    }

    fn lost(&mut self, code: u32, reason: &str, now: Instant) -> Vec<Action> {
        let mut out = vec![Action::DropPeer];
        self.requested_at = now;
        self.set_state(PlayerState::PlayRequesting, code, reason, &mut out);
        self.core.retry(now);
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
