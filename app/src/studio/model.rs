//! What the studio knows, built only from engine events: rooms with their users and streams,
//! publishers and players with their states and latest quality, the event log, the state
//! timelines and the quality history. No UI and no I/O, so it is tested on its own.

use std::collections::{BTreeMap, VecDeque};

use onair_engine::ErrorCode;
use onair_engine::QualityLevel;
use onair_engine::messages::UpdateType;
use onair_engine::room::events::{
    Event, PlayerState, PublisherState, RemoteDeviceState, RoomState, RoomStateChangedReason,
};

/// Log entries kept (older ones are dropped, and counted).
pub const LOG_CAPACITY: usize = 20_000;
/// Quality samples kept per stream: ten minutes at one a second.
pub const QUALITY_CAPACITY: usize = 600;
/// Segments kept per timeline.
const TIMELINE_CAPACITY: usize = 2_000;

/// One room as the studio sees it.
#[derive(Clone, Debug)]
pub struct RoomModel {
    /// The last state change's reason.
    pub reason: RoomStateChangedReason,
    /// The last state change's error code (0 = none).
    pub error_code: u32,
    /// Users in the room (not counting us), by ID, with when we saw them join (studio seconds).
    pub users: BTreeMap<String, UserEntry>,
    /// Streams in the room by ID.
    pub streams: BTreeMap<String, StreamEntry>,
    /// Messages seen in the room (ours too), oldest first, at most [`CHAT_CAPACITY`].
    pub chat: VecDeque<ChatLine>,
    /// The room's extra info by key: value, who set it.
    pub extra_info: BTreeMap<String, (String, String)>,
}

/// Chat lines kept per room.
pub const CHAT_CAPACITY: usize = 500;

/// What kind of line a chat line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatKind {
    /// A broadcast message.
    Broadcast,
    /// A barrage (bullet chat) message.
    Barrage,
    /// A custom command to us.
    Command,
}

/// One line of a room's chat.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatLine {
    /// When (studio seconds).
    pub t: f64,
    /// Its kind.
    pub kind: ChatKind,
    /// Who sent it (our own user ID for ours).
    pub from: String,
    /// The text.
    pub text: String,
}

impl RoomModel {
    /// Adds a line, dropping the oldest past the capacity.
    pub fn push_chat(&mut self, line: ChatLine) {
        if self.chat.len() == CHAT_CAPACITY {
            self.chat.pop_front();
        }
        self.chat.push_back(line);
    }
}

/// A user in a room.
#[derive(Clone, Debug, PartialEq)]
pub struct UserEntry {
    /// Display name.
    pub user_name: String,
    /// When we saw them join, studio seconds.
    pub since: f64,
}

/// A stream in a room.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEntry {
    /// Who publishes it.
    pub user_id: String,
    /// When it started, Unix milliseconds (from the relay).
    pub since_unix_ms: u64,
    /// Its publisher's extra info.
    pub extra_info: String,
    /// Its publisher muted the audio.
    pub audio_muted: bool,
    /// Its publisher muted the video.
    pub video_muted: bool,
}

/// A local publisher (one per stream we publish).
#[derive(Clone, Debug, Default)]
pub struct PublisherModel {
    /// State.
    pub state: Option<PublisherState>,
    /// Last error code.
    pub error_code: u32,
    /// Latest quality: (fps, video kbps, audio kbps, target kbps, rtt ms).
    pub quality: Option<PublisherQuality>,
}

/// A publisher's quality report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PublisherQuality {
    /// Frames sent per second.
    pub fps: f64,
    /// Video kbps sent.
    pub video_kbps: f64,
    /// Audio kbps sent.
    pub audio_kbps: f64,
    /// Encoder target kbps.
    pub target_kbps: u32,
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Packets the relay reported missing in the last second.
    pub packets_lost: u64,
}

/// A player (one per stream we play).
#[derive(Clone, Debug, Default)]
pub struct PlayerModel {
    /// State.
    pub state: Option<PlayerState>,
    /// Last error code.
    pub error_code: u32,
    /// Time to the first video frame, ms.
    pub first_frame_ms: Option<u64>,
    /// Latest quality report.
    pub quality: Option<PlayerQuality>,
    /// The latest SEI received, and how many so far.
    pub last_sei: Option<SeiNote>,
    /// SEI messages received so far.
    pub sei_count: u64,
    /// Sound level 0–100 (from the monitor), if reported.
    pub level: Option<f32>,
    /// The simulcast layer it arrives in (0: full picture), once the relay said.
    pub layer: Option<usize>,
    /// The decoded picture's size, once a frame was decoded.
    pub size: Option<(u32, u32)>,
}

/// SEI data as the studio shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeiNote {
    /// When it arrived (studio seconds).
    pub t: f64,
    /// The data.
    pub data: Vec<u8>,
    /// The pts of the frame it rode on, µs.
    pub pts_us: i64,
}

/// A player's quality report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlayerQuality {
    /// Frames decoded per second.
    pub fps: f64,
    /// Video kbps received.
    pub kbps: f64,
    /// Packets lost so far.
    pub packets_lost: u64,
    /// End-to-end delay, ms.
    pub delay_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Stutters so far.
    pub stutters: u64,
    /// Time spent in them so far, ms.
    pub stutter_ms: f64,
    /// Delay the player adds to play smoothly (jitter buffer and playout), ms.
    pub playout_ms: f64,
    /// Packets repaired (NACK resends) so far.
    pub repaired: u64,
    /// Lost packets rebuilt from the relay's FEC repair packets so far.
    pub fec_recovered: u64,
    /// Keyframes asked for so far.
    pub keyframe_requests: u64,
    /// Audio frames concealed and lost so far.
    pub audio_concealed: u64,
    /// Audio frames lost (silence) so far.
    pub audio_lost: u64,
    /// Straight from the relay or through a TURN server.
    pub path: onair_engine::MediaPath,
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Studio seconds.
    pub t: f64,
    /// Unix milliseconds.
    pub unix_ms: u64,
    /// The room, when the event names one (stream events: the stream's room).
    pub room: Option<String>,
    /// The stream, when the event names one.
    pub stream: Option<String>,
    /// The event kind (`room_state`, `player_quality`, ...).
    pub kind: &'static str,
    /// The error code (0 = none).
    pub error_code: u32,
    /// The whole event as text.
    pub text: String,
}

impl LogEntry {
    /// The entry as one JSON object (a line of the JSON-lines export).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "t": self.t,
            "unix_ms": self.unix_ms,
            "kind": self.kind,
            "room": self.room,
            "stream": self.stream,
            "error_code": self.error_code,
            "text": self.text,
        });
        if let Some(code) = ErrorCode::from_code(self.error_code) {
            v["error_name"] = code.name().into();
        }
        v
    }
}

/// What a timeline segment shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not in a room, not publishing, not playing.
    Idle,
    /// Logging in, requesting.
    Connecting,
    /// Logged in, publishing, playing.
    Active,
    /// Reconnecting after a drop.
    Reconnecting,
    /// Playing but no frames are being decoded.
    Stalled,
    /// Ended with an error (login failed, kicked out, refused).
    Failed,
}

impl Phase {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Connecting => "connecting",
            Phase::Active => "active",
            Phase::Reconnecting => "reconnecting",
            Phase::Stalled => "stalled",
            Phase::Failed => "failed",
        }
    }
}

/// One stretch of time in one state.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Start, studio seconds.
    pub start: f64,
    /// End, studio seconds (None: still in it).
    pub end: Option<f64>,
    /// The phase.
    pub phase: Phase,
    /// The state's own name (LOGINED, Publishing, ...).
    pub detail: String,
}

/// Which kind of thing a timeline follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimelineKind {
    /// A room.
    Room,
    /// A publisher.
    Publisher,
    /// A player.
    Player,
}

/// A thing's states over time.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Segments, oldest first.
    pub segments: VecDeque<Segment>,
}

impl Timeline {
    fn enter(&mut self, t: f64, phase: Phase, detail: String) {
        if let Some(last) = self.segments.back_mut()
            && last.end.is_none()
        {
            if last.phase == phase && last.detail == detail {
                return;
            }
            last.end = Some(t);
        }
        if self.segments.len() == TIMELINE_CAPACITY {
            self.segments.pop_front();
        }
        self.segments.push_back(Segment {
            start: t,
            end: None,
            phase,
            detail,
        });
    }

    /// The phase now.
    pub fn current(&self) -> Option<Phase> {
        self.segments.back().map(|s| s.phase)
    }
}

/// One quality sample of a stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualitySample {
    /// Studio seconds.
    pub t: f64,
    /// Frames per second.
    pub fps: f64,
    /// Video kbps.
    pub kbps: f64,
    /// End-to-end delay, ms (players; publishers: round trip).
    pub delay_ms: f64,
    /// Packets lost since the previous sample.
    pub lost: f64,
    /// Delay added for smooth playout, ms (players; 0 for publishers).
    pub playout_ms: f64,
}

/// Everything the studio knows.
#[derive(Default)]
pub struct StudioModel {
    /// Rooms we are (or were) in.
    pub rooms: BTreeMap<String, RoomModel>,
    /// Our publishers by stream ID.
    pub publishers: BTreeMap<String, PublisherModel>,
    /// Our players by stream ID.
    pub players: BTreeMap<String, PlayerModel>,
    /// The event log, oldest first.
    pub log: VecDeque<LogEntry>,
    /// Log entries dropped for space.
    pub log_dropped: u64,
    /// State timelines.
    pub timelines: BTreeMap<(TimelineKind, String), Timeline>,
    /// Quality history per stream (publishers and players).
    pub quality: BTreeMap<String, VecDeque<QualitySample>>,
    /// Our captured sound level 0–100 (from the monitor), if reported.
    pub captured_level: Option<f32>,
    /// Network quality by user ID ("" for us): (upstream, downstream).
    pub network: BTreeMap<String, (QualityLevel, QualityLevel)>,
}

impl StudioModel {
    /// The room a stream is in, if any room we are in lists it.
    pub fn room_of_stream(&self, stream_id: &str) -> Option<&str> {
        self.rooms
            .iter()
            .find(|(_, r)| r.streams.contains_key(stream_id))
            .map(|(id, _)| id.as_str())
    }

    /// Applies one event at studio time `t` (seconds) and wall time `unix_ms`.
    pub fn apply(&mut self, t: f64, unix_ms: u64, event: &Event) {
        let stream = stream_of(event).map(str::to_string);
        // A stream's room is looked up before a Delete removes it.
        let room = event.room_id().map(str::to_string).or_else(|| {
            stream
                .as_deref()
                .and_then(|s| self.room_of_stream(s))
                .map(str::to_string)
        });
        self.update_state(t, event);
        // Meters, not history: levels come several times a second.
        if matches!(
            event,
            Event::CapturedSoundLevelUpdate { .. } | Event::RemoteSoundLevelUpdate { .. }
        ) {
            return;
        }
        let error_code = error_of(event);
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
            self.log_dropped += 1;
        }
        self.log.push_back(LogEntry {
            t,
            unix_ms,
            room,
            stream,
            kind: event.kind(),
            error_code,
            text: event.to_string(),
        });
    }

    fn update_state(&mut self, t: f64, event: &Event) {
        match event {
            Event::RoomStateChanged {
                room_id,
                reason,
                error_code,
                ..
            } => {
                let room = self
                    .rooms
                    .entry(room_id.clone())
                    .or_insert_with(|| RoomModel {
                        reason: *reason,
                        error_code: 0,
                        users: BTreeMap::new(),
                        streams: BTreeMap::new(),
                        chat: VecDeque::new(),
                        extra_info: BTreeMap::new(),
                    });
                room.reason = *reason;
                room.error_code = *error_code;
                if reason.state() == RoomState::Disconnected {
                    room.users.clear();
                    room.streams.clear();
                }
                let phase = match reason {
                    RoomStateChangedReason::Logining => Phase::Connecting,
                    RoomStateChangedReason::Logined | RoomStateChangedReason::Reconnected => {
                        Phase::Active
                    }
                    RoomStateChangedReason::Reconnecting => Phase::Reconnecting,
                    RoomStateChangedReason::Logout => Phase::Idle,
                    RoomStateChangedReason::LoginFailed
                    | RoomStateChangedReason::ReconnectFailed
                    | RoomStateChangedReason::KickOut
                    | RoomStateChangedReason::LogoutFailed => Phase::Failed,
                };
                self.timeline(TimelineKind::Room, room_id).enter(
                    t,
                    phase,
                    reason.name().to_string(),
                );
            }
            Event::RoomUserUpdate {
                room_id,
                update_type,
                users,
            } => {
                if let Some(room) = self.rooms.get_mut(room_id) {
                    for u in users {
                        match update_type {
                            UpdateType::Add => {
                                room.users.insert(
                                    u.user_id.clone(),
                                    UserEntry {
                                        user_name: u.user_name.clone(),
                                        since: t,
                                    },
                                );
                            }
                            UpdateType::Delete => {
                                room.users.remove(&u.user_id);
                            }
                        }
                    }
                }
            }
            Event::RoomStreamUpdate {
                room_id,
                update_type,
                streams,
            } => {
                if let Some(room) = self.rooms.get_mut(room_id) {
                    for s in streams {
                        match update_type {
                            UpdateType::Add => {
                                room.streams.insert(
                                    s.stream_id.clone(),
                                    StreamEntry {
                                        user_id: s.user.user_id.clone(),
                                        since_unix_ms: s.since_unix_ms,
                                        extra_info: s.extra_info.clone(),
                                        audio_muted: s.audio_muted,
                                        video_muted: s.video_muted,
                                    },
                                );
                            }
                            UpdateType::Delete => {
                                room.streams.remove(&s.stream_id);
                            }
                        }
                    }
                }
            }
            Event::PublisherStateUpdate {
                stream_id,
                state,
                error_code,
                ..
            } => {
                let p = self.publishers.entry(stream_id.clone()).or_default();
                p.state = Some(*state);
                p.error_code = *error_code;
                let phase = match state {
                    PublisherState::NoPublish if *error_code != 0 => Phase::Failed,
                    PublisherState::NoPublish => Phase::Idle,
                    PublisherState::PublishRequesting => Phase::Connecting,
                    PublisherState::Publishing => Phase::Active,
                };
                self.timeline(TimelineKind::Publisher, stream_id).enter(
                    t,
                    phase,
                    format!("{state:?}"),
                );
            }
            Event::PlayerStateUpdate {
                stream_id,
                state,
                error_code,
                ..
            } => {
                let p = self.players.entry(stream_id.clone()).or_default();
                p.state = Some(*state);
                p.error_code = *error_code;
                if *state != PlayerState::Playing {
                    p.first_frame_ms = None;
                }
                let phase = match state {
                    PlayerState::NoPlay if *error_code != 0 => Phase::Failed,
                    PlayerState::NoPlay => Phase::Idle,
                    PlayerState::PlayRequesting => Phase::Connecting,
                    PlayerState::Playing => Phase::Active,
                };
                self.timeline(TimelineKind::Player, stream_id).enter(
                    t,
                    phase,
                    format!("{state:?}"),
                );
            }
            Event::PlayerRecvVideoFirstFrame {
                stream_id,
                elapsed_ms,
            } => {
                self.players
                    .entry(stream_id.clone())
                    .or_default()
                    .first_frame_ms = Some(*elapsed_ms);
            }
            Event::PublisherQualityUpdate {
                stream_id,
                send_fps,
                video_kbps,
                audio_kbps,
                target_kbps,
                rtt_ms,
                packets_lost,
                ..
            } => {
                let q = PublisherQuality {
                    fps: *send_fps,
                    video_kbps: *video_kbps,
                    audio_kbps: *audio_kbps,
                    target_kbps: *target_kbps,
                    rtt_ms: *rtt_ms,
                    packets_lost: *packets_lost,
                };
                self.publishers
                    .entry(stream_id.clone())
                    .or_default()
                    .quality = Some(q);
                self.push_quality(
                    stream_id,
                    QualitySample {
                        t,
                        fps: q.fps,
                        kbps: q.video_kbps,
                        delay_ms: q.rtt_ms,
                        lost: q.packets_lost as f64,
                        playout_ms: 0.0,
                    },
                );
            }
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
                playout_delay_ms,
                packets_repaired,
                packets_fec_recovered,
                keyframe_requests,
                audio_frames_concealed,
                audio_frames_lost,
                path,
                ..
            } => {
                let player = self.players.entry(stream_id.clone()).or_default();
                let lost_before = player.quality.map_or(0, |q| q.packets_lost);
                let stutters_before = player.quality.map_or(0, |q| q.stutters);
                let playing = player.state == Some(PlayerState::Playing);
                player.quality = Some(PlayerQuality {
                    fps: *decode_fps,
                    kbps: *video_kbps,
                    packets_lost: *packets_lost,
                    delay_ms: *delay_ms,
                    jitter_ms: *jitter_ms,
                    rtt_ms: *rtt_ms,
                    stutters: *stutters,
                    stutter_ms: *stutter_ms,
                    playout_ms: *playout_delay_ms,
                    repaired: *packets_repaired,
                    fec_recovered: *packets_fec_recovered,
                    keyframe_requests: *keyframe_requests,
                    audio_concealed: *audio_frames_concealed,
                    audio_lost: *audio_frames_lost,
                    path: *path,
                });
                if playing {
                    // A second without frames is a stall; one with a freeze in it (a gap of
                    // 200 ms or more between frames) shows on the timeline too.
                    let (phase, detail) = if *decode_fps < 1.0 {
                        (Phase::Stalled, "Stalled")
                    } else if *stutters > stutters_before {
                        (Phase::Stalled, "Freeze")
                    } else {
                        (Phase::Active, "Playing")
                    };
                    self.timeline(TimelineKind::Player, stream_id).enter(
                        t,
                        phase,
                        detail.to_string(),
                    );
                }
                self.push_quality(
                    stream_id,
                    QualitySample {
                        t,
                        fps: *decode_fps,
                        kbps: *video_kbps,
                        delay_ms: *delay_ms,
                        lost: packets_lost.saturating_sub(lost_before) as f64,
                        playout_ms: *playout_delay_ms,
                    },
                );
            }
            Event::PlayerRenderVideoFirstFrame { .. }
            | Event::PlayerRecvAudioFirstFrame { .. }
            | Event::DeviceError { .. }
            | Event::RoomTokenWillExpire { .. }
            | Event::IMSendResult { .. }
            | Event::RoomSetExtraInfoResult { .. }
            | Event::PublisherUpdateStreamExtraInfoResult { .. }
            | Event::ApiCalledResult { .. } => {}
            Event::CapturedSoundLevelUpdate { level, .. } => self.captured_level = Some(*level),
            Event::RemoteSoundLevelUpdate { levels } => {
                for (id, p) in &mut self.players {
                    p.level = levels.get(id).copied().or(p.level.map(|_| 0.0));
                }
            }
            Event::RoomStreamExtraInfoUpdate { room_id, streams } => {
                if let Some(room) = self.rooms.get_mut(room_id) {
                    for s in streams {
                        if let Some(e) = room.streams.get_mut(&s.stream_id) {
                            e.extra_info = s.extra_info.clone();
                        }
                    }
                }
            }
            Event::PlayerSyncRecvSEI {
                stream_id,
                data,
                pts_us,
                ..
            } => {
                let p = self.players.entry(stream_id.clone()).or_default();
                p.sei_count += 1;
                p.last_sei = Some(SeiNote {
                    t,
                    data: data.clone(),
                    pts_us: *pts_us,
                });
            }
            Event::PlayerVideoLayerChanged {
                stream_id, layer, ..
            } => {
                self.players.entry(stream_id.clone()).or_default().layer = Some(*layer);
            }
            Event::PlayerVideoSizeChanged {
                stream_id,
                width,
                height,
            } => {
                self.players.entry(stream_id.clone()).or_default().size = Some((*width, *height));
            }
            Event::RemoteMicStateUpdate { stream_id, state }
            | Event::RemoteCameraStateUpdate { stream_id, state } => {
                let mic = matches!(event, Event::RemoteMicStateUpdate { .. });
                let muted = *state != RemoteDeviceState::Open;
                for room in self.rooms.values_mut() {
                    if let Some(e) = room.streams.get_mut(stream_id) {
                        if mic {
                            e.audio_muted = muted;
                        } else {
                            e.video_muted = muted;
                        }
                    }
                }
            }
            Event::NetworkQuality {
                user_id,
                upstream,
                downstream,
            } => {
                self.network
                    .insert(user_id.clone(), (*upstream, *downstream));
            }
            Event::IMRecvBroadcastMessage { room_id, messages }
            | Event::IMRecvBarrageMessage { room_id, messages } => {
                let kind = if matches!(event, Event::IMRecvBarrageMessage { .. }) {
                    ChatKind::Barrage
                } else {
                    ChatKind::Broadcast
                };
                if let Some(room) = self.rooms.get_mut(room_id) {
                    for m in messages {
                        room.push_chat(ChatLine {
                            t,
                            kind,
                            from: m.from_user.user_id.clone(),
                            text: m.text.clone(),
                        });
                    }
                }
            }
            Event::IMRecvCustomCommand {
                room_id,
                from_user,
                command,
            } => {
                if let Some(room) = self.rooms.get_mut(room_id) {
                    room.push_chat(ChatLine {
                        t,
                        kind: ChatKind::Command,
                        from: from_user.user_id.clone(),
                        text: command.clone(),
                    });
                }
            }
            Event::RoomExtraInfoUpdate { room_id, infos } => {
                if let Some(room) = self.rooms.get_mut(room_id) {
                    for i in infos {
                        room.extra_info.insert(
                            i.key.clone(),
                            (i.value.clone(), i.update_user.user_id.clone()),
                        );
                    }
                }
            }
        }
    }

    fn timeline(&mut self, kind: TimelineKind, id: &str) -> &mut Timeline {
        self.timelines.entry((kind, id.to_string())).or_default()
    }

    fn push_quality(&mut self, stream_id: &str, sample: QualitySample) {
        let history = self.quality.entry(stream_id.to_string()).or_default();
        if history.len() == QUALITY_CAPACITY {
            history.pop_front();
        }
        history.push_back(sample);
    }

    /// Entries matching a filter, newest last.
    pub fn filtered_log<'a>(&'a self, filter: &'a LogFilter) -> impl Iterator<Item = &'a LogEntry> {
        self.log.iter().filter(move |e| filter.matches(e))
    }
}

/// What the event log shows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogFilter {
    /// Only this room (empty: all).
    pub room: String,
    /// Only this stream (empty: all).
    pub stream: String,
    /// Only this kind (empty: all).
    pub kind: String,
    /// Text that must appear (case-insensitive; empty: all).
    pub search: String,
    /// Hide the once-a-second quality reports.
    pub hide_quality: bool,
    /// Only entries with an error code.
    pub errors_only: bool,
}

impl LogFilter {
    /// Whether an entry passes.
    pub fn matches(&self, e: &LogEntry) -> bool {
        (self.room.is_empty() || e.room.as_deref() == Some(self.room.as_str()))
            && (self.stream.is_empty() || e.stream.as_deref() == Some(self.stream.as_str()))
            && (self.kind.is_empty() || e.kind == self.kind)
            && (!self.hide_quality || !e.kind.ends_with("_quality"))
            && (!self.errors_only || e.error_code != 0)
            && (self.search.is_empty() || contains_ignore_case(&e.text, &self.search))
    }
}

/// Whether `needle` occurs in `hay`, ignoring ASCII case, without allocating (the log filter
/// runs over every entry each frame while a search is typed).
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Every event kind, for the log's filter menu.
pub const EVENT_KINDS: [&str; 12] = [
    "room_state",
    "room_user",
    "room_stream",
    "publisher_state",
    "player_state",
    "player_video_first_frame",
    "player_audio_first_frame",
    "player_render_first_frame",
    "publisher_quality",
    "player_quality",
    "device_error",
    "api_result",
];

/// The stream an event is about.
pub fn stream_of(event: &Event) -> Option<&str> {
    match event {
        Event::PublisherStateUpdate { stream_id, .. }
        | Event::PlayerStateUpdate { stream_id, .. }
        | Event::PlayerRecvVideoFirstFrame { stream_id, .. }
        | Event::PlayerRenderVideoFirstFrame { stream_id }
        | Event::PlayerRecvAudioFirstFrame { stream_id }
        | Event::PublisherQualityUpdate { stream_id, .. }
        | Event::PlayerSyncRecvSEI { stream_id, .. }
        | Event::PlayerVideoLayerChanged { stream_id, .. }
        | Event::PlayerVideoSizeChanged { stream_id, .. }
        | Event::RemoteMicStateUpdate { stream_id, .. }
        | Event::RemoteCameraStateUpdate { stream_id, .. }
        | Event::PlayerQualityUpdate { stream_id, .. } => Some(stream_id),
        Event::RoomStreamUpdate { streams, .. } if streams.len() == 1 => {
            streams.first().map(|s| s.stream_id.as_str())
        }
        _ => None,
    }
}

/// The error code an event carries (0 = none).
pub fn error_of(event: &Event) -> u32 {
    match event {
        Event::RoomStateChanged { error_code, .. }
        | Event::PublisherStateUpdate { error_code, .. }
        | Event::PlayerStateUpdate { error_code, .. }
        | Event::DeviceError { error_code, .. }
        | Event::ApiCalledResult { error_code, .. } => *error_code,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_engine::messages::{StreamInfo, User};

    fn room(reason: RoomStateChangedReason, code: u32) -> Event {
        Event::RoomStateChanged {
            room_id: "r1".into(),
            reason,
            error_code: code,
            extended_data: String::new(),
        }
    }

    #[test]
    fn rooms_users_streams_and_timelines_follow_the_events() {
        let mut m = StudioModel::default();
        m.apply(0.0, 0, &room(RoomStateChangedReason::Logining, 0));
        m.apply(0.1, 0, &room(RoomStateChangedReason::Logined, 0));
        m.apply(
            1.0,
            0,
            &Event::RoomUserUpdate {
                room_id: "r1".into(),
                update_type: UpdateType::Add,
                users: vec![User::new("bob")],
            },
        );
        m.apply(
            1.5,
            0,
            &Event::RoomStreamUpdate {
                room_id: "r1".into(),
                update_type: UpdateType::Add,
                streams: vec![StreamInfo {
                    stream_id: "cam".into(),
                    user: User::new("bob"),
                    extra_info: String::new(),
                    since_unix_ms: 7,
                    audio_muted: false,
                    video_muted: false,
                }],
            },
        );
        let r = &m.rooms["r1"];
        assert!(r.users.contains_key("bob"));
        assert_eq!(r.streams["cam"].user_id, "bob");
        // A player event is logged against the stream's room.
        m.apply(
            2.0,
            0,
            &Event::PlayerStateUpdate {
                stream_id: "cam".into(),
                state: PlayerState::Playing,
                error_code: 0,
                extended_data: String::new(),
            },
        );
        assert_eq!(m.log.back().and_then(|e| e.room.as_deref()), Some("r1"));
        // A stall shows on the player's timeline, and recovery ends it.
        for (t, fps) in [(3.0, 30.0), (4.0, 0.0), (5.0, 30.0)] {
            m.apply(
                t,
                0,
                &Event::PlayerQualityUpdate {
                    stream_id: "cam".into(),
                    decode_fps: fps,
                    video_kbps: 1000.0,
                    packets_lost: 0,
                    delay_ms: 5.0,
                    jitter_ms: 0.1,
                    rtt_ms: 0.3,
                    stutters: 0,
                    stutter_ms: 0.0,
                    keyframe_requests: 0,
                    packets_repaired: 0,
                    packets_fec_recovered: 0,
                    playout_delay_ms: 0.0,
                    audio_frames_played: 0,
                    audio_frames_concealed: 0,
                    audio_frames_lost: 0,
                    path: onair_engine::MediaPath::Unknown,
                    keyframes_received: 0,
                    video_layer: None,
                    estimate_kbps: 0.0,
                },
            );
        }
        let phases: Vec<Phase> = m.timelines[&(TimelineKind::Player, "cam".into())]
            .segments
            .iter()
            .map(|s| s.phase)
            .collect();
        assert_eq!(phases, [Phase::Active, Phase::Stalled, Phase::Active]);
        assert_eq!(m.quality["cam"].len(), 3);
        // A reconnect is a segment of its own; a kick-out ends the room with its code.
        m.apply(6.0, 0, &room(RoomStateChangedReason::Reconnecting, 0));
        m.apply(6.5, 0, &room(RoomStateChangedReason::Reconnected, 0));
        m.apply(7.0, 0, &room(RoomStateChangedReason::KickOut, 1002050));
        let room_phases: Vec<Phase> = m.timelines[&(TimelineKind::Room, "r1".into())]
            .segments
            .iter()
            .map(|s| s.phase)
            .collect();
        assert_eq!(
            room_phases,
            [
                Phase::Connecting,
                Phase::Active,
                Phase::Reconnecting,
                Phase::Active,
                Phase::Failed
            ]
        );
        assert!(m.rooms["r1"].users.is_empty(), "a kicked room has no users");
        let kicked = m.log.back().map(LogEntry::to_json);
        assert_eq!(
            kicked.as_ref().and_then(|j| j["error_name"].as_str()),
            ErrorCode::from_code(1002050).map(|c| c.name())
        );
    }

    #[test]
    fn the_log_is_bounded_and_filters() {
        let mut m = StudioModel::default();
        for i in 0..(LOG_CAPACITY + 10) {
            m.apply(
                i as f64,
                0,
                &Event::PublisherStateUpdate {
                    stream_id: if i % 2 == 0 { "a" } else { "b" }.into(),
                    state: PublisherState::PublishRequesting,
                    error_code: if i % 10 == 0 { 1003028 } else { 0 },
                    extended_data: String::new(),
                },
            );
        }
        assert_eq!(m.log.len(), LOG_CAPACITY);
        assert_eq!(m.log_dropped, 10);
        let only_b = LogFilter {
            stream: "b".into(),
            ..Default::default()
        };
        assert_eq!(m.filtered_log(&only_b).count(), LOG_CAPACITY / 2);
        let errors = LogFilter {
            errors_only: true,
            ..Default::default()
        };
        assert!(m.filtered_log(&errors).all(|e| e.error_code == 1003028));
        let search = LogFilter {
            search: "STREAM=A".into(),
            ..Default::default()
        };
        assert_eq!(m.filtered_log(&search).count(), LOG_CAPACITY / 2);
    }
}
