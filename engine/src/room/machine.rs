//! One room as the engine sees it: the seed's room state machine, sans I/O.
//!
//! Fed with what the relay said (login answers, user and stream updates, kicks) and what the
//! connection did (lost, restored, gave up), it returns the [`Event`]s to report, in order. After a
//! reconnect it diffs the relay's snapshot against what it knew and reports only the changes.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::ErrorCode;
use crate::room::events::{Event, RoomStateChangedReason as Reason};
use onair_protocol::messages::{StreamInfo, UpdateType, User};

/// Per-room login options, as the seed's `ZegoRoomConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomConfig {
    /// A token for this user (and optionally this room); without one the engine logs in with
    /// the profile's app sign.
    pub token: Option<String>,
    /// Receive [`Event::RoomUserUpdate`] for this room.
    pub is_user_status_notify: bool,
}

/// Where a room is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomPhase {
    /// Waiting for the first login answer.
    Logining,
    /// In the room.
    Logined,
    /// Connection lost; waiting to log in again.
    Reconnecting,
}

/// One room's state.
#[derive(Debug)]
pub struct RoomMachine {
    room_id: String,
    user: User,
    config: RoomConfig,
    phase: RoomPhase,
    phase_since: Instant,
    users: BTreeMap<String, User>,
    streams: BTreeMap<String, StreamInfo>,
}

fn extended(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

impl RoomMachine {
    /// Starts logging in; returns the machine and the LOGINING event.
    pub fn new(room_id: String, user: User, config: RoomConfig, now: Instant) -> (Self, Event) {
        let m = RoomMachine {
            room_id,
            user,
            config,
            phase: RoomPhase::Logining,
            phase_since: now,
            users: BTreeMap::new(),
            streams: BTreeMap::new(),
        };
        let e = m.state_event(Reason::Logining, 0, "{}".into());
        (m, e)
    }

    /// The room ID.
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// Who is logged in.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// A renewed token: the one used from now on, also to log in again after a reconnection.
    pub fn set_token(&mut self, token: String) {
        self.config.token = Some(token);
    }

    /// The login options.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// The current phase.
    pub fn phase(&self) -> RoomPhase {
        self.phase
    }

    /// Since when the room has been in its phase.
    pub fn phase_since(&self) -> Instant {
        self.phase_since
    }

    /// Other users currently known in the room.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Other users' streams currently known in the room.
    pub fn streams(&self) -> impl Iterator<Item = &StreamInfo> {
        self.streams.values()
    }

    fn state_event(&self, reason: Reason, error_code: u32, extended_data: String) -> Event {
        Event::RoomStateChanged {
            room_id: self.room_id.clone(),
            reason,
            error_code,
            extended_data,
        }
    }

    fn users_event(&self, update_type: UpdateType, users: Vec<User>) -> Option<Event> {
        (self.config.is_user_status_notify && !users.is_empty()).then(|| Event::RoomUserUpdate {
            room_id: self.room_id.clone(),
            update_type,
            users,
        })
    }

    fn streams_event(&self, update_type: UpdateType, streams: Vec<StreamInfo>) -> Option<Event> {
        (!streams.is_empty()).then(|| Event::RoomStreamUpdate {
            room_id: self.room_id.clone(),
            update_type,
            streams,
        })
    }

    /// The relay accepted the login (first time or after a reconnect) with this snapshot.
    pub fn on_login_ok(
        &mut self,
        users: Vec<User>,
        streams: Vec<StreamInfo>,
        now: Instant,
    ) -> Vec<Event> {
        let new_users: BTreeMap<String, User> = users
            .into_iter()
            .filter(|u| u.user_id != self.user.user_id)
            .map(|u| (u.user_id.clone(), u))
            .collect();
        let new_streams: BTreeMap<String, StreamInfo> = streams
            .into_iter()
            .map(|s| (s.stream_id.clone(), s))
            .collect();
        let gone_users: Vec<User> = self
            .users
            .values()
            .filter(|u| !new_users.contains_key(&u.user_id))
            .cloned()
            .collect();
        let came_users: Vec<User> = new_users
            .values()
            .filter(|u| !self.users.contains_key(&u.user_id))
            .cloned()
            .collect();
        let gone_streams: Vec<StreamInfo> = self
            .streams
            .values()
            .filter(|s| !new_streams.contains_key(&s.stream_id))
            .cloned()
            .collect();
        let came_streams: Vec<StreamInfo> = new_streams
            .values()
            .filter(|s| !self.streams.contains_key(&s.stream_id))
            .cloned()
            .collect();
        let reason = match self.phase {
            RoomPhase::Logining => Reason::Logined,
            RoomPhase::Reconnecting | RoomPhase::Logined => Reason::Reconnected,
        };
        let devices = self.device_changes(new_streams.values());
        self.users = new_users;
        self.streams = new_streams;
        self.phase = RoomPhase::Logined;
        self.phase_since = now;
        let mut out = vec![self.state_event(reason, 0, "{}".into())];
        out.extend(self.users_event(UpdateType::Delete, gone_users));
        out.extend(self.users_event(UpdateType::Add, came_users));
        out.extend(self.streams_event(UpdateType::Delete, gone_streams));
        out.extend(self.streams_event(UpdateType::Add, came_streams));
        out.extend(devices);
        out
    }

    /// Remote mic and camera events for `streams` as listed now, against what was known of
    /// them (a stream not known yet counts as open: only a muted one is reported).
    pub fn device_changes<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a StreamInfo>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        for s in streams {
            let old = self
                .streams
                .get(&s.stream_id)
                .map_or((false, false), |o| (o.audio_muted, o.video_muted));
            out.extend(device_events(
                &s.stream_id,
                old,
                (s.audio_muted, s.video_muted),
            ));
        }
        out
    }

    /// A stream's publisher muted or unmuted: the events for what changed.
    pub fn on_stream_mute(
        &mut self,
        stream_id: &str,
        audio_muted: bool,
        video_muted: bool,
    ) -> Vec<Event> {
        let Some(s) = self.streams.get_mut(stream_id) else {
            return Vec::new();
        };
        let old = (s.audio_muted, s.video_muted);
        s.audio_muted = audio_muted;
        s.video_muted = video_muted;
        device_events(stream_id, old, (audio_muted, video_muted))
    }

    /// The relay refused the login; the room is finished.
    pub fn on_login_failed(&mut self, code: u32, message: &str) -> Event {
        let reason = match self.phase {
            RoomPhase::Logining => Reason::LoginFailed,
            RoomPhase::Reconnecting | RoomPhase::Logined => Reason::ReconnectFailed,
        };
        self.state_event(reason, code, extended(message))
    }

    /// The connection dropped. Returns RECONNECTING if the room was in.
    pub fn on_connection_lost(&mut self, now: Instant) -> Option<Event> {
        if self.phase != RoomPhase::Logined {
            return None;
        }
        self.phase = RoomPhase::Reconnecting;
        self.phase_since = now;
        Some(self.state_event(Reason::Reconnecting, 0, "{}".into()))
    }

    /// The engine stopped trying; the room is finished.
    pub fn on_give_up(&mut self, code: ErrorCode, message: &str) -> Event {
        self.on_login_failed(code.code(), message)
    }

    /// The relay removed this user from the room; the room is finished.
    pub fn on_kicked(&mut self, code: u32, reason: &str) -> Event {
        self.state_event(Reason::KickOut, code, extended(reason))
    }

    /// Users joined or left.
    pub fn on_user_update(&mut self, update_type: UpdateType, users: Vec<User>) -> Option<Event> {
        let changed: Vec<User> = users
            .into_iter()
            .filter(|u| u.user_id != self.user.user_id)
            .filter(|u| match update_type {
                UpdateType::Add => self.users.insert(u.user_id.clone(), u.clone()).is_none(),
                UpdateType::Delete => self.users.remove(&u.user_id).is_some(),
            })
            .collect();
        self.users_event(update_type, changed)
    }

    /// Streams started or ended.
    pub fn on_stream_update(
        &mut self,
        update_type: UpdateType,
        streams: Vec<StreamInfo>,
    ) -> Option<Event> {
        let changed: Vec<StreamInfo> = streams
            .into_iter()
            .filter(|s| match update_type {
                UpdateType::Add => self
                    .streams
                    .insert(s.stream_id.clone(), s.clone())
                    .is_none(),
                UpdateType::Delete => self.streams.remove(&s.stream_id).is_some(),
            })
            .collect();
        self.streams_event(update_type, changed)
    }

    /// The LOGOUT (or LOGOUT_FAILED) event.
    pub fn logout_event(room_id: &str, error: Option<(u32, &str)>) -> Event {
        match error {
            None => Event::RoomStateChanged {
                room_id: room_id.into(),
                reason: Reason::Logout,
                error_code: 0,
                extended_data: "{}".into(),
            },
            Some((code, message)) => Event::RoomStateChanged {
                room_id: room_id.into(),
                reason: Reason::LogoutFailed,
                error_code: code,
                extended_data: extended(message),
            },
        }
    }
}

/// The mic and camera events between two (audio muted, video muted) states.
fn device_events(stream_id: &str, old: (bool, bool), new: (bool, bool)) -> Vec<Event> {
    use crate::room::events::RemoteDeviceState as D;
    let mut out = Vec::new();
    if old.0 != new.0 {
        out.push(Event::RemoteMicStateUpdate {
            stream_id: stream_id.to_string(),
            state: if new.0 { D::Mute } else { D::Open },
        });
    }
    if old.1 != new.1 {
        out.push(Event::RemoteCameraStateUpdate {
            stream_id: stream_id.to_string(),
            state: if new.1 { D::Disable } else { D::Open },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str, user: &str) -> StreamInfo {
        StreamInfo {
            stream_id: id.into(),
            user: User::new(user),
            extra_info: String::new(),
            since_unix_ms: 0,
            audio_muted: false,
            video_muted: false,
        }
    }

    fn reasons(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::RoomStateChanged { reason, .. } => reason.name().to_string(),
                Event::RoomUserUpdate {
                    update_type, users, ..
                } => format!(
                    "users {update_type:?} {}",
                    users
                        .iter()
                        .map(|u| u.user_id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Event::RoomStreamUpdate {
                    update_type,
                    streams,
                    ..
                } => format!(
                    "streams {update_type:?} {}",
                    streams
                        .iter()
                        .map(|s| s.stream_id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                other => format!("{other}"),
            })
            .collect()
    }

    #[test]
    fn login_reconnect_diff() {
        let now = Instant::now();
        let cfg = RoomConfig {
            token: None,
            is_user_status_notify: true,
        };
        let (mut m, first) = RoomMachine::new("r".into(), User::new("me"), cfg, now);
        assert_eq!(reasons(&[first]), ["LOGINING"]);
        let ev = m.on_login_ok(
            vec![User::new("a"), User::new("b")],
            vec![stream("s1", "a")],
            now,
        );
        assert_eq!(reasons(&ev), ["LOGINED", "users Add a,b", "streams Add s1"]);
        assert_eq!(
            reasons(&m.on_connection_lost(now).into_iter().collect::<Vec<_>>()),
            ["RECONNECTING"]
        );
        assert_eq!(m.phase(), RoomPhase::Reconnecting);
        // While away: b left, c came, s1 ended, s2 started.
        let ev = m.on_login_ok(
            vec![User::new("a"), User::new("c")],
            vec![stream("s2", "c")],
            now,
        );
        assert_eq!(
            reasons(&ev),
            [
                "RECONNECTED",
                "users Delete b",
                "users Add c",
                "streams Delete s1",
                "streams Add s2"
            ]
        );
        // Duplicate updates are not reported twice.
        assert!(
            m.on_user_update(UpdateType::Add, vec![User::new("a")])
                .is_none()
        );
        assert!(
            m.on_stream_update(UpdateType::Delete, vec![stream("nope", "x")])
                .is_none()
        );
    }

    #[test]
    fn user_updates_need_notify() {
        let now = Instant::now();
        let (mut m, _) = RoomMachine::new("r".into(), User::new("me"), RoomConfig::default(), now);
        let ev = m.on_login_ok(vec![User::new("a")], vec![], now);
        assert_eq!(reasons(&ev), ["LOGINED"]);
        assert!(
            m.on_user_update(UpdateType::Add, vec![User::new("b")])
                .is_none()
        );
    }

    #[test]
    fn failures_by_phase() {
        let now = Instant::now();
        let (mut m, _) = RoomMachine::new("r".into(), User::new("me"), RoomConfig::default(), now);
        assert_eq!(
            reasons(&[m.on_login_failed(1002033, "bad")]),
            ["LOGIN_FAILED"]
        );
        m.on_login_ok(vec![], vec![], now);
        m.on_connection_lost(now);
        assert_eq!(
            reasons(&[m.on_give_up(ErrorCode::ReconnectGaveUp, "down")]),
            ["RECONNECT_FAILED"]
        );
        assert_eq!(reasons(&[m.on_kicked(1002050, "dup")]), ["KICK_OUT"]);
    }
}
