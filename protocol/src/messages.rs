//! The signaling protocol between engine and relay: JSON over WebSocket, one message per frame.
//!
//! Every client request is `{"id": N, "type": "...", ...}` and gets exactly one
//! `{"type":"response","id":N, "result"|"error": ...}`. The relay also pushes events
//! (`user_update`, `stream_update`, `kicked`, `goodbye`) that carry no id. Requests are
//! internally tagged by `type`, so publish/play negotiation (SDP offer/answer, trickled ICE) adds
//! variants without changing the envelope. [`PROTOCOL_VERSION`] is checked in `hello`.

use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// The signaling protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A user as the seed defines one: an ID unique within the app, and a display name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct User {
    /// Unique within the app; letters, digits, `-_.`, at most 64 bytes.
    pub user_id: String,
    /// Free text, at most 256 bytes.
    #[serde(default)]
    pub user_name: String,
}

impl User {
    /// A user whose name is its ID.
    pub fn new(user_id: impl Into<String>) -> Self {
        let user_id = user_id.into();
        Self {
            user_name: user_id.clone(),
            user_id,
        }
    }
}

/// A stream being published in a room, as room members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Unique within the app; letters, digits, `-_.`, at most 256 bytes.
    pub stream_id: String,
    /// Who publishes it.
    pub user: User,
    /// Free text the publisher attached, at most 1024 bytes.
    #[serde(default)]
    pub extra_info: String,
    /// When the relay registered it, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub since_unix_ms: u64,
    /// The publisher muted its audio (`mute_publish_stream_audio`): players hear silence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audio_muted: bool,
    /// The publisher muted its video (`mute_publish_stream_video`): players see black.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub video_muted: bool,
}

/// A link's quality as ZEGO's `ZegoStreamQualityLevel` (same numbers), from its round trip,
/// loss and jitter (thresholds in the engine's `network_quality` module and the README).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QualityLevel {
    /// Smooth.
    Excellent = 0,
    /// Fine.
    Good = 1,
    /// Noticeable delay or loss.
    Medium = 2,
    /// Stalls likely.
    Bad = 3,
    /// Nothing gets through.
    Die = 4,
    /// No measurement (nothing published or played).
    #[default]
    Unknown = 5,
}

impl QualityLevel {
    /// The level with this number (anything out of range is Unknown).
    pub fn from_u8(n: u8) -> QualityLevel {
        match n {
            0 => QualityLevel::Excellent,
            1 => QualityLevel::Good,
            2 => QualityLevel::Medium,
            3 => QualityLevel::Bad,
            4 => QualityLevel::Die,
            _ => QualityLevel::Unknown,
        }
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            QualityLevel::Excellent => "excellent",
            QualityLevel::Good => "good",
            QualityLevel::Medium => "medium",
            QualityLevel::Bad => "bad",
            QualityLevel::Die => "die",
            QualityLevel::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for QualityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which video layer a player asks for (ZEGO's `setPlayStreamVideoType`: Default, Big, Small;
/// Smallest is the third simulcast layer). A stream without simulcast has only the big one, and
/// a missing layer is replaced by the nearest one there is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoLayer {
    /// The best the player's link carries (the relay chooses).
    #[default]
    Auto,
    /// The full picture.
    Big,
    /// The middle layer.
    Small,
    /// The smallest layer.
    Smallest,
    /// No video at all (the audio goes on): what a muted or hidden player asks for, so the
    /// relay sends none (and the publisher may pause layers nobody needs). Any other value
    /// resumes from the next keyframe.
    Off,
}

impl VideoLayer {
    /// The layer index it asks for (Auto: the full picture, lowered by the relay as needed;
    /// Off: none, the full one's index).
    pub fn index(self) -> usize {
        match self {
            VideoLayer::Auto | VideoLayer::Big | VideoLayer::Off => 0,
            VideoLayer::Small => 1,
            VideoLayer::Smallest => 2,
        }
    }

    /// Whether the relay chooses.
    pub fn is_auto(&self) -> bool {
        *self == VideoLayer::Auto
    }

    /// Parses `auto`, `big`, `small` or `smallest`.
    pub fn parse(text: &str) -> Option<VideoLayer> {
        Some(match text {
            "auto" => VideoLayer::Auto,
            "big" => VideoLayer::Big,
            "small" => VideoLayer::Small,
            "smallest" => VideoLayer::Smallest,
            "off" => VideoLayer::Off,
            _ => return None,
        })
    }
}

/// Why a player's video layer changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerChangeReason {
    /// The player asked for it (or for a layer the stream lacks, and this is the nearest).
    Requested,
    /// The relay's estimate of the player's link.
    Bandwidth,
}

/// What a resuming connection presents to take its old session back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTicket {
    /// The session to resume.
    pub session_id: u64,
    /// The secret the relay handed out with that session.
    pub secret: String,
}

/// A client request with its correlation id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What is asked.
    #[serde(flatten)]
    pub body: RequestBody,
}

/// What a client can ask of the relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestBody {
    /// First message on a connection: protocol version and app; optionally resume a session.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The app this connection belongs to.
        app_id: u32,
        /// Resume an earlier session of this client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeTicket>,
    },
    /// Log into a room (created on first login). Logging into a room this session is already in,
    /// as the same user, is a resync: it answers with the room's current users and streams.
    Login {
        /// The room.
        room_id: String,
        /// Who logs in.
        user: User,
        /// An HS256 JWT minted with the app sign (preferred).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The app sign itself, where the app allows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app_sign: Option<String>,
        /// Receive `user_update` events for this room.
        #[serde(default)]
        is_user_status_notify: bool,
    },
    /// Leave a room; its streams from this session end at once.
    Logout {
        /// The room.
        room_id: String,
    },
    /// Keep the session alive.
    Heartbeat,
    /// Register a stream in a room (the stream-ID uniqueness rule is enforced here).
    Publish {
        /// The room, which this session must be in.
        room_id: String,
        /// Unique within the app.
        stream_id: String,
        /// Free text shown to players.
        #[serde(default)]
        extra_info: String,
        /// A WebRTC offer (sendonly H.264 + Opus) to publish media through the relay's SFU. The
        /// stream is announced to the room once its media flows. Without one, the stream is
        /// registered by signaling alone (tests, external media paths).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<String>,
    },
    /// Play a stream of this app through the SFU (the session must be logged into a room).
    Play {
        /// The stream.
        stream_id: String,
        /// A WebRTC offer (recvonly H.264 + Opus).
        sdp: String,
        /// Which video layer of a simulcast stream (any other stream has only the big one).
        #[serde(default, skip_serializing_if = "VideoLayer::is_auto")]
        video_layer: VideoLayer,
    },
    /// Restart ICE on the connection of a stream this session publishes or plays: a new offer
    /// with fresh ICE credentials on the same peer connection (same DTLS, same SSRCs), for a
    /// connection that lost its path. Answered with `ice_restarted`.
    RestartIce {
        /// The stream.
        stream_id: String,
        /// The session's publish connection of the stream (or its play connection).
        publish: bool,
        /// The restart offer.
        sdp: String,
    },
    /// Ask for another video layer of a stream this session plays.
    SetPlayLayer {
        /// The stream.
        stream_id: String,
        /// The layer.
        video_layer: VideoLayer,
    },
    /// Stop playing a stream.
    StopPlay {
        /// The stream.
        stream_id: String,
    },
    /// End a stream this session publishes.
    StopPublish {
        /// The stream.
        stream_id: String,
    },
    /// Send a room message (ZEGO's `sendBroadcastMessage`, `sendBarrageMessage`,
    /// `sendCustomCommand`); answered with its message ID.
    SendMessage {
        /// The room, which this session must be in.
        room_id: String,
        /// Which kind.
        kind: MessageKind,
        /// The text (at most 1 KiB).
        text: String,
        /// For a custom command: the users it goes to (empty: everyone in the room).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to_users: Vec<String>,
    },
    /// Replace a published stream's extra info (ZEGO's `setStreamExtraInfo`).
    SetStreamExtraInfo {
        /// The stream, which this session must publish.
        stream_id: String,
        /// The new extra info (at most 1 KiB).
        extra_info: String,
    },
    /// A published stream's audio or video was muted or unmuted by its publisher (ZEGO's
    /// `mutePublishStreamAudio/Video`); the room hears of it.
    SetStreamMute {
        /// The stream, which this session must publish.
        stream_id: String,
        /// Audio muted.
        audio_muted: bool,
        /// Video muted.
        video_muted: bool,
    },
    /// This session's upstream network quality (a [`QualityLevel`] number), which the relay
    /// shares with the rooms the session is in when it changes. At most one a second counts.
    ReportNetworkQuality {
        /// The level, 0 (excellent) to 5 (unknown).
        upstream: u8,
    },
    /// Set one key of the room's extra info (ZEGO's `setRoomExtraInfo`).
    SetRoomExtraInfo {
        /// The room, which this session must be in.
        room_id: String,
        /// The key (at most 128 bytes; at most 10 keys per room).
        key: String,
        /// The value (at most 4 KiB).
        value: String,
    },
    /// Replace the token of a room this session is in before it expires (the seed's
    /// `renewToken`). The new token must be for the same app, user and room.
    RenewToken {
        /// The room.
        room_id: String,
        /// The new token.
        token: String,
    },
}

impl RequestBody {
    /// The `type` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestBody::Hello { .. } => "hello",
            RequestBody::Login { .. } => "login",
            RequestBody::Logout { .. } => "logout",
            RequestBody::Heartbeat => "heartbeat",
            RequestBody::Publish { .. } => "publish",
            RequestBody::StopPublish { .. } => "stop_publish",
            RequestBody::Play { .. } => "play",
            RequestBody::StopPlay { .. } => "stop_play",
            RequestBody::RenewToken { .. } => "renew_token",
            RequestBody::SendMessage { .. } => "send_message",
            RequestBody::SetRoomExtraInfo { .. } => "set_room_extra_info",
            RequestBody::SetStreamExtraInfo { .. } => "set_stream_extra_info",
            RequestBody::SetStreamMute { .. } => "set_stream_mute",
            RequestBody::SetPlayLayer { .. } => "set_play_layer",
            RequestBody::RestartIce { .. } => "restart_ice",
            RequestBody::ReportNetworkQuality { .. } => "report_network_quality",
        }
    }
}

/// A room message's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Reliable, to everyone in the room but the sender (≤ 10 a second per room).
    Broadcast,
    /// Bullet chat: to everyone but the sender, may be dropped under load (≤ 20 a second).
    Barrage,
    /// Signalling between users: to the listed users (or everyone) but the sender.
    Custom,
}

/// One room message as members receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMessage {
    /// Its ID, increasing within the room.
    pub message_id: u64,
    /// The text.
    pub text: String,
    /// Who sent it.
    pub from_user: User,
    /// When the relay took it, milliseconds since the Unix epoch.
    pub send_time: u64,
}

/// One key of a room's extra info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomExtraInfo {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Who set it last.
    pub update_user: User,
    /// When, milliseconds since the Unix epoch.
    pub update_time: u64,
}

/// Add or delete, as in the seed's `ZegoUpdateType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    /// Users joined or streams started.
    Add = 0,
    /// Users left or streams ended.
    Delete = 1,
}

/// A successful response's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseBody {
    /// `hello` accepted.
    Hello {
        /// This session's ID.
        session_id: u64,
        /// Secret for resuming this session after a reconnect.
        resume_secret: String,
        /// Whether an earlier session was resumed.
        resumed: bool,
        /// How often the client should send `heartbeat`.
        heartbeat_interval_ms: u64,
        /// After this long without hearing from the client the relay removes the session.
        heartbeat_timeout_ms: u64,
        /// The relay's version string.
        server: String,
        /// STUN/TURN servers the client should use for media (TURN credentials are
        /// short-lived, minted for this session).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<crate::ice::IceServer>,
    },
    /// `login` accepted: the room as it is now, without this user and its own streams.
    Login {
        /// The room.
        room_id: String,
        /// Other users in the room.
        users: Vec<User>,
        /// Streams in the room published by others.
        streams: Vec<StreamInfo>,
        /// The room's extra info, every key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra_info: Vec<RoomExtraInfo>,
    },
    /// `send_message` accepted.
    MessageSent {
        /// The message's ID.
        message_id: u64,
    },
    /// `publish` accepted.
    Publish {
        /// The stream as registered.
        stream: StreamInfo,
        /// The SFU's answer, when the request carried an offer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<String>,
    },
    /// `play` accepted.
    Play {
        /// The stream.
        stream_id: String,
        /// The SFU's answer.
        sdp: String,
    },
    /// `restart_ice` accepted: the SFU's answer on the same connection.
    IceRestarted {
        /// The answer.
        sdp: String,
    },
    /// Done, nothing to return.
    Done,
}

/// Everything the relay sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The one answer to a request.
    Response {
        /// The request's id; `null` if the request was too broken to read one.
        id: Option<u64>,
        /// Set on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<ResponseBody>,
        /// Set on failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WireError>,
    },
    /// Users joined or left a room (only sent where `is_user_status_notify` was set).
    UserUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update_type: UpdateType,
        /// Who.
        users: Vec<User>,
    },
    /// Streams started or ended in a room.
    StreamUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update_type: UpdateType,
        /// Which.
        streams: Vec<StreamInfo>,
    },
    /// This session was removed from a room by the relay.
    Kicked {
        /// The room.
        room_id: String,
        /// Why, as an error code (1002050: same user logged in elsewhere).
        code: u32,
        /// Why, in words.
        reason: String,
    },
    /// A stream this session plays has ended (its publisher stopped or left).
    PlayStopped {
        /// The stream.
        stream_id: String,
        /// Why, as an error code (1004002: the stream is gone).
        code: u32,
        /// Why, in words.
        reason: String,
    },
    /// A stream this session publishes was ended by the relay (its media connection failed).
    PublishStopped {
        /// The stream.
        stream_id: String,
        /// Why, as an error code.
        code: u32,
        /// Why, in words.
        reason: String,
    },
    /// Room messages (broadcast or barrage) from other members, oldest first.
    RoomMessages {
        /// The room.
        room_id: String,
        /// Broadcast or barrage.
        kind: MessageKind,
        /// The messages.
        messages: Vec<RoomMessage>,
    },
    /// A custom command from another member.
    CustomCommand {
        /// The room.
        room_id: String,
        /// Who sent it.
        from_user: User,
        /// The command text.
        command: String,
    },
    /// Streams' extra info changed.
    StreamExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The streams, with their new extra info.
        streams: Vec<StreamInfo>,
    },
    /// The video layer this session gets of a stream it plays changed.
    PlayLayerChanged {
        /// The stream.
        stream_id: String,
        /// 0 (the full picture), 1 or 2 (smaller).
        layer: u8,
        /// Why.
        reason: LayerChangeReason,
    },
    /// The relay's view of this session's link for a stream it plays with layers (every
    /// 2 s): the layer it sends and its estimate of the link.
    PlayLink {
        /// The stream.
        stream_id: String,
        /// The layer sent.
        layer: u8,
        /// The relay's bandwidth estimate towards this player, kbit/s.
        estimate_kbps: u32,
    },
    /// To a stream's publisher: which of its simulcast layers players need (0 first); it may
    /// pause the others until they are needed again.
    PublishLayers {
        /// The stream.
        stream_id: String,
        /// Per layer: needed.
        active: Vec<bool>,
    },
    /// A stream's publisher muted or unmuted its audio or video.
    StreamMuteUpdate {
        /// The room.
        room_id: String,
        /// The stream.
        stream_id: String,
        /// Audio muted.
        audio_muted: bool,
        /// Video muted.
        video_muted: bool,
    },
    /// A member's upstream network quality changed.
    NetworkQuality {
        /// The room.
        room_id: String,
        /// The member.
        user_id: String,
        /// Its upstream level, 0 (excellent) to 5 (unknown).
        upstream: u8,
    },
    /// Keys of the room's extra info changed.
    RoomExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The keys that changed, with their new values.
        infos: Vec<RoomExtraInfo>,
    },
    /// The token of a room this session is in expires soon: renew it (`renew_token`) or the
    /// session is removed from the room when it does (1002054).
    TokenWillExpire {
        /// The room.
        room_id: String,
        /// Seconds left.
        remain_seconds: u64,
    },
    /// The relay is closing this connection and tells why.
    Goodbye {
        /// Why, as an error code.
        code: u32,
        /// Why, in words.
        reason: String,
    },
}

impl ServerMessage {
    /// A success response.
    pub fn ok(id: u64, result: ResponseBody) -> Self {
        ServerMessage::Response {
            id: Some(id),
            result: Some(result),
            error: None,
        }
    }

    /// An error response.
    pub fn err(id: Option<u64>, error: WireError) -> Self {
        ServerMessage::Response {
            id,
            result: None,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape() {
        let r = Request {
            id: 7,
            body: RequestBody::Logout {
                room_id: "r1".into(),
            },
        };
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, r#"{"id":7,"type":"logout","room_id":"r1"}"#);
        let back: Request = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, r);
        let hb: Request = serde_json::from_str(r#"{"id":1,"type":"heartbeat"}"#).expect("parse");
        assert_eq!(hb.body, RequestBody::Heartbeat);
    }

    #[test]
    fn response_wire_shape() {
        let m = ServerMessage::ok(3, ResponseBody::Done);
        assert_eq!(
            serde_json::to_string(&m).expect("serialize"),
            r#"{"type":"response","id":3,"result":{"kind":"done"}}"#
        );
    }
}
