//! Room data: messages (broadcast, barrage, custom commands) and the room's extra info, with
//! ZEGO's limits — 1 KiB a message, 10 broadcast and 20 barrage messages a second per room,
//! keys ≤ 128 bytes, values ≤ 4 KiB, ≤ 10 keys a room. Nothing goes back to its sender.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use onair_protocol::error::ErrorCode;
use onair_protocol::messages::{
    MessageKind, ResponseBody, RoomExtraInfo, RoomMessage, ServerMessage,
};

use super::{Output, RelayState, Reply, SessionId, err, unix_ms};

/// Longest message text, bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Broadcast messages per room per second.
pub const BROADCAST_PER_SECOND: usize = 10;
/// Barrage messages per room per second.
pub const BARRAGE_PER_SECOND: usize = 20;
/// Longest extra info key, bytes.
pub const MAX_EXTRA_KEY_BYTES: usize = 128;
/// Longest extra info value, bytes.
pub const MAX_EXTRA_VALUE_BYTES: usize = 4096;
/// Extra info keys per room.
pub const MAX_EXTRA_KEYS: usize = 10;

/// A room's messages and extra info.
#[derive(Default)]
pub(super) struct RoomData {
    /// The last message's ID.
    last_message_id: u64,
    /// When recent broadcast and barrage messages were taken (the last second's).
    recent: VecDeque<(Instant, MessageKind)>,
    /// Extra info by key, in the order keys were first set.
    pub(super) extra_info: Vec<RoomExtraInfo>,
}

impl RoomData {
    /// Whether one more message of `kind` fits the room's rate at `now` (and counts it).
    fn take(&mut self, kind: MessageKind, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        let limit = match kind {
            MessageKind::Broadcast => BROADCAST_PER_SECOND,
            MessageKind::Barrage => BARRAGE_PER_SECOND,
            MessageKind::Custom => return true,
        };
        if self.recent.iter().filter(|(_, k)| *k == kind).count() >= limit {
            return false;
        }
        self.recent.push_back((now, kind));
        true
    }
}

impl RelayState {
    /// The app of `sid` and who it is in `room_id`, or why it may not speak there.
    fn member(
        &self,
        sid: SessionId,
        room_id: &str,
    ) -> Result<(u32, onair_protocol::messages::User), onair_protocol::error::WireError> {
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        match session.rooms.get(room_id) {
            Some(m) => Ok((session.app_id, m.user.clone())),
            None => Err(err(ErrorCode::NotLoggedIn, "not logged into that room")),
        }
    }

    /// `send_message`: a message from `sid` to the other members of `room_id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_message(
        &mut self,
        sid: SessionId,
        room_id: &str,
        kind: MessageKind,
        text: String,
        to_users: Vec<String>,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Reply {
        if text.is_empty() || text.len() > MAX_MESSAGE_BYTES {
            return Err(err(
                ErrorCode::MessageTooLong,
                format!("a room message is 1 to {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        let (app_id, from_user) = self.member(sid, room_id)?;
        let to: Vec<super::ConnId> = if kind == MessageKind::Custom && !to_users.is_empty() {
            let Some(room) = self.apps.get(&app_id).and_then(|a| a.rooms.get(room_id)) else {
                return Err(err(ErrorCode::Internal, "room vanished"));
            };
            let conns: Vec<_> = to_users
                .iter()
                .filter_map(|u| room.members.get(u))
                .filter(|s| **s != sid)
                .filter_map(|s| self.sessions.get(s)?.conn)
                .collect();
            // (users on other cluster nodes get it from theirs)
            if !to_users
                .iter()
                .any(|u| room.members.contains_key(u) || room.remote_users.contains_key(u))
            {
                return Err(err(
                    ErrorCode::CommandNoRecipients,
                    "none of those users is in the room",
                ));
            }
            conns
        } else {
            self.room_conns(app_id, room_id, sid, false)
        };
        let Some(room) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.rooms.get_mut(room_id))
        else {
            return Err(err(ErrorCode::Internal, "room vanished"));
        };
        if !room.data.take(kind, now) {
            return Err(err(
                ErrorCode::MessageRateLimited,
                "the room carries no more messages of this kind this second",
            ));
        }
        room.data.last_message_id += 1;
        let message_id = room.data.last_message_id;
        let msg = match kind {
            MessageKind::Custom => ServerMessage::CustomCommand {
                room_id: room_id.to_string(),
                from_user,
                command: text,
            },
            _ => ServerMessage::RoomMessages {
                room_id: room_id.to_string(),
                kind,
                messages: vec![RoomMessage {
                    message_id,
                    text,
                    from_user,
                    send_time: unix_ms(),
                }],
            },
        };
        self.export(
            app_id,
            room_id,
            super::RoomEvent::Deliver {
                message: Box::new(msg.clone()),
                to_users: if kind == MessageKind::Custom {
                    to_users
                } else {
                    Vec::new()
                },
            },
            out,
        );
        self.send(to, msg, out);
        Ok(ResponseBody::MessageSent { message_id })
    }

    /// The stream `stream_id` of `sid`'s app, if `sid` publishes it.
    fn own_stream(
        &mut self,
        sid: SessionId,
        stream_id: &str,
    ) -> Result<(u32, &mut super::stream::StreamEntry), onair_protocol::error::WireError> {
        let Some(app_id) = self.sessions.get(&sid).map(|s| s.app_id) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let Some(entry) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.streams.get_mut(stream_id))
        else {
            return Err(err(ErrorCode::StreamNotFound, "no such stream"));
        };
        if entry.owner != sid {
            return Err(err(
                ErrorCode::NotPublishing,
                "this session does not publish that stream",
            ));
        }
        Ok((app_id, entry))
    }

    /// `set_stream_mute`: the owner of `stream_id` muted or unmuted its audio or video; the
    /// room hears of a change once the stream is announced (newcomers see it in the stream
    /// list).
    pub(super) fn set_stream_mute(
        &mut self,
        sid: SessionId,
        stream_id: &str,
        audio_muted: bool,
        video_muted: bool,
        out: &mut Vec<Output>,
    ) -> Reply {
        let (app_id, entry) = self.own_stream(sid, stream_id)?;
        let changed =
            (entry.info.audio_muted, entry.info.video_muted) != (audio_muted, video_muted);
        entry.info.audio_muted = audio_muted;
        entry.info.video_muted = video_muted;
        let (room_id, announced) = (entry.room_id.clone(), entry.announced());
        if changed && announced {
            let stream = entry.info.clone();
            self.export(
                app_id,
                &room_id,
                super::RoomEvent::StreamInfo { stream },
                out,
            );
            let to = self.room_conns(app_id, &room_id, sid, false);
            self.send(
                to,
                ServerMessage::StreamMuteUpdate {
                    room_id,
                    stream_id: stream_id.to_string(),
                    audio_muted,
                    video_muted,
                },
                out,
            );
        }
        Ok(ResponseBody::Done)
    }

    /// `report_network_quality`: a session's upstream level, shared with every room where it
    /// publishes an announced stream (ZEGO reports a remote user's quality to those who can
    /// play it; sharing only publishers' keeps a large audience from costing members × members
    /// messages). One report a second counts; more are answered and ignored.
    pub(super) fn report_network_quality(
        &mut self,
        sid: SessionId,
        upstream: u8,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Reply {
        let upstream = onair_protocol::messages::QualityLevel::from_u8(upstream) as u8;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        if session
            .quality_reported
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(900))
        {
            return Ok(ResponseBody::Done);
        }
        session.quality_reported = Some(now);
        let app_id = session.app_id;
        let seats: Vec<(String, String)> = session
            .rooms
            .iter()
            .map(|(room, m)| (room.clone(), m.user.user_id.clone()))
            .collect();
        let Some(app) = self.apps.get(&app_id) else {
            return Ok(ResponseBody::Done);
        };
        let publishing: Vec<(String, String)> = seats
            .into_iter()
            .filter(|(room, _)| {
                app.streams
                    .values()
                    .any(|e| e.owner == sid && &e.room_id == room && e.announced())
            })
            .collect();
        for (room_id, user_id) in publishing {
            let to = self.room_conns(app_id, &room_id, sid, false);
            let message = ServerMessage::NetworkQuality {
                room_id: room_id.clone(),
                user_id,
                upstream,
            };
            self.export(
                app_id,
                &room_id,
                super::RoomEvent::Deliver {
                    message: Box::new(message.clone()),
                    to_users: Vec::new(),
                },
                out,
            );
            self.send(to, message, out);
        }
        Ok(ResponseBody::Done)
    }

    /// `set_stream_extra_info`: the owner of `stream_id` replaces its extra info; the room hears
    /// of it once the stream is announced.
    pub(super) fn set_stream_extra_info(
        &mut self,
        sid: SessionId,
        stream_id: &str,
        extra_info: String,
        out: &mut Vec<Output>,
    ) -> Reply {
        if extra_info.len() > onair_protocol::ids::MAX_EXTRA_INFO {
            return Err(err(
                ErrorCode::ExtraInfoTooLong,
                "extra info is at most 1024 bytes",
            ));
        }
        let (app_id, entry) = self.own_stream(sid, stream_id)?;
        entry.info.extra_info = extra_info;
        let (room_id, info, announced) =
            (entry.room_id.clone(), entry.info.clone(), entry.announced());
        if announced {
            self.export(
                app_id,
                &room_id,
                super::RoomEvent::StreamInfo {
                    stream: info.clone(),
                },
                out,
            );
            let to = self.room_conns(app_id, &room_id, sid, false);
            self.send(
                to,
                ServerMessage::StreamExtraInfoUpdate {
                    room_id,
                    streams: vec![info],
                },
                out,
            );
        }
        Ok(ResponseBody::Done)
    }

    /// `set_room_extra_info`: sets one key of `room_id`'s extra info and tells the other
    /// members.
    pub(super) fn set_room_extra_info(
        &mut self,
        sid: SessionId,
        room_id: &str,
        key: String,
        value: String,
        out: &mut Vec<Output>,
    ) -> Reply {
        if key.is_empty() || key.len() > MAX_EXTRA_KEY_BYTES {
            return Err(err(
                ErrorCode::ExtraInfoKeyInvalid,
                format!("a key is 1 to {MAX_EXTRA_KEY_BYTES} bytes"),
            ));
        }
        if value.len() > MAX_EXTRA_VALUE_BYTES {
            return Err(err(
                ErrorCode::ExtraInfoValueTooLong,
                format!("a value is at most {MAX_EXTRA_VALUE_BYTES} bytes"),
            ));
        }
        let (app_id, user) = self.member(sid, room_id)?;
        let Some(room) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.rooms.get_mut(room_id))
        else {
            return Err(err(ErrorCode::Internal, "room vanished"));
        };
        let info = RoomExtraInfo {
            key: key.clone(),
            value,
            update_user: user,
            update_time: unix_ms(),
        };
        let keys = room.data.extra_info.len();
        match room.data.extra_info.iter_mut().find(|i| i.key == key) {
            Some(existing) => *existing = info.clone(),
            None if keys >= MAX_EXTRA_KEYS => {
                return Err(err(
                    ErrorCode::TooManyExtraInfoKeys,
                    format!("a room has at most {MAX_EXTRA_KEYS} keys"),
                ));
            }
            None => room.data.extra_info.push(info.clone()),
        }
        self.export(
            app_id,
            room_id,
            super::RoomEvent::ExtraInfo { info: info.clone() },
            out,
        );
        let to = self.room_conns(app_id, room_id, sid, false);
        self.send(
            to,
            ServerMessage::RoomExtraInfoUpdate {
                room_id: room_id.to_string(),
                infos: vec![info],
            },
            out,
        );
        Ok(ResponseBody::Done)
    }
}
