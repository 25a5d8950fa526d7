//! WHIP/WHEP clients: an HTTP publisher or player gets a session of its own for as long as its
//! resource lives.

use std::time::Instant;

use onair_protocol::error::{ErrorCode, WireError};
use onair_protocol::messages::User;
use onair_protocol::token;

use super::session::Session;
use super::{Output, RelayState, SessionId, err};

impl RelayState {
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
        self.http_begin_from(None, token, room_id, stream_id, publish, now)
    }

    /// [`Self::http_begin`] for a client at `ip`, counted against the connection limits.
    pub fn http_begin_from(
        &mut self,
        ip: Option<std::net::IpAddr>,
        token: &str,
        room_id: &str,
        stream_id: &str,
        publish: bool,
        now: Instant,
    ) -> Result<(SessionId, String, u32, Vec<Output>), WireError> {
        if token.len() > self.limits.max_message_bytes {
            return Err(err(ErrorCode::TokenInvalid, "the bearer token is too long"));
        }
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
        if let Some(app) = self.apps.get(&app_id) {
            // This user's resources, but the one in this room a new POST would replace.
            let same_seat = app
                .rooms
                .get(room_id)
                .and_then(|r| r.members.get(&user_id))
                .copied();
            let user_http = app.users.get(&user_id).map_or(0, |sessions| {
                sessions
                    .keys()
                    .filter(|s| Some(**s) != same_seat)
                    .filter(|s| self.sessions.get(s).is_some_and(|s| s.http))
                    .count()
            });
            let app_full = app.http_sessions >= self.limits.max_http_sessions_per_app
                && same_seat.is_none_or(|s| !self.sessions.get(&s).is_some_and(|s| s.http));
            if app_full || user_http >= self.limits.max_http_sessions_per_user {
                return Err(err(
                    ErrorCode::TooManyHttpSessions,
                    "too many WHIP/WHEP resources for this app or user",
                ));
            }
        }
        // A POST replacing this user's resource in this room frees that one's place.
        let replaces = self
            .apps
            .get(&app_id)
            .and_then(|a| a.rooms.get(room_id))
            .and_then(|r| r.members.get(&user_id))
            .and_then(|s| self.sessions.get(s))
            .is_some_and(|s| s.http && s.ip == ip);
        if !replaces {
            self.admit(ip)?;
        }
        let sid = self.next_session;
        self.next_session += 1;
        // The HTTP resource URL carries its secret: only its client can DELETE it.
        let mut session = Session::new(app_id, now, true);
        session.ip = ip;
        self.sessions.insert(sid, session);
        self.http_total += 1;
        self.count_ip(ip, true);
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.http_sessions += 1;
        }
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
                    self.play(
                        sid,
                        0,
                        0,
                        stream_id.to_string(),
                        String::new(),
                        onair_protocol::messages::VideoLayer::Auto,
                        &mut out,
                    )
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
        let found = self.sessions.get(&session).is_some_and(|s| {
            s.http && token::constant_time_eq(s.secret.as_bytes(), secret.as_bytes())
        });
        if found {
            self.remove_session(session, None, &mut out);
        }
        (found, out)
    }
}
