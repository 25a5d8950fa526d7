//! Media through the SFU: playing and stopping, the answers of its negotiations, and its news of
//! streams that start flowing or connections that fail.

use std::time::Instant;

use onair_protocol::error::ErrorCode;
use onair_protocol::ids;
use onair_protocol::messages::{LayerChangeReason, ResponseBody, ServerMessage, VideoLayer};

use super::stream::Media;
use super::{ConnId, Output, RelayState, Reply, SessionId, err};

impl RelayState {
    /// `play`: registers `sid` as a player of a flowing stream and asks the SFU to negotiate;
    /// the answer is deferred until [`Self::negotiated`]. Playing again replaces the old play.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn play(
        &mut self,
        sid: SessionId,
        conn: ConnId,
        request_id: u64,
        stream_id: String,
        sdp: String,
        video_layer: VideoLayer,
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
        if !self.apps.contains_key(&app_id) {
            return Err(err(ErrorCode::Internal, "app vanished"));
        }
        let Some(entry) = self
            .stream(app_id, &stream_id)
            .filter(|e| e.media == Some(Media::Flowing))
        else {
            return Err(err(ErrorCode::StreamNotFound, "no such stream is flowing"));
        };
        let origin = entry.origin.clone();
        if !self.may_play(sid, app_id, &entry.room_id) {
            return Err(err(
                ErrorCode::PlayNotAuthorized,
                "log into the stream's room to play it",
            ));
        }
        let others = session.playing.iter().filter(|s| **s != stream_id).count();
        if others >= self.limits.max_plays_per_session {
            return Err(err(
                ErrorCode::TooManyPlays,
                format!(
                    "at most {} plays per session",
                    self.limits.max_plays_per_session
                ),
            ));
        }
        // Playing again replaces the old connection.
        self.stop_playing(sid, &stream_id, out);
        if let Some(entry) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.streams.get_mut(&stream_id))
        {
            entry.players.insert(sid);
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
            video_layer,
            origin,
        });
        Ok(ResponseBody::Done)
    }

    /// `restart_ice`: the session's publish (or play) connection of `stream_id` takes a
    /// restart offer; the SFU answers on the same connection.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn restart_ice(
        &mut self,
        sid: SessionId,
        conn: ConnId,
        request_id: u64,
        stream_id: String,
        publish: bool,
        sdp: String,
        out: &mut Vec<Output>,
    ) -> Reply {
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        let app_id = session.app_id;
        let ours = if publish {
            self.stream(app_id, &stream_id)
                .is_some_and(|e| e.owner == sid && e.origin.is_none())
        } else {
            session.playing.contains(&stream_id)
        };
        if !ours {
            return Err(err(
                ErrorCode::StreamNotFound,
                if publish {
                    "this session does not publish that stream"
                } else {
                    "this session does not play that stream"
                },
            ));
        }
        self.reply_deferred = true;
        out.push(Output::RestartIce {
            conn,
            request_id,
            session: sid,
            app_id,
            stream_id,
            publish,
            sdp,
        });
        Ok(ResponseBody::Done)
    }

    /// The SFU restarted ICE (or could not): answer the request. A failed restart leaves the
    /// connection as it was; the client falls back to negotiating anew.
    pub fn ice_restarted(
        &mut self,
        conn: ConnId,
        request_id: u64,
        publish: bool,
        answer: Result<String, String>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let code = if publish {
            ErrorCode::MediaNegotiationFailed
        } else {
            ErrorCode::PlayNegotiationFailed
        };
        let result = answer
            .map(|sdp| ResponseBody::IceRestarted { sdp })
            .map_err(|e| err(code, format!("ICE restart: {e}")));
        self.reply(conn, Some(request_id), result, Instant::now(), &mut out);
        out
    }

    /// `set_play_layer`: a player of `stream_id` asks for another video layer.
    pub(super) fn set_play_layer(
        &mut self,
        sid: SessionId,
        stream_id: String,
        video_layer: VideoLayer,
        out: &mut Vec<Output>,
    ) -> Reply {
        let Some(session) = self.sessions.get(&sid) else {
            return Err(err(ErrorCode::Internal, "session vanished"));
        };
        if !session.playing.contains(&stream_id) {
            return Err(err(ErrorCode::StreamNotFound, "not playing that stream"));
        }
        out.push(Output::SetLayer {
            app_id: session.app_id,
            stream_id,
            session: sid,
            video_layer,
        });
        Ok(ResponseBody::Done)
    }

    /// The SFU switched a player of `stream_id` to `layer`: tell it, if it still plays it.
    pub fn layer_changed(
        &mut self,
        app_id: u32,
        stream_id: &str,
        sid: SessionId,
        layer: usize,
        reason: LayerChangeReason,
    ) -> Vec<Output> {
        let message = ServerMessage::PlayLayerChanged {
            stream_id: stream_id.to_string(),
            layer: layer as u8,
            reason,
        };
        self.send_to_player(app_id, stream_id, sid, message)
    }

    /// The SFU's view of a player's link (layer sent, estimate): tell it, if it still plays
    /// the stream.
    pub fn play_link(
        &mut self,
        app_id: u32,
        stream_id: &str,
        sid: SessionId,
        layer: usize,
        estimate_kbps: u32,
    ) -> Vec<Output> {
        let message = ServerMessage::PlayLink {
            stream_id: stream_id.to_string(),
            layer: layer as u8,
            estimate_kbps,
        };
        self.send_to_player(app_id, stream_id, sid, message)
    }

    /// The layers players need of a stream changed: tell its publisher (an engine; a WHIP
    /// publisher has no channel for it), which pauses the others.
    pub fn layers_wanted(
        &mut self,
        app_id: u32,
        stream_id: &str,
        active: Vec<bool>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(conn) = self
            .apps
            .get(&app_id)
            .and_then(|a| a.streams.get(stream_id))
            .and_then(|e| self.sessions.get(&e.owner))
            .and_then(|s| s.conn)
        else {
            return out;
        };
        let message = ServerMessage::PublishLayers {
            stream_id: stream_id.to_string(),
            active,
        };
        self.send(vec![conn], message, &mut out);
        out
    }

    /// `message` to session `sid` if it plays `stream_id` of `app_id` and is connected.
    fn send_to_player(
        &mut self,
        app_id: u32,
        stream_id: &str,
        sid: SessionId,
        message: ServerMessage,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(conn) = self
            .sessions
            .get(&sid)
            .filter(|s| s.app_id == app_id && s.playing.contains(stream_id))
            .and_then(|s| s.conn)
        else {
            return out;
        };
        self.send(vec![conn], message, &mut out);
        out
    }

    /// Whether `sid` may play a stream of `room_id`: it is in that room, or, where the app
    /// allows cross-room play, in some room of the app.
    pub(super) fn may_play(&self, sid: SessionId, app_id: u32, room_id: &str) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return false;
        };
        s.rooms.contains_key(room_id)
            || (!s.rooms.is_empty()
                && self
                    .apps
                    .get(&app_id)
                    .is_some_and(|a| a.config.cross_room_play))
    }

    /// Ends the plays `sid` may no longer make (it left rooms), telling it why with `code`.
    pub(super) fn revoke_plays(
        &mut self,
        sid: SessionId,
        code: ErrorCode,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let (app_id, conn) = (s.app_id, s.conn);
        let revoked: Vec<String> = s
            .playing
            .iter()
            .filter(|stream_id| {
                self.stream(app_id, stream_id)
                    .is_none_or(|e| !self.may_play(sid, app_id, &e.room_id))
            })
            .cloned()
            .collect();
        for stream_id in revoked {
            self.stop_playing(sid, &stream_id, out);
            if let Some(conn) = conn {
                self.send(
                    vec![conn],
                    ServerMessage::PlayStopped {
                        stream_id,
                        code: code.code(),
                        reason: reason.to_string(),
                    },
                    out,
                );
            }
        }
    }

    /// Whether `sid` was playing `stream_id` (it no longer is).
    pub(super) fn stop_playing(
        &mut self,
        sid: SessionId,
        stream_id: &str,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let app_id = s.app_id;
        if !s.playing.remove(stream_id) {
            return false;
        }
        if let Some(entry) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.streams.get_mut(stream_id))
        {
            entry.players.remove(&sid);
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
        let result = match (publish, answer) {
            (true, Ok(sdp)) => {
                let stream = self
                    .stream(app_id, stream_id)
                    .filter(|e| e.owner == session)
                    .map(|e| e.info.clone());
                match stream {
                    Some(stream) => Ok(ResponseBody::Publish {
                        stream,
                        sdp: Some(sdp),
                    }),
                    None => {
                        out.push(Output::EndMedia {
                            app_id,
                            stream_id: stream_id.to_string(),
                        });
                        Err(err(ErrorCode::StreamNotFound, "the stream ended meanwhile"))
                    }
                }
            }
            (true, Err(e)) => {
                let room_id = self
                    .stream(app_id, stream_id)
                    .filter(|e| e.owner == session)
                    .map(|e| e.room_id.clone());
                if let Some(room_id) = room_id {
                    self.end_streams(
                        session,
                        app_id,
                        &room_id,
                        vec![stream_id.to_string()],
                        &mut out,
                    );
                }
                Err(err(ErrorCode::MediaNegotiationFailed, e))
            }
            (false, Ok(sdp)) => {
                let still = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.playing.contains(stream_id));
                if still && self.stream(app_id, stream_id).is_some() {
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

    /// The glue refused a negotiation before the SFU ran it (a cluster node that could not
    /// claim the stream ID in Redis): the stream or the play is dropped, and the request is
    /// answered with `code`.
    #[allow(clippy::too_many_arguments)]
    pub fn negotiation_refused(
        &mut self,
        conn: ConnId,
        request_id: u64,
        session: SessionId,
        app_id: u32,
        stream_id: &str,
        publish: bool,
        code: ErrorCode,
        message: &str,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if publish {
            let room_id = self
                .stream(app_id, stream_id)
                .filter(|e| e.owner == session && e.origin.is_none())
                .map(|e| e.room_id.clone());
            if let Some(room_id) = room_id {
                self.end_streams(
                    session,
                    app_id,
                    &room_id,
                    vec![stream_id.to_string()],
                    &mut out,
                );
            }
        } else {
            self.stop_playing(session, stream_id, &mut out);
        }
        self.reply(
            conn,
            Some(request_id),
            Err(err(code, message)),
            Instant::now(),
            &mut out,
        );
        out
    }

    /// The SFU saw the first media of a stream: announce it to its room.
    pub fn stream_flowing(&mut self, app_id: u32, stream_id: &str) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(entry) = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.streams.get_mut(stream_id))
        else {
            return out;
        };
        if entry.media != Some(Media::Pending) {
            return out;
        }
        entry.media = Some(Media::Flowing);
        let (owner, room_id, stream) = (entry.owner, entry.room_id.clone(), entry.info.clone());
        self.announce(app_id, &room_id, owner, stream, &mut out);
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

    /// A publisher's media connection failed or closed: end the stream and tell its owner
    /// (1003020).
    pub fn media_failed(&mut self, app_id: u32, stream_id: &str, reason: &str) -> Vec<Output> {
        self.media_failed_with(app_id, stream_id, reason, ErrorCode::MediaNegotiationFailed)
    }

    /// [`Self::media_failed`] with the code the owner is told.
    pub fn media_failed_with(
        &mut self,
        app_id: u32,
        stream_id: &str,
        reason: &str,
        code: ErrorCode,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if self
            .stream(app_id, stream_id)
            .is_some_and(|e| e.origin.is_some())
        {
            self.drop_remote_media(app_id, stream_id, &mut out);
            return out;
        }
        let Some((owner, room_id)) = self
            .stream(app_id, stream_id)
            .filter(|e| e.media.is_some())
            .map(|e| (e.owner, e.room_id.clone()))
        else {
            return out;
        };
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
                    code: code.code(),
                    reason: reason.to_string(),
                },
                &mut out,
            );
        }
        out
    }
}
