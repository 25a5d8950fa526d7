//! The cluster inside the state machine, sans-I/O: what this node tells the other nodes (its
//! own users and streams coming and going in a room, [`ClusterOutput`]) and what it hears from
//! them (their users and streams in rooms this node has members in). The glue
//! (`crate::cluster`) carries both over Redis.
//!
//! A remote user is a [`RemoteUser`] in the room; a remote stream is a [`StreamEntry`] whose
//! `origin` names its node, so the app-wide stream-ID registry, listings, plays and
//! authorisation treat it like a local one, and the SFU pulls its media from that node when a
//! local session plays it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use onair_protocol::error::ErrorCode;
use onair_protocol::messages::{RoomExtraInfo, ServerMessage, StreamInfo, UpdateType, User};

use super::stream::{Media, StreamEntry};
use super::{Output, RelayState};

/// The owner of a remote stream: no local session has this ID (sessions count from 1).
pub(super) const REMOTE_OWNER: super::SessionId = 0;

/// A change in a room, as one node tells the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A user logged into the room on the sending node (a node with the same user there
    /// kicks its own session: 1002050).
    UserAdd {
        /// Who.
        user: User,
    },
    /// A user of the sending node left the room.
    UserDelete {
        /// Who.
        user_id: String,
    },
    /// A stream of the sending node started flowing in the room.
    StreamAdd {
        /// The stream as members see it.
        stream: StreamInfo,
    },
    /// A stream of the sending node ended.
    StreamDelete {
        /// Which.
        stream_id: String,
    },
    /// A stream of the sending node changed its extra info or mute state.
    StreamInfo {
        /// The stream as it is now.
        stream: StreamInfo,
    },
    /// A member on the sending node set a key of the room's extra info.
    ExtraInfo {
        /// The key, its value and who set it.
        info: RoomExtraInfo,
    },
    /// A message for the room's members (a room message, a custom command, a publisher's
    /// network quality): delivered to the local members, or only to `to_users` among them.
    Deliver {
        /// What they get.
        message: Box<ServerMessage>,
        /// Only these users (a custom command to some), or everyone when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to_users: Vec<String>,
    },
}

/// What the glue must tell the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterOutput {
    /// Tell the room's other nodes (and keep the room's record in Redis).
    Room {
        /// The app.
        app_id: u32,
        /// The room.
        room_id: String,
        /// What changed.
        event: RoomEvent,
    },
    /// The room got its first local member: listen to it and read who is there elsewhere
    /// ([`RelayState::cluster_snapshot`]).
    Opened {
        /// The app.
        app_id: u32,
        /// The room.
        room_id: String,
    },
    /// The room's last local member left: stop listening.
    Closed {
        /// The app.
        app_id: u32,
        /// The room.
        room_id: String,
    },
}

/// A user logged into a room on another node.
#[derive(Clone, Debug)]
pub(super) struct RemoteUser {
    /// The node.
    pub(super) node: String,
    /// Who.
    pub(super) user: User,
}

/// This node's part in a cluster.
pub(super) struct ClusterMode {
    /// Whether Redis answers: without it no login is admitted (a duplicate user or stream ID
    /// could not be seen).
    pub(super) up: bool,
}

impl RelayState {
    /// Makes this state a cluster node (`true`): it reports its rooms' changes as
    /// [`Output::Cluster`] and takes the other nodes' with the `cluster_*` calls.
    pub fn set_clustered(&mut self, clustered: bool) {
        self.cluster = clustered.then_some(ClusterMode { up: true });
    }

    /// Whether Redis answers (the glue's health check): while it does not, logins are
    /// refused with 1000021 (ClusterUnavailable).
    pub fn set_cluster_up(&mut self, up: bool) {
        if let Some(c) = &mut self.cluster {
            c.up = up;
        }
    }

    /// Whether this is a cluster node whose Redis does not answer.
    pub(super) fn cluster_down(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.up)
    }

    /// Queues `event` for the room's other nodes, when clustered.
    pub(super) fn export(
        &self,
        app_id: u32,
        room_id: &str,
        event: RoomEvent,
        out: &mut Vec<Output>,
    ) {
        if self.cluster.is_some() {
            out.push(Output::Cluster(ClusterOutput::Room {
                app_id,
                room_id: room_id.to_string(),
                event,
            }));
        }
    }

    /// Queues a room's opening or closing for the glue, when clustered.
    pub(super) fn export_room(&self, output: ClusterOutput, out: &mut Vec<Output>) {
        if self.cluster.is_some() {
            out.push(Output::Cluster(output));
        }
    }

    /// Every room with local members and what this node has in it (its own users and flowing
    /// streams): what the glue writes back to Redis after it lost its data.
    pub fn cluster_local_rooms(&self) -> Vec<(u32, String, Vec<User>, Vec<StreamInfo>)> {
        let mut rooms = Vec::new();
        for (app_id, app) in &self.apps {
            for (room_id, room) in &app.rooms {
                let users = room
                    .members
                    .values()
                    .filter_map(|sid| self.sessions.get(sid)?.rooms.get(room_id))
                    .map(|m| m.user.clone())
                    .collect();
                let streams = room
                    .streams
                    .iter()
                    .filter_map(|id| app.streams.get(id))
                    .filter(|e| e.origin.is_none() && e.media != Some(Media::Pending))
                    .map(|e| e.info.clone())
                    .collect();
                rooms.push((*app_id, room_id.clone(), users, streams));
            }
        }
        rooms
    }

    /// The other nodes this one has users or streams of (whose leases it watches).
    pub fn cluster_nodes(&self) -> Vec<String> {
        let mut nodes = BTreeSet::new();
        for app in self.apps.values() {
            for room in app.rooms.values() {
                nodes.extend(room.remote_users.values().map(|u| u.node.clone()));
            }
            nodes.extend(app.streams.values().filter_map(|e| e.origin.clone()));
        }
        nodes.into_iter().collect()
    }

    /// The cluster node `stream_id` is published on, when not this one.
    pub fn stream_origin(&self, app_id: u32, stream_id: &str) -> Option<String> {
        self.stream(app_id, stream_id)?.origin.clone()
    }

    /// The user publishing `stream_id` (here or elsewhere).
    pub fn stream_user(&self, app_id: u32, stream_id: &str) -> Option<String> {
        self.stream(app_id, stream_id)
            .map(|e| e.info.user.user_id.clone())
    }

    /// Whether `stream_id` is published on this node and flowing (another node may pull it).
    pub fn cluster_may_pull(&self, app_id: u32, stream_id: &str) -> bool {
        self.stream(app_id, stream_id)
            .is_some_and(|e| e.origin.is_none() && e.media == Some(Media::Flowing))
    }

    /// `node` says `event` happened in a room. Rooms without local members are not listened
    /// to; anything for them is ignored.
    pub fn cluster_event(
        &mut self,
        node: &str,
        app_id: u32,
        room_id: &str,
        event: RoomEvent,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        self.apply_remote(node, app_id, room_id, event, true, &mut out);
        out
    }

    /// What Redis holds of a room this node just opened: the users and streams other nodes
    /// have there. Applied like their events, except that a user here is never kicked by it
    /// (the record may predate this node's own login of the same user).
    pub fn cluster_snapshot(
        &mut self,
        app_id: u32,
        room_id: &str,
        users: Vec<(String, User)>,
        streams: Vec<(String, StreamInfo)>,
        extra_info: Vec<(String, RoomExtraInfo)>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let infos = extra_info
            .into_iter()
            .map(|(node, info)| (node, RoomEvent::ExtraInfo { info }));
        let users = users
            .into_iter()
            .map(|(node, user)| (node, RoomEvent::UserAdd { user }));
        let streams = streams
            .into_iter()
            .map(|(node, stream)| (node, RoomEvent::StreamAdd { stream }));
        for (node, event) in infos.chain(users).chain(streams) {
            self.apply_remote(&node, app_id, room_id, event, false, &mut out);
        }
        out
    }

    /// `node` is gone (its lease expired): its users leave every room here and its streams
    /// end. Returns what to tell local clients and, per room, the user and stream IDs removed
    /// (for the glue to clear from Redis).
    pub fn cluster_node_gone(&mut self, node: &str) -> (Vec<Output>, Vec<GoneFromRoom>) {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let mut rooms = Vec::new();
        for (app_id, app) in &self.apps {
            for (room_id, room) in &app.rooms {
                let users: Vec<String> = room
                    .remote_users
                    .iter()
                    .filter(|(_, u)| u.node == node)
                    .map(|(id, _)| id.clone())
                    .collect();
                let streams: Vec<String> = room
                    .streams
                    .iter()
                    .filter(|id| {
                        app.streams
                            .get(*id)
                            .is_some_and(|e| e.origin.as_deref() == Some(node))
                    })
                    .cloned()
                    .collect();
                if !users.is_empty() || !streams.is_empty() {
                    rooms.push((*app_id, room_id.clone(), users, streams));
                }
            }
        }
        for (app_id, room_id, users, streams) in rooms {
            let users_go = users
                .iter()
                .map(|u| RoomEvent::UserDelete { user_id: u.clone() });
            let streams_go = streams.iter().map(|s| RoomEvent::StreamDelete {
                stream_id: s.clone(),
            });
            for event in users_go.chain(streams_go) {
                self.apply_remote(node, app_id, &room_id, event, false, &mut out);
            }
            gone.push(GoneFromRoom {
                app_id,
                room_id,
                users,
                streams,
            });
        }
        (out, gone)
    }

    fn apply_remote(
        &mut self,
        node: &str,
        app_id: u32,
        room_id: &str,
        event: RoomEvent,
        may_kick: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(room) = self.apps.get(&app_id).and_then(|a| a.rooms.get(room_id)) else {
            return;
        };
        match event {
            RoomEvent::UserAdd { user } => {
                let local = room.members.get(&user.user_id).copied();
                let known = room.remote_users.contains_key(&user.user_id);
                if let Some(old) = local {
                    if !may_kick {
                        return;
                    }
                    // The same user logged in on another node: the older session here goes.
                    tracing::info!(
                        user_id = user.user_id,
                        node,
                        "user logged in on another node"
                    );
                    self.kick(old, room_id, out);
                }
                let Some(room) = self
                    .apps
                    .get_mut(&app_id)
                    .and_then(|a| a.rooms.get_mut(room_id))
                else {
                    return;
                };
                room.remote_users.insert(
                    user.user_id.clone(),
                    RemoteUser {
                        node: node.to_string(),
                        user: user.clone(),
                    },
                );
                if local.is_none() && !known {
                    let to = self.room_conns(app_id, room_id, REMOTE_OWNER, true);
                    self.send(
                        to,
                        ServerMessage::UserUpdate {
                            room_id: room_id.to_string(),
                            update_type: UpdateType::Add,
                            users: vec![user],
                        },
                        out,
                    );
                }
                // A kick may have emptied the room here: then nobody is left to listen.
                self.close_if_empty(app_id, room_id, out);
            }
            RoomEvent::UserDelete { user_id } => {
                if room
                    .remote_users
                    .get(&user_id)
                    .is_none_or(|u| u.node != node)
                {
                    return;
                }
                let Some(removed) = self
                    .apps
                    .get_mut(&app_id)
                    .and_then(|a| a.rooms.get_mut(room_id))
                    .and_then(|r| r.remote_users.remove(&user_id))
                else {
                    return;
                };
                let to = self.room_conns(app_id, room_id, REMOTE_OWNER, true);
                self.send(
                    to,
                    ServerMessage::UserUpdate {
                        room_id: room_id.to_string(),
                        update_type: UpdateType::Delete,
                        users: vec![removed.user],
                    },
                    out,
                );
            }
            RoomEvent::StreamAdd { stream } => {
                let Some(app) = self.apps.get_mut(&app_id) else {
                    return;
                };
                let stream_id = stream.stream_id.clone();
                match app.streams.get_mut(&stream_id) {
                    // Ours: Redis's claim keeps another node from publishing it.
                    Some(e) if e.origin.is_none() => return,
                    Some(e) => {
                        let moved = e.origin.as_deref() != Some(node);
                        e.origin = Some(node.to_string());
                        e.info = stream;
                        if moved {
                            // Its publisher moved to another node: what was pulled from the
                            // old one is over; players ask again and pull from the new one.
                            self.drop_remote_media(app_id, &stream_id, out);
                        }
                        return;
                    }
                    None => {}
                }
                app.insert_stream(StreamEntry {
                    owner: REMOTE_OWNER,
                    room_id: room_id.to_string(),
                    info: stream.clone(),
                    media: Some(Media::Flowing),
                    players: BTreeSet::new(),
                    origin: Some(node.to_string()),
                });
                let to = self.room_conns(app_id, room_id, REMOTE_OWNER, false);
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
            RoomEvent::StreamInfo { stream } => {
                let Some(entry) = self
                    .apps
                    .get_mut(&app_id)
                    .and_then(|a| a.streams.get_mut(&stream.stream_id))
                    .filter(|e| e.origin.as_deref() == Some(node))
                else {
                    return;
                };
                let old = std::mem::replace(&mut entry.info, stream.clone());
                let to = self.room_conns(app_id, room_id, REMOTE_OWNER, false);
                if old.extra_info != stream.extra_info {
                    self.send(
                        to.clone(),
                        ServerMessage::StreamExtraInfoUpdate {
                            room_id: room_id.to_string(),
                            streams: vec![stream.clone()],
                        },
                        out,
                    );
                }
                if (old.audio_muted, old.video_muted) != (stream.audio_muted, stream.video_muted) {
                    self.send(
                        to,
                        ServerMessage::StreamMuteUpdate {
                            room_id: room_id.to_string(),
                            stream_id: stream.stream_id,
                            audio_muted: stream.audio_muted,
                            video_muted: stream.video_muted,
                        },
                        out,
                    );
                }
            }
            RoomEvent::ExtraInfo { info } => {
                let Some(room) = self
                    .apps
                    .get_mut(&app_id)
                    .and_then(|a| a.rooms.get_mut(room_id))
                else {
                    return;
                };
                match room.data.extra_info.iter_mut().find(|i| i.key == info.key) {
                    Some(existing) if *existing == info => return,
                    Some(existing) => *existing = info.clone(),
                    None => room.data.extra_info.push(info.clone()),
                }
                let to = self.room_conns(app_id, room_id, REMOTE_OWNER, false);
                self.send(
                    to,
                    ServerMessage::RoomExtraInfoUpdate {
                        room_id: room_id.to_string(),
                        infos: vec![info],
                    },
                    out,
                );
            }
            RoomEvent::Deliver { message, to_users } => {
                let to = if to_users.is_empty() {
                    self.room_conns(app_id, room_id, REMOTE_OWNER, false)
                } else {
                    to_users
                        .iter()
                        .filter_map(|u| room.members.get(u))
                        .filter_map(|sid| self.sessions.get(sid)?.conn)
                        .collect()
                };
                self.send(to, *message, out);
            }
            RoomEvent::StreamDelete { stream_id } => {
                let ours = self
                    .stream(app_id, &stream_id)
                    .is_some_and(|e| e.origin.as_deref() == Some(node) && e.room_id == room_id);
                if ours {
                    self.end_streams(REMOTE_OWNER, app_id, room_id, vec![stream_id], out);
                }
            }
        }
    }

    /// The media pulled from another node for a remote stream failed: its players here stop
    /// (they ask again, and the next play pulls afresh); the stream stays listed.
    pub(super) fn drop_remote_media(
        &mut self,
        app_id: u32,
        stream_id: &str,
        out: &mut Vec<Output>,
    ) {
        let players = self
            .apps
            .get_mut(&app_id)
            .and_then(|a| a.streams.get_mut(stream_id))
            .map(|e| std::mem::take(&mut e.players))
            .unwrap_or_default();
        out.push(Output::EndMedia {
            app_id,
            stream_id: stream_id.to_string(),
        });
        let mut conns = Vec::new();
        for p in players {
            if let Some(s) = self.sessions.get_mut(&p) {
                s.playing.remove(stream_id);
                conns.extend(s.conn);
            }
        }
        self.send(
            conns,
            ServerMessage::PlayStopped {
                stream_id: stream_id.to_string(),
                code: ErrorCode::StreamNotFound.code(),
                reason: "the link to the stream's node failed".into(),
            },
            out,
        );
    }

    /// Removes a room that has no local member left (its remote streams end here, and the
    /// glue stops listening to it).
    pub(super) fn close_if_empty(&mut self, app_id: u32, room_id: &str, out: &mut Vec<Output>) {
        let Some(app) = self.apps.get(&app_id) else {
            return;
        };
        if !app.rooms.get(room_id).is_some_and(|r| r.members.is_empty()) {
            return;
        }
        let remote: Vec<String> = app
            .streams
            .iter()
            .filter(|(_, e)| e.origin.is_some() && e.room_id == room_id)
            .map(|(id, _)| id.clone())
            .collect();
        self.end_streams(REMOTE_OWNER, app_id, room_id, remote, out);
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.rooms.remove(room_id);
        }
        self.export_room(
            ClusterOutput::Closed {
                app_id,
                room_id: room_id.to_string(),
            },
            out,
        );
    }
}

/// What a departed node left in one room here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoneFromRoom {
    /// The app.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// Its users there.
    pub users: Vec<String>,
    /// Its streams there.
    pub streams: Vec<String>,
}
