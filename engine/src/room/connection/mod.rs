//! The engine's connection task: thin async glue around the sans-I/O parts.
//!
//! It owns the signaling socket, the peer connections and the media threads; the decisions are
//! made by [`Link`] (heartbeats, dead link, backoff, resume), each [`RoomMachine`] (the seed's
//! room states), and each [`PublishSession`] / [`PlaySession`] (publisher and player states,
//! retries, generations). The task feeds them commands from the [`crate::Engine`] handle, relay
//! messages, peer-connection reports and the time, and carries out the actions they return.
//! It never blocks: joining capture or codec threads happens on the blocking pool.

mod command;
mod ice_restart;
mod play;
mod publish;
mod report;

pub use command::{Command, ConnectionSettings, StartPublishing};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{EngineError, ErrorCode, WireError};
use crate::live::session::PlaySession;
use crate::live::{LiveEvent, PlayOutputs};
use crate::room::events::{Event, PublisherState};
use crate::room::link::{Link, LinkDue, Pending};
use crate::room::machine::{RoomConfig, RoomMachine, RoomPhase};
use crate::room::quality::Deltas;
use crate::room::sink::EventSink;
use crate::signal::SignalClient;
use onair_media::local::{DeviceErrorCallback, LocalChannel, PublishChannel};
use onair_protocol::ids;
use onair_protocol::messages::{
    MessageKind, PROTOCOL_VERSION, QualityLevel, RequestBody, ResponseBody, ResumeTicket,
    ServerMessage, UpdateType, User,
};
use onair_transport::peer::MediaNetwork;
use play::Player;
use publish::Publisher;

/// Play outputs shared between the engine handle and the connection task.
pub type PlayOutputMap = Arc<parking_lot::Mutex<HashMap<String, Arc<PlayOutputs>>>>;

/// The local channels, shared with the engine handle.
pub type LocalChannels = Arc<parking_lot::Mutex<Vec<LocalChannel>>>;

enum Step {
    Live(Option<LiveEvent>),
    Stats,
    Command(Option<Command>),
    Message(Option<Result<ServerMessage, EngineError>>),
    Timeout,
}

/// The connection task's state.
pub struct Connection {
    settings: ConnectionSettings,
    events: EventSink,
    commands: mpsc::Receiver<Command>,
    rooms: BTreeMap<String, RoomMachine>,
    client: Option<SignalClient>,
    link: Link,
    local: LocalChannels,
    play_outputs: PlayOutputMap,
    live_tx: mpsc::Sender<LiveEvent>,
    live_rx: mpsc::Receiver<LiveEvent>,
    publishers: HashMap<String, Publisher>,
    /// Each publish channel's stream extra info (used by its next publish).
    stream_extra: HashMap<PublishChannel, String>,
    players: HashMap<String, Player>,
    /// Engine-wide negotiation counter: no two negotiations share a generation.
    generation: u64,
    /// ICE restart offers in flight, per (stream, publishing): their number and when sent.
    ice_restarts: HashMap<(String, bool), (u64, Instant)>,
    /// Numbers ICE restart offers (an answer applies only to the offer it answers).
    next_ice_restart: u64,
    /// This engine's network quality over the current interval.
    net_quality: crate::room::network_quality::NetworkQualityMeter,
    /// STUN/TURN servers the relay handed out in its last hello (TURN credentials minted for
    /// this session).
    relay_ice_servers: Vec<onair_protocol::IceServer>,
    /// Which of `settings.urls` the engine connects to.
    server_index: usize,
}

async fn next_message(
    client: &mut Option<SignalClient>,
) -> Option<Result<ServerMessage, EngineError>> {
    match client {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// The capture's error callback lives in the engine; a no-op one is enough to stop capture.
pub(super) fn no_errors() -> DeviceErrorCallback {
    Arc::new(|_, _, _| {})
}

impl Connection {
    /// A task with no rooms and no socket yet.
    pub fn new(
        settings: ConnectionSettings,
        events: EventSink,
        commands: mpsc::Receiver<Command>,
        local: LocalChannels,
        play_outputs: PlayOutputMap,
    ) -> Self {
        let (live_tx, live_rx) = mpsc::channel(256);
        Connection {
            link: Link::new(settings.request_timeout),
            settings,
            events,
            commands,
            rooms: BTreeMap::new(),
            client: None,
            local,
            play_outputs,
            live_tx,
            live_rx,
            publishers: HashMap::new(),
            stream_extra: HashMap::new(),
            players: HashMap::new(),
            generation: 0,
            ice_restarts: HashMap::new(),
            next_ice_restart: 0,
            relay_ice_servers: Vec::new(),
            server_index: 0,
            net_quality: Default::default(),
        }
    }

    /// What the relay should send of `stream_id`: the layer asked for, or none while the app
    /// muted its video (the relay then sends no video at all).
    fn relay_layer(
        &self,
        stream_id: &str,
        asked: onair_protocol::messages::VideoLayer,
    ) -> onair_protocol::messages::VideoLayer {
        let muted = self
            .play_outputs
            .lock()
            .get(stream_id)
            .is_some_and(|o| o.controls.video_muted());
        if muted {
            onair_protocol::messages::VideoLayer::Off
        } else {
            asked
        }
    }

    /// Tells the relay a playing stream's new layer (a player still negotiating sends it with
    /// its play request).
    async fn set_play_layer(
        &mut self,
        stream_id: &str,
        layer: onair_protocol::messages::VideoLayer,
    ) {
        let Some(p) = self.players.get_mut(stream_id) else {
            return;
        };
        // Not yet answered: the answer's handling sends it (see `run_play`).
        if p.relay_has_play {
            p.sent_layer = Some(layer);
            let body = RequestBody::SetPlayLayer {
                stream_id: stream_id.to_string(),
                video_layer: layer,
            };
            self.send(body, Pending::Other).await;
        }
    }

    /// Runs until shutdown or until the engine handle is dropped.
    pub async fn run(mut self) {
        let mut stats = tokio::time::interval(Duration::from_secs(1));
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.poll_timeout();
            let live = !self.publishers.is_empty() || !self.players.is_empty();
            let step = tokio::select! {
                cmd = self.commands.recv() => Step::Command(cmd),
                live = self.live_rx.recv() => Step::Live(live),
                _ = stats.tick(), if live => Step::Stats,
                msg = next_message(&mut self.client) => Step::Message(msg),
                _ = crate::live::sleep_until_opt(deadline) => Step::Timeout,
            };
            match step {
                Step::Live(Some(event)) => self.on_live(event).await,
                Step::Live(None) | Step::Timeout => {}
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
            }
            self.drive().await;
        }
        self.shutdown().await;
    }

    /// Where this engine's media sockets go: the interface its signaling connection uses
    /// (the one that reaches the relay), with mDNS only when the profile asks for it.
    fn media_network(&self) -> Option<MediaNetwork> {
        let ip = self.client.as_ref()?.local_ip()?;
        let mut net = MediaNetwork::on(ip);
        net.mdns = self.settings.mdns;
        net.ice_servers = self.settings.ice_servers.clone();
        net.ice_servers
            .extend(self.relay_ice_servers.iter().cloned());
        net.relay_only = self.settings.relay_only;
        Some(net)
    }

    /// The earliest time something is due: the link's timers or a session's (retry, connect
    /// timeout, disconnect grace).
    fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self
            .publishers
            .values()
            .filter_map(|p| p.session.poll_timeout())
            .chain(
                self.players
                    .values()
                    .filter_map(|p| p.session.poll_timeout()),
            );
        self.link.poll_timeout().into_iter().chain(sessions).min()
    }

    /// Runs what is due now (the link's timers, the sessions' timeouts) and starts every
    /// negotiation that can start.
    async fn drive(&mut self) {
        let now = Instant::now();
        match self.link.handle_timeout(now) {
            LinkDue::Nothing => {}
            LinkDue::Heartbeat => self.send(RequestBody::Heartbeat, Pending::Heartbeat).await,
            LinkDue::Dead(why) => {
                tracing::info!(why, "reconnecting");
                self.on_link_lost(true);
            }
            LinkDue::Connect => self.connect().await,
        }
        let publishers: Vec<String> = self.publishers.keys().cloned().collect();
        for stream_id in publishers {
            // Checked for each session: a failed send on the way may have dropped the link.
            let up = self.client.is_some() && self.link.is_up();
            let ready = up
                && self.publishers.get(&stream_id).is_some_and(|p| {
                    self.rooms
                        .get(&p.room_id)
                        .is_some_and(|r| r.phase() == RoomPhase::Logined)
                });
            let Some(p) = self.publishers.get_mut(&stream_id) else {
                continue;
            };
            if p.peer.as_mut().is_some_and(|peer| peer.still_receiving()) {
                p.session.on_traffic(now);
            }
            let mut actions = p.session.handle_timeout(now);
            let generation = &mut self.generation;
            actions.extend(p.session.negotiate_if_ready(ready, generation, now));
            self.run_publish(&stream_id, actions).await;
        }
        let players: Vec<String> = self.players.keys().cloned().collect();
        for stream_id in players {
            let ready = self.client.is_some()
                && self.link.is_up()
                && self.rooms.values().any(|r| r.phase() == RoomPhase::Logined)
                // Plays are authorised by room: after a reconnection, wait for every room's
                // login, or a play of a stream in a room not yet back would be refused.
                && self.rooms.values().all(|r| r.phase() == RoomPhase::Logined);
            let Some(p) = self.players.get_mut(&stream_id) else {
                continue;
            };
            if p.peer.as_mut().is_some_and(|peer| peer.still_receiving()) {
                p.session.on_traffic(now);
            }
            let mut actions = p.session.handle_timeout(now);
            let generation = &mut self.generation;
            actions.extend(p.session.negotiate_if_ready(ready, generation, now));
            self.run_play(&stream_id, actions).await;
        }
    }

    async fn send(&mut self, body: RequestBody, pending: Pending) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.send(body).await {
            Ok(id) => self.link.sent(id, pending, Instant::now()),
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
            } => self.login(room_id, user, config, now).await,
            Command::Logout { room_id } => self.logout(&room_id).await,
            Command::LogoutAll => {
                let rooms: Vec<String> = self.rooms.keys().cloned().collect();
                for room_id in rooms {
                    self.logout(&room_id).await;
                }
            }
            Command::SendMessage {
                seq,
                room_id,
                kind,
                text,
                to_users,
            } => {
                if self.rooms.get(&room_id).map(|r| r.phase()) != Some(RoomPhase::Logined) {
                    self.events.emit(Event::IMSendResult {
                        room_id,
                        seq,
                        kind,
                        error_code: ErrorCode::NotLoggedIn.code(),
                        message_id: 0,
                    });
                    return;
                }
                let pending = Pending::Message(room_id.clone(), seq, kind);
                let body = RequestBody::SendMessage {
                    room_id,
                    kind,
                    text,
                    to_users,
                };
                self.send(body, pending).await;
            }
            Command::StreamMuteChanged { channel } => {
                let publishing = self
                    .publishers
                    .iter()
                    .find(|(_, p)| {
                        p.channel == channel && p.session.state() != PublisherState::NoPublish
                    })
                    .map(|(id, _)| id.clone());
                if let Some(stream_id) = publishing {
                    self.send_mute(&stream_id).await;
                }
            }
            Command::SetStreamExtraInfo { seq, channel, text } => {
                self.stream_extra.insert(channel, text.clone());
                let live = self
                    .publishers
                    .iter()
                    .find(|(_, p)| {
                        p.channel == channel && p.session.state() == PublisherState::Publishing
                    })
                    .map(|(id, _)| id.clone());
                match live {
                    Some(stream_id) => {
                        let body = RequestBody::SetStreamExtraInfo {
                            stream_id,
                            extra_info: text,
                        };
                        self.send(body, Pending::StreamExtra(seq, channel)).await;
                    }
                    // Not live: it goes with the next publish.
                    None => self
                        .events
                        .emit(Event::PublisherUpdateStreamExtraInfoResult {
                            channel,
                            seq,
                            error_code: 0,
                        }),
                }
            }
            Command::SetRoomExtraInfo {
                seq,
                room_id,
                key,
                value,
            } => {
                if self.rooms.get(&room_id).map(|r| r.phase()) != Some(RoomPhase::Logined) {
                    self.events.emit(Event::RoomSetExtraInfoResult {
                        room_id,
                        seq,
                        key,
                        error_code: ErrorCode::NotLoggedIn.code(),
                    });
                    return;
                }
                let pending = Pending::ExtraInfo(room_id.clone(), seq, key.clone());
                let body = RequestBody::SetRoomExtraInfo {
                    room_id,
                    key,
                    value,
                };
                self.send(body, pending).await;
            }
            Command::RenewToken { room_id, token } => {
                let Some(room) = self.rooms.get_mut(&room_id) else {
                    self.events.emit(Event::ApiCalledResult {
                        api: "renew_token",
                        error_code: ErrorCode::NotLoggedIn.code(),
                        message: "not logged into that room".into(),
                    });
                    return;
                };
                room.set_token(token.clone());
                if room.phase() == RoomPhase::Logined {
                    let body = RequestBody::RenewToken { room_id, token };
                    self.send(body, Pending::RenewToken).await;
                }
            }
            Command::DropConnection => {
                if self.client.take().is_some() {
                    self.on_link_lost(false);
                }
            }
            Command::StartPublishing(start) => self.start_publishing(start).await,
            Command::StopPublishing { channel, epoch } => {
                let stream_id = self
                    .publishers
                    .iter()
                    .find(|(_, p)| p.channel == channel)
                    .map(|(s, _)| s.clone());
                match stream_id {
                    Some(stream_id) => self.end_publishing(&stream_id, true).await,
                    // Not publishing (refused, or never started): still let go of capture.
                    None => self.release_channel(channel, epoch),
                }
            }
            Command::StartPlaying { stream_id, config } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    // Playing again: the newest options hold (L3 is the only mode today).
                    let layer = config.video_layer;
                    let changed = p.config.video_layer != layer;
                    p.config = config;
                    if changed {
                        self.set_play_layer(&stream_id, layer).await;
                    }
                    return;
                }
                let timers = self.settings.session_timers();
                let (session, actions) = PlaySession::start(&stream_id, timers, now);
                self.players.insert(
                    stream_id.clone(),
                    Player {
                        session,
                        config,
                        offer: None,
                        peer: None,
                        deltas: Deltas::default(),
                        net: Deltas::default(),
                        layer: None,
                        estimate_kbps: 0.0,
                        sent_layer: None,
                        relay_has_play: false,
                    },
                );
                self.run_play(&stream_id, actions).await;
            }
            Command::StopPlaying { stream_id } => self.end_playing(&stream_id).await,
            Command::SetPlayLayer { stream_id, layer } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    p.config.video_layer = layer;
                    let layer = self.relay_layer(&stream_id, layer);
                    self.set_play_layer(&stream_id, layer).await;
                }
            }
            Command::PlayVideoMuted { stream_id } => {
                if let Some(p) = self.players.get(&stream_id) {
                    let layer = self.relay_layer(&stream_id, p.config.video_layer);
                    self.set_play_layer(&stream_id, layer).await;
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    async fn login(&mut self, room_id: String, user: User, config: RoomConfig, now: Instant) {
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
        if self.client.is_some() {
            self.send(body, Pending::Login(room_id)).await;
        } else {
            self.link.connect_soon(now);
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
            let local = self.local.clone();
            tokio::task::spawn_blocking(move || {
                for c in local.lock().iter_mut() {
                    c.set_previewing(false, &no_errors());
                }
            });
            let playing: Vec<String> = self.players.keys().cloned().collect();
            for stream_id in playing {
                self.end_playing(&stream_id).await;
            }
        }
        if self.rooms.remove(room_id).is_none() {
            self.events.emit(RoomMachine::logout_event(
                room_id,
                Some((ErrorCode::NotLoggedIn.code(), "not logged into this room")),
            ));
            return;
        }
        if self.client.is_some() {
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
        if self.rooms.is_empty() && self.link.only_background_pending() {
            self.client = None;
            self.link.go_idle();
        }
    }

    async fn on_message(&mut self, msg: ServerMessage) {
        let now = Instant::now();
        self.link.received(now);
        match msg {
            ServerMessage::Response { id, result, error } => {
                let Some(pending) = id.and_then(|id| self.link.answered(id)) else {
                    if let Some(e) = error {
                        tracing::warn!(code = e.code, message = %e.message, "relay error without a request");
                    }
                    return;
                };
                self.on_response(pending, result, error, now).await;
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
                if update_type == UpdateType::Add {
                    for s in &streams {
                        if let Some(p) = self.players.get_mut(&s.stream_id) {
                            p.session.on_stream_added();
                        }
                    }
                }
                let devices = match (update_type, self.rooms.get(&room_id)) {
                    (UpdateType::Add, Some(room)) => room.device_changes(&streams),
                    _ => Vec::new(),
                };
                if let Some(e) = self
                    .rooms
                    .get_mut(&room_id)
                    .and_then(|r| r.on_stream_update(update_type, streams))
                {
                    self.events.emit(e);
                }
                for e in devices {
                    self.events.emit(e);
                }
            }
            ServerMessage::PlayLayerChanged {
                stream_id,
                layer,
                reason,
            } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    p.layer = Some(usize::from(layer));
                    self.events.emit(Event::PlayerVideoLayerChanged {
                        stream_id,
                        layer: usize::from(layer),
                        reason,
                    });
                }
            }
            ServerMessage::PublishLayers { stream_id, active } => {
                if let Some(p) = self.publishers.get(&stream_id) {
                    p.controls.set_active_layers(&active);
                }
            }
            ServerMessage::PlayLink {
                stream_id,
                layer,
                estimate_kbps,
            } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    p.layer = Some(usize::from(layer));
                    p.estimate_kbps = f64::from(estimate_kbps);
                }
            }
            ServerMessage::StreamMuteUpdate {
                room_id,
                stream_id,
                audio_muted,
                video_muted,
            } => {
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    for e in room.on_stream_mute(&stream_id, audio_muted, video_muted) {
                        self.events.emit(e);
                    }
                }
            }
            ServerMessage::NetworkQuality {
                room_id,
                user_id,
                upstream,
            } => {
                if self.rooms.contains_key(&room_id) {
                    self.events.emit(Event::NetworkQuality {
                        user_id,
                        upstream: QualityLevel::from_u8(upstream),
                        downstream: QualityLevel::Unknown,
                    });
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
                if let Some(p) = self.players.get_mut(&stream_id) {
                    let actions = p.session.on_relay_stopped(code, &reason, now);
                    self.run_play(&stream_id, actions).await;
                }
            }
            ServerMessage::PublishStopped {
                stream_id,
                code,
                reason,
            } => {
                if let Some(p) = self.publishers.get_mut(&stream_id) {
                    let actions = p.session.on_relay_stopped(code, &reason, now);
                    self.run_publish(&stream_id, actions).await;
                }
            }
            ServerMessage::RoomMessages {
                room_id,
                kind,
                messages,
            } => {
                if self.rooms.contains_key(&room_id) {
                    self.events.emit(match kind {
                        MessageKind::Barrage => Event::IMRecvBarrageMessage { room_id, messages },
                        _ => Event::IMRecvBroadcastMessage { room_id, messages },
                    });
                }
            }
            ServerMessage::CustomCommand {
                room_id,
                from_user,
                command,
            } => {
                if self.rooms.contains_key(&room_id) {
                    self.events.emit(Event::IMRecvCustomCommand {
                        room_id,
                        from_user,
                        command,
                    });
                }
            }
            ServerMessage::StreamExtraInfoUpdate { room_id, streams } => {
                if self.rooms.contains_key(&room_id) {
                    self.events
                        .emit(Event::RoomStreamExtraInfoUpdate { room_id, streams });
                }
            }
            ServerMessage::RoomExtraInfoUpdate { room_id, infos } => {
                if self.rooms.contains_key(&room_id) {
                    self.events
                        .emit(Event::RoomExtraInfoUpdate { room_id, infos });
                }
            }
            ServerMessage::TokenWillExpire {
                room_id,
                remain_seconds,
            } => {
                if self.rooms.contains_key(&room_id) {
                    self.events.emit(Event::RoomTokenWillExpire {
                        room_id,
                        remain_seconds,
                    });
                }
            }
            ServerMessage::Goodbye { code, reason } => {
                tracing::info!(code, %reason, "relay closed the session");
                if code == ErrorCode::HeartbeatTimeout.code() {
                    self.link.forget_session();
                }
                self.on_link_lost(true);
            }
        }
    }

    async fn on_response(
        &mut self,
        pending: Pending,
        result: Option<ResponseBody>,
        error: Option<WireError>,
        now: Instant,
    ) {
        let unexpected = || WireError::new(ErrorCode::Internal, "unexpected answer");
        match (pending, result, error) {
            (
                Pending::Login(room_id),
                Some(ResponseBody::Login {
                    users,
                    streams,
                    extra_info,
                    ..
                }),
                _,
            ) => {
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    for e in room.on_login_ok(users, streams, now) {
                        self.events.emit(e);
                    }
                    if !extra_info.is_empty() {
                        self.events.emit(Event::RoomExtraInfoUpdate {
                            room_id,
                            infos: extra_info,
                        });
                    }
                }
            }
            (Pending::Login(room_id), _, error) => {
                let e = error.unwrap_or_else(|| {
                    WireError::new(ErrorCode::Internal, "unexpected login answer")
                });
                if let Some(mut room) = self.rooms.remove(&room_id) {
                    self.events.emit(room.on_login_failed(e.code, &e.message));
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
            (Pending::Message(room_id, seq, kind), result, error) => {
                let (error_code, message_id) = match (result, error) {
                    (Some(ResponseBody::MessageSent { message_id }), _) => (0, message_id),
                    (_, Some(e)) => (e.code, 0),
                    _ => (ErrorCode::Internal.code(), 0),
                };
                self.events.emit(Event::IMSendResult {
                    room_id,
                    seq,
                    kind,
                    error_code,
                    message_id,
                });
            }
            (Pending::StreamExtra(seq, channel), _, error) => {
                self.events
                    .emit(Event::PublisherUpdateStreamExtraInfoResult {
                        channel,
                        seq,
                        error_code: error.map_or(0, |e| e.code),
                    });
            }
            (Pending::ExtraInfo(room_id, seq, key), _, error) => {
                self.events.emit(Event::RoomSetExtraInfoResult {
                    room_id,
                    seq,
                    key,
                    error_code: error.map_or(0, |e| e.code),
                });
            }
            (Pending::RenewToken, _, error) => {
                if let Some(e) = error {
                    self.events.emit(Event::ApiCalledResult {
                        api: "renew_token",
                        error_code: e.code,
                        message: e.message,
                    });
                }
            }
            (Pending::Publish(stream_id, generation), result, error) => {
                let answer = match (result, error) {
                    (_, Some(e)) => Err(e),
                    (Some(ResponseBody::Publish { sdp: Some(sdp), .. }), None) => Ok(sdp),
                    _ => Err(unexpected()),
                };
                if let Some(p) = self.publishers.get_mut(&stream_id) {
                    let actions = p.session.on_answer(generation, answer, now);
                    self.run_publish(&stream_id, actions).await;
                }
            }
            (Pending::IceRestart(stream_id, publish, generation, number), result, error) => {
                let answer = match (result, error) {
                    (_, Some(e)) => Err(e.message),
                    (Some(ResponseBody::IceRestarted { sdp }), None) => Ok(sdp),
                    _ => Err("unexpected answer".to_string()),
                };
                self.ice_restart_answered(&stream_id, publish, generation, number, answer)
                    .await;
            }
            (Pending::Play(stream_id, generation), result, error) => {
                let answer = match (result, error) {
                    (_, Some(e)) => Err(e),
                    (Some(ResponseBody::Play { sdp, .. }), None) => Ok(sdp),
                    _ => Err(unexpected()),
                };
                if let Some(p) = self.players.get_mut(&stream_id) {
                    let actions = p.session.on_answer(generation, answer, now);
                    self.run_play(&stream_id, actions).await;
                }
            }
        }
    }

    async fn on_live(&mut self, event: LiveEvent) {
        let now = Instant::now();
        match event {
            LiveEvent::PeerState {
                stream_id,
                publisher: true,
                state,
                generation,
            } => {
                if let Some(p) = self.publishers.get_mut(&stream_id) {
                    let actions = p.session.on_peer(generation, state, now);
                    self.run_publish(&stream_id, actions).await;
                }
            }
            LiveEvent::PeerState {
                stream_id,
                publisher: false,
                state,
                generation,
            } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    let actions = p.session.on_peer(generation, state, now);
                    self.run_play(&stream_id, actions).await;
                }
            }
            LiveEvent::FirstVideoFrame {
                stream_id,
                generation,
            } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    let actions = p.session.on_first_video_frame(generation, now);
                    self.run_play(&stream_id, actions).await;
                }
            }
            LiveEvent::FirstAudioFrame {
                stream_id,
                generation,
            } => {
                if let Some(p) = self.players.get_mut(&stream_id) {
                    let actions = p.session.on_first_audio_frame(generation);
                    self.run_play(&stream_id, actions).await;
                }
            }
        }
    }

    /// The socket is gone: rooms go RECONNECTING and a reconnect is scheduled (at once when
    /// `soon`, else after the minimum backoff).
    fn on_link_lost(&mut self, soon: bool) {
        let now = Instant::now();
        self.client = None;
        for pending in self.link.lost(now, !self.rooms.is_empty(), soon) {
            if let Pending::Logout(room_id) = pending {
                self.events.emit(RoomMachine::logout_event(&room_id, None));
            }
        }
        for room in self.rooms.values_mut() {
            if let Some(e) = room.on_connection_lost(now) {
                self.events.emit(e);
            }
        }
    }

    /// Every publish and play starts over at once (after a relay restart).
    async fn relay_session_lost(&mut self) {
        let now = Instant::now();
        let publishers: Vec<String> = self.publishers.keys().cloned().collect();
        for stream_id in publishers {
            if let Some(p) = self.publishers.get_mut(&stream_id) {
                let actions = p.session.on_relay_session_lost();
                self.run_publish(&stream_id, actions).await;
            }
        }
        let players: Vec<String> = self.players.keys().cloned().collect();
        for stream_id in players {
            if let Some(p) = self.players.get_mut(&stream_id) {
                let actions = p.session.on_relay_session_lost(now);
                self.run_play(&stream_id, actions).await;
            }
        }
    }

    async fn connect(&mut self) {
        if self.rooms.is_empty() {
            return;
        }
        let settings = self.settings.clone();
        let resume = self.link.resume_ticket();
        let url = settings.urls[self.server_index % settings.urls.len()].clone();
        let room_id = self.rooms.keys().next().cloned().unwrap_or_default();
        let attempt = async {
            let url = if crate::signal::dispatch::is_dispatch(&url) {
                let node = crate::signal::dispatch::resolve(
                    &url,
                    settings.app_id,
                    &room_id,
                    settings.tls.client_config(),
                )
                .await?;
                tracing::info!(dispatch = url, node, "the cluster names a node");
                node
            } else {
                url.clone()
            };
            let mut client = SignalClient::connect_with(&url, &settings.tls).await?;
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
                    ice_servers,
                    ..
                },
            )) => {
                tracing::info!(session_id, resumed, "connected to the relay");
                self.relay_ice_servers = ice_servers;
                if !resumed {
                    // A new session: the relay restarted or forgot us, and every peer
                    // connection it held is gone. Renegotiate now rather than wait for ICE to
                    // time out (seconds).
                    self.relay_session_lost().await;
                }
                let ticket = ResumeTicket {
                    session_id,
                    secret: resume_secret,
                };
                self.link
                    .connected(now, ticket, heartbeat_interval_ms, heartbeat_timeout_ms);
                self.client = Some(client);
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
            Err(EngineError::Tls(message)) => {
                // A certificate the engine does not trust will not become trusted by retrying.
                self.fail_all(ErrorCode::TlsFailed.code(), &message);
            }
            Err(EngineError::Relay(e)) => {
                // The relay refused us outright (unknown app, protocol): retrying cannot help.
                self.fail_all(e.code, &e.message);
            }
            Err(e) => {
                tracing::debug!(error = %e, url, "connect attempt failed");
                // A cluster: the next node (this one may have died).
                self.server_index = (self.server_index + 1) % settings.urls.len();
                self.give_up_expired(now, &e.to_string());
                if !self.rooms.is_empty() {
                    self.link.connect_failed(now);
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
        while self.client.is_some() && self.link.logout_pending() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, next_message(&mut self.client)).await {
                Ok(Some(Ok(msg))) => self.on_message(msg).await,
                _ => break,
            }
        }
        if let Some(client) = self.client.take() {
            client.close().await;
        }
    }
}
