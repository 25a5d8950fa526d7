//! Sessions: `hello` (a new session or a resumed one) and removing a session with all it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use onair_protocol::error::ErrorCode;
use onair_protocol::messages::{PROTOCOL_VERSION, ResponseBody, ResumeTicket};

use super::room::Membership;
use super::{ConnId, Output, RelayState, Reply, SessionId, err};

/// One logical client: its rooms, its plays, and the connection it speaks through (if any).
pub(super) struct Session {
    /// The app it said hello to.
    pub(super) app_id: u32,
    /// Proves a resume (or a WHIP/WHEP DELETE) comes from this client.
    pub(super) secret: String,
    /// Its current connection; `None` while waiting to be resumed (or for an HTTP client).
    pub(super) conn: Option<ConnId>,
    /// When it was last heard from.
    pub(super) last_seen: Instant,
    /// room ID → its seat there.
    pub(super) rooms: BTreeMap<String, Membership>,
    /// Streams this session plays through the SFU.
    pub(super) playing: BTreeSet<String>,
    /// A WHIP/WHEP client: no socket, no heartbeats; lives until its HTTP DELETE (or its
    /// media connection is lost).
    pub(super) http: bool,
    /// A WHIP/WHEP client's address, counted against the per-address limit.
    pub(super) ip: Option<std::net::IpAddr>,
    /// When its last upstream network quality report counted (at most one a second does).
    pub(super) quality_reported: Option<Instant>,
}

impl Session {
    /// A fresh session of `app_id`, in no room, with a new random secret.
    pub(super) fn new(app_id: u32, now: Instant, http: bool) -> Self {
        Session {
            app_id,
            secret: hex::encode(rand::random::<[u8; 16]>()),
            conn: None,
            last_seen: now,
            rooms: BTreeMap::new(),
            playing: BTreeSet::new(),
            http,
            ip: None,
            quality_reported: None,
        }
    }
}

impl RelayState {
    /// `hello` on a connection without a session: a new session, or the one `resume` names.
    pub(super) fn hello(
        &mut self,
        conn: ConnId,
        protocol: u32,
        app_id: u32,
        resume: Option<ResumeTicket>,
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
            let same =
                onair_protocol::token::constant_time_eq(s.secret.as_bytes(), t.secret.as_bytes());
            (s.app_id == app_id && !s.http && same).then_some(t.session_id)
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
                self.sessions.insert(sid, Session::new(app_id, now, false));
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
            ice_servers: self.ice_servers_for(sid),
        })
    }

    /// Removes a session entirely (timeout, abuse, or an HTTP client done): it leaves its rooms
    /// (ending its streams), stops playing, and its connection, if any, hears `why`.
    pub(super) fn remove_session(
        &mut self,
        sid: SessionId,
        why: Option<ErrorCode>,
        out: &mut Vec<Output>,
    ) {
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
        if let Some(s) = self.sessions.remove(&sid) {
            if s.http {
                self.http_total = self.http_total.saturating_sub(1);
                self.count_ip(s.ip, false);
                if let Some(app) = self.apps.get_mut(&s.app_id) {
                    app.http_sessions = app.http_sessions.saturating_sub(1);
                }
            }
            if let (Some(conn), Some(code)) = (s.conn, why) {
                self.goodbye(conn, code, "session removed", out);
            }
        }
    }
}
