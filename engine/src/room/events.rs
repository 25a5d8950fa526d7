//! The events an application hears from the engine, as one typed enum (the seed's callbacks).

use std::fmt;

use crate::error::ErrorCode;
use onair_media::local::{DeviceKind, PublishChannel};
use onair_protocol::messages::{
    LayerChangeReason, MessageKind, QualityLevel, RoomExtraInfo, RoomMessage, StreamInfo,
    UpdateType, User,
};

/// Why a room's state changed, numbered exactly as the seed's `ZegoRoomStateChangedReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RoomStateChangedReason {
    /// Logging in: `login_room` was called and the engine is asking the relay.
    Logining = 0,
    /// Logged in.
    Logined = 1,
    /// Login failed (bad token or app sign, invalid IDs, relay unreachable…); see `error_code`.
    LoginFailed = 2,
    /// The connection dropped; the engine is retrying.
    Reconnecting = 3,
    /// Back, and the room resynchronised.
    Reconnected = 4,
    /// The engine gave up reconnecting.
    ReconnectFailed = 5,
    /// The relay removed this user (for example, the same user logged in elsewhere).
    KickOut = 6,
    /// Logged out.
    Logout = 7,
    /// Logout failed; see `error_code`.
    LogoutFailed = 8,
}

/// The coarse room state the seed's `ZegoRoomState` describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomState {
    /// Not connected to the room.
    Disconnected,
    /// Logging in or reconnecting.
    Connecting,
    /// In the room.
    Connected,
}

impl RoomStateChangedReason {
    /// The seed's number.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The seed's name, e.g. `LOGINED`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Logining => "LOGINING",
            Self::Logined => "LOGINED",
            Self::LoginFailed => "LOGIN_FAILED",
            Self::Reconnecting => "RECONNECTING",
            Self::Reconnected => "RECONNECTED",
            Self::ReconnectFailed => "RECONNECT_FAILED",
            Self::KickOut => "KICK_OUT",
            Self::Logout => "LOGOUT",
            Self::LogoutFailed => "LOGOUT_FAILED",
        }
    }

    /// The room state this reason leaves the room in.
    pub fn state(self) -> RoomState {
        match self {
            Self::Logining | Self::Reconnecting => RoomState::Connecting,
            Self::Logined | Self::Reconnected => RoomState::Connected,
            Self::LoginFailed
            | Self::ReconnectFailed
            | Self::KickOut
            | Self::Logout
            | Self::LogoutFailed => RoomState::Disconnected,
        }
    }
}

/// The seed's `ZegoPublisherState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublisherState {
    /// Not publishing.
    NoPublish = 0,
    /// Asking the relay, or retrying after a failure.
    PublishRequesting = 1,
    /// Media is flowing to the relay.
    Publishing = 2,
}

/// A remote publisher's microphone or camera as players see it, numbered as ZEGO's
/// `ZegoRemoteDeviceState` (the states Onair reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RemoteDeviceState {
    /// Sending.
    Open = 0,
    /// The camera is turned off in the stream (`mute_publish_stream_video`): black pictures.
    Disable = 6,
    /// The microphone is muted in the stream (`mute_publish_stream_audio`): silence.
    Mute = 10,
}

impl fmt::Display for RemoteDeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteDeviceState::Open => "open",
            RemoteDeviceState::Disable => "disable",
            RemoteDeviceState::Mute => "mute",
        })
    }
}

/// How a media connection reaches the relay, from its selected ICE candidate pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MediaPath {
    /// Not connected yet, or not known.
    #[default]
    Unknown,
    /// Straight to the relay (host or server-reflexive candidates).
    Direct,
    /// Through a TURN server (a relayed candidate on either side).
    Relayed,
}

impl fmt::Display for MediaPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaPath::Unknown => "unknown",
            MediaPath::Direct => "direct",
            MediaPath::Relayed => "relayed",
        })
    }
}

/// The seed's `ZegoPlayerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlayerState {
    /// Not playing.
    NoPlay = 0,
    /// Asking the relay, waiting for the stream, or retrying.
    PlayRequesting = 1,
    /// Media is arriving.
    Playing = 2,
}

/// Everything the engine reports. Drain them from [`crate::Engine::events`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The seed's `roomStateChanged`.
    RoomStateChanged {
        /// The room.
        room_id: String,
        /// Why.
        reason: RoomStateChangedReason,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// JSON text with details (`{}` when there are none).
        extended_data: String,
    },
    /// The seed's `roomUserUpdate`: only for rooms logged into with `is_user_status_notify`.
    RoomUserUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update_type: UpdateType,
        /// Who.
        users: Vec<User>,
    },
    /// The seed's `roomStreamUpdate`: streams of other users started or ended.
    RoomStreamUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update_type: UpdateType,
        /// Which.
        streams: Vec<StreamInfo>,
    },
    /// The seed's `publisherStateUpdate`.
    PublisherStateUpdate {
        /// The stream.
        stream_id: String,
        /// The new state.
        state: PublisherState,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// JSON text with details.
        extended_data: String,
    },
    /// The seed's `playerStateUpdate`.
    PlayerStateUpdate {
        /// The stream.
        stream_id: String,
        /// The new state.
        state: PlayerState,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// JSON text with details.
        extended_data: String,
    },
    /// The first video frame of a played stream was decoded.
    PlayerRecvVideoFirstFrame {
        /// The stream.
        stream_id: String,
        /// Milliseconds from `start_playing_stream` (or the stream's return) to this frame.
        elapsed_ms: u64,
    },
    /// The application drew the first frame of a played stream (it said so with
    /// [`crate::Engine::report_rendered_first_frame`]).
    PlayerRenderVideoFirstFrame {
        /// The stream.
        stream_id: String,
    },
    /// The first audio frame of a played stream was decoded.
    PlayerRecvAudioFirstFrame {
        /// The stream.
        stream_id: String,
    },
    /// Once a second while publishing: what the publisher sends.
    PublisherQualityUpdate {
        /// The stream.
        stream_id: String,
        /// Video frames encoded and sent per second.
        send_fps: f64,
        /// Video kilobits per second.
        video_kbps: f64,
        /// Audio kilobits per second.
        audio_kbps: f64,
        /// The encoder's target.
        target_kbps: u32,
        /// Keyframes sent on request (PLI/FIR) in the last second.
        keyframe_requests: u64,
        /// Round-trip time to the relay (ICE consent checks), ms; 0 if not measured yet.
        rtt_ms: f64,
        /// Packets the relay reported missing (NACK) in the last second: the link's loss,
        /// each then resent.
        packets_lost: u64,
        /// Whether media goes straight to the relay or through a TURN server.
        path: MediaPath,
    },
    /// Once a second while playing: what the player receives.
    PlayerQualityUpdate {
        /// The stream.
        stream_id: String,
        /// Video frames decoded per second.
        decode_fps: f64,
        /// Video kilobits per second received.
        video_kbps: f64,
        /// RTP packets lost so far.
        packets_lost: u64,
        /// End-to-end delay of the latest frame (capture → decoded), ms; 0 if unknown.
        delay_ms: f64,
        /// Interarrival jitter of the video (RFC 3550), ms.
        jitter_ms: f64,
        /// Round-trip time to the relay (ICE consent checks), ms; 0 if not measured yet.
        rtt_ms: f64,
        /// Stutters so far (gaps of 200 ms or more between decoded frames).
        stutters: u64,
        /// Their total duration so far, ms.
        stutter_ms: f64,
        /// Keyframe requests sent so far (a loss the NACK repair could not mend).
        keyframe_requests: u64,
        /// Missing packets that arrived after all (NACK resends, reordering) so far.
        packets_repaired: u64,
        /// Lost packets rebuilt from the relay's FEC repair packets so far.
        packets_fec_recovered: u64,
        /// Delay the player adds to play smoothly (jitter buffer and playout), ms.
        playout_delay_ms: f64,
        /// Audio frames (20 ms) decoded from their own packet so far.
        audio_frames_played: u64,
        /// Audio frames rebuilt from FEC or concealed so far.
        audio_frames_concealed: u64,
        /// Audio frames lost (played as silence) so far.
        audio_frames_lost: u64,
        /// Whether media comes straight from the relay or through a TURN server.
        path: MediaPath,
        /// Keyframes received so far.
        keyframes_received: u64,
        /// The simulcast layer the relay sends (0 the full picture); None for a stream
        /// without layers.
        video_layer: Option<usize>,
        /// The relay's estimate of this player's link, kbit/s (0: not estimated; the relay
        /// estimates players of streams with layers).
        estimate_kbps: f64,
    },
    /// A capture device or source failed (ZEGO's `onLocalDeviceExceptionOccurred`): no camera,
    /// an unreadable file… The channel's capture stops; set another source or try again.
    DeviceError {
        /// Which publish channel.
        channel: PublishChannel,
        /// Video or audio.
        device: DeviceKind,
        /// One of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// Details.
        message: String,
    },
    /// Broadcast messages from other members (ZEGO's `onIMRecvBroadcastMessage`), oldest first.
    IMRecvBroadcastMessage {
        /// The room.
        room_id: String,
        /// The messages.
        messages: Vec<RoomMessage>,
    },
    /// Barrage messages from other members (ZEGO's `onIMRecvBarrageMessage`).
    IMRecvBarrageMessage {
        /// The room.
        room_id: String,
        /// The messages.
        messages: Vec<RoomMessage>,
    },
    /// A custom command from another member (ZEGO's `onIMRecvCustomCommand`).
    IMRecvCustomCommand {
        /// The room.
        room_id: String,
        /// Who sent it.
        from_user: User,
        /// The command.
        command: String,
    },
    /// The result of `send_broadcast_message`, `send_barrage_message` or
    /// `send_custom_command` (ZEGO's `IMSend…Result` callbacks).
    IMSendResult {
        /// The room.
        room_id: String,
        /// The sequence number the call returned.
        seq: u64,
        /// Which kind was sent.
        kind: MessageKind,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// The message's ID (0 on failure).
        message_id: u64,
    },
    /// Keys of a room's extra info changed, or were there at login (ZEGO's
    /// `onRoomExtraInfoUpdate`).
    RoomExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The keys, with their values, who set them and when.
        infos: Vec<RoomExtraInfo>,
    },
    /// The captured (main channel) audio's level, every monitor interval (ZEGO's
    /// `onCapturedSoundLevelUpdate`; see [`crate::Engine::start_sound_level_monitor`]).
    CapturedSoundLevelUpdate {
        /// 0 (silence, −60 dBFS or less) to 100 (full scale).
        level: f32,
        /// Voice activity: the level is above [`crate::sound_level::VAD_LEVEL`] (false when
        /// the monitor was started without VAD).
        vad: bool,
    },
    /// Each played stream's level, every monitor interval (ZEGO's
    /// `onRemoteSoundLevelUpdate`): streams that delivered audio in the interval.
    RemoteSoundLevelUpdate {
        /// Stream ID → 0–100.
        levels: std::collections::BTreeMap<String, f32>,
    },
    /// SEI data a played stream's publisher sent with `send_sei` (ZEGO's
    /// `onPlayerSyncRecvSEI`), emitted as the frame it rode on is delivered: `pts_us` is that
    /// frame's `pts_us`, so a UI can show the data on exactly that picture.
    PlayerSyncRecvSEI {
        /// The stream.
        stream_id: String,
        /// The data, as sent.
        data: Vec<u8>,
        /// The presentation time of the frame that carried it (its `VideoFrame::pts_us`).
        pts_us: i64,
        /// That frame's capture time on the publisher's clock (µs since the Unix epoch; 0 if
        /// unknown).
        capture_time_us: u64,
    },
    /// The size of a played stream's decoded picture changed, the first frame included (ZEGO's
    /// `onPlayerVideoSizeChanged`): a simulcast layer switch, or the publisher's new
    /// resolution, shows here when the player actually decodes it.
    PlayerVideoSizeChanged {
        /// The stream.
        stream_id: String,
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
    },
    /// The video layer a played stream arrives in changed (at a keyframe of the new layer).
    PlayerVideoLayerChanged {
        /// The stream.
        stream_id: String,
        /// 0 (the full picture), 1 or 2 (smaller).
        layer: usize,
        /// Asked for, or chosen by the relay from the link's estimate.
        reason: LayerChangeReason,
    },
    /// A stream's publisher muted or unmuted its audio (ZEGO's `onRemoteMicStateUpdate`), for
    /// streams of the rooms this engine is in: at the change, and when a stream appears
    /// muted.
    RemoteMicStateUpdate {
        /// The stream.
        stream_id: String,
        /// Open or Mute.
        state: RemoteDeviceState,
    },
    /// A stream's publisher muted or unmuted its video (ZEGO's `onRemoteCameraStateUpdate`).
    RemoteCameraStateUpdate {
        /// The stream.
        stream_id: String,
        /// Open or Disable.
        state: RemoteDeviceState,
    },
    /// Network quality every 2 s (ZEGO's `onNetworkQuality`): this engine's own (`user_id`
    /// empty: upstream from its publishers, downstream from its players, Unknown where it has
    /// none) and, for users who publish in a room this engine is in, their upstream as they
    /// report it (downstream Unknown).
    NetworkQuality {
        /// The user; empty for this engine.
        user_id: String,
        /// Towards the relay.
        upstream: QualityLevel,
        /// From the relay.
        downstream: QualityLevel,
    },
    /// Streams' extra info changed (ZEGO's `onRoomStreamExtraInfoUpdate`).
    RoomStreamExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The streams, with their new extra info.
        streams: Vec<StreamInfo>,
    },
    /// The result of `set_stream_extra_info` (ZEGO's
    /// `onPublisherUpdateStreamExtraInfoResult`).
    PublisherUpdateStreamExtraInfoResult {
        /// The publish channel.
        channel: PublishChannel,
        /// The sequence number the call returned.
        seq: u64,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
    },
    /// The result of `set_room_extra_info` (ZEGO's `onRoomSetRoomExtraInfoResult`).
    RoomSetExtraInfoResult {
        /// The room.
        room_id: String,
        /// The sequence number the call returned.
        seq: u64,
        /// The key.
        key: String,
        /// 0, or one of [`ErrorCode`]'s numbers.
        error_code: u32,
    },
    /// The token of a room expires soon (ZEGO's `onRoomTokenWillExpire`): mint a new one and
    /// call [`crate::Engine::renew_token`], or the relay removes this user from the room when
    /// it expires (RoomStateChanged KICK_OUT with 1002054).
    RoomTokenWillExpire {
        /// The room.
        room_id: String,
        /// Seconds left.
        remain_seconds: u64,
    },
    /// A call could not be carried out (ZEGO's `onApiCalledResult` for failures).
    ApiCalledResult {
        /// The call, e.g. `login_room`.
        api: &'static str,
        /// One of [`ErrorCode`]'s numbers.
        error_code: u32,
        /// Details.
        message: String,
    },
}

impl Event {
    /// A short kind name for logs and filters.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RoomStateChanged { .. } => "room_state",
            Event::RoomUserUpdate { .. } => "room_user",
            Event::RoomStreamUpdate { .. } => "room_stream",
            Event::DeviceError { .. } => "device_error",
            Event::PublisherStateUpdate { .. } => "publisher_state",
            Event::PlayerStateUpdate { .. } => "player_state",
            Event::PlayerRecvVideoFirstFrame { .. } => "player_video_first_frame",
            Event::PlayerRecvAudioFirstFrame { .. } => "player_audio_first_frame",
            Event::PublisherQualityUpdate { .. } => "publisher_quality",
            Event::PlayerRenderVideoFirstFrame { .. } => "player_render_first_frame",
            Event::PlayerQualityUpdate { .. } => "player_quality",
            Event::RoomTokenWillExpire { .. } => "room_token_will_expire",
            Event::IMRecvBroadcastMessage { .. } => "im_broadcast",
            Event::IMRecvBarrageMessage { .. } => "im_barrage",
            Event::IMRecvCustomCommand { .. } => "im_custom_command",
            Event::IMSendResult { .. } => "im_send_result",
            Event::RoomExtraInfoUpdate { .. } => "room_extra_info",
            Event::RoomSetExtraInfoResult { .. } => "room_set_extra_info_result",
            Event::RoomStreamExtraInfoUpdate { .. } => "room_stream_extra_info",
            Event::PlayerSyncRecvSEI { .. } => "player_sei",
            Event::PlayerVideoSizeChanged { .. } => "player_video_size",
            Event::PlayerVideoLayerChanged { .. } => "player_video_layer",
            Event::RemoteMicStateUpdate { .. } => "remote_mic_state",
            Event::RemoteCameraStateUpdate { .. } => "remote_camera_state",
            Event::NetworkQuality { .. } => "network_quality",
            Event::CapturedSoundLevelUpdate { .. } => "captured_sound_level",
            Event::RemoteSoundLevelUpdate { .. } => "remote_sound_level",
            Event::PublisherUpdateStreamExtraInfoResult { .. } => "publisher_extra_info_result",
            Event::ApiCalledResult { .. } => "api_result",
        }
    }

    /// The room the event is about, if any.
    pub fn room_id(&self) -> Option<&str> {
        match self {
            Event::RoomStateChanged { room_id, .. }
            | Event::RoomUserUpdate { room_id, .. }
            | Event::RoomStreamUpdate { room_id, .. }
            | Event::RoomTokenWillExpire { room_id, .. }
            | Event::IMRecvBroadcastMessage { room_id, .. }
            | Event::IMRecvBarrageMessage { room_id, .. }
            | Event::IMRecvCustomCommand { room_id, .. }
            | Event::IMSendResult { room_id, .. }
            | Event::RoomExtraInfoUpdate { room_id, .. }
            | Event::RoomSetExtraInfoResult { room_id, .. }
            | Event::RoomStreamExtraInfoUpdate { room_id, .. } => Some(room_id),
            _ => None,
        }
    }
}

fn update_name(t: UpdateType) -> &'static str {
    match t {
        UpdateType::Add => "ADD",
        UpdateType::Delete => "DELETE",
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::RoomStateChanged {
                room_id,
                reason,
                error_code,
                extended_data,
            } => {
                write!(
                    f,
                    "room_state room={room_id} reason={}({})",
                    reason.name(),
                    reason.code()
                )?;
                write!(f, " error={error_code}")?;
                if let Some(c) = ErrorCode::from_code(*error_code) {
                    write!(f, "({})", c.name())?;
                }
                write!(f, " extended={extended_data}")
            }
            Event::RoomUserUpdate {
                room_id,
                update_type,
                users,
            } => {
                let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
                write!(
                    f,
                    "room_user room={room_id} {} users=[{}]",
                    update_name(*update_type),
                    ids.join(",")
                )
            }
            Event::RoomStreamUpdate {
                room_id,
                update_type,
                streams,
            } => {
                let ids: Vec<String> = streams
                    .iter()
                    .map(|s| format!("{}@{}", s.stream_id, s.user.user_id))
                    .collect();
                write!(
                    f,
                    "room_stream room={room_id} {} streams=[{}]",
                    update_name(*update_type),
                    ids.join(",")
                )
            }
            Event::RoomTokenWillExpire {
                room_id,
                remain_seconds,
            } => write!(
                f,
                "room_token_will_expire room={room_id} remain_seconds={remain_seconds}"
            ),
            Event::IMRecvBroadcastMessage { room_id, messages }
            | Event::IMRecvBarrageMessage { room_id, messages } => {
                write!(f, "{} room={room_id}", self.kind())?;
                for m in messages {
                    write!(
                        f,
                        " [{}#{}] {:?}",
                        m.from_user.user_id, m.message_id, m.text
                    )?;
                }
                Ok(())
            }
            Event::IMRecvCustomCommand {
                room_id,
                from_user,
                command,
            } => write!(
                f,
                "im_custom_command room={room_id} from={} {command:?}",
                from_user.user_id
            ),
            Event::IMSendResult {
                room_id,
                seq,
                kind,
                error_code,
                message_id,
            } => write!(
                f,
                "im_send_result room={room_id} seq={seq} kind={kind:?} error={error_code} message_id={message_id}"
            ),
            Event::RoomExtraInfoUpdate { room_id, infos } => {
                write!(f, "room_extra_info room={room_id}")?;
                for i in infos {
                    write!(f, " {}={:?} by {}", i.key, i.value, i.update_user.user_id)?;
                }
                Ok(())
            }
            Event::CapturedSoundLevelUpdate { level, vad } => {
                write!(f, "captured_sound_level level={level:.1} vad={vad}")
            }
            Event::RemoteSoundLevelUpdate { levels } => {
                write!(f, "remote_sound_level")?;
                for (id, l) in levels {
                    write!(f, " {id}={l:.1}")?;
                }
                Ok(())
            }
            Event::PlayerSyncRecvSEI {
                stream_id,
                data,
                pts_us,
                capture_time_us,
            } => {
                write!(
                    f,
                    "player_sei stream={stream_id} pts_us={pts_us} capture_us={capture_time_us} hex={}",
                    hex::encode(data)
                )?;
                if let Ok(text) = std::str::from_utf8(data) {
                    write!(f, " text={text:?}")?;
                }
                Ok(())
            }
            Event::RemoteMicStateUpdate { stream_id, state } => {
                write!(f, "remote_mic_state stream={stream_id} state={state}")
            }
            Event::PlayerVideoSizeChanged {
                stream_id,
                width,
                height,
            } => write!(
                f,
                "player_video_size stream={stream_id} width={width} height={height}"
            ),
            Event::PlayerVideoLayerChanged {
                stream_id,
                layer,
                reason,
            } => write!(
                f,
                "player_video_layer stream={stream_id} layer={layer} reason={reason:?}"
            ),
            Event::RemoteCameraStateUpdate { stream_id, state } => {
                write!(f, "remote_camera_state stream={stream_id} state={state}")
            }
            Event::NetworkQuality {
                user_id,
                upstream,
                downstream,
            } => write!(
                f,
                "network_quality user={user_id:?} upstream={upstream} downstream={downstream}"
            ),
            Event::RoomStreamExtraInfoUpdate { room_id, streams } => {
                write!(f, "room_stream_extra_info room={room_id}")?;
                for s in streams {
                    write!(f, " {}={:?}", s.stream_id, s.extra_info)?;
                }
                Ok(())
            }
            Event::PublisherUpdateStreamExtraInfoResult {
                channel,
                seq,
                error_code,
            } => write!(
                f,
                "publisher_extra_info_result channel={channel:?} seq={seq} error={error_code}"
            ),
            Event::RoomSetExtraInfoResult {
                room_id,
                seq,
                key,
                error_code,
            } => write!(
                f,
                "room_set_extra_info_result room={room_id} seq={seq} key={key} error={error_code}"
            ),
            Event::PublisherStateUpdate {
                stream_id,
                state,
                error_code,
                extended_data,
            } => write!(
                f,
                "publisher_state stream={stream_id} state={state:?} error={error_code} extended={extended_data}"
            ),
            Event::PlayerStateUpdate {
                stream_id,
                state,
                error_code,
                extended_data,
            } => write!(
                f,
                "player_state stream={stream_id} state={state:?} error={error_code} extended={extended_data}"
            ),
            Event::PlayerRecvVideoFirstFrame {
                stream_id,
                elapsed_ms,
            } => {
                write!(
                    f,
                    "player_video_first_frame stream={stream_id} after={elapsed_ms}ms"
                )
            }
            Event::PublisherQualityUpdate {
                stream_id,
                send_fps,
                video_kbps,
                audio_kbps,
                target_kbps,
                keyframe_requests,
                rtt_ms,
                packets_lost,
                path,
            } => write!(
                f,
                "publisher_quality stream={stream_id} fps={send_fps:.1} video_kbps={video_kbps:.0} audio_kbps={audio_kbps:.0} target_kbps={target_kbps} keyframe_requests={keyframe_requests} rtt_ms={rtt_ms:.2} lost={packets_lost} path={path}"
            ),
            Event::PlayerQualityUpdate {
                stream_id,
                decode_fps,
                video_kbps,
                packets_lost,
                delay_ms,
                jitter_ms,
                rtt_ms,
                stutters,
                stutter_ms,
                keyframe_requests,
                packets_repaired,
                packets_fec_recovered,
                playout_delay_ms,
                audio_frames_played,
                audio_frames_concealed,
                audio_frames_lost,
                path,
                keyframes_received,
                video_layer,
                estimate_kbps,
            } => {
                write!(
                    f,
                    "player_quality stream={stream_id} fps={decode_fps:.1} video_kbps={video_kbps:.0} lost={packets_lost} delay_ms={delay_ms:.1} jitter_ms={jitter_ms:.2} rtt_ms={rtt_ms:.2} stutters={stutters} stutter_ms={stutter_ms:.0} keyframe_requests={keyframe_requests} keyframes_received={keyframes_received} repaired={packets_repaired} fec_recovered={packets_fec_recovered} playout_ms={playout_delay_ms:.1} audio_played={audio_frames_played} audio_concealed={audio_frames_concealed} audio_lost={audio_frames_lost} path={path}"
                )?;
                if let Some(layer) = video_layer {
                    write!(f, " layer={layer}")?;
                }
                if *estimate_kbps > 0.0 {
                    write!(f, " estimate_kbps={estimate_kbps:.0}")?;
                }
                Ok(())
            }
            Event::PlayerRenderVideoFirstFrame { stream_id } => {
                write!(f, "player_render_first_frame stream={stream_id}")
            }
            Event::PlayerRecvAudioFirstFrame { stream_id } => {
                write!(f, "player_audio_first_frame stream={stream_id}")
            }
            Event::DeviceError {
                channel,
                device,
                error_code,
                message,
            } => write!(
                f,
                "device_error channel={channel:?} device={device:?} error={error_code} message={message:?}"
            ),
            Event::ApiCalledResult {
                api,
                error_code,
                message,
            } => write!(
                f,
                "api_result api={api} error={error_code} message={message:?}"
            ),
        }
    }
}
