//! The engine handle: the SDK's public entry point (the seed's `ZegoExpressEngine`).
//!
//! `Engine::create(profile)` starts one tokio runtime; every call returns at once and its result
//! comes back as an [`Event`] on [`Engine::events`]. Destroying the engine (or dropping it) logs
//! out of every room and releases everything.

use onair_protocol::messages::MessageKind;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::{EngineError, ErrorCode};
use crate::live::PlayerConfig;
use crate::live::controls::{PlayControls, PublishControls};
use crate::room::connection::{
    Command, Connection, ConnectionSettings, PlayOutputMap, StartPublishing,
};
use crate::room::events::Event;
use crate::room::machine::RoomConfig;
use crate::room::sink::EventSink;
use crate::signal::normalize_url;
use onair_media::capture::{AudioSource, VideoSource};
use onair_media::channel::FrameReceiver;
use onair_media::config::VideoConfig;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
use onair_media::local::{DeviceErrorCallback, LocalChannel, PublishChannel};
use onair_protocol::messages::User;
use onair_protocol::token::AppSign;

/// The seed's `ZegoScenario`: what the engine is tuned for. Numbers as ZEGO's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum Scenario {
    /// The seed's example uses this.
    #[default]
    General = 0,
    /// Two-way calls.
    Communication = 1,
    /// Live streaming.
    Live = 2,
    /// Defaults suitable for most apps.
    Default = 3,
    /// Standard-quality video calls.
    StandardVideoCall = 4,
    /// High-quality video calls.
    HighQualityVideoCall = 5,
    /// Standard voice chat rooms.
    StandardChatroom = 6,
    /// High-quality voice chat rooms.
    HighQualityChatroom = 7,
    /// One host broadcasting to many (ultra-low-latency live).
    Broadcast = 8,
    /// Karaoke.
    Karaoke = 9,
}

/// How to create an engine: the seed's `createEngineWithProfile` profile, plus timeouts.
#[derive(Clone, Debug)]
pub struct EngineProfile {
    /// The app ID the relay knows.
    pub app_id: u32,
    /// The app sign (64 hex characters), or empty to log in with tokens only.
    pub app_sign: String,
    /// What the engine is tuned for.
    pub scenario: Scenario,
    /// The relay, `ws://host:port` (or `wss://`); for a cluster, several nodes separated by
    /// commas (`ws://a:7880,ws://b:7880`): the engine uses one and moves to the next when it
    /// cannot connect (a node that died), logging in again there. An `http://` or `https://`
    /// URL is a cluster's `/dispatch` endpoint (`https://any-node:7880/dispatch`): asked before
    /// each connection, it names the node for the room being logged into.
    pub server: String,
    /// How long a first login may wait for an unreachable relay before LOGIN_FAILED.
    pub login_timeout: Duration,
    /// How long to keep reconnecting before RECONNECT_FAILED.
    pub reconnect_timeout: Duration,
    /// How long a request may wait for its answer before the link counts as dead.
    pub request_timeout: Duration,
    /// Adapt each publisher's encoder bitrate to the estimated bandwidth (GCC over
    /// transport-wide CC feedback; never above the configured bitrate, never paced).
    pub bandwidth_estimation: bool,
    /// Share (0..1) of this engine's outgoing media packets to drop, to try a lossy link
    /// (NACK resends, keyframe requests, the estimate going down). 0 in normal use.
    pub simulated_send_loss: f64,
    /// Send Reed–Solomon repair packets (`onair_transport::rs_fec`) after each video frame of
    /// a publisher, as many as the relay's NACKs call for (none on a clean link;
    /// `transport::fec`). On by default.
    pub publish_fec: bool,
    /// Accept mDNS (`.local`) candidates on media connections. Off by default: the engine
    /// offers the address of the interface that reaches the relay, and joining the mDNS
    /// multicast group fails on hosts without a multicast route.
    pub mdns: bool,
    /// A certificate authority (PEM text) to trust for a `wss://` server besides the system's:
    /// a private CA, or the development CA `onair serve --self-signed` writes to
    /// `~/.config/onair/ca.pem`.
    pub ca_cert: Option<String>,
    /// A media connection that has not come up this long after its answer fails
    /// (1003021 / 1004021) and is retried.
    pub peer_connect_timeout: Duration,
    /// How long a media connection may stay ICE-disconnected (a Wi-Fi hiccup) before it counts
    /// as lost; the stream keeps its state meanwhile.
    pub peer_disconnect_grace: Duration,
    /// STUN/TURN servers for media, besides those the relay hands out at connect.
    pub ice_servers: Vec<onair_protocol::IceServer>,
    /// Which candidates media may use: all, or relayed (TURN) only.
    pub ice_transport_policy: IceTransportPolicy,
}

/// Which ICE candidates media connections may use (WebRTC's `iceTransportPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IceTransportPolicy {
    /// Host, server-reflexive and relayed candidates: the most direct path wins.
    #[default]
    All,
    /// Only relayed candidates: every packet goes through a TURN server (for networks that
    /// block direct UDP, or to hide the client's address).
    Relay,
}

impl Default for EngineProfile {
    fn default() -> Self {
        EngineProfile {
            app_id: 0,
            app_sign: String::new(),
            scenario: Scenario::General,
            server: "ws://127.0.0.1:7880".into(),
            login_timeout: Duration::from_secs(10),
            reconnect_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            bandwidth_estimation: true,
            simulated_send_loss: 0.0,
            publish_fec: true,
            mdns: false,
            ca_cert: None,
            peer_connect_timeout: Duration::from_secs(10),
            peer_disconnect_grace: Duration::from_secs(5),
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
        }
    }
}

/// Undrained events the engine keeps before it drops new ones (and counts them).
const EVENT_CAPACITY: usize = 65_536;
/// Calls queued for the engine task.
const COMMAND_CAPACITY: usize = 1024;

/// The SDK engine. Create one per app; log into any number of rooms with it.
pub struct Engine {
    profile: EngineProfile,
    commands: mpsc::Sender<Command>,
    events: crossbeam_channel::Receiver<Event>,
    sink: EventSink,
    runtime: Option<tokio::runtime::Runtime>,
    local: Arc<parking_lot::Mutex<Vec<LocalChannel>>>,
    device_errors: DeviceErrorCallback,
    play_outputs: PlayOutputMap,
    /// The last sequence number handed out by a room-data call.
    seq: std::sync::atomic::AtomicU64,
    /// The sound-level monitor, while it runs.
    sound_levels: parking_lot::Mutex<Option<crate::sound_level::Monitor>>,
    /// Each publish channel's mutes and SEI queue.
    publish_controls: Vec<Arc<PublishControls>>,
}

impl Engine {
    /// Creates an engine. Fails at once only for an invalid profile; everything else is
    /// reported as events.
    pub fn create(profile: EngineProfile) -> Result<Engine, EngineError> {
        let urls = profile
            .server
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                if crate::signal::dispatch::is_dispatch(u) {
                    crate::signal::dispatch::check(u)
                } else {
                    normalize_url(u)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(EngineError::InvalidProfile("no server URL".into()));
        }
        let tls = crate::signal::TlsTrust::new(profile.ca_cert.as_deref())?;
        let app_sign = if profile.app_sign.is_empty() {
            None
        } else {
            if AppSign::from_hex(&profile.app_sign).is_none() {
                return Err(EngineError::InvalidProfile(
                    "app sign must be 64 hex characters".into(),
                ));
            }
            Some(profile.app_sign.clone())
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("onair-engine")
            .enable_all()
            .build()?;
        let (sink, events) = EventSink::new(EVENT_CAPACITY);
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let settings = ConnectionSettings {
            urls,
            app_id: profile.app_id,
            app_sign,
            login_timeout: profile.login_timeout,
            reconnect_timeout: profile.reconnect_timeout,
            request_timeout: profile.request_timeout,
            bandwidth_estimation: profile.bandwidth_estimation,
            simulated_send_loss: profile.simulated_send_loss,
            publish_fec: profile.publish_fec,
            mdns: profile.mdns,
            peer_connect_timeout: profile.peer_connect_timeout,
            peer_disconnect_grace: profile.peer_disconnect_grace,
            tls,
            ice_servers: profile.ice_servers.clone(),
            relay_only: profile.ice_transport_policy == IceTransportPolicy::Relay,
        };
        let local: Arc<parking_lot::Mutex<Vec<LocalChannel>>> = Arc::new(parking_lot::Mutex::new(
            PublishChannel::ALL
                .iter()
                .map(|c| LocalChannel::new(*c))
                .collect(),
        ));
        let play_outputs: PlayOutputMap = Arc::default();
        runtime.spawn(
            Connection::new(
                settings,
                sink.clone(),
                rx,
                local.clone(),
                play_outputs.clone(),
            )
            .run(),
        );
        let error_sink = sink.clone();
        let device_errors: DeviceErrorCallback = Arc::new(move |channel, device, error| {
            error_sink.emit(Event::DeviceError {
                channel,
                device,
                error_code: error.code().code(),
                message: error.to_string(),
            });
        });
        Ok(Engine {
            profile,
            commands,
            events,
            sink,
            runtime: Some(runtime),
            local,
            device_errors,
            play_outputs,
            seq: std::sync::atomic::AtomicU64::new(0),
            sound_levels: parking_lot::Mutex::new(None),
            publish_controls: PublishChannel::ALL
                .iter()
                .map(|_| Arc::new(PublishControls::default()))
                .collect(),
        })
    }

    /// The profile the engine was created with.
    pub fn profile(&self) -> &EngineProfile {
        &self.profile
    }

    /// The event receiver: drain it (for example once per UI frame).
    pub fn events(&self) -> &crossbeam_channel::Receiver<Event> {
        &self.events
    }

    /// Calls `f` after every event, from the engine's thread: use it to wake a UI
    /// (`ctx.request_repaint()`). Keep it cheap and non-blocking.
    pub fn set_event_notifier(&self, f: impl Fn() + Send + Sync + 'static) {
        self.sink.set_notifier(Some(Arc::new(f)));
    }

    /// Events dropped because they were not drained (should stay 0).
    pub fn dropped_events(&self) -> u64 {
        self.sink.dropped()
    }

    fn command(&self, api: &'static str, cmd: Command) {
        if let Err(e) = self.commands.try_send(cmd) {
            let code = match e {
                mpsc::error::TrySendError::Full(_) => ErrorCode::CommandQueueFull,
                mpsc::error::TrySendError::Closed(_) => ErrorCode::EngineDestroyed,
            };
            self.sink.emit(Event::ApiCalledResult {
                api,
                error_code: code.code(),
                message: code.cause().into(),
            });
        }
    }

    /// Logs into `room_id` (created on first login). Reports LOGINING, then LOGINED with the
    /// room's users and streams as Add updates, or LOGIN_FAILED with a code.
    pub fn login_room(&self, room_id: &str, user: User, config: RoomConfig) {
        self.command(
            "login_room",
            Command::Login {
                room_id: room_id.to_string(),
                user,
                config,
            },
        );
    }

    /// Logs out of `room_id`: reports LOGOUT (or LOGOUT_FAILED if not logged in).
    pub fn logout_room(&self, room_id: &str) {
        self.command(
            "logout_room",
            Command::Logout {
                room_id: room_id.to_string(),
            },
        );
    }

    /// Replaces the token of `room_id` before it expires (ZEGO's `renewToken`; see
    /// [`Event::RoomTokenWillExpire`]). The new token must be for the same user and room; it
    /// is also the one used to log in again after a reconnection. A refusal arrives as
    /// `ApiCalledResult { api: "renew_token", .. }`.
    pub fn renew_token(&self, room_id: &str, token: &str) {
        self.command(
            "renew_token",
            Command::RenewToken {
                room_id: room_id.to_string(),
                token: token.to_string(),
            },
        );
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    fn send_message(
        &self,
        api: &'static str,
        room_id: &str,
        kind: MessageKind,
        text: &str,
        to_users: Vec<String>,
    ) -> u64 {
        let seq = self.next_seq();
        self.command(
            api,
            Command::SendMessage {
                seq,
                room_id: room_id.to_string(),
                kind,
                text: text.to_string(),
                to_users,
            },
        );
        seq
    }

    /// Sends a broadcast message to everyone else in `room_id` (ZEGO's
    /// `sendBroadcastMessage`: reliable, at most 1 KiB, 10 a second per room). Returns a
    /// sequence number; the result arrives as [`Event::IMSendResult`] with it and the message
    /// ID. Members receive [`Event::IMRecvBroadcastMessage`].
    pub fn send_broadcast_message(&self, room_id: &str, message: &str) -> u64 {
        self.send_message(
            "send_broadcast_message",
            room_id,
            MessageKind::Broadcast,
            message,
            Vec::new(),
        )
    }

    /// Sends a barrage (bullet chat) message to everyone else in `room_id` (at most 1 KiB, 20 a
    /// second per room; may be dropped under load). Result: [`Event::IMSendResult`].
    pub fn send_barrage_message(&self, room_id: &str, message: &str) -> u64 {
        self.send_message(
            "send_barrage_message",
            room_id,
            MessageKind::Barrage,
            message,
            Vec::new(),
        )
    }

    /// Sends a custom command to `to_users` in `room_id` (everyone else when empty; at most
    /// 1 KiB). They receive [`Event::IMRecvCustomCommand`]. Result: [`Event::IMSendResult`].
    pub fn send_custom_command(&self, room_id: &str, command: &str, to_users: &[&str]) -> u64 {
        let to = to_users.iter().map(|u| u.to_string()).collect();
        self.send_message(
            "send_custom_command",
            room_id,
            MessageKind::Custom,
            command,
            to,
        )
    }

    /// Starts reporting sound levels every `interval_ms` (100–3000; ZEGO's
    /// `startSoundLevelMonitor`): [`Event::CapturedSoundLevelUpdate`] for the main channel's
    /// captured audio (with voice activity when `vad`), [`Event::RemoteSoundLevelUpdate`] for
    /// the streams being played. Starting again restarts with the new settings.
    pub fn start_sound_level_monitor(&self, interval_ms: u64, vad: bool) {
        let captured = self.local_audio_frames(PublishChannel::Main);
        let outputs = self.play_outputs.clone();
        let played = Box::new(move |known: &dyn Fn(&str) -> bool| {
            outputs
                .lock()
                .iter()
                .filter(|(id, _)| !known(id))
                .map(|(id, o)| (id.clone(), o.audio.subscribe(16)))
                .collect::<Vec<_>>()
        });
        let monitor = crate::sound_level::start(
            Duration::from_millis(interval_ms),
            vad,
            crate::sound_level::Sources { captured, played },
            self.sink.clone(),
        );
        // The old one (if any) stops as it is replaced.
        *self.sound_levels.lock() = Some(monitor);
    }

    /// Stops the sound-level reports.
    pub fn stop_sound_level_monitor(&self) {
        self.sound_levels.lock().take();
    }

    /// Sets the extra info of what `channel` publishes (ZEGO's `setStreamExtraInfo`, at most
    /// 1 KiB): before publishing, it goes with the publish (in `RoomStreamUpdate` Add);
    /// while publishing, the room gets [`Event::RoomStreamExtraInfoUpdate`]. Result:
    /// [`Event::PublisherUpdateStreamExtraInfoResult`].
    pub fn set_stream_extra_info(&self, channel: PublishChannel, extra_info: &str) -> u64 {
        let seq = self.next_seq();
        self.command(
            "set_stream_extra_info",
            Command::SetStreamExtraInfo {
                seq,
                channel,
                text: extra_info.to_string(),
            },
        );
        seq
    }

    /// Sets `key` of `room_id`'s extra info to `value` (ZEGO's `setRoomExtraInfo`: keys ≤ 128
    /// bytes, values ≤ 4 KiB, ≤ 10 keys per room). Members get [`Event::RoomExtraInfoUpdate`]
    /// now, and newcomers at login. Result: [`Event::RoomSetExtraInfoResult`].
    pub fn set_room_extra_info(&self, room_id: &str, key: &str, value: &str) -> u64 {
        let seq = self.next_seq();
        self.command(
            "set_room_extra_info",
            Command::SetRoomExtraInfo {
                seq,
                room_id: room_id.to_string(),
                key: key.to_string(),
                value: value.to_string(),
            },
        );
        seq
    }

    /// Logs out of every room.
    pub fn logout_all_rooms(&self) {
        self.command("logout_all_rooms", Command::LogoutAll);
    }

    fn with_local<R>(
        &self,
        channel: PublishChannel,
        f: impl FnOnce(&mut LocalChannel, &DeviceErrorCallback) -> R,
    ) -> Option<R> {
        let mut local = self.local.lock();
        local
            .get_mut(channel.index())
            .map(|c| f(c, &self.device_errors))
    }

    /// Where `channel`'s video comes from (default: the test source). Takes effect at once if
    /// the channel is capturing; failures arrive as [`Event::DeviceError`].
    pub fn set_video_source(&self, channel: PublishChannel, source: VideoSource) {
        self.with_local(channel, |c, e| c.set_video_source(source, e));
    }

    /// Where `channel`'s audio comes from (default: the tone).
    pub fn set_audio_source(&self, channel: PublishChannel, source: AudioSource) {
        self.with_local(channel, |c, e| c.set_audio_source(source, e));
    }

    /// `channel`'s capture and encoding settings (default: 360p).
    pub fn set_video_config(&self, channel: PublishChannel, config: VideoConfig) {
        if let Some(Err(err)) = self.with_local(channel, |c, e| c.set_config(config, e)) {
            self.sink.emit(Event::ApiCalledResult {
                api: "set_video_config",
                error_code: err.code().code(),
                message: err.to_string(),
            });
        }
    }

    /// `channel`'s video config.
    pub fn video_config(&self, channel: PublishChannel) -> VideoConfig {
        self.with_local(channel, |c, _| c.config())
            .unwrap_or_default()
    }

    /// Starts capturing `channel` for the local preview: frames arrive on
    /// [`Self::preview_frames`].
    pub fn start_preview(&self, channel: PublishChannel) {
        self.with_local(channel, |c, e| c.set_previewing(true, e));
    }

    /// Stops the preview; unless the channel is publishing, capture stops and the device is
    /// released before this returns.
    pub fn stop_preview(&self, channel: PublishChannel) {
        self.with_local(channel, |c, e| c.set_previewing(false, e));
    }

    /// A receiver of `channel`'s local video frames, holding at most the two newest: for a
    /// preview, take [`FrameReceiver::latest`] each UI frame. Keep it for as long as you draw.
    pub fn preview_frames(&self, channel: PublishChannel) -> FrameReceiver<SharedVideoFrame> {
        let mut local = self.local.lock();
        match local.get_mut(channel.index()) {
            Some(c) => c.video().subscribe(2),
            None => onair_media::channel::frame_channel(1).1,
        }
    }

    /// A receiver of `channel`'s local audio frames (for a level meter), holding at most 8.
    pub fn local_audio_frames(&self, channel: PublishChannel) -> FrameReceiver<SharedAudioFrame> {
        let mut local = self.local.lock();
        match local.get_mut(channel.index()) {
            Some(c) => c.audio().subscribe(8),
            None => onair_media::channel::frame_channel(1).1,
        }
    }

    /// Publishes `channel` as `stream_id` in the first room logged into (the seed's
    /// `startPublishingStream`). Capture starts if it is not running; states arrive as
    /// [`Event::PublisherStateUpdate`]: PublishRequesting, then Publishing.
    pub fn start_publishing_stream(&self, stream_id: &str, channel: PublishChannel) {
        self.start_publishing_stream_in_room(stream_id, channel, None);
    }

    /// As [`Self::start_publishing_stream`], into a given room.
    pub fn start_publishing_stream_in_room(
        &self,
        stream_id: &str,
        channel: PublishChannel,
        room_id: Option<&str>,
    ) {
        let subscription = self.with_local(channel, |c, e| {
            c.set_publishing(true, e);
            (
                c.config(),
                c.video().subscribe(2),
                c.audio().subscribe(8),
                c.publish_epoch(),
            )
        });
        let Some((config, video, audio, epoch)) = subscription else {
            return;
        };
        let controls = self.publish_controls(channel);
        self.command(
            "start_publishing_stream",
            Command::StartPublishing(StartPublishing {
                stream_id: stream_id.to_string(),
                channel,
                epoch,
                room_id: room_id.map(String::from),
                config,
                video,
                audio,
                controls,
            }),
        );
    }

    fn publish_controls(&self, channel: PublishChannel) -> Arc<PublishControls> {
        self.publish_controls
            .get(channel.index())
            .cloned()
            .unwrap_or_default()
    }

    /// Sends `data` (at most 4 KiB, at most 30 calls a second; ZEGO's `sendSEI`) inside the
    /// first video frame `channel` captures from now on, as an H.264 SEI message (user data
    /// unregistered). Players get it as [`Event::PlayerSyncRecvSEI`] together with that frame
    /// (same `pts_us`). Refused at once with the reason's code: too long or empty (1009020),
    /// too often (1009021), the channel is not publishing (1009022).
    pub fn send_sei(&self, channel: PublishChannel, data: &[u8]) -> Result<(), ErrorCode> {
        self.publish_controls(channel).queue_sei(
            data,
            onair_media::frame::wall_clock_us(),
            std::time::Instant::now(),
        )
    }

    /// Mutes (or unmutes) what `channel` publishes of its audio (ZEGO's
    /// `mutePublishStreamAudio`): the stream goes on with silence, capture keeps running, and
    /// the room gets [`Event::RemoteMicStateUpdate`] (Mute, or Open again).
    pub fn mute_publish_stream_audio(&self, channel: PublishChannel, mute: bool) {
        if self.publish_controls(channel).set_audio_muted(mute) {
            self.command(
                "mute_publish_stream_audio",
                Command::StreamMuteChanged { channel },
            );
        }
    }

    /// Mutes (or unmutes) what `channel` publishes of its video (ZEGO's
    /// `mutePublishStreamVideo`): the stream goes on with black pictures (a few bytes each),
    /// the preview keeps showing the camera, and the room gets
    /// [`Event::RemoteCameraStateUpdate`] (Disable, or Open again).
    pub fn mute_publish_stream_video(&self, channel: PublishChannel, mute: bool) {
        if self.publish_controls(channel).set_video_muted(mute) {
            self.command(
                "mute_publish_stream_video",
                Command::StreamMuteChanged { channel },
            );
        }
    }

    /// The controls of a played stream (created on first use, kept across restarts).
    fn play_controls(&self, stream_id: &str) -> Arc<PlayControls> {
        self.play_outputs
            .lock()
            .entry(stream_id.to_string())
            .or_default()
            .controls
            .clone()
    }

    /// Stops (or resumes) delivering `stream_id`'s audio to the app (ZEGO's
    /// `mutePlayStreamAudio`); may be called before playing. The stream keeps playing and is
    /// still received from the relay.
    pub fn mute_play_stream_audio(&self, stream_id: &str, mute: bool) {
        self.play_controls(stream_id).set_audio_muted(mute);
    }

    /// Stops (or resumes) `stream_id`'s video (ZEGO's `mutePlayStreamVideo`); may be called
    /// before playing. The relay stops sending it (the audio goes on; a hidden tile costs no
    /// video bandwidth, and simulcast layers nobody needs pause at the publisher); unmuted,
    /// the picture comes back from the next keyframe, which the relay asks for.
    pub fn mute_play_stream_video(&self, stream_id: &str, mute: bool) {
        if self.play_controls(stream_id).set_video_muted(mute) {
            self.command(
                "mute_play_stream_video",
                Command::PlayVideoMuted {
                    stream_id: stream_id.to_string(),
                },
            );
        }
    }

    /// `stream_id`'s playback volume in percent, 0–200 (ZEGO's `setPlayVolume`; 100 as
    /// received, above 100 amplified with saturation). Applies to the audio frames the app
    /// gets from [`Self::play_audio_frames`].
    pub fn set_play_volume(&self, stream_id: &str, volume: u32) {
        self.play_controls(stream_id).set_volume(volume);
    }

    /// Stops publishing `channel` (NoPublish); capture stops unless the preview is on.
    pub fn stop_publishing_stream(&self, channel: PublishChannel) {
        // The epoch now: a publish started after this call is not stopped by it.
        let epoch = self
            .with_local(channel, |c, _| c.publish_epoch())
            .unwrap_or(0);
        self.command(
            "stop_publishing_stream",
            Command::StopPublishing { channel, epoch },
        );
    }

    /// Plays `stream_id` (the seed's `startPlayingStream` with `resourceMode: OnlyL3`). If the
    /// stream does not exist yet, the player waits for it; states arrive as
    /// [`Event::PlayerStateUpdate`]. Decoded frames: [`Self::play_frames`].
    pub fn start_playing_stream(&self, stream_id: &str, config: PlayerConfig) {
        self.command(
            "start_playing_stream",
            Command::StartPlaying {
                stream_id: stream_id.to_string(),
                config,
            },
        );
    }

    /// Asks for another video layer of `stream_id` (ZEGO's `setPlayStreamVideoType`): the
    /// relay switches at that layer's next keyframe ([`Event::PlayerVideoLayerChanged`]). A
    /// stream without simulcast has only the big layer.
    pub fn set_play_stream_video_layer(
        &self,
        stream_id: &str,
        layer: onair_protocol::messages::VideoLayer,
    ) {
        self.command(
            "set_play_stream_video_layer",
            Command::SetPlayLayer {
                stream_id: stream_id.to_string(),
                layer,
            },
        );
    }

    /// Stops playing `stream_id` (NoPlay).
    pub fn stop_playing_stream(&self, stream_id: &str) {
        self.command(
            "stop_playing_stream",
            Command::StopPlaying {
                stream_id: stream_id.to_string(),
            },
        );
    }

    /// A receiver of `stream_id`'s decoded video, holding at most the two newest frames; valid
    /// across stops and restarts of the stream.
    pub fn play_frames(&self, stream_id: &str) -> FrameReceiver<SharedVideoFrame> {
        self.play_outputs
            .lock()
            .entry(stream_id.to_string())
            .or_default()
            .video
            .subscribe(2)
    }

    /// The application calls this when it has drawn the first frame of `stream_id`; the engine
    /// reports [`Event::PlayerRenderVideoFirstFrame`] so the whole first-frame path shows in one log.
    pub fn report_rendered_first_frame(&self, stream_id: &str) {
        self.sink.emit(Event::PlayerRenderVideoFirstFrame {
            stream_id: stream_id.to_string(),
        });
    }

    /// A receiver of `stream_id`'s decoded audio (48 kHz), holding at most 16 frames.
    pub fn play_audio_frames(&self, stream_id: &str) -> FrameReceiver<SharedAudioFrame> {
        self.play_outputs
            .lock()
            .entry(stream_id.to_string())
            .or_default()
            .audio
            .subscribe(16)
    }

    /// Drops the signaling connection as a network failure would; the engine reconnects by
    /// itself. For tests and for trying the reconnect path by hand.
    pub fn simulate_network_drop(&self) {
        self.command("simulate_network_drop", Command::DropConnection);
    }

    /// Logs out of every room (waiting briefly for the relay to confirm) and stops the engine.
    pub fn destroy(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for c in self.local.lock().iter_mut() {
            c.stop_all();
        }
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self
            .commands
            .try_send(Command::Shutdown { done: done_tx })
            .is_ok()
        {
            let _ = done_rx.recv_timeout(Duration::from_secs(2));
        }
        runtime.shutdown_background();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
