//! The engine's connection task: owns the signaling socket and every [`RoomMachine`].
//!
//! It connects on the first login, sends heartbeats, turns relay messages into room events, and
//! when the socket drops it reconnects with backoff (resuming the relay session when it can),
//! logs every room in again and lets each room report what changed. Commands come from the
//! [`crate::Engine`] handle; events leave through the [`EventSink`]. Never blocks on the caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{EngineError, ErrorCode};
use crate::ids;
use crate::live::player::PlayerPeer;
use crate::live::publisher::{PublisherMedia, PublisherPeer};
use crate::live::{LiveEvent, PlayOutputs, PlayerConfig};
use crate::media::channel::FrameReceiver;
use crate::media::config::VideoConfig;
use crate::media::frame::{SharedAudioFrame, SharedVideoFrame};
use crate::media::local::{LocalChannel, PublishChannel};
use crate::protocol::{
    PROTOCOL_VERSION, RequestBody, ResponseBody, ResumeTicket, ServerMessage, User,
};
use crate::room::events::Event;
use crate::room::events::{PlayerState, PublisherState};
use crate::room::machine::{RoomConfig, RoomMachine, RoomPhase};
use crate::signal::SignalClient;
use crate::transport::peer::SendOptions;

/// A callback run after each event (to wake a UI).
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

/// Where events go: a bounded channel that never blocks the engine. If the application stops
/// draining it, new events are dropped and counted rather than stalling the connection.
#[derive(Clone)]
pub struct EventSink {
    tx: crossbeam_channel::Sender<Event>,
    dropped: Arc<AtomicU64>,
    notifier: Arc<parking_lot::Mutex<Option<Notifier>>>,
}

impl EventSink {
    /// A sink holding up to `capacity` undrained events, and its receiver.
    pub fn new(capacity: usize) -> (EventSink, crossbeam_channel::Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            EventSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                notifier: Arc::new(parking_lot::Mutex::new(None)),
            },
            rx,
        )
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        tracing::debug!(%event, "engine event");
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let notifier = self.notifier.lock().clone();
        if let Some(n) = notifier {
            n();
        }
    }

    /// Events dropped because the application did not drain them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Calls `f` after every event (for example to wake a UI).
    pub fn set_notifier(&self, f: Option<Notifier>) {
        *self.notifier.lock() = f;
    }
}

/// Connection settings taken from the engine profile.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Signaling URL.
    pub url: String,
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
    /// Drop the socket as a network failure would (tests and debugging).
    DropConnection,
    /// Publish a local channel.
    StartPublishing {
        /// The stream ID.
        stream_id: String,
        /// The local channel.
        channel: PublishChannel,
        /// The room (default: the first logged-in room).
        room_id: Option<String>,
        /// The channel's video settings.
        config: VideoConfig,
        /// The channel's video.
        video: FrameReceiver<SharedVideoFrame>,
        /// The channel's audio.
        audio: FrameReceiver<SharedAudioFrame>,
    },
    /// Stop publishing a channel.
    StopPublishing {
        /// The channel.
        channel: PublishChannel,
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
    /// Log out of everything and stop; `done` is signalled when finished.
    Shutdown {
        /// Signalled when the task has finished.
        done: std::sync::mpsc::Sender<()>,
    },
}

enum Pending {
    Login(String),
    Logout(String),
    Heartbeat,
    Publish(String, u64),
    Play(String, u64),
    Other,
}

struct PublishSession {
    channel: PublishChannel,
    room_id: String,
    config: VideoConfig,
    video: FrameReceiver<SharedVideoFrame>,
    audio: FrameReceiver<SharedAudioFrame>,
    state: PublisherState,
    generation: u64,
    // Field order matters: the media threads stop before the connection goes.
    media: Option<PublisherMedia>,
    peer: Option<PublisherPeer>,
    /// Counter values at the last quality report.
    last_counts: [u64; 5],
}

struct PlaySession {
    state: PlayerState,
    generation: u64,
    requested_at: Instant,
    peer: Option<PlayerPeer>,
    /// Counter values at the last quality report.
    last_counts: [u64; 2],
}

/// Play outputs shared between the engine handle and the connection task.
pub type PlayOutputMap = Arc<parking_lot::Mutex<HashMap<String, Arc<PlayOutputs>>>>;

enum Step {
    Live(Option<LiveEvent>),
    Stats,
    Command(Option<Command>),
    Message(Option<Result<ServerMessage, EngineError>>),
    Heartbeat,
    Retry,
}

struct Link {
    client: SignalClient,
    heartbeat_every: Duration,
    dead_after: Duration,
    last_rx: Instant,
}

/// The connection task's state.
pub struct Connection {
    settings: ConnectionSettings,
    events: EventSink,
    commands: mpsc::Receiver<Command>,
    rooms: BTreeMap<String, RoomMachine>,
    pending: HashMap<u64, (Pending, Instant)>,
    link: Option<Link>,
    resume: Option<ResumeTicket>,
    retry_at: Option<Instant>,
    backoff: Duration,
    local: Arc<parking_lot::Mutex<Vec<LocalChannel>>>,
    play_outputs: PlayOutputMap,
    live_tx: mpsc::Sender<LiveEvent>,
    live_rx: mpsc::Receiver<LiveEvent>,
    publishers: HashMap<String, PublishSession>,
    players: HashMap<String, PlaySession>,
    generation: u64,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

async fn next_message(link: &mut Option<Link>) -> Option<Result<ServerMessage, EngineError>> {
    match link {
        Some(l) => l.client.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// A task with no rooms and no socket yet.
    pub fn new(
        settings: ConnectionSettings,
        events: EventSink,
        commands: mpsc::Receiver<Command>,
        local: Arc<parking_lot::Mutex<Vec<LocalChannel>>>,
        play_outputs: PlayOutputMap,
    ) -> Self {
        let (live_tx, live_rx) = mpsc::channel(256);
        Connection {
            local,
            play_outputs,
            live_tx,
            live_rx,
            publishers: HashMap::new(),
            players: HashMap::new(),
            generation: 0,
            settings,
            events,
            commands,
            rooms: BTreeMap::new(),
            pending: HashMap::new(),
            link: None,
            resume: None,
            retry_at: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// Runs until shutdown or until the engine handle is dropped.
    pub async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(Duration::from_secs(1));
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                cmd = self.commands.recv() => Step::Command(cmd),
                live = self.live_rx.recv() => Step::Live(live),
                _ = stats.tick(), if !self.publishers.is_empty() || !self.players.is_empty() => Step::Stats,
                msg = next_message(&mut self.link) => Step::Message(msg),
                _ = heartbeat.tick(), if self.link.is_some() => Step::Heartbeat,
                _ = sleep_until_opt(self.retry_at), if self.link.is_none() => Step::Retry,
            };
            match step {
                Step::Live(Some(event)) => self.on_live(event).await,
                Step::Live(None) => {}
                Step::Stats => self.report_quality().await,
                Step::Command(None) => break,
                Step::Command(Some(Command::Shutdown { done })) => {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                Step::Command(Some(cmd)) => self.on_command(cmd).await,
                Step::Message(Some(Ok(msg))) => self.on_message(msg).await,
                Step::Message(Some(Err(e))) => {
                    tracing::info!(error = %e, "signaling connection failed");
                    self.on_link_lost(true);
                }
                Step::Message(None) => self.on_link_lost(true),
                Step::Heartbeat => self.on_heartbeat_tick(&mut heartbeat).await,
                Step::Retry => self.connect().await,
            }
        }
        self.shutdown().await;
    }

    async fn send(&mut self, body: RequestBody, pending: Pending) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        match link.client.send(body).await {
            Ok(id) => {
                self.pending.insert(id, (pending, Instant::now()));
            }
            Err(e) => {
                tracing::info!(error = %e, "send failed");
                self.on_link_lost(true);
            }
        }
    }

    fn login_body(&self, room: &RoomMachine) -> RequestBody {
        let token = room.config().token.clone();
        RequestBody::Login {
            room_id: room.room_id().to_string(),
            user: room.user().clone(),
            app_sign: if token.is_none() {
                self.settings.app_sign.clone()
            } else {
                None
            },
            token,
            is_user_status_notify: room.config().is_user_status_notify,
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Login {
                room_id,
                user,
                config,
            } => {
                if let Some(existing) = self.rooms.get(&room_id) {
                    let message = if existing.user().user_id == user.user_id {
                        "already logged into this room"
                    } else {
                        "already logged into this room as another user"
                    };
                    self.events.emit(Event::ApiCalledResult {
                        api: "login_room",
                        error_code: ErrorCode::RoomUserConflict.code(),
                        message: format!("{room_id}: {message}"),
                    });
                    return;
                }
                let local_check = ids::check_room_id(&room_id)
                    .and_then(|()| ids::check_user_id(&user.user_id))
                    .and_then(|()| ids::check_user_name(&user.user_name));
                let (mut room, logining) = RoomMachine::new(room_id.clone(), user, config, now);
                self.events.emit(logining);
                if let Err(code) = local_check {
                    self.events
                        .emit(room.on_login_failed(code.code(), code.cause()));
                    return;
                }
                let body = self.login_body(&room);
                self.rooms.insert(room_id.clone(), room);
                if self.link.is_some() {
                    self.send(body, Pending::Login(room_id)).await;
                } else if self.retry_at.is_none() {
                    self.retry_at = Some(now);
                }
            }
            Command::Logout { room_id } => self.logout(&room_id).await,
            Command::LogoutAll => {
                let rooms: Vec<String> = self.rooms.keys().cloned().collect();
                for room_id in rooms {
                    self.logout(&room_id).await;
                }
            }
            Command::DropConnection => {
                if let Some(link) = self.link.take() {
                    drop(link);
                    self.on_link_lost(false);
                }
            }
            Command::StartPublishing {
                stream_id,
                channel,
                room_id,
                config,
                video,
                audio,
            } => {
                if self.publishers.values().any(|p| p.channel == channel)
                    || self.publishers.contains_key(&stream_id)
                {
                    self.events.emit(Event::ApiCalledResult {
                        api: "start_publishing_stream",
                        error_code: ErrorCode::StreamIdTaken.code(),
                        message: format!(
                            "channel {channel:?} or stream {stream_id} is already publishing"
                        ),
                    });
                    return;
                }
                // Publishing right after login_room is fine (the seed's example does it): the
                // offer goes out once the room is logged in.
                let room = room_id.or_else(|| {
                    self.rooms
                        .values()
                        .find(|r| r.phase() == RoomPhase::Logined)
                        .or_else(|| self.rooms.values().next())
                        .map(|r| r.room_id().to_string())
                });
                let Some(room_id) = room.filter(|r| self.rooms.contains_key(r)) else {
                    self.publisher_state(
                        &stream_id,
                        PublisherState::NoPublish,
                        ErrorCode::NotLoggedIn.code(),
                        "log into a room first",
                    );
                    self.set_channel_publishing(channel, false);
                    return;
                };
                if let Err(code) = ids::check_stream_id(&stream_id) {
                    self.publisher_state(
                        &stream_id,
                        PublisherState::NoPublish,
                        code.code(),
                        code.cause(),
                    );
                    self.set_channel_publishing(channel, false);
                    return;
                }
                self.publishers.insert(
                    stream_id.clone(),
                    PublishSession {
                        channel,
                        room_id,
                        config,
                        video,
                        audio,
                        state: PublisherState::NoPublish,
                        generation: 0,
                        media: None,
                        peer: None,
                        last_counts: [0; 5],
                    },
                );
                self.publisher_state(&stream_id, PublisherState::PublishRequesting, 0, "");
                self.negotiate_publish(&stream_id).await;
            }
            Command::StopPublishing { channel } => {
                let Some(stream_id) = self
                    .publishers
                    .iter()
                    .find(|(_, p)| p.channel == channel)
                    .map(|(s, _)| s.clone())
                else {
                    return;
                };
                self.end_publishing(&stream_id, true).await;
            }
            Command::StartPlaying {
                stream_id,
                config: _,
            } => {
                if self.players.contains_key(&stream_id) {
                    return;
                }
                self.players.insert(
                    stream_id.clone(),
                    PlaySession {
                        state: PlayerState::NoPlay,
                        generation: 0,
                        requested_at: now,
                        peer: None,
                        last_counts: [0; 2],
                    },
                );
                self.player_state(&stream_id, PlayerState::PlayRequesting, 0, "");
                self.negotiate_play(&stream_id).await;
            }
            Command::StopPlaying { stream_id } => {
                if self.players.remove(&stream_id).is_some() {
                    self.send(
                        RequestBody::StopPlay {
                            stream_id: stream_id.clone(),
                        },
                        Pending::Other,
                    )
                    .await;
                    self.player_state(&stream_id, PlayerState::NoPlay, 0, "");
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    async fn logout(&mut self, room_id: &str) {
        // The seed: logging out stops that room's publishing, and playing once no room is left.
        let publishing: Vec<String> = self
            .publishers
            .iter()
            .filter(|(_, p)| p.room_id == room_id)
            .map(|(s, _)| s.clone())
            .collect();
        for stream_id in publishing {
            self.end_publishing(&stream_id, false).await;
        }
        if self.rooms.len() <= 1 && self.rooms.contains_key(room_id) {
            // Out of every room: the preview stops too, and the devices are released.
            let noop: crate::media::local::DeviceErrorCallback = Arc::new(|_, _, _| {});
            for c in self.local.lock().iter_mut() {
                c.set_previewing(false, &noop);
            }
            let playing: Vec<String> = self.players.keys().cloned().collect();
            for stream_id in playing {
                self.players.remove(&stream_id);
                self.send(
                    RequestBody::StopPlay {
                        stream_id: stream_id.clone(),
                    },
                    Pending::Other,
                )
                .await;
                self.player_state(&stream_id, PlayerState::NoPlay, 0, "");
            }
        }
        if self.rooms.remove(room_id).is_none() {
            self.events.emit(RoomMachine::logout_event(
                room_id,
                Some((ErrorCode::NotLoggedIn.code(), "not logged into this room")),
            ));
            return;
        }
        if self.link.is_some() {
            self.send(
                RequestBody::Logout {
                    room_id: room_id.to_string(),
                },
                Pending::Logout(room_id.to_string()),
            )
            .await;
        } else {
            // Offline: the relay drops the session after its heartbeat timeout anyway.
            self.events.emit(RoomMachine::logout_event(room_id, None));
        }
        self.maybe_go_idle();
    }

    /// With no rooms and nothing pending, close the socket and stop retrying.
    fn maybe_go_idle(&mut self) {
        if self.rooms.is_empty()
            && self
                .pending
                .values()
                .all(|(p, _)| matches!(p, Pending::Heartbeat | Pending::Other))
        {
            self.link = None;
            self.pending.clear();
            self.retry_at = None;
            self.resume = None;
        }
    }

    async fn on_message(&mut self, msg: ServerMessage) {
        let now = Instant::now();
        if let Some(link) = self.link.as_mut() {
            link.last_rx = now;
        }
        match msg {
            ServerMessage::Response { id, result, error } => {
                let Some((pending, _)) = id.and_then(|id| self.pending.remove(&id)) else {
                    if let Some(e) = error {
                        tracing::warn!(code = e.code, message = %e.message, "relay error without a request");
                    }
                    return;
                };
                match (pending, result, error) {
                    (
                        Pending::Login(room_id),
                        Some(ResponseBody::Login { users, streams, .. }),
                        _,
                    ) => {
                        if let Some(room) = self.rooms.get_mut(&room_id) {
                            for e in room.on_login_ok(users, streams, now) {
                                self.events.emit(e);
                            }
                        }
                        self.resume_live().await;
                    }
                    (Pending::Login(room_id), _, error) => {
                        let (code, message) = error.map(|e| (e.code, e.message)).unwrap_or((
                            ErrorCode::Internal.code(),
                            "unexpected login answer".into(),
                        ));
                        if let Some(mut room) = self.rooms.remove(&room_id) {
                            self.events.emit(room.on_login_failed(code, &message));
                        }
                        self.maybe_go_idle();
                    }
                    (Pending::Logout(room_id), _, error) => {
                        let failed = error.filter(|e| e.code != ErrorCode::NotLoggedIn.code());
                        self.events.emit(RoomMachine::logout_event(
                            &room_id,
                            failed.as_ref().map(|e| (e.code, e.message.as_str())),
                        ));
                        self.maybe_go_idle();
                    }
                    (Pending::Heartbeat | Pending::Other, _, _) => {}
                    (Pending::Publish(stream_id, generation), result, error) => {
                        self.on_publish_answer(&stream_id, generation, result, error)
                            .await;
                    }
                    (Pending::Play(stream_id, generation), result, error) => {
                        self.on_play_answer(&stream_id, generation, result, error)
                            .await;
                    }
                }
            }
            ServerMessage::UserUpdate {
                room_id,
                update_type,
                users,
            } => {
                if let Some(e) = self
                    .rooms
                    .get_mut(&room_id)
                    .and_then(|r| r.on_user_update(update_type, users))
                {
                    self.events.emit(e);
                }
            }
            ServerMessage::StreamUpdate {
                room_id,
                update_type,
                streams,
            } => {
                let waiting: Vec<String> = if update_type == crate::protocol::UpdateType::Add {
                    streams
                        .iter()
                        .filter(|s| {
                            self.players
                                .get(&s.stream_id)
                                .is_some_and(|p| p.peer.is_none())
                        })
                        .map(|s| s.stream_id.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                if let Some(e) = self
                    .rooms
                    .get_mut(&room_id)
                    .and_then(|r| r.on_stream_update(update_type, streams))
                {
                    self.events.emit(e);
                }
                for stream_id in waiting {
                    self.negotiate_play(&stream_id).await;
                }
            }
            ServerMessage::Kicked {
                room_id,
                code,
                reason,
            } => {
                if let Some(mut room) = self.rooms.remove(&room_id) {
                    self.events.emit(room.on_kicked(code, &reason));
                }
                self.maybe_go_idle();
            }
            ServerMessage::PlayStopped {
                stream_id,
                code,
                reason,
            } => {
                self.on_play_lost(&stream_id, code, &reason);
            }
            ServerMessage::PublishStopped {
                stream_id,
                code,
                reason,
            } => {
                self.on_publish_lost(&stream_id, code, &reason);
            }
            ServerMessage::Goodbye { code, reason } => {
                tracing::info!(code, %reason, "relay closed the session");
                if code == ErrorCode::HeartbeatTimeout.code() {
                    self.resume = None;
                }
                self.link = None;
                self.on_link_lost(true);
            }
        }
    }

    fn publisher_state(
        &mut self,
        stream_id: &str,
        state: PublisherState,
        error_code: u32,
        message: &str,
    ) {
        if let Some(p) = self.publishers.get_mut(stream_id) {
            if p.state == state && error_code == 0 {
                return;
            }
            p.state = state;
        }
        self.events.emit(Event::PublisherStateUpdate {
            stream_id: stream_id.to_string(),
            state,
            error_code,
            extended_data: extended_data(message),
        });
    }

    fn player_state(
        &mut self,
        stream_id: &str,
        state: PlayerState,
        error_code: u32,
        message: &str,
    ) {
        if let Some(p) = self.players.get_mut(stream_id) {
            if p.state == state && error_code == 0 {
                return;
            }
            p.state = state;
        }
        self.events.emit(Event::PlayerStateUpdate {
            stream_id: stream_id.to_string(),
            state,
            error_code,
            extended_data: extended_data(message),
        });
    }

    fn set_channel_publishing(&self, channel: PublishChannel, on: bool) {
        // The capture's error callback lives in the engine; a no-op one is enough to stop.
        let noop: crate::media::local::DeviceErrorCallback = Arc::new(|_, _, _| {});
        if let Some(c) = self.local.lock().get_mut(channel.index()) {
            c.set_publishing(on, &noop);
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Send-side options for a publisher with `config`: the estimate starts at the configured
    /// bitrate and may go down to a tenth of it (at least 100 kbps).
    fn send_options(&self, config: &VideoConfig) -> SendOptions {
        let max = f64::from(config.bitrate_kbps) * 1000.0;
        SendOptions {
            estimate: self
                .settings
                .bandwidth_estimation
                .then(|| (max, (max / 10.0).max(100_000.0).min(max), max)),
            simulated_loss: self.settings.simulated_send_loss,
        }
    }

    /// Emits a quality event per publisher and player (once a second).
    async fn report_quality(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut events = Vec::new();
        for (stream_id, p) in &mut self.publishers {
            let Some(c) = p.media.as_ref().map(|m| m.counters.clone()) else {
                continue;
            };
            let nacked = p.peer.as_ref().map_or(0, |peer| peer.nacked.load(Relaxed));
            let now = [
                c.frames.load(Relaxed),
                c.video_bytes.load(Relaxed),
                c.audio_bytes.load(Relaxed),
                c.keyframes_requested.load(Relaxed),
                nacked,
            ];
            let d: Vec<u64> = now
                .iter()
                .zip(p.last_counts)
                .map(|(n, l)| n.saturating_sub(l))
                .collect();
            p.last_counts = now;
            events.push(Event::PublisherQualityUpdate {
                stream_id: stream_id.clone(),
                send_fps: d[0] as f64,
                video_kbps: d[1] as f64 * 8.0 / 1000.0,
                audio_kbps: d[2] as f64 * 8.0 / 1000.0,
                target_kbps: p.config.bitrate_kbps,
                keyframe_requests: d[3],
                rtt_ms: 0.0,
                packets_lost: d[4],
            });
        }
        for (stream_id, p) in &mut self.players {
            let Some(c) = p.peer.as_ref().map(|m| m.counters.clone()) else {
                continue;
            };
            let now = [c.frames.load(Relaxed), c.bytes.load(Relaxed)];
            let d: Vec<u64> = now
                .iter()
                .zip(p.last_counts)
                .map(|(n, l)| n.saturating_sub(l))
                .collect();
            p.last_counts = now;
            events.push(Event::PlayerQualityUpdate {
                stream_id: stream_id.clone(),
                decode_fps: d[0] as f64,
                video_kbps: d[1] as f64 * 8.0 / 1000.0,
                packets_lost: c.lost.load(Relaxed),
                delay_ms: c.delay_us.load(Relaxed) as f64 / 1000.0,
                jitter_ms: c.jitter_us.load(Relaxed) as f64 / 1000.0,
                rtt_ms: 0.0,
                stutters: c.stutters.load(Relaxed),
                stutter_ms: c.stutter_us.load(Relaxed) as f64 / 1000.0,
            });
        }
        for mut e in events {
            let pc = match &e {
                Event::PublisherQualityUpdate { stream_id, .. } => self
                    .publishers
                    .get(stream_id)
                    .and_then(|p| p.peer.as_ref())
                    .map(|p| p.pc.clone()),
                Event::PlayerQualityUpdate { stream_id, .. } => self
                    .players
                    .get(stream_id)
                    .and_then(|p| p.peer.as_ref())
                    .map(|p| p.pc.clone()),
                _ => None,
            };
            if let Some(pc) = pc {
                let (measured, estimate_bps) = link_stats(&pc).await;
                if let Event::PublisherQualityUpdate { rtt_ms, .. }
                | Event::PlayerQualityUpdate { rtt_ms, .. } = &mut e
                {
                    *rtt_ms = measured;
                }
                // The player's jitter buffer sizes its wait for a resend from the round trip.
                if let Event::PlayerQualityUpdate { stream_id, .. } = &e
                    && let Some(peer) = self.players.get(stream_id).and_then(|p| p.peer.as_ref())
                {
                    peer.counters.rtt_us.store(
                        (measured * 1000.0) as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                tracing::debug!(rtt_ms = measured, estimate_bps, "link stats");
                // The bandwidth estimate drives the encoder (within its configured bitrate).
                if let Event::PublisherQualityUpdate {
                    stream_id,
                    target_kbps,
                    ..
                } = &mut e
                    && self.settings.bandwidth_estimation
                    && estimate_bps > 0.0
                    && let Some(p) = self.publishers.get(stream_id)
                    && let Some(media) = p.media.as_ref()
                {
                    let kbps = ((estimate_bps / 1000.0) as u32).clamp(
                        (p.config.bitrate_kbps / 10).clamp(1, 100),
                        p.config.bitrate_kbps,
                    );
                    media
                        .counters
                        .target_kbps
                        .store(kbps, std::sync::atomic::Ordering::Relaxed);
                    *target_kbps = kbps;
                }
            }
            self.events.emit(e);
        }
    }

    /// Starts the publishers and players that wait for a logged-in room or a connection.
    async fn resume_live(&mut self) {
        let publishers: Vec<String> = self
            .publishers
            .iter()
            .filter(|(_, p)| p.peer.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for stream_id in publishers {
            self.negotiate_publish(&stream_id).await;
        }
        let players: Vec<String> = self
            .players
            .iter()
            .filter(|(_, p)| p.peer.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for stream_id in players {
            self.negotiate_play(&stream_id).await;
        }
    }

    /// Creates the publisher's connection and sends its offer (when connected and its room is
    /// logged in; otherwise [`Self::resume_live`] does it later).
    async fn negotiate_publish(&mut self, stream_id: &str) {
        let Some(ip) = self.link.as_ref().and_then(|l| l.client.local_ip()) else {
            return;
        };
        let room_ready = self.publishers.get(stream_id).is_some_and(|p| {
            self.rooms
                .get(&p.room_id)
                .is_some_and(|r| r.phase() == RoomPhase::Logined)
        });
        if !room_ready {
            return;
        }
        let generation = self.next_generation();
        let send = match self.publishers.get(stream_id) {
            Some(p) => self.send_options(&p.config),
            None => return,
        };
        let result =
            crate::live::publisher::offer(ip, stream_id, generation, self.live_tx.clone(), send)
                .await;
        let Some(session) = self.publishers.get_mut(stream_id) else {
            return;
        };
        match result {
            Ok((peer, sdp)) => {
                session.generation = generation;
                session.media = None;
                session.peer = Some(peer);
                let room_id = session.room_id.clone();
                self.send(
                    RequestBody::Publish {
                        room_id,
                        stream_id: stream_id.to_string(),
                        extra_info: String::new(),
                        sdp: Some(sdp),
                    },
                    Pending::Publish(stream_id.to_string(), generation),
                )
                .await;
            }
            Err(e) => {
                self.publisher_state(
                    stream_id,
                    PublisherState::PublishRequesting,
                    ErrorCode::MediaNegotiationFailed.code(),
                    &e.to_string(),
                );
                self.schedule_retry(stream_id, true, generation);
            }
        }
    }

    async fn on_publish_answer(
        &mut self,
        stream_id: &str,
        generation: u64,
        result: Option<ResponseBody>,
        error: Option<crate::error::WireError>,
    ) {
        let Some(session) = self
            .publishers
            .get_mut(stream_id)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        match (result, error) {
            (
                Some(ResponseBody::Publish {
                    sdp: Some(answer), ..
                }),
                _,
            ) => {
                let Some(peer) = session.peer.as_ref() else {
                    return;
                };
                let started = match peer.accept(answer).await {
                    Ok(()) => {
                        peer.start_media(
                            session.config,
                            session.video.clone(),
                            session.audio.clone(),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match started {
                    Ok(media) => session.media = Some(media),
                    Err(e) => {
                        session.peer = None;
                        self.publisher_state(
                            stream_id,
                            PublisherState::PublishRequesting,
                            ErrorCode::MediaNegotiationFailed.code(),
                            &e.to_string(),
                        );
                        self.send(
                            RequestBody::StopPublish {
                                stream_id: stream_id.to_string(),
                            },
                            Pending::Other,
                        )
                        .await;
                        self.schedule_retry(stream_id, true, generation);
                    }
                }
            }
            (_, Some(e)) if is_final_publish_error(e.code) => {
                let channel = session.channel;
                self.publishers.remove(stream_id);
                self.publisher_state(stream_id, PublisherState::NoPublish, e.code, &e.message);
                self.set_channel_publishing(channel, false);
            }
            (_, error) => {
                session.peer = None;
                let (code, message) = error.map_or(
                    (ErrorCode::Internal.code(), "unexpected answer".to_string()),
                    |e| (e.code, e.message),
                );
                self.publisher_state(stream_id, PublisherState::PublishRequesting, code, &message);
                self.schedule_retry(stream_id, true, generation);
            }
        }
    }

    /// Creates the player's connection and sends its offer (when connected and in a room).
    async fn negotiate_play(&mut self, stream_id: &str) {
        let Some(ip) = self.link.as_ref().and_then(|l| l.client.local_ip()) else {
            return;
        };
        if !self.rooms.values().any(|r| r.phase() == RoomPhase::Logined) {
            return;
        }
        let generation = self.next_generation();
        let result = crate::live::player::offer(ip).await;
        let Some(session) = self.players.get_mut(stream_id) else {
            return;
        };
        match result {
            Ok((peer, sdp)) => {
                session.generation = generation;
                session.peer = Some(peer);
                self.send(
                    RequestBody::Play {
                        stream_id: stream_id.to_string(),
                        sdp,
                    },
                    Pending::Play(stream_id.to_string(), generation),
                )
                .await;
            }
            Err(e) => {
                self.player_state(
                    stream_id,
                    PlayerState::PlayRequesting,
                    ErrorCode::PlayNegotiationFailed.code(),
                    &e.to_string(),
                );
                self.schedule_retry(stream_id, false, generation);
            }
        }
    }

    async fn on_play_answer(
        &mut self,
        stream_id: &str,
        generation: u64,
        result: Option<ResponseBody>,
        error: Option<crate::error::WireError>,
    ) {
        let outputs = self
            .play_outputs
            .lock()
            .entry(stream_id.to_string())
            .or_default()
            .clone();
        let live_tx = self.live_tx.clone();
        let Some(session) = self
            .players
            .get_mut(stream_id)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        match (result, error) {
            (Some(ResponseBody::Play { sdp, .. }), _) => {
                let Some(peer) = session.peer.as_mut() else {
                    return;
                };
                if let Err(e) = peer
                    .accept(sdp, stream_id.to_string(), generation, &outputs, live_tx)
                    .await
                {
                    session.peer = None;
                    self.player_state(
                        stream_id,
                        PlayerState::PlayRequesting,
                        ErrorCode::PlayNegotiationFailed.code(),
                        &e.to_string(),
                    );
                    self.schedule_retry(stream_id, false, generation);
                }
            }
            (_, error) => {
                // Not there yet (or gone): wait for it to appear, and look again now and then.
                session.peer = None;
                let (code, message) = error.map_or(
                    (ErrorCode::Internal.code(), "unexpected answer".to_string()),
                    |e| (e.code, e.message),
                );
                if code != ErrorCode::StreamNotFound.code() {
                    self.player_state(stream_id, PlayerState::PlayRequesting, code, &message);
                }
                self.schedule_retry(stream_id, false, generation);
            }
        }
    }

    /// Tries again in a second unless something newer happened meanwhile.
    fn schedule_retry(&self, stream_id: &str, publisher: bool, generation: u64) {
        let tx = self.live_tx.clone();
        let stream_id = stream_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx
                .send(LiveEvent::Retry {
                    stream_id,
                    publisher,
                    generation,
                })
                .await;
        });
    }

    async fn on_live(&mut self, event: LiveEvent) {
        match event {
            LiveEvent::PeerState {
                stream_id,
                publisher: true,
                up,
                generation,
            } => {
                if self
                    .publishers
                    .get(&stream_id)
                    .is_none_or(|p| p.generation != generation)
                {
                    return;
                }
                if up {
                    self.publisher_state(&stream_id, PublisherState::Publishing, 0, "");
                } else {
                    self.on_publish_lost(
                        &stream_id,
                        ErrorCode::MediaNegotiationFailed.code(),
                        "media connection lost",
                    );
                    self.send(
                        RequestBody::StopPublish {
                            stream_id: stream_id.clone(),
                        },
                        Pending::Other,
                    )
                    .await;
                }
            }
            LiveEvent::PeerState {
                stream_id,
                publisher: false,
                up,
                generation,
            } => {
                if self
                    .players
                    .get(&stream_id)
                    .is_none_or(|p| p.generation != generation)
                {
                    return;
                }
                if up {
                    self.player_state(&stream_id, PlayerState::Playing, 0, "");
                } else {
                    self.on_play_lost(
                        &stream_id,
                        ErrorCode::PlayNegotiationFailed.code(),
                        "media connection lost",
                    );
                }
            }
            LiveEvent::FirstVideoFrame {
                stream_id,
                generation,
            } => {
                if let Some(p) = self
                    .players
                    .get(&stream_id)
                    .filter(|p| p.generation == generation)
                {
                    let elapsed_ms = p.requested_at.elapsed().as_millis() as u64;
                    self.events.emit(Event::PlayerRecvVideoFirstFrame {
                        stream_id,
                        elapsed_ms,
                    });
                }
            }
            LiveEvent::FirstAudioFrame {
                stream_id,
                generation,
            } => {
                if self
                    .players
                    .get(&stream_id)
                    .is_some_and(|p| p.generation == generation)
                {
                    self.events
                        .emit(Event::PlayerRecvAudioFirstFrame { stream_id });
                }
            }
            LiveEvent::Retry {
                stream_id,
                publisher: true,
                generation,
            } => {
                if self
                    .publishers
                    .get(&stream_id)
                    .is_some_and(|p| p.generation == generation && p.peer.is_none())
                {
                    self.negotiate_publish(&stream_id).await;
                }
            }
            LiveEvent::Retry {
                stream_id,
                publisher: false,
                generation,
            } => {
                if self
                    .players
                    .get(&stream_id)
                    .is_some_and(|p| p.generation == generation && p.peer.is_none())
                {
                    self.negotiate_play(&stream_id).await;
                }
            }
        }
    }

    /// The publisher's media stopped (relay said so, or the connection failed): retry.
    fn on_publish_lost(&mut self, stream_id: &str, code: u32, reason: &str) {
        let Some(session) = self.publishers.get_mut(stream_id) else {
            return;
        };
        session.media = None;
        session.peer = None;
        let generation = session.generation;
        self.publisher_state(stream_id, PublisherState::PublishRequesting, code, reason);
        self.schedule_retry(stream_id, true, generation);
    }

    /// The played stream went away: back to waiting for it.
    fn on_play_lost(&mut self, stream_id: &str, code: u32, reason: &str) {
        let Some(session) = self.players.get_mut(stream_id) else {
            return;
        };
        session.peer = None;
        session.requested_at = Instant::now();
        let generation = session.generation;
        self.player_state(stream_id, PlayerState::PlayRequesting, code, reason);
        self.schedule_retry(stream_id, false, generation);
    }

    /// Stops publishing `stream_id` for good.
    async fn end_publishing(&mut self, stream_id: &str, tell_relay: bool) {
        let Some(session) = self.publishers.remove(stream_id) else {
            return;
        };
        let channel = session.channel;
        drop(session);
        if tell_relay {
            self.send(
                RequestBody::StopPublish {
                    stream_id: stream_id.to_string(),
                },
                Pending::Other,
            )
            .await;
        }
        self.set_channel_publishing(channel, false);
        self.events.emit(Event::PublisherStateUpdate {
            stream_id: stream_id.to_string(),
            state: PublisherState::NoPublish,
            error_code: 0,
            extended_data: "{}".into(),
        });
    }

    async fn on_heartbeat_tick(&mut self, interval: &mut tokio::time::Interval) {
        let now = Instant::now();
        let Some(link) = self.link.as_ref() else {
            return;
        };
        if now.duration_since(link.last_rx) > link.dead_after {
            tracing::info!("relay silent for too long: reconnecting");
            self.on_link_lost(true);
            return;
        }
        let every = link.heartbeat_every;
        if interval.period() != every {
            *interval = tokio::time::interval_at((now + every).into(), every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // A request unanswered for too long means the link is dead.
        let timeout = self.settings.request_timeout;
        if self
            .pending
            .values()
            .any(|(_, sent)| now.duration_since(*sent) > timeout)
        {
            tracing::info!("request timed out: reconnecting");
            self.on_link_lost(true);
            return;
        }
        self.send(RequestBody::Heartbeat, Pending::Heartbeat).await;
    }

    /// The socket is gone: rooms go RECONNECTING and a reconnect is scheduled.
    fn on_link_lost(&mut self, schedule_now: bool) {
        let now = Instant::now();
        self.link = None;
        for (pending, _) in std::mem::take(&mut self.pending).into_values() {
            if let Pending::Logout(room_id) = pending {
                self.events.emit(RoomMachine::logout_event(&room_id, None));
            }
        }
        for room in self.rooms.values_mut() {
            if let Some(e) = room.on_connection_lost(now) {
                self.events.emit(e);
            }
        }
        if self.rooms.is_empty() {
            self.retry_at = None;
            return;
        }
        self.backoff = BACKOFF_MIN;
        self.retry_at = Some(if schedule_now { now } else { now + BACKOFF_MIN });
    }

    async fn connect(&mut self) {
        self.retry_at = None;
        if self.rooms.is_empty() {
            return;
        }
        let settings = self.settings.clone();
        let resume = self.resume.clone();
        let attempt = async {
            let mut client = SignalClient::connect(&settings.url).await?;
            let hello = client
                .request(RequestBody::Hello {
                    protocol: PROTOCOL_VERSION,
                    app_id: settings.app_id,
                    resume,
                })
                .await?;
            Ok::<_, EngineError>((client, hello))
        };
        let result = match tokio::time::timeout(settings.request_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Connection(
                "timed out connecting to the relay".into(),
            )),
        };
        let now = Instant::now();
        match result {
            Ok((
                client,
                ResponseBody::Hello {
                    session_id,
                    resume_secret,
                    resumed,
                    heartbeat_interval_ms,
                    heartbeat_timeout_ms,
                    ..
                },
            )) => {
                tracing::info!(session_id, resumed, "connected to the relay");
                let every = Duration::from_millis(heartbeat_interval_ms.max(10));
                // Symmetric with the relay: it drops us after this long, we drop it too. A frozen
                // relay is caught sooner by the request timeout on an unanswered heartbeat.
                let dead_after = Duration::from_millis(heartbeat_timeout_ms).max(every * 3);
                self.resume = Some(ResumeTicket {
                    session_id,
                    secret: resume_secret,
                });
                self.link = Some(Link {
                    client,
                    heartbeat_every: every,
                    dead_after,
                    last_rx: now,
                });
                self.backoff = BACKOFF_MIN;
                let bodies: Vec<(String, RequestBody)> = self
                    .rooms
                    .values()
                    .map(|r| (r.room_id().to_string(), self.login_body(r)))
                    .collect();
                for (room_id, body) in bodies {
                    self.send(body, Pending::Login(room_id)).await;
                }
            }
            Ok((_, _)) => self.fail_all(ErrorCode::Internal.code(), "unexpected hello answer"),
            Err(EngineError::Relay(e)) => {
                // The relay refused us outright (unknown app, protocol): retrying cannot help.
                self.fail_all(e.code, &e.message);
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect attempt failed");
                self.give_up_expired(now, &e.to_string());
                if !self.rooms.is_empty() {
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn fail_all(&mut self, code: u32, message: &str) {
        for (_, mut room) in std::mem::take(&mut self.rooms) {
            self.events.emit(room.on_login_failed(code, message));
        }
        self.maybe_go_idle();
    }

    /// Rooms that have waited longer than their timeout fail.
    fn give_up_expired(&mut self, now: Instant, message: &str) {
        let login_timeout = self.settings.login_timeout;
        let reconnect_timeout = self.settings.reconnect_timeout;
        let expired: Vec<String> = self
            .rooms
            .values()
            .filter(|r| {
                let waited = now.duration_since(r.phase_since());
                match r.phase() {
                    RoomPhase::Logining => waited > login_timeout,
                    RoomPhase::Reconnecting | RoomPhase::Logined => waited > reconnect_timeout,
                }
            })
            .map(|r| r.room_id().to_string())
            .collect();
        for room_id in expired {
            if let Some(mut room) = self.rooms.remove(&room_id) {
                let code = match room.phase() {
                    RoomPhase::Logining => ErrorCode::ConnectionFailed,
                    _ => ErrorCode::ReconnectGaveUp,
                };
                self.events.emit(room.on_give_up(code, message));
            }
        }
        self.maybe_go_idle();
    }

    async fn shutdown(&mut self) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room_id in rooms {
            self.logout(&room_id).await;
        }
        // Wait briefly for the relay to confirm, so the logouts are not lost with the process.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.link.is_some()
            && self
                .pending
                .values()
                .any(|(p, _)| matches!(p, Pending::Logout(_)))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, next_message(&mut self.link)).await {
                Ok(Some(Ok(msg))) => self.on_message(msg).await,
                _ => break,
            }
        }
        if let Some(link) = self.link.take() {
            link.client.close().await;
        }
    }
}

/// Publish refusals that retrying cannot fix.
fn is_final_publish_error(code: u32) -> bool {
    [
        ErrorCode::StreamIdTaken,
        ErrorCode::PublishNotAuthorized,
        ErrorCode::NotLoggedIn,
        ErrorCode::InvalidStreamId,
        ErrorCode::TooManyStreams,
        ErrorCode::ExtraInfoTooLong,
    ]
    .iter()
    .any(|c| c.code() == code)
}

/// The seed's `extendedData`: `{}` or `{"message": …}`.
fn extended_data(message: &str) -> String {
    if message.is_empty() {
        "{}".to_string()
    } else {
        serde_json::json!({ "message": message }).to_string()
    }
}

/// The round-trip time of a connection's selected candidate pair, ms (0 before any check).
/// The selected pair's round trip (ms) and the send-side bandwidth estimate (bits/s, 0 when
/// there is none), from one stats report.
async fn link_stats(pc: &Arc<dyn webrtc::peer_connection::PeerConnection>) -> (f64, f64) {
    let report = pc
        .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
        .await;
    let rtt = report
        .candidate_pairs()
        .map(|p| p.current_round_trip_time)
        .filter(|rtt| *rtt > 0.0)
        .fold(0.0, f64::max)
        * 1000.0;
    let estimate = report
        .outbound_rtp_streams()
        .map(|s| s.target_bitrate)
        .filter(|b| *b > 0.0)
        .fold(0.0, f64::max);
    (rtt, estimate)
}
