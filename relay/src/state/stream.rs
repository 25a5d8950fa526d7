//! The stream registry: one [`StreamEntry`] per published stream, and publishing, announcing and
//! ending streams.

use std::collections::BTreeSet;

use onair_protocol::error::ErrorCode;
use onair_protocol::ids;
use onair_protocol::messages::{ResponseBody, ServerMessage, StreamInfo, UpdateType, VideoLayer};

use super::{App, ConnId, Output, RelayState, Reply, SessionId, err, unix_ms};

/// Where a stream's media through the SFU stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Media {
    /// Registered (the ID is taken) while the SFU negotiates: not announced to the room yet.
    Pending,
    /// Media arrived: the room has been told, and players may join.
    Flowing,
}

/// Everything the relay knows of one published stream, in one place.
pub(super) struct StreamEntry {
    /// The publishing session; it lists the stream in its membership of `room_id`.
    pub(super) owner: SessionId,
    /// The room it is published in; that room lists it.
    pub(super) room_id: String,
    /// The stream as room members see it.
    pub(super) info: StreamInfo,
    /// Its media through the SFU; `None` for a signaling-only stream.
    pub(super) media: Option<Media>,
    /// The sessions playing it through the SFU; each lists it in its `playing`.
    pub(super) players: BTreeSet<SessionId>,
    /// The cluster node it is published on, when not this one (its owner is then no local
    /// session, and its media is pulled from that node for local players).
    pub(super) origin: Option<String>,
}

impl StreamEntry {
    /// Whether its room has been told of it (a stream with pending media has not).
    pub(super) fn announced(&self) -> bool {
        self.media != Some(Media::Pending)
    }
}

impl App {
    /// Registers a stream and lists it in its room.
    pub(super) fn insert_stream(&mut self, entry: StreamEntry) {
        if let Some(room) = self.rooms.get_mut(&entry.room_id) {
            room.streams.insert(entry.info.stream_id.clone());
        }
        self.streams.insert(entry.info.stream_id.clone(), entry);
    }

    /// Unregisters a stream and takes it off its room's list.
    fn remove_stream(&mut self, stream_id: &str) -> Option<StreamEntry> {
        let entry = self.streams.remove(stream_id)?;
        if let Some(room) = self.rooms.get_mut(&entry.room_id) {
            room.streams.remove(stream_id);
        }
        Some(entry)
    }
}

impl RelayState {
    /// The registered stream `stream_id` of `app_id`.
    pub(super) fn stream(&self, app_id: u32, stream_id: &str) -> Option<&StreamEntry> {
        self.apps.get(&app_id)?.streams.get(stream_id)
    }

    /// `publish`: registers a stream in a room `sid` is in. A signaling-only stream is announced
    /// at once; one with an offer (`negotiate`) asks the SFU first and is announced once its
    /// media flows, and its answer is deferred until [`Self::negotiated`].
    pub(super) fn publish(
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
        if m.stream_ids
            .as_ref()
            .is_some_and(|ids| !ids.contains(&stream_id))
        {
            return Err(err(
                ErrorCode::StreamIdNotAuthorized,
                "the login token's stream_id_list does not include this stream ID",
            ));
        }
        let user = m.user.clone();
        let own_streams: usize = session.rooms.values().map(|m| m.streams.len()).sum();
        // The same user's stream, listed from another cluster node: the user moved here (that
        // node died, or its session there is being replaced), and this publish takes over.
        let moved = self
            .stream(app_id, &stream_id)
            .is_some_and(|e| e.origin.is_some() && e.info.user.user_id == user.user_id);
        if moved {
            self.drop_remote_media(app_id, &stream_id, out);
            if let Some(app) = self.apps.get_mut(&app_id) {
                app.remove_stream(&stream_id);
            }
        }
        let Some(app) = self.apps.get_mut(&app_id) else {
            return Err(err(ErrorCode::Internal, "app vanished"));
        };
        if let Some(entry) = app.streams.get(&stream_id) {
            if entry.owner == sid && entry.room_id == room_id && negotiate.is_none() {
                // Publishing the same stream again is idempotent.
                return Ok(ResponseBody::Publish {
                    stream: entry.info.clone(),
                    sdp: None,
                });
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
            audio_muted: false,
            video_muted: false,
        };
        app.insert_stream(StreamEntry {
            owner: sid,
            room_id: room_id.clone(),
            info: stream.clone(),
            media: negotiate.is_some().then_some(Media::Pending),
            players: BTreeSet::new(),
            origin: None,
        });
        if let Some(m) = self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.rooms.get_mut(&room_id))
        {
            m.streams.insert(stream_id.clone());
        }
        if let Some((conn, request_id, sdp)) = negotiate {
            // Media through the SFU: announce the stream once its media flows.
            self.reply_deferred = true;
            out.push(Output::Negotiate {
                conn,
                request_id,
                session: sid,
                app_id,
                stream_id,
                publish: true,
                sdp,
                video_layer: VideoLayer::Auto,
                origin: None,
            });
            return Ok(ResponseBody::Done);
        }
        self.announce(app_id, &room_id, sid, stream.clone(), out);
        Ok(ResponseBody::Publish { stream, sdp: None })
    }

    /// Tells `room_id` (but `owner`) of a new stream.
    pub(super) fn announce(
        &mut self,
        app_id: u32,
        room_id: &str,
        owner: SessionId,
        stream: StreamInfo,
        out: &mut Vec<Output>,
    ) {
        self.export(
            app_id,
            room_id,
            super::RoomEvent::StreamAdd {
                stream: stream.clone(),
            },
            out,
        );
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

    /// `stop_publish`: ends a stream `sid` publishes.
    pub(super) fn stop_publish(
        &mut self,
        sid: SessionId,
        stream_id: &str,
        out: &mut Vec<Output>,
    ) -> Reply {
        let Some(app_id) = self.sessions.get(&sid).map(|s| s.app_id) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        match self
            .stream(app_id, stream_id)
            .map(|e| (e.owner, e.room_id.clone()))
        {
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

    /// Ends `streams` of `sid` in `room_id`: their media and players are stopped, and the room
    /// is told of those it had been told of.
    pub(super) fn end_streams(
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
        let mut exported = Vec::new();
        let mut players: Vec<(String, BTreeSet<SessionId>)> = Vec::new();
        if let Some(app) = self.apps.get_mut(&app_id) {
            for stream_id in &streams {
                let Some(entry) = app.remove_stream(stream_id) else {
                    continue;
                };
                if entry.media.is_some() {
                    out.push(Output::EndMedia {
                        app_id,
                        stream_id: stream_id.clone(),
                    });
                }
                let announced = entry.announced();
                if !entry.players.is_empty() {
                    players.push((stream_id.clone(), entry.players));
                }
                if announced {
                    if entry.origin.is_none() {
                        exported.push(stream_id.clone());
                    }
                    ended.push(entry.info);
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
        for stream_id in exported {
            self.export(
                app_id,
                room_id,
                super::RoomEvent::StreamDelete { stream_id },
                out,
            );
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
}
