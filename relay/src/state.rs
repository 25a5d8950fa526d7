//! The relay's room state machine: apps, sessions, rooms, users and the stream registry.
//!
//! Sans-I/O: it owns no sockets, tasks or clocks. The server glue feeds it connection events and
//! message text with the current time, and sends the [`Output`]s it returns. Every rule of the
//! seed's cloud lives here: rooms made on first login and gone when empty, events only to a
//! room's own members, user updates only where `is_user_status_notify` was set, stream IDs unique
//! per app, the same user logging in again kicks the older session, silent sessions expire.
//! It must never panic on input: every failure is an error response with a code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::config::{AppConfig, Limits, RelayConfig};
use onair_protocol::error::{ErrorCode, WireError};
use onair_protocol::ids;
use onair_protocol::messages::{
    PROTOCOL_VERSION, Request, RequestBody, ResponseBody, ServerMessage, StreamInfo, UpdateType,
    User,
};
use onair_protocol::token;

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
}

struct TokenBucket {
    tokens: f64,
    last: Instant,
}

struct Conn {
    session: Option<SessionId>,
    bucket: TokenBucket,
    consecutive_errors: u32,
    opened: Instant,
}

struct Membership {
    user: User,
    notify: bool,
    can_publish: bool,
    streams: BTreeSet<String>,
}

struct Session {
    app_id: u32,
    secret: String,
    conn: Option<ConnId>,
    last_seen: Instant,
    rooms: BTreeMap<String, Membership>,
    /// Streams this session plays through the SFU.
    playing: BTreeSet<String>,
    /// A WHIP/WHEP client: no socket, no heartbeats; lives until its HTTP DELETE.
    http: bool,
}

#[derive(Default)]
struct Room {
    /// user ID → the session that user is in this room from.
    members: HashMap<String, SessionId>,
    streams: BTreeMap<String, StreamInfo>,
}

struct App {
    config: AppConfig,
    rooms: HashMap<String, Room>,
    /// stream ID → (owner session, room ID): the app-wide uniqueness registry.
    stream_owner: HashMap<String, (SessionId, String)>,
    /// Room seats taken across all rooms.
    seats: usize,
    /// Streams whose media goes through the SFU.
    media: std::collections::HashSet<String>,
    /// Media streams not flowing yet: registered (the ID is taken) but not announced.
    pending: std::collections::HashSet<String>,
    /// stream ID → the sessions playing it.
    players: HashMap<String, BTreeSet<SessionId>>,
}

/// The whole relay's signaling state.
pub struct RelayState {
    limits: Limits,
    apps: HashMap<u32, App>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionId, Session>,
    next_conn: ConnId,
    next_session: SessionId,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Set by a request whose answer comes later (after WebRTC negotiation).
    reply_deferred: bool,
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
            apps: config
                .apps
                .into_iter()
                .map(|c| {
                    (
                        c.app_id,
                        App {
                            config: c,
                            rooms: HashMap::new(),
                            stream_owner: HashMap::new(),
                            seats: 0,
                            media: Default::default(),
                            pending: Default::default(),
                            players: HashMap::new(),
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
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new connection opened.
    pub fn open_conn(&mut self, now: Instant) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                session: None,
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
        if let Some(c) = self.conns.remove(&conn)
            && let Some(sid) = c.session
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
            s.last_seen = now;
            // A session in no room has nothing worth resuming.
            if s.rooms.is_empty() {
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
            g.streams += app.stream_owner.len();
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

    /// Removes sessions and connections that have been silent too long.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
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
                Ok(ResponseBody::Done)
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
            (RequestBody::Play { stream_id, sdp }, Some(sid)) => {
                self.play(sid, conn, request_id, stream_id, sdp, out)
            }
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

    fn hello(
        &mut self,
        conn: ConnId,
        protocol: u32,
        app_id: u32,
        resume: Option<onair_protocol::messages::ResumeTicket>,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Reply {
        if protocol != PROTOCOL_VERSION {
            return Err(err(
                ErrorCode::ProtocolVersionUnsupported,
                format!("this relay speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
            ));
        }
        if !self.apps.contains_key(&app_id) {
            return Err(err(
                ErrorCode::UnknownApp,
                format!("app {app_id} is not configured"),
            ));
        }
        let resumable = resume.and_then(|t| {
            let s = self.sessions.get(&t.session_id)?;
            (s.app_id == app_id && s.secret == t.secret).then_some(t.session_id)
        });
        let (sid, resumed) = match resumable {
            Some(sid) => {
                let old_conn = self.sessions.get(&sid).and_then(|s| s.conn);
                if let Some(old) = old_conn.filter(|old| *old != conn) {
                    self.goodbye(
                        old,
                        ErrorCode::SessionSuperseded,
                        "session resumed elsewhere",
                        out,
                    );
                }
                (sid, true)
            }
            None => {
                let sid = self.next_session;
                self.next_session += 1;
                self.sessions.insert(
                    sid,
                    Session {
                        app_id,
                        secret: hex::encode(rand::random::<[u8; 16]>()),
                        conn: None,
                        last_seen: now,
                        rooms: BTreeMap::new(),
                        playing: BTreeSet::new(),
                        http: false,
                    },
                );
                (sid, false)
            }
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        s.conn = Some(conn);
        s.last_seen = now;
        let secret = s.secret.clone();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid);
        }
        Ok(ResponseBody::Hello {
            session_id: sid,
            resume_secret: secret,
            resumed,
            heartbeat_interval_ms: self.limits.heartbeat_interval_ms,
            heartbeat_timeout_ms: self.limits.heartbeat_timeout_ms,
            server: concat!("onair-relay/", env!("CARGO_PKG_VERSION")).into(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        sid: SessionId,
        room_id: String,
        user: User,
        token: Option<String>,
        app_sign: Option<String>,
        notify: bool,
        out: &mut Vec<Output>,
    ) -> Reply {
        let code_err = |c: ErrorCode, what: &str| err(c, what.to_string());
        ids::check_room_id(&room_id).map_err(|c| code_err(c, "invalid room ID"))?;
        ids::check_user_id(&user.user_id).map_err(|c| code_err(c, "invalid user ID"))?;
        ids::check_user_name(&user.user_name).map_err(|c| code_err(c, "user name too long"))?;
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let app_id = session.app_id;
        let Some(app) = self.apps.get(&app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };

        // Authenticate (again, on a resync: a token may have expired meanwhile).
        let can_publish = match (&token, &app_sign) {
            (Some(t), _) => {
                let claims = token::verify(t, &app.config.app_sign, token::unix_now())
                    .and_then(|c| c.check_login(app_id, &user.user_id, &room_id).map(|()| c))
                    .map_err(|e| err(e.code(), e.to_string()))?;
                claims.privilege.publish
            }
            (None, Some(sign)) => {
                if !app.config.allow_app_sign {
                    return Err(err(
                        ErrorCode::AppSignNotAllowed,
                        "this app accepts tokens only",
                    ));
                }
                if !app.config.app_sign.matches_hex(sign) {
                    return Err(err(ErrorCode::AppSignInvalid, "app sign does not match"));
                }
                true
            }
            (None, None) => {
                return Err(err(
                    ErrorCode::NoCredentials,
                    "login needs a token or the app sign",
                ));
            }
        };

        // Already in this room on this session: a resync.
        if let Some(m) = session.rooms.get(&room_id) {
            if m.user.user_id != user.user_id {
                return Err(err(
                    ErrorCode::RoomUserConflict,
                    "this connection is in the room as another user",
                ));
            }
            let snapshot = self.snapshot(app_id, &room_id, sid);
            if let Some(m) = self
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.rooms.get_mut(&room_id))
            {
                m.notify = notify;
                m.can_publish = can_publish;
            }
            return Ok(snapshot);
        }

        if session.rooms.len() >= self.limits.max_rooms_per_session {
            return Err(err(
                ErrorCode::TooManyRoomsForSession,
                format!(
                    "at most {} rooms per connection",
                    self.limits.max_rooms_per_session
                ),
            ));
        }
        let existing = app.rooms.get(&room_id);
        let previous = existing.and_then(|r| r.members.get(&user.user_id).copied());
        if previous.is_none() && app.seats >= self.limits.max_users_per_app {
            return Err(err(ErrorCode::TooManyUsers, "the app has too many users"));
        }
        match existing {
            None if app.rooms.len() >= self.limits.max_rooms_per_app => {
                return Err(err(ErrorCode::TooManyRooms, "the app has too many rooms"));
            }
            Some(r) if previous.is_none() && r.members.len() >= self.limits.max_users_per_room => {
                return Err(err(ErrorCode::RoomFull, "the room is full"));
            }
            _ => {}
        }

        // The same user from another session: kick that one out of this room.
        if let Some(old) = previous {
            self.kick(old, &room_id, out);
        }

        let Some(app) = self.apps.get_mut(&app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };
        let replaced = app
            .rooms
            .entry(room_id.clone())
            .or_default()
            .members
            .insert(user.user_id.clone(), sid);
        if replaced.is_none() {
            app.seats += 1;
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.rooms.insert(
                room_id.clone(),
                Membership {
                    user: user.clone(),
                    notify,
                    can_publish,
                    streams: BTreeSet::new(),
                },
            );
        }
        self.counters.logins += 1;
        let snapshot = self.snapshot(app_id, &room_id, sid);
        if previous.is_none() {
            let to = self.room_conns(app_id, &room_id, sid, true);
            self.send(
                to,
                ServerMessage::UserUpdate {
                    room_id,
                    update_type: UpdateType::Add,
                    users: vec![user],
                },
                out,
            );
        }
        Ok(snapshot)
    }

    fn publish(
        &mut self,
        sid: SessionId,
        room_id: String,
        stream_id: String,
        extra_info: String,
        negotiate: Option<(ConnId, u64, String)>,
        out: &mut Vec<Output>,
    ) -> Reply {
        ids::check_stream_id(&stream_id).map_err(|c| err(c, "invalid stream ID"))?;
        if extra_info.len() > ids::MAX_EXTRA_INFO {
            return Err(err(
                ErrorCode::ExtraInfoTooLong,
                "extra info is at most 1024 bytes",
            ));
        }
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let app_id = session.app_id;
        let Some(m) = session.rooms.get(&room_id) else {
            return Err(err(ErrorCode::NotLoggedIn, "not logged into that room"));
        };
        if !m.can_publish {
            return Err(err(
                ErrorCode::PublishNotAuthorized,
                "the login token does not grant publish",
            ));
        }
        let user = m.user.clone();
        let own_streams: usize = session.rooms.values().map(|m| m.streams.len()).sum();
        let Some(app) = self.apps.get_mut(&app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };
        if let Some((owner, owner_room)) = app.stream_owner.get(&stream_id) {
            if *owner == sid && *owner_room == room_id && negotiate.is_none() {
                // Publishing the same stream again is idempotent.
                let existing = app
                    .rooms
                    .get(&room_id)
                    .and_then(|r| r.streams.get(&stream_id))
                    .cloned();
                return existing
                    .map(|stream| ResponseBody::Publish { stream, sdp: None })
                    .ok_or_else(|| err(ErrorCode::Internal, "stream registry out of step"));
            }
            return Err(err(
                ErrorCode::StreamIdTaken,
                "stream ID is already being published in this app",
            ));
        }
        if own_streams >= self.limits.max_streams_per_session {
            return Err(err(
                ErrorCode::TooManyStreams,
                format!(
                    "at most {} streams per connection",
                    self.limits.max_streams_per_session
                ),
            ));
        }
        let stream = StreamInfo {
            stream_id: stream_id.clone(),
            user,
            extra_info,
            since_unix_ms: unix_ms(),
        };
        app.stream_owner
            .insert(stream_id.clone(), (sid, room_id.clone()));
        if let Some(room) = app.rooms.get_mut(&room_id) {
            room.streams.insert(stream_id.clone(), stream.clone());
        }
        if let Some((conn, request_id, sdp)) = negotiate {
            // Media through the SFU: announce the stream once its media flows.
            app.media.insert(stream_id.clone());
            app.pending.insert(stream_id.clone());
            self.reply_deferred = true;
            out.push(Output::Negotiate {
                conn,
                request_id,
                session: sid,
                app_id,
                stream_id: stream_id.clone(),
                publish: true,
                sdp,
            });
        }
        if let Some(m) = self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.rooms.get_mut(&room_id))
        {
            m.streams.insert(stream_id);
        }
        if self.reply_deferred {
            return Ok(ResponseBody::Done);
        }
        self.announce(app_id, &room_id, sid, stream.clone(), out);
        Ok(ResponseBody::Publish { stream, sdp: None })
    }

    fn announce(
        &mut self,
        app_id: u32,
        room_id: &str,
        owner: SessionId,
        stream: StreamInfo,
        out: &mut Vec<Output>,
    ) {
        let to = self.room_conns(app_id, room_id, owner, false);
        self.send(
            to,
            ServerMessage::StreamUpdate {
                room_id: room_id.to_string(),
                update_type: UpdateType::Add,
                streams: vec![stream],
            },
            out,
        );
    }

    fn play(
        &mut self,
        sid: SessionId,
        conn: ConnId,
        request_id: u64,
        stream_id: String,
        sdp: String,
        out: &mut Vec<Output>,
    ) -> Reply {
        ids::check_stream_id(&stream_id).map_err(|c| err(c, "invalid stream ID"))?;
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        if session.rooms.is_empty() {
            return Err(err(
                ErrorCode::NotLoggedIn,
                "log into a room before playing",
            ));
        }
        let app_id = session.app_id;
        let Some(app) = self.apps.get(&app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };
        if !app.media.contains(&stream_id) || app.pending.contains(&stream_id) {
            return Err(err(ErrorCode::StreamNotFound, "no such stream is flowing"));
        }
        // Playing again replaces the old connection.
        self.stop_playing(sid, &stream_id, out);
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.players
                .entry(stream_id.clone())
                .or_default()
                .insert(sid);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.playing.insert(stream_id.clone());
        }
        self.reply_deferred = true;
        out.push(Output::Negotiate {
            conn,
            request_id,
            session: sid,
            app_id,
            stream_id,
            publish: false,
            sdp,
        });
        Ok(ResponseBody::Done)
    }

    /// Whether `sid` was playing `stream_id` (it no longer is).
    fn stop_playing(&mut self, sid: SessionId, stream_id: &str, out: &mut Vec<Output>) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let app_id = s.app_id;
        if !s.playing.remove(stream_id) {
            return false;
        }
        if let Some(players) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.players.get_mut(stream_id))
        {
            players.remove(&sid);
        }
        out.push(Output::EndPlay {
            app_id,
            stream_id: stream_id.to_string(),
            session: sid,
        });
        true
    }

    /// The SFU finished (or failed) the negotiation asked for by [`Output::Negotiate`].
    #[allow(clippy::too_many_arguments)]
    pub fn negotiated(
        &mut self,
        conn: ConnId,
        request_id: u64,
        session: SessionId,
        app_id: u32,
        stream_id: &str,
        publish: bool,
        answer: Result<String, String>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let owner = self
            .apps
            .get(&app_id)
            .and_then(|a| a.stream_owner.get(stream_id))
            .cloned();
        let result = match (publish, answer) {
            (true, Ok(sdp)) => match owner {
                Some((o, room_id)) if o == session => self
                    .apps
                    .get(&app_id)
                    .and_then(|a| a.rooms.get(&room_id))
                    .and_then(|r| r.streams.get(stream_id))
                    .cloned()
                    .map(|stream| ResponseBody::Publish {
                        stream,
                        sdp: Some(sdp),
                    })
                    .ok_or_else(|| err(ErrorCode::StreamNotFound, "the stream ended meanwhile")),
                _ => {
                    out.push(Output::EndMedia {
                        app_id,
                        stream_id: stream_id.to_string(),
                    });
                    Err(err(ErrorCode::StreamNotFound, "the stream ended meanwhile"))
                }
            },
            (true, Err(e)) => {
                if let Some((o, room_id)) = owner.filter(|(o, _)| *o == session) {
                    self.end_streams(o, app_id, &room_id, vec![stream_id.to_string()], &mut out);
                }
                Err(err(ErrorCode::MediaNegotiationFailed, e))
            }
            (false, Ok(sdp)) => {
                let still = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.playing.contains(stream_id));
                if still && owner.is_some() {
                    Ok(ResponseBody::Play {
                        stream_id: stream_id.to_string(),
                        sdp,
                    })
                } else {
                    self.stop_playing(session, stream_id, &mut out);
                    Err(err(ErrorCode::StreamNotFound, "the stream ended meanwhile"))
                }
            }
            (false, Err(e)) => {
                self.stop_playing(session, stream_id, &mut out);
                Err(err(ErrorCode::PlayNegotiationFailed, e))
            }
        };
        self.reply(conn, Some(request_id), result, Instant::now(), &mut out);
        out
    }

    /// A WHIP (`publish`) or WHEP (play) client arrives over HTTP with a bearer `token`: it gets
    /// a session of its own, logs into `room_id` as the token's user (so the room sees it as a
    /// user, and its stream as a stream), and registers the publish or play. The caller runs the
    /// SFU negotiation and then calls [`Self::negotiated`] (or [`Self::http_end`] on failure).
    /// Returns the session, the app and what to deliver.
    pub fn http_begin(
        &mut self,
        token: &str,
        room_id: &str,
        stream_id: &str,
        publish: bool,
        now: Instant,
    ) -> Result<(SessionId, String, u32, Vec<Output>), WireError> {
        let app_id = token::peek_app_id(token)
            .filter(|a| self.apps.contains_key(a))
            .ok_or_else(|| {
                err(
                    ErrorCode::TokenInvalid,
                    "the bearer token names no app this relay serves",
                )
            })?;
        let user_id = token::peek_user_id(token)
            .ok_or_else(|| err(ErrorCode::TokenInvalid, "the bearer token is malformed"))?;
        let sid = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            sid,
            Session {
                app_id,
                // The HTTP resource URL carries it: only its client can DELETE it.
                secret: hex::encode(rand::random::<[u8; 16]>()),
                conn: None,
                last_seen: now,
                rooms: BTreeMap::new(),
                playing: BTreeSet::new(),
                http: true,
            },
        );
        let mut out = Vec::new();
        let result = self
            .login(
                sid,
                room_id.to_string(),
                User::new(user_id),
                Some(token.to_string()),
                None,
                true,
                &mut out,
            )
            .and_then(|_| {
                if publish {
                    self.publish(
                        sid,
                        room_id.to_string(),
                        stream_id.to_string(),
                        String::new(),
                        Some((0, 0, String::new())),
                        &mut out,
                    )
                } else {
                    self.play(sid, 0, 0, stream_id.to_string(), String::new(), &mut out)
                }
            });
        self.reply_deferred = false;
        // The caller negotiates itself; drop the request to do so.
        out.retain(|o| !matches!(o, Output::Negotiate { .. }));
        let secret = self
            .sessions
            .get(&sid)
            .map(|s| s.secret.clone())
            .unwrap_or_default();
        match result {
            Ok(_) => Ok((sid, secret, app_id, out)),
            Err(e) => {
                self.count_error(e.code);
                self.remove_session(sid, None, &mut out);
                Err(e)
            }
        }
    }

    /// A WHIP/WHEP client is done (HTTP DELETE with its resource secret, or its negotiation
    /// failed). Returns whether the session existed.
    pub fn http_end(&mut self, session: SessionId, secret: &str) -> (bool, Vec<Output>) {
        let mut out = Vec::new();
        let found = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.http && s.secret == secret);
        if found {
            self.remove_session(session, None, &mut out);
        }
        (found, out)
    }

    /// The SFU saw the first media of a stream: announce it to its room.
    pub fn stream_flowing(&mut self, app_id: u32, stream_id: &str) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(app) = self.apps.get_mut(&app_id) else {
            return out;
        };
        if !app.pending.remove(stream_id) {
            return out;
        }
        let Some((owner, room_id)) = app.stream_owner.get(stream_id).cloned() else {
            return out;
        };
        if let Some(stream) = app
            .rooms
            .get(&room_id)
            .and_then(|r| r.streams.get(stream_id))
            .cloned()
        {
            self.announce(app_id, &room_id, owner, stream, &mut out);
        }
        out
    }

    /// A player's media connection failed or closed without the relay closing it. A WHEP
    /// client cannot renegotiate, so its session ends (the room sees it leave); an engine's
    /// play is unregistered, and the engine asks again when its own connection notices.
    pub fn player_failed(
        &mut self,
        app_id: u32,
        stream_id: &str,
        session: SessionId,
        reason: &str,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(s) = self.sessions.get(&session) else {
            return out;
        };
        if s.app_id != app_id || !s.playing.contains(stream_id) {
            return out;
        }
        tracing::info!(stream_id, session, reason, "player connection lost");
        if s.http {
            self.remove_session(session, None, &mut out);
        } else {
            self.stop_playing(session, stream_id, &mut out);
        }
        out
    }

    /// A publisher's media connection failed or closed: end the stream and tell its owner.
    pub fn media_failed(&mut self, app_id: u32, stream_id: &str, reason: &str) -> Vec<Output> {
        let mut out = Vec::new();
        let Some((owner, room_id)) = self
            .apps
            .get(&app_id)
            .and_then(|a| a.stream_owner.get(stream_id))
            .cloned()
        else {
            return out;
        };
        if !self
            .apps
            .get(&app_id)
            .is_some_and(|a| a.media.contains(stream_id))
        {
            return out;
        }
        self.end_streams(
            owner,
            app_id,
            &room_id,
            vec![stream_id.to_string()],
            &mut out,
        );
        if self.sessions.get(&owner).is_some_and(|s| s.http) {
            // A WHIP publisher whose connection died has nothing left to do here.
            self.remove_session(owner, None, &mut out);
            return out;
        }
        if let Some(conn) = self.sessions.get(&owner).and_then(|s| s.conn) {
            self.send(
                vec![conn],
                ServerMessage::PublishStopped {
                    stream_id: stream_id.to_string(),
                    code: ErrorCode::MediaNegotiationFailed.code(),
                    reason: reason.to_string(),
                },
                &mut out,
            );
        }
        out
    }

    fn stop_publish(&mut self, sid: SessionId, stream_id: &str, out: &mut Vec<Output>) -> Reply {
        let Some(app_id) = self.sessions.get(&sid).map(|s| s.app_id) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let owner = self
            .apps
            .get(&app_id)
            .and_then(|a| a.stream_owner.get(stream_id))
            .cloned();
        match owner {
            None => Err(err(ErrorCode::StreamNotFound, "no such stream")),
            Some((owner, _)) if owner != sid => Err(err(
                ErrorCode::NotPublishing,
                "this connection does not publish that stream",
            )),
            Some((_, room_id)) => {
                self.end_streams(sid, app_id, &room_id, vec![stream_id.to_string()], out);
                Ok(ResponseBody::Done)
            }
        }
    }

    /// The room's users (but `me`) and streams (but mine), as a login response.
    fn snapshot(&self, app_id: u32, room_id: &str, me: SessionId) -> ResponseBody {
        let mut users = Vec::new();
        let mut streams = Vec::new();
        if let Some(room) = self.apps.get(&app_id).and_then(|a| a.rooms.get(room_id)) {
            for (uid, sid) in &room.members {
                if *sid == me {
                    continue;
                }
                if let Some(m) = self.sessions.get(sid).and_then(|s| s.rooms.get(room_id)) {
                    debug_assert_eq!(&m.user.user_id, uid);
                    users.push(m.user.clone());
                }
            }
            let mine = self
                .sessions
                .get(&me)
                .and_then(|s| s.rooms.get(room_id))
                .map(|m| &m.streams);
            let pending = self.apps.get(&app_id).map(|a| &a.pending);
            streams = room
                .streams
                .values()
                .filter(|s| !mine.is_some_and(|mine| mine.contains(&s.stream_id)))
                .filter(|s| !pending.is_some_and(|p| p.contains(&s.stream_id)))
                .cloned()
                .collect();
        }
        users.sort();
        ResponseBody::Login {
            room_id: room_id.to_string(),
            users,
            streams,
        }
    }

    /// Connections of a room's members other than `except`; only those asking for user
    /// updates when `notify_only`.
    fn room_conns(
        &self,
        app_id: u32,
        room_id: &str,
        except: SessionId,
        notify_only: bool,
    ) -> Vec<ConnId> {
        let Some(room) = self.apps.get(&app_id).and_then(|a| a.rooms.get(room_id)) else {
            return Vec::new();
        };
        room.members
            .values()
            .filter(|sid| **sid != except)
            .filter_map(|sid| {
                let s = self.sessions.get(sid)?;
                if notify_only && !s.rooms.get(room_id)?.notify {
                    return None;
                }
                s.conn
            })
            .collect()
    }

    /// Ends `streams` of `sid` in `room_id` and tells the room.
    fn end_streams(
        &mut self,
        sid: SessionId,
        app_id: u32,
        room_id: &str,
        streams: Vec<String>,
        out: &mut Vec<Output>,
    ) {
        if streams.is_empty() {
            return;
        }
        let mut ended = Vec::new();
        let mut players: Vec<(String, BTreeSet<SessionId>)> = Vec::new();
        if let Some(app) = self.apps.get_mut(&app_id) {
            for stream_id in &streams {
                app.stream_owner.remove(stream_id);
                let was_pending = app.pending.remove(stream_id);
                if app.media.remove(stream_id) {
                    out.push(Output::EndMedia {
                        app_id,
                        stream_id: stream_id.clone(),
                    });
                }
                if let Some(p) = app.players.remove(stream_id) {
                    players.push((stream_id.clone(), p));
                }
                if let Some(info) = app
                    .rooms
                    .get_mut(room_id)
                    .and_then(|r| r.streams.remove(stream_id))
                    && !was_pending
                {
                    ended.push(info);
                }
            }
        }
        for (stream_id, sessions) in players {
            let mut conns = Vec::new();
            for p in sessions {
                if let Some(s) = self.sessions.get_mut(&p) {
                    s.playing.remove(&stream_id);
                    conns.extend(s.conn);
                }
            }
            self.send(
                conns,
                ServerMessage::PlayStopped {
                    stream_id,
                    code: ErrorCode::StreamNotFound.code(),
                    reason: "the stream ended".into(),
                },
                out,
            );
        }
        if let Some(m) = self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.rooms.get_mut(room_id))
        {
            for s in &streams {
                m.streams.remove(s);
            }
        }
        if !ended.is_empty() {
            let to = self.room_conns(app_id, room_id, sid, false);
            self.send(
                to,
                ServerMessage::StreamUpdate {
                    room_id: room_id.to_string(),
                    update_type: UpdateType::Delete,
                    streams: ended,
                },
                out,
            );
        }
    }

    /// `sid` leaves `room_id`: its streams end, the room hears the user go, an empty room goes.
    fn leave_room(&mut self, sid: SessionId, room_id: &str, out: &mut Vec<Output>) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        let app_id = session.app_id;
        let Some(m) = session.rooms.get(room_id) else {
            return;
        };
        let streams: Vec<String> = m.streams.iter().cloned().collect();
        let user = m.user.clone();
        self.end_streams(sid, app_id, room_id, streams, out);
        let to = self.room_conns(app_id, room_id, sid, true);
        self.send(
            to,
            ServerMessage::UserUpdate {
                room_id: room_id.to_string(),
                update_type: UpdateType::Delete,
                users: vec![user.clone()],
            },
            out,
        );
        self.detach_member(sid, app_id, room_id, &user.user_id);
    }

    /// Removes `sid`'s membership of `room_id` without telling the room about the user.
    fn detach_member(&mut self, sid: SessionId, app_id: u32, room_id: &str, user_id: &str) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.rooms.remove(room_id);
        }
        if let Some(app) = self.apps.get_mut(&app_id)
            && let Some(room) = app.rooms.get_mut(room_id)
        {
            if room.members.get(user_id) == Some(&sid) {
                room.members.remove(user_id);
                app.seats = app.seats.saturating_sub(1);
            }
            if room.members.is_empty() {
                app.rooms.remove(room_id);
            }
        }
    }

    /// The same user logged in again elsewhere: `old` loses its seat in `room_id`. Its streams
    /// there end; the user itself stays in the room (the new session takes the seat).
    fn kick(&mut self, old: SessionId, room_id: &str, out: &mut Vec<Output>) {
        let Some(session) = self.sessions.get(&old) else {
            return;
        };
        let app_id = session.app_id;
        let conn = session.conn;
        let Some(m) = session.rooms.get(room_id) else {
            return;
        };
        let streams: Vec<String> = m.streams.iter().cloned().collect();
        let user_id = m.user.user_id.clone();
        self.end_streams(old, app_id, room_id, streams, out);
        // Remove the seat without deleting the room (the new member is added right after).
        if let Some(s) = self.sessions.get_mut(&old) {
            s.rooms.remove(room_id);
        }
        if let Some(app) = self.apps.get_mut(&app_id)
            && let Some(room) = app.rooms.get_mut(room_id)
            && room.members.remove(&user_id).is_some()
        {
            app.seats = app.seats.saturating_sub(1);
        }
        self.count_error(ErrorCode::KickedOut.code());
        if let Some(conn) = conn {
            self.send(
                vec![conn],
                ServerMessage::Kicked {
                    room_id: room_id.to_string(),
                    code: ErrorCode::KickedOut.code(),
                    reason: "the same user logged into this room elsewhere".into(),
                },
                out,
            );
        }
    }

    /// Removes a session entirely (timeout or abuse).
    fn remove_session(&mut self, sid: SessionId, why: Option<ErrorCode>, out: &mut Vec<Output>) {
        let rooms: Vec<String> = self
            .sessions
            .get(&sid)
            .map(|s| s.rooms.keys().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            self.leave_room(sid, &room, out);
        }
        let playing: Vec<String> = self
            .sessions
            .get(&sid)
            .map(|s| s.playing.iter().cloned().collect())
            .unwrap_or_default();
        for stream_id in playing {
            self.stop_playing(sid, &stream_id, out);
        }
        if let Some(s) = self.sessions.remove(&sid)
            && let (Some(conn), Some(code)) = (s.conn, why)
        {
            self.goodbye(conn, code, "session removed", out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use onair_protocol::token::AppSign;

    struct Harness {
        state: RelayState,
        sign: AppSign,
        now: Instant,
    }

    impl Harness {
        fn new(limits: Limits) -> Self {
            let sign = AppSign::random();
            let mut config = RelayConfig::single_app(1, sign.clone());
            config.limits = limits;
            Harness {
                state: RelayState::new(config),
                sign,
                now: Instant::now(),
            }
        }

        fn send(&mut self, conn: ConnId, json: serde_json::Value) -> Vec<Output> {
            self.state.on_text(conn, &json.to_string(), self.now)
        }

        fn join(&mut self, room: &str, user: &str, notify: bool) -> ConnId {
            let conn = self.state.open_conn(self.now);
            self.send(
                conn,
                serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
            );
            let sign = self.sign.to_hex();
            self.send(
                conn,
                serde_json::json!({"id":2,"type":"login","room_id":room,"user":{"user_id":user},
                    "app_sign":sign,"is_user_status_notify":notify}),
            );
            conn
        }
    }

    /// (recipient, message type) pairs, in order.
    fn sent(outputs: &[Output]) -> Vec<(ConnId, String)> {
        let mut v = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    let kind = serde_json::to_value(msg)
                        .ok()
                        .and_then(|j| j["type"].as_str().map(String::from));
                    for c in to {
                        v.push((*c, kind.clone().unwrap_or_default()));
                    }
                }
                Output::Close { conn, .. } => v.push((*conn, "close".into())),
                Output::Negotiate { conn, .. } => v.push((*conn, "negotiate".into())),
                Output::EndMedia { .. } => v.push((0, "end_media".into())),
                Output::EndPlay { .. } => v.push((0, "end_play".into())),
            }
        }
        v
    }

    #[test]
    fn user_updates_reach_only_notify_members_of_the_same_room() {
        let mut h = Harness::new(Limits::default());
        let loud = h.join("r1", "loud", true);
        let quiet = h.join("r1", "quiet", false);
        let other = h.join("r2", "other", true);
        let conn = h.state.open_conn(h.now);
        h.send(
            conn,
            serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
        );
        let sign = h.sign.to_hex();
        let out = h.send(
            conn,
            serde_json::json!({"id":2,"type":"login","room_id":"r1","user":{"user_id":"new"},"app_sign":sign}),
        );
        let s = sent(&out);
        assert!(s.contains(&(conn, "response".into())));
        assert!(s.contains(&(loud, "user_update".into())));
        assert!(!s.iter().any(|(c, _)| *c == quiet || *c == other), "{s:?}");
        // Streams go to every member, notify or not.
        let out = h.send(
            conn,
            serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s"}),
        );
        let s = sent(&out);
        assert!(s.contains(&(loud, "stream_update".into())));
        assert!(s.contains(&(quiet, "stream_update".into())));
        assert!(!s.iter().any(|(c, _)| *c == other));
        assert_eq!(h.state.gauges().streams, 1);
    }

    #[test]
    fn a_closed_connection_expires_after_the_timeout_and_frees_its_streams() {
        let mut h = Harness::new(Limits {
            heartbeat_timeout_ms: 1000,
            ..Limits::default()
        });
        let watcher = h.join("r1", "w", true);
        let gone = h.join("r1", "g", true);
        h.send(
            gone,
            serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s"}),
        );
        h.state.close_conn(gone, h.now);
        // The watcher keeps itself alive; the closed session does not.
        h.now += Duration::from_millis(600);
        h.send(watcher, serde_json::json!({"id":9,"type":"heartbeat"}));
        assert!(h.state.tick(h.now).is_empty());
        h.now += Duration::from_millis(600);
        h.send(watcher, serde_json::json!({"id":10,"type":"heartbeat"}));
        let s = sent(&h.state.tick(h.now));
        assert_eq!(
            s,
            [
                (watcher, "stream_update".into()),
                (watcher, "user_update".into())
            ]
        );
        assert_eq!(
            h.state.gauges(),
            Gauges {
                connections: 1,
                sessions: 1,
                rooms: 1,
                users: 1,
                streams: 0
            }
        );
        assert_eq!(h.state.counters.heartbeat_timeouts, 1);
    }

    #[test]
    fn the_same_user_again_kicks_the_older_session_without_a_leave() {
        let mut h = Harness::new(Limits::default());
        let watcher = h.join("r1", "w", true);
        let old = h.join("r1", "dup", true);
        let conn = h.state.open_conn(h.now);
        h.send(
            conn,
            serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
        );
        let sign = h.sign.to_hex();
        let out = h.send(
            conn,
            serde_json::json!({"id":2,"type":"login","room_id":"r1","user":{"user_id":"dup"},"app_sign":sign}),
        );
        let s = sent(&out);
        assert!(s.contains(&(old, "kicked".into())));
        assert!(
            !s.iter().any(|(c, _)| *c == watcher),
            "no leave/join for a replaced seat: {s:?}"
        );
        assert_eq!(h.state.gauges().users, 2);
    }

    #[test]
    fn a_media_stream_is_announced_only_once_it_flows_and_its_end_reaches_players() {
        let mut h = Harness::new(Limits::default());
        let watcher = h.join("r1", "w", false);
        let host = h.join("r1", "host", false);
        let out = h.send(host, serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s","sdp":"offer"}));
        assert_eq!(
            sent(&out),
            [(host, "negotiate".to_string())],
            "no answer and no Add yet"
        );
        // Playing a stream that is not flowing yet is refused.
        let out = h.send(
            watcher,
            serde_json::json!({"id":4,"type":"play","stream_id":"s","sdp":"offer"}),
        );
        assert_eq!(sent(&out), [(watcher, "response".to_string())]);
        let out = h
            .state
            .negotiated(host, 3, 2, 1, "s", true, Ok("answer".into()));
        assert_eq!(sent(&out), [(host, "response".to_string())]);
        let out = h.state.stream_flowing(1, "s");
        assert_eq!(sent(&out), [(watcher, "stream_update".to_string())]);
        let out = h.send(
            watcher,
            serde_json::json!({"id":5,"type":"play","stream_id":"s","sdp":"offer"}),
        );
        assert_eq!(sent(&out), [(watcher, "negotiate".to_string())]);
        let out = h
            .state
            .negotiated(watcher, 5, 1, 1, "s", false, Ok("answer".into()));
        assert_eq!(sent(&out), [(watcher, "response".to_string())]);
        // The publisher's media fails: the stream ends, the player and the owner are told.
        let s = sent(&h.state.media_failed(1, "s", "ice failed"));
        assert!(s.contains(&(0, "end_media".to_string())), "{s:?}");
        assert!(s.contains(&(watcher, "play_stopped".to_string())), "{s:?}");
        assert!(s.contains(&(watcher, "stream_update".to_string())), "{s:?}");
        assert!(s.contains(&(host, "publish_stopped".to_string())), "{s:?}");
        assert_eq!(h.state.gauges().streams, 0);
    }
}
