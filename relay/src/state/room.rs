//! Rooms: logging in (made on first login), leaving (gone when empty), kick-out of a replaced
//! seat, the login snapshot, and who in a room hears what.

use std::collections::{BTreeSet, HashMap};

use onair_protocol::error::ErrorCode;
use onair_protocol::ids;
use onair_protocol::messages::{ResponseBody, ServerMessage, UpdateType, User};
use onair_protocol::token;

use super::{ConnId, Output, RelayState, Reply, SessionId, err};

/// A session's seat in one room.
pub(super) struct Membership {
    /// Who it is there.
    pub(super) user: User,
    /// Whether it hears users come and go.
    pub(super) notify: bool,
    /// Whether its credentials allow publishing.
    pub(super) can_publish: bool,
    /// The only stream IDs its token lets it publish, if the token lists them.
    pub(super) stream_ids: Option<Vec<String>>,
    /// When its token expires (Unix seconds); `None` for an app-sign login.
    pub(super) token_exp: Option<u64>,
    /// Whether it was warned of the expiry.
    pub(super) warned: bool,
    /// The streams it publishes in this room.
    pub(super) streams: BTreeSet<String>,
}

/// What a login's credentials grant in a room.
struct Grant {
    can_publish: bool,
    stream_ids: Option<Vec<String>>,
    token_exp: Option<u64>,
}

impl Grant {
    fn from_claims(claims: token::Claims) -> Self {
        Grant {
            can_publish: claims.privilege.publish,
            stream_ids: claims.stream_id_list,
            token_exp: Some(claims.exp),
        }
    }

    /// The app sign: everything, for as long as the session lasts (development only).
    fn app_sign() -> Self {
        Grant {
            can_publish: true,
            stream_ids: None,
            token_exp: None,
        }
    }

    fn apply(self, m: &mut Membership) {
        m.can_publish = self.can_publish;
        m.stream_ids = self.stream_ids;
        m.token_exp = self.token_exp;
        m.warned = false;
    }
}

/// One room of an app.
#[derive(Default)]
pub(super) struct Room {
    /// user ID → the session that user is in this room from.
    pub(super) members: HashMap<String, SessionId>,
    /// IDs of the app's streams published in this room, sorted as listings show them; each is a
    /// key of the app's stream registry, whose entry names this room.
    pub(super) streams: BTreeSet<String>,
    /// Its messages' IDs and rate, and its extra info.
    pub(super) data: super::data::RoomData,
    /// user ID → users logged into this room on other cluster nodes.
    pub(super) remote_users: HashMap<String, super::cluster::RemoteUser>,
}

impl RelayState {
    /// `login`: authenticate, take (or, for the same user, replace) a seat, and answer with a
    /// snapshot of the room. Logging into a room this session is already in is a resync.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn login(
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
        if self.cluster_down() {
            return Err(err(
                ErrorCode::ClusterUnavailable,
                "the relay cannot reach its cluster's Redis",
            ));
        }
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
        let grant = match (&token, &app_sign) {
            (Some(t), _) => {
                let claims = token::verify(t, &app.config.app_sign, self.unix_now())
                    .and_then(|c| c.check_login(app_id, &user.user_id, &room_id).map(|()| c))
                    .map_err(|e| err(e.code(), e.to_string()))?;
                Grant::from_claims(claims)
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
                Grant::app_sign()
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
                grant.apply(m);
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
        // Sessions this user is logged in from, but this one and the one this login replaces.
        let user_sessions = app.users.get(&user.user_id).map_or(0, |sessions| {
            sessions
                .keys()
                .filter(|s| **s != sid && Some(**s) != previous)
                .count()
        });
        if user_sessions >= self.limits.max_sessions_per_user {
            return Err(err(
                ErrorCode::TooManySessionsForUser,
                format!(
                    "the user is logged in from {} sessions already",
                    self.limits.max_sessions_per_user
                ),
            ));
        }
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
        let opened = !app.rooms.contains_key(&room_id);
        // The user was here from another node: this session takes over (that node kicks its
        // own when it hears of this login), and the room saw the user already.
        let remote = app
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.remote_users.remove(&user.user_id))
            .is_some();
        app.take_seat(&room_id, &user.user_id, sid);
        if opened {
            self.export_room(
                super::ClusterOutput::Opened {
                    app_id,
                    room_id: room_id.clone(),
                },
                out,
            );
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            let mut m = Membership {
                user: user.clone(),
                notify,
                can_publish: false,
                stream_ids: None,
                token_exp: None,
                warned: false,
                streams: BTreeSet::new(),
            };
            grant.apply(&mut m);
            s.rooms.insert(room_id.clone(), m);
        }
        self.counters.logins += 1;
        let snapshot = self.snapshot(app_id, &room_id, sid);
        if previous.is_none() {
            self.export(
                app_id,
                &room_id,
                super::RoomEvent::UserAdd { user: user.clone() },
                out,
            );
        }
        if previous.is_none() && !remote {
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

    /// The room's users (but `me`) and announced streams (but mine, sorted by stream ID), as a
    /// login response.
    fn snapshot(&self, app_id: u32, room_id: &str, me: SessionId) -> ResponseBody {
        let mut users = Vec::new();
        let mut streams = Vec::new();
        let mut extra_info = Vec::new();
        if let Some(app) = self.apps.get(&app_id)
            && let Some(room) = app.rooms.get(room_id)
        {
            for (uid, sid) in &room.members {
                if *sid == me {
                    continue;
                }
                if let Some(m) = self.sessions.get(sid).and_then(|s| s.rooms.get(room_id)) {
                    debug_assert_eq!(&m.user.user_id, uid);
                    users.push(m.user.clone());
                }
            }
            streams = room
                .streams
                .iter()
                .filter_map(|id| app.streams.get(id))
                .filter(|e| e.owner != me && e.announced())
                .map(|e| e.info.clone())
                .collect();
            users.extend(room.remote_users.values().map(|u| u.user.clone()));
            extra_info = room.data.extra_info.clone();
        }
        users.sort();
        ResponseBody::Login {
            room_id: room_id.to_string(),
            users,
            streams,
            extra_info,
        }
    }

    /// Connections of a room's members other than `except`; only those asking for user
    /// updates when `notify_only`.
    pub(super) fn room_conns(
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

    /// `sid` leaves `room_id`: its streams end, the room hears the user go, an empty room goes.
    pub(super) fn leave_room(&mut self, sid: SessionId, room_id: &str, out: &mut Vec<Output>) {
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
        self.export(
            app_id,
            room_id,
            super::RoomEvent::UserDelete {
                user_id: user.user_id.clone(),
            },
            out,
        );
        self.detach_member(sid, app_id, room_id, &user.user_id, out);
    }

    /// Removes `sid`'s membership of `room_id` without telling the room about the user.
    fn detach_member(
        &mut self,
        sid: SessionId,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        out: &mut Vec<Output>,
    ) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.rooms.remove(room_id);
        }
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.free_seat(room_id, user_id, sid);
        }
        self.close_if_empty(app_id, room_id, out);
    }

    /// The same user logged in again elsewhere: `old` loses its seat in `room_id`. Its streams
    /// there end; the user itself stays in the room (the new session takes the seat).
    pub(super) fn kick(&mut self, old: SessionId, room_id: &str, out: &mut Vec<Output>) {
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
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.free_seat(room_id, &user_id, old);
        }
        self.count_error(ErrorCode::KickedOut.code());
        if self.sessions.get(&old).is_some_and(|s| s.http) {
            // A WHIP/WHEP resource is its one seat: a second POST for it replaces the first,
            // whose peer connection closes.
            self.remove_session(old, None, out);
            return;
        }
        // Plays end first: an engine kicked out of its last room goes idle on the kick.
        self.revoke_plays(
            old,
            ErrorCode::KickedOut,
            "kicked out of the stream's room",
            out,
        );
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

    /// `renew_token`: a fresh token for a room `sid` is in replaces the old one (same app,
    /// user and room), with its privileges and lifetime.
    pub(super) fn renew_token(&mut self, sid: SessionId, room_id: &str, token: &str) -> Reply {
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let Some(m) = session.rooms.get(room_id) else {
            return Err(err(ErrorCode::NotLoggedIn, "not logged into that room"));
        };
        let Some(app) = self.apps.get(&session.app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };
        let claims = token::verify(token, &app.config.app_sign, self.unix_now())
            .and_then(|c| {
                c.check_login(session.app_id, &m.user.user_id, room_id)
                    .map(|()| c)
            })
            .map_err(|e| err(e.code(), e.to_string()))?;
        if let Some(m) = self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.rooms.get_mut(room_id))
        {
            Grant::from_claims(claims).apply(m);
        }
        Ok(ResponseBody::Done)
    }

    /// Warns sessions whose room tokens expire within the warning time, and removes from their
    /// rooms those whose tokens have expired (TokenExpiredKicked): their streams and plays
    /// there end, and the room sees them leave.
    pub(super) fn expire_tokens(&mut self, out: &mut Vec<Output>) {
        let now = self.unix_now();
        let warn_within = self.limits.token_warning_s;
        let mut warn = Vec::new();
        let mut expired = Vec::new();
        for (sid, s) in &mut self.sessions {
            for (room_id, m) in &mut s.rooms {
                let Some(exp) = m.token_exp else { continue };
                if exp <= now {
                    expired.push((*sid, room_id.clone()));
                } else if !m.warned && exp - now <= warn_within {
                    m.warned = true;
                    if let Some(conn) = s.conn {
                        warn.push((conn, room_id.clone(), exp - now));
                    }
                }
            }
        }
        for (conn, room_id, remain_seconds) in warn {
            self.send(
                vec![conn],
                ServerMessage::TokenWillExpire {
                    room_id,
                    remain_seconds,
                },
                out,
            );
        }
        for (sid, room_id) in expired {
            tracing::info!(session = sid, room_id, "room token expired");
            let code = ErrorCode::TokenExpiredKicked;
            self.count_error(code.code());
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let (conn, http) = (s.conn, s.http);
            if http {
                self.remove_session(sid, None, out);
                continue;
            }
            self.leave_room(sid, &room_id, out);
            // Plays end first: an engine removed from its last room goes idle on the kick.
            self.revoke_plays(sid, code, "the room token expired", out);
            if let Some(conn) = conn {
                self.send(
                    vec![conn],
                    ServerMessage::Kicked {
                        room_id: room_id.clone(),
                        code: code.code(),
                        reason: "the room token expired".into(),
                    },
                    out,
                );
            }
        }
    }
}
