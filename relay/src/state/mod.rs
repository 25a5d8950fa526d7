//! The relay's room state machine: apps, sessions, rooms, users and the stream registry.
//!
//! Sans-I/O: it owns no sockets, tasks or clocks. The server glue feeds it connection events and
//! message text with the current time, and sends the [`Output`]s it returns. Every rule of the
//! seed's cloud lives here: rooms made on first login and gone when empty, events only to a
//! room's own members, user updates only where `is_user_status_notify` was set, stream IDs unique
//! per app, the same user logging in again kicks the older session, silent sessions expire.
//! It must never panic on input: every failure is an error response with a code.
//!
//! This module holds the connections and the request loop; the rules live in its submodules,
//! each an `impl RelayState` block: `session`, `room`, `stream` (the registry: one entry per
//! published stream, holding its owner, room, info, media state and players), `media` (SFU
//! playback and media events), `data` (room messages and extra info) and `http` (WHIP/WHEP
//! clients).

mod cluster;
mod data;
mod http;
mod media;
mod room;
mod session;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use onair_protocol::error::{ErrorCode, WireError};
use onair_protocol::messages::{Request, RequestBody, ResponseBody, ServerMessage, VideoLayer};

use crate::config::{AppConfig, Limits, RelayConfig};
pub use cluster::{ClusterOutput, GoneFromRoom, RoomEvent};
use room::Room;
use session::Session;
use stream::StreamEntry;

/// One WebSocket connection, numbered by the glue's [`RelayState::open_conn`].
pub type ConnId = u64;
/// One logical client session; outlives a dropped connection until its heartbeat timeout.
pub type SessionId = u64;

/// What the glue must do after feeding the state machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `msg` to each connection in `to`.
    Send {
        /// Recipients.
        to: Vec<ConnId>,
        /// The message, serialised once by the glue.
        msg: ServerMessage,
    },
    /// Set up a WebRTC connection on the SFU and then call [`RelayState::negotiated`].
    Negotiate {
        /// The requesting connection.
        conn: ConnId,
        /// The request to answer.
        request_id: u64,
        /// The requesting session.
        session: SessionId,
        /// The app.
        app_id: u32,
        /// The stream.
        stream_id: String,
        /// Publishing (ingest) or playing (egress).
        publish: bool,
        /// The client's offer.
        sdp: String,
        /// For a player: the video layer it asks for.
        video_layer: VideoLayer,
        /// For a player of a stream published on another cluster node: that node (the SFU
        /// pulls the stream from it first).
        origin: Option<String>,
    },
    /// Restart ICE on a session's publish (or play) connection: apply the offer on the same
    /// peer connection, then call `ice_restarted` with the answer.
    RestartIce {
        /// The requesting connection.
        conn: ConnId,
        /// The request to answer.
        request_id: u64,
        /// The requesting session.
        session: SessionId,
        /// The app.
        app_id: u32,
        /// The stream.
        stream_id: String,
        /// Its publish connection (or its play connection).
        publish: bool,
        /// The client's restart offer.
        sdp: String,
    },
    /// A player asks for another video layer.
    SetLayer {
        /// The app.
        app_id: u32,
        /// The stream.
        stream_id: String,
        /// The player.
        session: SessionId,
        /// The layer.
        video_layer: VideoLayer,
    },
    /// The stream's media is over: close its ingest and every player's connection.
    EndMedia {
        /// The app.
        app_id: u32,
        /// The stream.
        stream_id: String,
    },
    /// One session stops playing a stream: close that player's connection.
    EndPlay {
        /// The app.
        app_id: u32,
        /// The stream.
        stream_id: String,
        /// The player.
        session: SessionId,
    },
    /// Tell the cluster (only on a cluster node).
    Cluster(ClusterOutput),
    /// Close a connection (after sending what was queued before).
    Close {
        /// Which.
        conn: ConnId,
        /// Why.
        code: ErrorCode,
    },
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent (one per recipient).
    pub messages_out: u64,
    /// Errors by code (responses, kicks and goodbyes).
    pub errors_by_code: BTreeMap<u32, u64>,
    /// Successful logins.
    pub logins: u64,
    /// Sessions removed for missed heartbeats.
    pub heartbeat_timeouts: u64,
}

/// Current sizes for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Open connections.
    pub connections: usize,
    /// Live sessions (connected or waiting to be resumed).
    pub sessions: usize,
    /// Rooms.
    pub rooms: usize,
    /// Users in rooms.
    pub users: usize,
    /// Streams published.
    pub streams: usize,
    /// Plays: sessions playing a stream, counted once per stream.
    pub players: usize,
}

struct TokenBucket {
    tokens: f64,
    last: Instant,
}

struct Conn {
    session: Option<SessionId>,
    /// The client's address, when the glue knows it.
    ip: Option<IpAddr>,
    bucket: TokenBucket,
    consecutive_errors: u32,
    opened: Instant,
}

struct App {
    config: AppConfig,
    rooms: HashMap<String, Room>,
    /// stream ID → the stream: the app-wide uniqueness registry and the one record of each
    /// stream (its owner, room, info, media state and players).
    streams: HashMap<String, StreamEntry>,
    /// Room seats taken across all rooms.
    seats: usize,
    /// user ID → the sessions it is logged in from → in how many rooms.
    users: HashMap<String, BTreeMap<SessionId, usize>>,
    /// WHIP/WHEP sessions.
    http_sessions: usize,
}

impl App {
    /// `sid` takes `user_id`'s seat in `room_id` (made if new); a seat it already had is kept.
    fn take_seat(&mut self, room_id: &str, user_id: &str, sid: SessionId) {
        let room = self.rooms.entry(room_id.to_string()).or_default();
        match room.members.insert(user_id.to_string(), sid) {
            Some(old) if old == sid => return,
            Some(old) => self.forget_user_session(user_id, old),
            None => self.seats += 1,
        }
        *self
            .users
            .entry(user_id.to_string())
            .or_default()
            .entry(sid)
            .or_default() += 1;
    }

    /// `sid` gives up `user_id`'s seat in `room_id`, if it holds it; the room stays.
    fn free_seat(&mut self, room_id: &str, user_id: &str, sid: SessionId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.members.get(user_id) != Some(&sid) {
            return;
        }
        room.members.remove(user_id);
        self.seats = self.seats.saturating_sub(1);
        self.forget_user_session(user_id, sid);
    }

    fn forget_user_session(&mut self, user_id: &str, sid: SessionId) {
        if let Some(sessions) = self.users.get_mut(user_id) {
            if let Some(n) = sessions.get_mut(&sid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    sessions.remove(&sid);
                }
            }
            if sessions.is_empty() {
                self.users.remove(user_id);
            }
        }
    }
}

/// The whole relay's signaling state.
pub struct RelayState {
    limits: Limits,
    /// What clients are told about ICE (STUN/TURN).
    rtc: crate::config::RtcConfig,
    apps: HashMap<u32, App>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionId, Session>,
    next_conn: ConnId,
    next_session: SessionId,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Set by a request whose answer comes later (after WebRTC negotiation).
    reply_deferred: bool,
    /// Unix seconds for token checks, when set (tests); the system clock otherwise.
    clock: Option<u64>,
    /// Connections and WHIP/WHEP sessions per client address.
    by_ip: HashMap<IpAddr, usize>,
    /// WHIP/WHEP sessions, all apps.
    http_total: usize,
    /// Set on a cluster node.
    cluster: Option<cluster::ClusterMode>,
}

type Reply = Result<ResponseBody, WireError>;

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

impl RelayState {
    /// A relay serving `config`'s apps.
    pub fn new(config: RelayConfig) -> Self {
        RelayState {
            limits: config.limits,
            rtc: config.rtc,
            apps: config
                .apps
                .into_iter()
                .map(|c| {
                    (
                        c.app_id,
                        App {
                            config: c,
                            rooms: HashMap::new(),
                            streams: HashMap::new(),
                            seats: 0,
                            users: HashMap::new(),
                            http_sessions: 0,
                        },
                    )
                })
                .collect(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            next_conn: 1,
            next_session: 1,
            counters: Counters::default(),
            reply_deferred: false,
            clock: None,
            by_ip: HashMap::new(),
            http_total: 0,
            cluster: None,
        }
    }

    /// Whether one more connection (signaling or WHIP/WHEP) from `ip` is within
    /// `max_connections` and `max_connections_per_ip`.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<(), WireError> {
        if self.conns.len() + self.http_total >= self.limits.max_connections {
            return Err(err(
                ErrorCode::TooManyConnections,
                "the relay is at its connection limit",
            ));
        }
        if let Some(ip) = ip
            && self.by_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_connections_per_ip
        {
            return Err(err(
                ErrorCode::TooManyConnections,
                "too many connections from this address",
            ));
        }
        Ok(())
    }

    fn count_ip(&mut self, ip: Option<IpAddr>, add: bool) {
        let Some(ip) = ip else { return };
        let n = self.by_ip.entry(ip).or_default();
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Connections and WHIP/WHEP sessions open from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Sets the Unix time (seconds) token lifetimes are judged by; `None`: the system clock.
    #[doc(hidden)]
    pub fn set_clock(&mut self, unix_s: Option<u64>) {
        self.clock = unix_s;
    }

    /// Now, in Unix seconds, for token lifetimes.
    fn unix_now(&self) -> u64 {
        self.clock.unwrap_or_else(onair_protocol::token::unix_now)
    }

    /// The STUN/TURN servers for session `sid` (TURN credentials minted for it), as its
    /// hello answer carries them; for WHIP/WHEP clients, their `Link` headers.
    pub fn ice_servers_for(&self, sid: SessionId) -> Vec<onair_protocol::IceServer> {
        self.rtc.ice_servers_for(&sid.to_string(), unix_ms() / 1000)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new connection opened (from an address the glue does not say).
    pub fn open_conn(&mut self, now: Instant) -> ConnId {
        self.open_conn_from(None, now)
    }

    /// A new connection opened from `ip` (check [`Self::admit`] first).
    pub fn open_conn_from(&mut self, ip: Option<IpAddr>, now: Instant) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.count_ip(ip, true);
        self.conns.insert(
            id,
            Conn {
                session: None,
                ip,
                bucket: TokenBucket {
                    tokens: self.limits.request_burst,
                    last: now,
                },
                consecutive_errors: 0,
                opened: now,
            },
        );
        id
    }

    /// A connection closed. Its session stays until the heartbeat timeout so it can be resumed;
    /// if it never comes back it is removed then, with its streams, and its rooms are told.
    pub fn close_conn(&mut self, conn: ConnId, now: Instant) {
        if let Some(ip) = self.conns.get(&conn).and_then(|c| c.ip) {
            self.count_ip(Some(ip), false);
        }
        if let Some(c) = self.conns.remove(&conn)
            && let Some(sid) = c.session
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
            s.last_seen = now;
            // A session in no room and playing nothing has nothing worth resuming. One that
            // still plays waits for the timeout like the rest, whose removal ends its plays.
            if s.rooms.is_empty() && s.playing.is_empty() {
                self.sessions.remove(&sid);
            }
        }
    }

    /// Sizes for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            ..Gauges::default()
        };
        for app in self.apps.values() {
            g.rooms += app.rooms.len();
            // (published here: other nodes' streams are theirs to count)
            g.streams += app.streams.values().filter(|e| e.origin.is_none()).count();
            g.players += app.streams.values().map(|e| e.players.len()).sum::<usize>();
            g.users += app.rooms.values().map(|r| r.members.len()).sum::<usize>();
        }
        g
    }

    /// A binary frame arrived: the protocol is text only.
    pub fn on_binary(&mut self, conn: ConnId, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.counters.messages_in += 1;
        self.reply(
            conn,
            None,
            Err(err(
                ErrorCode::MalformedMessage,
                "binary frames are not accepted",
            )),
            now,
            &mut out,
        );
        out
    }

    /// A text message arrived on `conn`.
    pub fn on_text(&mut self, conn: ConnId, text: &str, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(c) = self.conns.get_mut(&conn) else {
            return out;
        };
        self.counters.messages_in += 1;
        if let Some(s) = c.session.and_then(|sid| self.sessions.get_mut(&sid)) {
            s.last_seen = now;
        }
        // Token bucket: refill, then take one.
        let b = &mut c.bucket;
        let refill =
            now.saturating_duration_since(b.last).as_secs_f64() * self.limits.requests_per_second;
        b.tokens = (b.tokens + refill).min(self.limits.request_burst);
        b.last = now;
        let limited = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            false
        } else {
            true
        };

        if text.len() > self.limits.max_message_bytes {
            let e = err(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    text.len(),
                    self.limits.max_message_bytes
                ),
            );
            self.reply(conn, None, Err(e), now, &mut out);
            return out;
        }
        let request: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                // Answer with the id if the message has a readable one.
                let id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_u64()));
                let mut message = e.to_string();
                message.truncate(200);
                self.reply(
                    conn,
                    id,
                    Err(err(ErrorCode::MalformedMessage, message)),
                    now,
                    &mut out,
                );
                return out;
            }
        };
        if limited {
            let e = err(ErrorCode::RateLimited, "too many requests; slow down");
            self.reply(conn, Some(request.id), Err(e), now, &mut out);
            return out;
        }
        let result = self.dispatch(conn, request.id, request.body, now, &mut out);
        if !std::mem::take(&mut self.reply_deferred) {
            self.reply(conn, Some(request.id), result, now, &mut out);
        }
        out
    }

    /// Removes sessions and connections that have been silent too long, and warns or removes
    /// sessions whose room tokens expire.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.expire_tokens(&mut out);
        let timeout = Duration::from_millis(self.limits.heartbeat_timeout_ms);
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.http && now.saturating_duration_since(s.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for sid in expired {
            self.counters.heartbeat_timeouts += 1;
            tracing::info!(session = sid, "session removed after heartbeat timeout");
            self.remove_session(sid, Some(ErrorCode::HeartbeatTimeout), &mut out);
        }
        // Connections that never said hello.
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.session.is_none() && now.saturating_duration_since(c.opened) > timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in silent {
            self.goodbye(
                conn,
                ErrorCode::HeartbeatTimeout,
                "no hello in time",
                &mut out,
            );
        }
        out
    }

    /// The relay is stopping: say goodbye to every connection.
    pub fn shutdown(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.goodbye(
                conn,
                ErrorCode::ServerShuttingDown,
                "relay shutting down",
                &mut out,
            );
        }
        out
    }

    fn send(&mut self, to: Vec<ConnId>, msg: ServerMessage, out: &mut Vec<Output>) {
        if to.is_empty() {
            return;
        }
        self.counters.messages_out += to.len() as u64;
        out.push(Output::Send { to, msg });
    }

    fn count_error(&mut self, code: u32) {
        *self.counters.errors_by_code.entry(code).or_default() += 1;
    }

    fn goodbye(&mut self, conn: ConnId, code: ErrorCode, reason: &str, out: &mut Vec<Output>) {
        self.count_error(code.code());
        self.send(
            vec![conn],
            ServerMessage::Goodbye {
                code: code.code(),
                reason: reason.into(),
            },
            out,
        );
        out.push(Output::Close { conn, code });
        if let Some(sid) = self.conns.get_mut(&conn).and_then(|c| c.session.take())
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
        }
    }

    fn reply(
        &mut self,
        conn: ConnId,
        id: Option<u64>,
        result: Reply,
        _now: Instant,
        out: &mut Vec<Output>,
    ) {
        match result {
            Ok(body) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.consecutive_errors = 0;
                }
                // A reply to a well-formed request always has an id.
                self.send(vec![conn], ServerMessage::ok(id.unwrap_or(0), body), out);
            }
            Err(e) => {
                self.count_error(e.code);
                self.send(vec![conn], ServerMessage::err(id, e), out);
                let abusive = self.conns.get_mut(&conn).is_some_and(|c| {
                    c.consecutive_errors += 1;
                    c.consecutive_errors >= self.limits.max_consecutive_errors
                });
                if abusive {
                    tracing::warn!(conn, "closing connection after repeated errors");
                    self.goodbye(
                        conn,
                        ErrorCode::AbuseClosed,
                        "too many errors in a row",
                        out,
                    );
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        request_id: u64,
        body: RequestBody,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Reply {
        let session = self.conns.get(&conn).and_then(|c| c.session);
        match (body, session) {
            (
                RequestBody::Hello {
                    protocol,
                    app_id,
                    resume,
                },
                None,
            ) => self.hello(conn, protocol, app_id, resume, now, out),
            (RequestBody::Hello { .. }, Some(_)) => Err(err(
                ErrorCode::OutOfOrder,
                "hello was already accepted on this connection",
            )),
            (_, None) => Err(err(ErrorCode::OutOfOrder, "send hello first")),
            (RequestBody::Heartbeat, Some(_)) => Ok(ResponseBody::Done),
            (
                RequestBody::Login {
                    room_id,
                    user,
                    token,
                    app_sign,
                    is_user_status_notify,
                },
                Some(sid),
            ) => self.login(
                sid,
                room_id,
                user,
                token,
                app_sign,
                is_user_status_notify,
                out,
            ),
            (RequestBody::Logout { room_id }, Some(sid)) => {
                if !self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.rooms.contains_key(&room_id))
                {
                    return Err(err(ErrorCode::NotLoggedIn, "not logged into that room"));
                }
                self.leave_room(sid, &room_id, out);
                self.revoke_plays(
                    sid,
                    ErrorCode::PlayNotAuthorized,
                    "logged out of the stream's room",
                    out,
                );
                Ok(ResponseBody::Done)
            }
            (RequestBody::RenewToken { room_id, token }, Some(sid)) => {
                self.renew_token(sid, &room_id, &token)
            }
            (
                RequestBody::SendMessage {
                    room_id,
                    kind,
                    text,
                    to_users,
                },
                Some(sid),
            ) => self.send_message(sid, &room_id, kind, text, to_users, now, out),
            (
                RequestBody::SetRoomExtraInfo {
                    room_id,
                    key,
                    value,
                },
                Some(sid),
            ) => self.set_room_extra_info(sid, &room_id, key, value, out),
            (
                RequestBody::SetStreamExtraInfo {
                    stream_id,
                    extra_info,
                },
                Some(sid),
            ) => self.set_stream_extra_info(sid, &stream_id, extra_info, out),
            (
                RequestBody::SetStreamMute {
                    stream_id,
                    audio_muted,
                    video_muted,
                },
                Some(sid),
            ) => self.set_stream_mute(sid, &stream_id, audio_muted, video_muted, out),
            (RequestBody::ReportNetworkQuality { upstream }, Some(sid)) => {
                self.report_network_quality(sid, upstream, now, out)
            }
            (
                RequestBody::Publish {
                    room_id,
                    stream_id,
                    extra_info,
                    sdp,
                },
                Some(sid),
            ) => self.publish(
                sid,
                room_id,
                stream_id,
                extra_info,
                sdp.map(|sdp| (conn, request_id, sdp)),
                out,
            ),
            (
                RequestBody::Play {
                    stream_id,
                    sdp,
                    video_layer,
                },
                Some(sid),
            ) => self.play(sid, conn, request_id, stream_id, sdp, video_layer, out),
            (
                RequestBody::SetPlayLayer {
                    stream_id,
                    video_layer,
                },
                Some(sid),
            ) => self.set_play_layer(sid, stream_id, video_layer, out),
            (
                RequestBody::RestartIce {
                    stream_id,
                    publish,
                    sdp,
                },
                Some(sid),
            ) => self.restart_ice(sid, conn, request_id, stream_id, publish, sdp, out),
            (RequestBody::StopPlay { stream_id }, Some(sid)) => {
                if self.stop_playing(sid, &stream_id, out) {
                    Ok(ResponseBody::Done)
                } else {
                    Err(err(ErrorCode::StreamNotFound, "not playing that stream"))
                }
            }
            (RequestBody::StopPublish { stream_id }, Some(sid)) => {
                self.stop_publish(sid, &stream_id, out)
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
