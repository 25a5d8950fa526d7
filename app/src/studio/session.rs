//! The studio's live session: the embedded relay (or the connection to a remote one), the
//! engine, the model built from the engine's events, and the video views. The panels act
//! through it; every call returns at once (engine calls are asynchronous), so the UI thread
//! never waits on the network or the media threads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context as _;
use onair_engine::VideoLayer;
use onair_engine::media::frame::wall_clock_us;
use onair_engine::messages::UpdateType;
use onair_engine::room::events::{Event, PlayerState, PublisherState, RoomState};
use onair_engine::room::machine::RoomConfig;
use onair_engine::{
    AudioSource, DeviceKind, Engine, EngineProfile, PlayerConfig, PublishChannel, Scenario,
    VideoConfig, VideoPreset, VideoSource,
};
use onair_relay::{EmbeddedRelay, RelayConfig};

use super::audio_out::AudioOut;
use super::model::StudioModel;
use super::settings::{AudioChoice, ConnectionSettings, HostSettings, Settings, VideoChoice};
use super::video::{VideoView, next_key};
use crate::dev_app;

/// Where the embedded relay listens when the port is free (what `onair serve` uses, so the
/// command-line tools reach it with no flags); else any free port.
pub const EMBEDDED_LISTEN: &str = "127.0.0.1:7880";

/// One remote stream's tile.
pub struct Tile {
    /// The room it is in.
    pub room: String,
    /// Its picture while playing.
    pub view: Option<VideoView>,
    /// Whether its audio is silenced.
    pub muted: bool,
    /// Its playback volume, percent (0–200).
    pub volume: u32,
    /// The simulcast layer asked for: small while the tile is small, big when it is large
    /// (LiveKit's adaptive stream).
    pub layer: VideoLayer,
    /// Whether the first rendered frame has been reported to the engine.
    pub render_reported: bool,
    /// When the tile was last drawn where it can be seen.
    pub seen_at: Option<std::time::Instant>,
    /// Whether its video is paused because nobody can see it (scrolled away, its pane
    /// closed, the window minimised): the relay sends none; the audio goes on.
    pub video_hidden: bool,
}

/// A tile out of sight this long pauses its video (scrolling past does not).
pub const HIDDEN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Tile {
    /// Whether we are playing it.
    pub fn playing(&self) -> bool {
        self.view.is_some()
    }
}

/// The session.
pub struct Session {
    relay: Option<EmbeddedRelay>,
    engine: Engine,
    token: Option<String>,
    started: Instant,
    /// The relay's signaling URL.
    pub server: String,
    /// The app ID in use.
    pub app_id: u32,
    /// Whether the relay is the embedded one.
    pub embedded: bool,
    /// Our user ID.
    pub user_id: String,
    /// What the events said.
    pub model: StudioModel,
    /// The main channel's preview.
    pub preview: VideoView,
    /// Whether the preview runs.
    pub previewing: bool,
    /// Remote streams by ID.
    pub tiles: BTreeMap<String, Tile>,
    /// The broadcast settings in use.
    pub host: HostSettings,
    /// The stream we publish, while live.
    pub live_stream: Option<String>,
    /// Play every new stream in a room we are in.
    pub auto_play: bool,
    /// Events seen.
    pub events_seen: u64,
    /// Our microphone is muted in what we publish.
    pub mic_muted: bool,
    /// Our camera is muted (black) in what we publish.
    pub camera_muted: bool,
    /// Whether the sound-level monitor runs (only while there is something to measure, so an
    /// idle studio is not woken five times a second).
    levels_on: bool,
    /// Rooms asked to log into whose first state event has not come yet (so a second ask,
    /// e.g. going live right after start-up, does not log in twice).
    logging_in: std::collections::BTreeSet<String>,
    /// The speaker, opened when a stream is first unmuted.
    audio: Option<AudioOut>,
    frozen_now: Option<f64>,
}

impl Session {
    /// Starts a session as the settings say: the embedded relay or a remote one, logged into
    /// the settings' rooms, the preview running. `waker` is called (from engine threads)
    /// whenever an event is waiting, to wake the UI.
    pub fn start(
        settings: &Settings,
        waker: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Session> {
        let (relay, server, app_id, app_sign, token) = match &settings.connection {
            ConnectionSettings::Embedded => {
                let sign = dev_app::load_or_create()?;
                let config = RelayConfig::single_app(dev_app::DEV_APP_ID, sign.clone());
                let preferred: SocketAddr =
                    EMBEDDED_LISTEN.parse().context("embedded relay address")?;
                let relay = EmbeddedRelay::start(config.clone(), preferred)
                    .or_else(|_| {
                        EmbeddedRelay::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
                    })
                    .context("starting the embedded relay")?;
                let url = relay.url();
                (Some(relay), url, dev_app::DEV_APP_ID, sign.to_hex(), None)
            }
            ConnectionSettings::Remote {
                server,
                app_id,
                app_sign,
                token,
            } => (
                None,
                server.clone(),
                *app_id,
                app_sign.clone(),
                Some(token.clone()).filter(|t| !t.is_empty()),
            ),
        };
        let engine = Engine::create(EngineProfile {
            app_id,
            app_sign,
            scenario: Scenario::Broadcast,
            server: server.clone(),
            // wss:// relays: the CA in ONAIR_CA_CERT, else the development CA made by
            // `onair serve --self-signed`, besides the system's.
            ca_cert: std::env::var_os("ONAIR_CA_CERT")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .or_else(dev_app::load_ca),
            ..Default::default()
        })?;
        engine.set_event_notifier(waker);
        let mut session = Session {
            preview: VideoView::new(next_key(), engine.preview_frames(PublishChannel::Main)),
            embedded: relay.is_some(),
            relay,
            engine,
            token,
            started: Instant::now(),
            server,
            app_id,
            user_id: settings.user_id.clone(),
            model: StudioModel::default(),
            previewing: false,
            tiles: BTreeMap::new(),
            host: settings.host.clone(),
            live_stream: None,
            auto_play: settings.auto_play,
            events_seen: 0,
            mic_muted: false,
            camera_muted: false,
            logging_in: Default::default(),
            levels_on: false,
            audio: None,
            frozen_now: None,
        };

        session.apply_host_settings();
        if settings.preview {
            session.start_preview();
        }
        for room in &settings.rooms {
            session.login(room);
        }
        Ok(session)
    }

    /// Whether the clock is frozen (nothing moves with time: tests and snapshots).
    pub fn clock_frozen(&self) -> bool {
        self.frozen_now.is_some()
    }

    /// The engine (for tests and the bench).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Seconds since the session started (the timelines' clock).
    pub fn now(&self) -> f64 {
        self.frozen_now
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64())
    }

    /// Stops the clock at `t` (snapshot tests draw the same picture every run).
    pub fn freeze_clock(&mut self, t: f64) {
        self.frozen_now = Some(t);
    }

    /// The embedded relay's metrics text, if embedded.
    pub fn relay_metrics(&self) -> Option<String> {
        self.relay.as_ref().map(EmbeddedRelay::metrics_text)
    }

    /// Sends the broadcast settings (sources, preset, fps) to the engine.
    pub fn apply_host_settings(&mut self) {
        let preset = VideoPreset::parse(&self.host.preset).unwrap_or(VideoPreset::P720);
        let config = VideoConfig::preset(preset).with_fps(self.host.fps.clamp(1, 60));
        self.engine.set_video_config(PublishChannel::Main, config);
        let video = match &self.host.video {
            VideoChoice::Test => VideoSource::Test,
            VideoChoice::Camera { index } => VideoSource::Camera { index: *index },
            VideoChoice::File { path } => VideoSource::File(path.into()),
        };
        self.engine.set_video_source(PublishChannel::Main, video);
        let audio = match &self.host.audio {
            AudioChoice::None => AudioSource::None,
            AudioChoice::Tone => AudioSource::Tone,
            AudioChoice::Microphone { name } => AudioSource::Microphone { name: name.clone() },
        };
        self.engine.set_audio_source(PublishChannel::Main, audio);
    }

    /// Starts the main channel's preview.
    pub fn start_preview(&mut self) {
        self.engine.start_preview(PublishChannel::Main);
        self.previewing = true;
    }

    /// Stops the preview (publishing keeps capture running).
    pub fn stop_preview(&mut self) {
        self.engine.stop_preview(PublishChannel::Main);
        self.previewing = false;
    }

    /// Logs into a room (with notifications of users on).
    pub fn login(&mut self, room: &str) {
        let room = room.trim();
        if room.is_empty() {
            return;
        }
        self.logging_in.insert(room.to_string());
        self.engine.login_room(
            room,
            onair_engine::User::new(self.user_id.clone()),
            RoomConfig {
                token: self.token.clone(),
                is_user_status_notify: true,
            },
        );
    }

    /// Logs out of a room and drops its tiles.
    pub fn logout(&mut self, room: &str) {
        let streams: Vec<String> = self
            .tiles
            .iter()
            .filter(|(_, t)| t.room == room)
            .map(|(s, _)| s.clone())
            .collect();
        for s in streams {
            self.stop_play(&s);
            self.tiles.remove(&s);
        }
        self.engine.logout_room(room);
        if self.host.room == room {
            self.live_stream = None;
        }
    }

    /// Goes live: publishes the main channel as the host settings' stream in their room.
    pub fn go_live(&mut self) {
        let (room, stream) = (self.host.room.clone(), self.host.stream_id.clone());
        let in_room = self
            .model
            .rooms
            .get(&room)
            .is_some_and(|r| r.reason.state() != RoomState::Disconnected);
        if !in_room && !self.logging_in.contains(&room) {
            self.login(&room);
        }
        self.engine
            .start_publishing_stream_in_room(&stream, PublishChannel::Main, Some(&room));
        self.live_stream = Some(stream);
    }

    /// Stops publishing.
    pub fn stop_live(&mut self) {
        self.engine.stop_publishing_stream(PublishChannel::Main);
        self.live_stream = None;
    }

    /// Whether a publisher of ours is live or trying to be.
    pub fn is_live(&self) -> bool {
        self.live_stream.is_some()
    }

    /// Starts playing a stream into its tile.
    pub fn play(&mut self, stream_id: &str) {
        let Some(tile) = self.tiles.get_mut(stream_id) else {
            return;
        };
        if tile.view.is_none() {
            tile.view = Some(VideoView::new(
                next_key(),
                self.engine.play_frames(stream_id),
            ));
            tile.render_reported = false;
            self.engine.start_playing_stream(
                stream_id,
                PlayerConfig {
                    video_layer: tile.layer,
                    ..Default::default()
                },
            );
        }
    }

    /// The tile of `stream_id` was drawn where it can be seen.
    pub fn tile_seen(&mut self, stream_id: &str, now: std::time::Instant) {
        if let Some(tile) = self.tiles.get_mut(stream_id) {
            tile.seen_at = Some(now);
        }
    }

    /// Pauses the video of played tiles nobody can see (not drawn visibly for
    /// [`HIDDEN_AFTER`], or the window minimised) and resumes it when they show again; their
    /// audio goes on. Called once a frame, after drawing.
    pub fn apply_visibility(&mut self, now: std::time::Instant, minimized: bool) {
        for (stream_id, tile) in &mut self.tiles {
            if !tile.playing() {
                continue;
            }
            let hidden = minimized
                || tile
                    .seen_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= HIDDEN_AFTER);
            if hidden != tile.video_hidden {
                tile.video_hidden = hidden;
                self.engine.mute_play_stream_video(stream_id, hidden);
            }
        }
    }

    /// Asks for the layer that suits a tile `width` points wide (or enlarged): the small one
    /// (360p of a 720p stream) below 480 points, else the big one. Only changes are sent.
    pub fn fit_layer(&mut self, stream_id: &str, width: f32, enlarged: bool) {
        let want = if enlarged || width >= 480.0 {
            VideoLayer::Big
        } else {
            VideoLayer::Small
        };
        let Some(tile) = self.tiles.get_mut(stream_id) else {
            return;
        };
        if tile.layer != want {
            tile.layer = want;
            if tile.view.is_some() {
                self.engine.set_play_stream_video_layer(stream_id, want);
            }
        }
    }

    /// Sends a chat line to `room_id` (a broadcast message, or a barrage one) and shows it in
    /// our own chat at once; a refusal shows in the event log (`im_send_result`).
    pub fn send_chat(&mut self, room_id: &str, text: &str, barrage: bool) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if barrage {
            self.engine.send_barrage_message(room_id, text);
        } else {
            self.engine.send_broadcast_message(room_id, text);
        }
        let t = self.now();
        let from = self.user_id.clone();
        if let Some(room) = self.model.rooms.get_mut(room_id) {
            room.push_chat(super::model::ChatLine {
                t,
                kind: if barrage {
                    super::model::ChatKind::Barrage
                } else {
                    super::model::ChatKind::Broadcast
                },
                from,
                text: text.to_string(),
            });
        }
    }

    /// Sends a custom command to `users` of `room_id` (everyone when empty) and notes it in
    /// our own chat.
    pub fn send_command(&mut self, room_id: &str, text: &str, users: &[String]) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let to: Vec<&str> = users.iter().map(String::as_str).collect();
        self.engine.send_custom_command(room_id, text, &to);
        let t = self.now();
        let from = self.user_id.clone();
        let target = if users.is_empty() {
            "everyone".to_string()
        } else {
            users.join(", ")
        };
        if let Some(room) = self.model.rooms.get_mut(room_id) {
            room.push_chat(super::model::ChatLine {
                t,
                kind: super::model::ChatKind::Command,
                from,
                text: format!("(to {target}) {text}"),
            });
        }
    }

    /// Mutes or unmutes our microphone in what we publish (the room sees it).
    pub fn set_mic_muted(&mut self, muted: bool) {
        self.mic_muted = muted;
        self.engine
            .mute_publish_stream_audio(PublishChannel::Main, muted);
    }

    /// Mutes or unmutes our camera in what we publish (black pictures; the room sees it).
    pub fn set_camera_muted(&mut self, muted: bool) {
        self.camera_muted = muted;
        self.engine
            .mute_publish_stream_video(PublishChannel::Main, muted);
    }

    /// A tile's playback volume, percent (0–200).
    pub fn set_volume(&mut self, stream_id: &str, volume: u32) {
        if let Some(tile) = self.tiles.get_mut(stream_id) {
            tile.volume = volume;
            self.engine.set_play_volume(stream_id, volume);
        }
    }

    /// Sets a key of `room_id`'s extra info (shown to everyone in the room, us included).
    pub fn set_room_extra_info(&mut self, room_id: &str, key: &str, value: &str) {
        self.engine.set_room_extra_info(room_id, key, value);
        let user = self.user_id.clone();
        if let Some(room) = self.model.rooms.get_mut(room_id) {
            room.extra_info
                .insert(key.to_string(), (value.to_string(), user));
        }
    }

    /// Stops playing a stream (its tile stays).
    pub fn stop_play(&mut self, stream_id: &str) {
        if let Some(tile) = self.tiles.get_mut(stream_id)
            && tile.view.take().is_some()
        {
            self.engine.stop_playing_stream(stream_id);
        }
        if let Some(audio) = &self.audio {
            audio.remove(stream_id);
        }
    }

    /// Hears a stream on the speaker, or silences it.
    pub fn set_muted(&mut self, stream_id: &str, muted: bool) {
        let Some(tile) = self.tiles.get_mut(stream_id) else {
            return;
        };
        tile.muted = muted;
        if muted {
            if let Some(audio) = &self.audio {
                audio.remove(stream_id);
            }
        } else {
            let audio = self.audio.get_or_insert_with(AudioOut::start);
            audio.add(stream_id, self.engine.play_audio_frames(stream_id));
        }
    }

    /// The speaker's state, once it has been opened.
    pub fn speaker_status(&self) -> Option<String> {
        self.audio.as_ref().map(AudioOut::status)
    }

    /// Takes every waiting engine event into the model and reacts to streams coming and
    /// going. Returns how many there were.
    pub fn pump(&mut self) -> usize {
        let mut n = 0;
        while let Ok(event) = self.engine.events().try_recv() {
            n += 1;
            let t = self.now();
            self.model.apply(t, wall_clock_us() / 1000, &event);
            if let Event::RoomStateChanged { room_id, .. } = &event {
                self.logging_in.remove(room_id);
            }
            self.react(&event);
        }
        self.events_seen += n as u64;
        self.update_level_monitor();
        n
    }

    /// Level meters on the broadcast panel and the tiles: the monitor (every 200 ms, voice
    /// activity for the captured) runs while we preview, publish or play something.
    fn update_level_monitor(&mut self) {
        let wanted = self.previewing || self.is_live() || self.tiles.values().any(Tile::playing);
        if wanted != self.levels_on {
            self.levels_on = wanted;
            if wanted {
                self.engine.start_sound_level_monitor(200, true);
            } else {
                self.engine.stop_sound_level_monitor();
                self.model.captured_level = None;
            }
        }
    }

    fn react(&mut self, event: &Event) {
        match event {
            Event::RoomStreamUpdate {
                room_id,
                update_type,
                streams,
            } => {
                for s in streams {
                    match update_type {
                        UpdateType::Add => {
                            if s.user.user_id == self.user_id
                                || self.model.publishers.contains_key(&s.stream_id)
                            {
                                continue;
                            }
                            self.tiles
                                .entry(s.stream_id.clone())
                                .or_insert_with(|| Tile {
                                    room: room_id.clone(),
                                    view: None,
                                    muted: true,
                                    volume: 100,
                                    layer: VideoLayer::Auto,
                                    render_reported: false,
                                    seen_at: None,
                                    video_hidden: false,
                                });
                            if self.auto_play {
                                self.play(&s.stream_id);
                            }
                        }
                        UpdateType::Delete => {
                            self.stop_play(&s.stream_id);
                            self.tiles.remove(&s.stream_id);
                        }
                    }
                }
            }
            Event::RoomStateChanged {
                room_id, reason, ..
            } if reason.state() == onair_engine::room::events::RoomState::Disconnected => {
                let gone: Vec<String> = self
                    .tiles
                    .iter()
                    .filter(|(_, t)| &t.room == room_id)
                    .map(|(s, _)| s.clone())
                    .collect();
                for s in gone {
                    self.stop_play(&s);
                    self.tiles.remove(&s);
                }
            }
            Event::DeviceError {
                channel: PublishChannel::Main,
                device: DeviceKind::Video,
                ..
            } if self.host.video != VideoChoice::Test => {
                // The camera or file failed (it is in the log with its code): keep the
                // studio useful with the test source.
                self.host.video = VideoChoice::Test;
                self.apply_host_settings();
            }
            Event::PublisherStateUpdate {
                stream_id,
                state: PublisherState::NoPublish,
                error_code,
                ..
            } if *error_code != 0 && self.live_stream.as_deref() == Some(stream_id) => {
                // Refused for good (e.g. the stream ID is taken): not live any more.
                self.live_stream = None;
            }
            _ => {}
        }
    }

    /// Polls every video view for a new frame (never blocks). True when any picture changed.
    pub fn poll_video(&mut self) -> bool {
        let mut changed = self.preview.poll();
        for tile in self.tiles.values_mut() {
            if let Some(view) = tile.view.as_mut() {
                changed |= view.poll();
            }
        }
        changed
    }

    /// Tells the engine a stream's first frame is on screen (once per play).
    pub fn report_rendered(&mut self, stream_id: &str) {
        if let Some(tile) = self.tiles.get_mut(stream_id)
            && !tile.render_reported
            && tile.view.as_ref().is_some_and(|v| v.frames_uploaded > 0)
        {
            tile.render_reported = true;
            self.engine.report_rendered_first_frame(stream_id);
        }
    }

    /// The fastest frame rate among the running videos (how often to repaint), if any run.
    pub fn video_rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .tiles
            .values()
            .filter_map(|t| t.view.as_ref())
            .map(|v| v.fps())
            .collect();
        if self.previewing || self.is_live() {
            rates.push(self.preview.fps());
        }
        if rates.is_empty() {
            return None;
        }
        Some(rates.into_iter().fold(0.0, f64::max))
    }

    /// The player state of a stream.
    pub fn player_state(&self, stream_id: &str) -> Option<PlayerState> {
        self.model.players.get(stream_id).and_then(|p| p.state)
    }

    /// The main publisher's state.
    pub fn publisher_state(&self) -> Option<PublisherState> {
        self.live_stream
            .as_ref()
            .or(Some(&self.host.stream_id))
            .and_then(|s| self.model.publishers.get(s))
            .and_then(|p| p.state)
    }

    /// Ends the session: logs out, stops the engine and the embedded relay.
    pub fn shutdown(self) {
        self.engine.destroy();
        if let Some(relay) = self.relay {
            relay.stop();
        }
    }
}
