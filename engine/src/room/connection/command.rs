//! What the engine handle asks of the connection task, and the settings it runs with.

use std::time::Duration;

use crate::live::PlayerConfig;
use crate::live::session::SessionTimers;
use crate::room::machine::RoomConfig;
use onair_media::channel::FrameReceiver;
use onair_media::config::VideoConfig;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
use onair_media::local::PublishChannel;
use onair_protocol::messages::User;

/// Connection settings taken from the engine profile.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Signaling URLs: one relay, or the nodes of a cluster, tried in turn (the engine stays
    /// on one while it answers and moves to the next when it cannot connect).
    pub urls: Vec<String>,
    /// App ID.
    pub app_id: u32,
    /// App sign (hex), sent at login when no token is given.
    pub app_sign: Option<String>,
    /// How long a first login may wait for the relay.
    pub login_timeout: Duration,
    /// How long to keep reconnecting before RECONNECT_FAILED.
    pub reconnect_timeout: Duration,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// Drive publishers' bitrates from the bandwidth estimate.
    pub bandwidth_estimation: bool,
    /// Share of outgoing media packets to drop (testing).
    pub simulated_send_loss: f64,
    /// Publishers send FEC repair packets.
    pub publish_fec: bool,
    /// Take part in mDNS on media connections (needs a multicast route).
    pub mdns: bool,
    /// Certificate authorities trusted for `wss://`.
    pub tls: crate::signal::TlsTrust,
    /// STUN/TURN servers from the profile (the relay's are added at connect).
    pub ice_servers: Vec<onair_protocol::IceServer>,
    /// Relayed candidates only.
    pub relay_only: bool,
    /// How long a publish or play attempt may wait for the relay's answer, and then for its peer
    /// connection to reach Connected, before it fails (PublishConnectTimeout /
    /// PlayConnectTimeout) and is retried. 10 s by default.
    pub peer_connect_timeout: Duration,
    /// How long a peer connection that was up may stay disconnected (ICE Disconnected) before
    /// its stream counts as lost; meanwhile the stream stays Publishing / Playing. 5 s by
    /// default.
    pub peer_disconnect_grace: Duration,
}

impl ConnectionSettings {
    /// The timers the publish and play sessions run with.
    pub fn session_timers(&self) -> SessionTimers {
        SessionTimers {
            connect_timeout: self.peer_connect_timeout,
            disconnect_grace: self.peer_disconnect_grace,
        }
    }
}

/// What the [`crate::Engine`] handle asks of the task.
pub enum Command {
    /// Log into a room.
    Login {
        /// Room.
        room_id: String,
        /// User.
        user: User,
        /// Options.
        config: RoomConfig,
    },
    /// Log out of one room.
    Logout {
        /// Room.
        room_id: String,
    },
    /// Log out of every room.
    LogoutAll,
    /// Send a room message.
    SendMessage {
        /// The call's sequence number.
        seq: u64,
        /// Room.
        room_id: String,
        /// Broadcast, barrage or custom.
        kind: onair_protocol::messages::MessageKind,
        /// The text.
        text: String,
        /// Custom command recipients (empty: everyone).
        to_users: Vec<String>,
    },
    /// Set a publish channel's stream extra info.
    SetStreamExtraInfo {
        /// The call's sequence number.
        seq: u64,
        /// The channel.
        channel: PublishChannel,
        /// The extra info.
        text: String,
    },
    /// A publish channel's mutes changed: tell the relay (if the channel publishes).
    StreamMuteChanged {
        /// The channel.
        channel: PublishChannel,
    },
    /// Set a key of a room's extra info.
    SetRoomExtraInfo {
        /// The call's sequence number.
        seq: u64,
        /// Room.
        room_id: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Replace a room's token.
    RenewToken {
        /// Room.
        room_id: String,
        /// The new token.
        token: String,
    },
    /// Drop the socket as a network failure would (tests and debugging).
    DropConnection,
    /// Publish a local channel.
    StartPublishing(StartPublishing),
    /// Stop publishing a channel.
    StopPublishing {
        /// The channel.
        channel: PublishChannel,
        /// The channel's publish epoch when the app asked (a later publish is not stopped).
        epoch: u64,
    },
    /// Play a stream.
    StartPlaying {
        /// The stream.
        stream_id: String,
        /// Options.
        config: PlayerConfig,
    },
    /// Stop playing a stream.
    StopPlaying {
        /// The stream.
        stream_id: String,
    },
    /// Ask for another video layer of a played stream.
    SetPlayLayer {
        /// The stream.
        stream_id: String,
        /// The layer.
        layer: onair_protocol::messages::VideoLayer,
    },
    /// A played stream's video was muted or unmuted by the app: the relay stops or resumes
    /// sending it.
    PlayVideoMuted {
        /// The stream.
        stream_id: String,
    },
    /// Log out of everything and stop; `done` is signalled when finished.
    Shutdown {
        /// Signalled when the task has finished.
        done: std::sync::mpsc::Sender<()>,
    },
}

/// What `start_publishing_stream` hands the task.
pub struct StartPublishing {
    /// The stream ID.
    pub stream_id: String,
    /// The local channel.
    pub channel: PublishChannel,
    /// The channel's publish epoch when this publish began (see `LocalChannel::publish_epoch`).
    pub epoch: u64,
    /// The room (default: the first logged-in room).
    pub room_id: Option<String>,
    /// The channel's video settings.
    pub config: VideoConfig,
    /// The channel's video.
    pub video: FrameReceiver<SharedVideoFrame>,
    /// The channel's audio.
    pub audio: FrameReceiver<SharedAudioFrame>,
    /// The channel's mutes and SEI.
    pub controls: std::sync::Arc<crate::live::controls::PublishControls>,
}
