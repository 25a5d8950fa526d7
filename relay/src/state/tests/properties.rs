//! Property-based: random sequences of opens, hellos (and resumes), logins (app sign, tokens
//! good, short-lived, room-limited, stream-limited or forged), logouts, publishes, plays,
//! kick-outs, renewals, WHIP/WHEP, media news, heartbeats, clock jumps, closes and garbage,
//! from many sessions in two apps (one with cross-room play) and three rooms. After every
//! step: no panic, the registry invariants, no room event to a non-member, no play outside
//! the rules, and `/metrics` agreeing with the state.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256 here, of up to 120 steps each).

use proptest::prelude::*;

use super::*;

const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const STREAMS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// How a login proves itself.
#[derive(Clone, Debug)]
enum Cred {
    AppSign,
    WrongSign,
    /// A token: lifetime (s), publish, limited to the login's room, limited to stream 0.
    Token(u64, bool, bool, bool),
    Forged,
    None,
}

#[derive(Clone, Debug)]
enum Op {
    Open,
    Hello(usize, u32),
    Resume(usize, usize),
    Login(usize, usize, usize, Cred),
    Logout(usize, usize),
    Publish(usize, usize, usize, bool),
    Flow(usize),
    Answer(usize, bool),
    Play(usize, usize),
    StopPlay(usize, usize),
    StopPublish(usize, usize),
    Renew(usize, usize, u64),
    Heartbeat(usize),
    Tick(u64, u64),
    Close(usize),
    Garbage(usize, Vec<u8>),
    HttpBegin(usize, usize, usize, bool, u32),
    HttpEnd(usize, bool),
    MediaFailed(usize, usize),
    PlayerFailed(usize, usize),
    Message(usize, usize, u8, usize),
    ExtraInfo(usize, usize, usize, usize),
    /// Mute a stream (audio, video), or report a quality level.
    Mute(usize, usize, bool, bool),
    Quality(usize, u8),
}

fn cred() -> impl Strategy<Value = Cred> {
    prop_oneof![
        4 => Just(Cred::AppSign),
        1 => Just(Cred::WrongSign),
        4 => (prop::sample::select(vec![5u64, 40, 3600]), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(ttl, p, r, s)| Cred::Token(ttl, p, r, s)),
        1 => Just(Cred::Forged),
        1 => Just(Cred::None),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..8usize;
    prop_oneof![
        2 => Just(Op::Open),
        3 => (c.clone(), 1..=3u32).prop_map(|(c, a)| Op::Hello(c, a)),
        1 => (c.clone(), 0..8usize).prop_map(|(c, s)| Op::Resume(c, s)),
        6 => (c.clone(), 0..ROOMS.len(), 0..USERS.len(), cred())
            .prop_map(|(c, r, u, k)| Op::Login(c, r, u, k)),
        2 => (c.clone(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Logout(c, r)),
        4 => (c.clone(), 0..ROOMS.len(), 0..STREAMS.len(), any::<bool>())
            .prop_map(|(c, r, s, m)| Op::Publish(c, r, s, m)),
        3 => (0..STREAMS.len()).prop_map(Op::Flow),
        3 => (0..8usize, any::<bool>()).prop_map(|(i, ok)| Op::Answer(i, ok)),
        5 => (c.clone(), 0..STREAMS.len()).prop_map(|(c, s)| Op::Play(c, s)),
        1 => (c.clone(), 0..STREAMS.len()).prop_map(|(c, s)| Op::StopPlay(c, s)),
        1 => (c.clone(), 0..STREAMS.len()).prop_map(|(c, s)| Op::StopPublish(c, s)),
        1 => (c.clone(), 0..ROOMS.len(), prop::sample::select(vec![10u64, 3600]))
            .prop_map(|(c, r, t)| Op::Renew(c, r, t)),
        2 => c.clone().prop_map(Op::Heartbeat),
        2 => (prop::sample::select(vec![0u64, 400, 1500]), prop::sample::select(vec![0u64, 3, 20, 45]))
            .prop_map(|(ms, s)| Op::Tick(ms, s)),
        1 => c.clone().prop_map(Op::Close),
        2 => (c.clone(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(c, g)| Op::Garbage(c, g)),
        2 => (0..USERS.len(), 0..ROOMS.len(), 0..STREAMS.len(), any::<bool>(), 1..=2u32)
            .prop_map(|(u, r, s, p, a)| Op::HttpBegin(u, r, s, p, a)),
        1 => (0..8usize, any::<bool>()).prop_map(|(i, ok)| Op::HttpEnd(i, ok)),
        1 => (1..=2usize, 0..STREAMS.len()).prop_map(|(a, s)| Op::MediaFailed(a, s)),
        1 => (c.clone(), 0..STREAMS.len()).prop_map(|(c, s)| Op::PlayerFailed(c, s)),
        3 => (c.clone(), 0..ROOMS.len(), 0..3u8, 0..1100usize)
            .prop_map(|(c, r, k, len)| Op::Message(c, r, k, len)),
        2 => (c.clone(), 0..ROOMS.len(), 0..14usize, 0..4200usize)
            .prop_map(|(c, r, k, len)| Op::ExtraInfo(c, r, k, len)),
        1 => (c.clone(), 0..STREAMS.len(), any::<bool>(), any::<bool>())
            .prop_map(|(c, s, a, v)| Op::Mute(c, s, a, v)),
        1 => (c, any::<u8>()).prop_map(|(c, q)| Op::Quality(c, q)),
    ]
}

/// A session a connection said hello as: its ID, app and resume secret.
type Hello = (SessionId, u32, String);

/// The world the ops act on.
struct World {
    state: RelayState,
    signs: [AppSign; 2],
    now: Instant,
    clock: u64,
    next_id: u64,
    /// Open connections and the session each said hello as (with its app and secret).
    conns: Vec<(ConnId, Option<Hello>)>,
    /// Negotiations the SFU has not answered.
    held: Vec<Output>,
    /// WHIP/WHEP resources: (session, secret, app).
    http: Vec<(SessionId, String, u32)>,
}

impl World {
    fn new() -> Self {
        let signs = [AppSign::random(), AppSign::random()];
        let mut config = RelayConfig::single_app(1, signs[0].clone());
        let mut second = config.apps[0].clone();
        second.app_id = 2;
        second.app_sign = signs[1].clone();
        second.cross_room_play = true;
        config.apps.push(second);
        config.limits = Limits {
            heartbeat_timeout_ms: 1000,
            max_sessions_per_user: 3,
            max_plays_per_session: 3,
            max_http_sessions_per_user: 2,
            max_http_sessions_per_app: 4,
            max_streams_per_session: 3,
            max_connections_per_ip: 6,
            max_consecutive_errors: 6,
            request_burst: 40.0,
            ..Limits::default()
        };
        let clock = 2_000_000_000;
        let mut state = RelayState::new(config);
        state.set_clock(Some(clock));
        World {
            state,
            signs,
            now: Instant::now(),
            clock,
            next_id: 1,
            conns: Vec::new(),
            held: Vec::new(),
            http: Vec::new(),
        }
    }

    fn conn(&self, i: usize) -> Option<(ConnId, Option<Hello>)> {
        if self.conns.is_empty() {
            None
        } else {
            self.conns.get(i % self.conns.len()).cloned()
        }
    }

    fn send(&mut self, conn: ConnId, mut body: serde_json::Value) -> Vec<Output> {
        self.next_id += 1;
        body["id"] = json!(self.next_id);
        self.state.on_text(conn, &body.to_string(), self.now)
    }

    fn token(&self, app: u32, user: &str, room: &str, cred: &Cred) -> Option<String> {
        let sign = &self.signs[(app as usize - 1).min(1)];
        match cred {
            Cred::Token(ttl, publish, room_only, stream_only) => {
                let mut c = Claims::new(app, user, self.clock, *ttl);
                c.privilege.publish = *publish;
                c.room_id = room_only.then(|| room.to_string());
                c.stream_id_list = stream_only.then(|| vec![STREAMS[0].to_string()]);
                Some(token::mint(&c, sign))
            }
            Cred::Forged => Some(token::mint(
                &Claims::new(app, user, self.clock, 3600),
                &AppSign::random(),
            )),
            _ => None,
        }
    }

    /// Carries out one op; returns what the state machine put out.
    fn apply(&mut self, op: &Op) -> Vec<Output> {
        match op.clone() {
            Op::Open => {
                let ip = std::net::IpAddr::from([10, 0, 0, (self.conns.len() % 3) as u8]);
                if self.state.admit(Some(ip)).is_err() {
                    return Vec::new();
                }
                let conn = self.state.open_conn_from(Some(ip), self.now);
                self.conns.push((conn, None));
                Vec::new()
            }
            Op::Hello(i, app) => {
                let Some((conn, _)) = self.conn(i) else {
                    return Vec::new();
                };
                let out = self.send(
                    conn,
                    json!({"type":"hello","protocol":PROTOCOL_VERSION,"app_id":app}),
                );
                self.note_hello(conn, app, &out);
                out
            }
            Op::Resume(i, from) => {
                let (Some((conn, _)), Some((_, Some((sid, app, secret))))) =
                    (self.conn(i), self.conn(from))
                else {
                    return Vec::new();
                };
                let out = self.send(
                    conn,
                    json!({"type":"hello","protocol":PROTOCOL_VERSION,"app_id":app,
                        "resume":{"session_id":sid,"secret":secret}}),
                );
                self.note_hello(conn, app, &out);
                out
            }
            Op::Login(i, r, u, cred) => {
                let Some((conn, hello)) = self.conn(i) else {
                    return Vec::new();
                };
                let app = hello.map_or(1, |h| h.1);
                let (room, user) = (ROOMS[r], USERS[u]);
                let mut body = json!({"type":"login","room_id":room,"user":{"user_id":user},
                    "is_user_status_notify":true});
                match &cred {
                    Cred::AppSign => {
                        body["app_sign"] = json!(self.signs[(app as usize - 1).min(1)].to_hex())
                    }
                    Cred::WrongSign => body["app_sign"] = json!(AppSign::random().to_hex()),
                    _ => {
                        if let Some(t) = self.token(app, user, room, &cred) {
                            body["token"] = json!(t);
                        }
                    }
                }
                self.send(conn, body)
            }
            Op::Logout(i, r) => match self.conn(i) {
                Some((conn, _)) => self.send(conn, json!({"type":"logout","room_id":ROOMS[r]})),
                None => Vec::new(),
            },
            Op::Publish(i, r, s, media) => match self.conn(i) {
                Some((conn, _)) => {
                    let mut body =
                        json!({"type":"publish","room_id":ROOMS[r],"stream_id":STREAMS[s]});
                    if media {
                        body["sdp"] = json!("offer");
                    }
                    self.send(conn, body)
                }
                None => Vec::new(),
            },
            Op::Flow(s) => {
                let mut out = self.state.stream_flowing(1, STREAMS[s]);
                out.extend(self.state.stream_flowing(2, STREAMS[s]));
                out
            }
            Op::Answer(i, ok) => {
                if self.held.is_empty() {
                    return Vec::new();
                }
                let n = self.held.swap_remove(i % self.held.len());
                let Output::Negotiate {
                    conn,
                    request_id,
                    session,
                    app_id,
                    stream_id,
                    publish,
                    ..
                } = n
                else {
                    return Vec::new();
                };
                let answer = if ok {
                    Ok("answer".into())
                } else {
                    Err("failed".into())
                };
                self.state.negotiated(
                    conn, request_id, session, app_id, &stream_id, publish, answer,
                )
            }
            Op::Play(i, s) => match self.conn(i) {
                Some((conn, _)) => self.send(
                    conn,
                    json!({"type":"play","stream_id":STREAMS[s],"sdp":"offer"}),
                ),
                None => Vec::new(),
            },
            Op::StopPlay(i, s) => match self.conn(i) {
                Some((conn, _)) => {
                    self.send(conn, json!({"type":"stop_play","stream_id":STREAMS[s]}))
                }
                None => Vec::new(),
            },
            Op::StopPublish(i, s) => match self.conn(i) {
                Some((conn, _)) => {
                    self.send(conn, json!({"type":"stop_publish","stream_id":STREAMS[s]}))
                }
                None => Vec::new(),
            },
            Op::Renew(i, r, ttl) => {
                let Some((conn, hello)) = self.conn(i) else {
                    return Vec::new();
                };
                let app = hello.as_ref().map_or(1, |h| h.1);
                // The user the session is in that room as, if any.
                let user = hello
                    .and_then(|h| self.state.sessions.get(&h.0))
                    .and_then(|s| s.rooms.get(ROOMS[r]))
                    .map_or_else(|| USERS[0].to_string(), |m| m.user.user_id.clone());
                let t = self
                    .token(app, &user, ROOMS[r], &Cred::Token(ttl, true, false, false))
                    .unwrap_or_default();
                self.send(
                    conn,
                    json!({"type":"renew_token","room_id":ROOMS[r],"token":t}),
                )
            }
            Op::Heartbeat(i) => match self.conn(i) {
                Some((conn, _)) => self.send(conn, json!({"type":"heartbeat"})),
                None => Vec::new(),
            },
            Op::Tick(ms, s) => {
                self.now += Duration::from_millis(ms);
                self.clock += s;
                self.state.set_clock(Some(self.clock));
                self.state.tick(self.now)
            }
            Op::Close(i) => {
                if let Some((conn, _)) = self.conn(i) {
                    self.state.close_conn(conn, self.now);
                    self.conns.retain(|(c, _)| *c != conn);
                }
                Vec::new()
            }
            Op::Garbage(i, bytes) => match self.conn(i) {
                Some((conn, _)) => {
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    let mut out = self.state.on_text(conn, &text, self.now);
                    if bytes.first() == Some(&0) {
                        out.extend(self.state.on_binary(conn, self.now));
                    }
                    out
                }
                None => Vec::new(),
            },
            Op::HttpBegin(u, r, s, publish, app) => {
                let cred = Cred::Token(3600, publish, false, false);
                let t = self
                    .token(app, USERS[u], ROOMS[r], &cred)
                    .unwrap_or_default();
                let ip = std::net::IpAddr::from([10, 0, 1, u as u8]);
                match self.state.http_begin_from(
                    Some(ip),
                    &t,
                    ROOMS[r],
                    STREAMS[s],
                    publish,
                    self.now,
                ) {
                    Ok((sid, secret, app_id, out)) => {
                        // The glue negotiates; say how it went at once.
                        let mut out = out;
                        out.extend(self.state.negotiated(
                            0,
                            0,
                            sid,
                            app_id,
                            STREAMS[s],
                            publish,
                            Ok("answer".into()),
                        ));
                        self.http.push((sid, secret, app_id));
                        out
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::HttpEnd(i, right) => {
                if self.http.is_empty() {
                    return Vec::new();
                }
                let (sid, secret, _) = self.http.swap_remove(i % self.http.len());
                let secret = if right { secret } else { "wrong".into() };
                self.state.http_end(sid, &secret).1
            }
            Op::MediaFailed(app, s) => self.state.media_failed(app as u32, STREAMS[s], "failed"),
            Op::Message(i, r, kind, len) => match self.conn(i) {
                Some((conn, _)) => {
                    let kind = ["broadcast", "barrage", "custom"][kind as usize % 3];
                    let to: Vec<&str> = if len % 2 == 0 {
                        vec![]
                    } else {
                        vec![USERS[len % USERS.len()]]
                    };
                    self.send(
                        conn,
                        json!({"type":"send_message","room_id":ROOMS[r],"kind":kind,
                            "text":"m".repeat(len),"to_users":to}),
                    )
                }
                None => Vec::new(),
            },
            Op::ExtraInfo(i, r, k, len) => match self.conn(i) {
                // Odd keys: a stream's extra info instead.
                Some((conn, _)) if k % 2 == 1 => self.send(
                    conn,
                    json!({"type":"set_stream_extra_info","stream_id":STREAMS[k % STREAMS.len()],
                        "extra_info":"e".repeat(len / 4)}),
                ),
                Some((conn, _)) => self.send(
                    conn,
                    json!({"type":"set_room_extra_info","room_id":ROOMS[r],
                        "key":format!("k{k}"),"value":"v".repeat(len)}),
                ),
                None => Vec::new(),
            },
            Op::Mute(i, s, audio, video) => match self.conn(i) {
                Some((conn, _)) => self.send(
                    conn,
                    json!({"type":"set_stream_mute","stream_id":STREAMS[s],
                        "audio_muted":audio,"video_muted":video}),
                ),
                None => Vec::new(),
            },
            Op::Quality(i, q) => match self.conn(i) {
                Some((conn, _)) => {
                    self.send(conn, json!({"type":"report_network_quality","upstream":q}))
                }
                None => Vec::new(),
            },
            Op::PlayerFailed(i, s) => match self.conn(i) {
                Some((_, Some((sid, app, _)))) => {
                    self.state.player_failed(app, STREAMS[s], sid, "failed")
                }
                _ => Vec::new(),
            },
        }
    }

    fn note_hello(&mut self, conn: ConnId, app: u32, out: &[Output]) {
        if let Some(Ok(ResponseBody::Hello {
            session_id,
            resume_secret,
            ..
        })) = response(out, conn)
            && let Some(c) = self.conns.iter_mut().find(|(c, _)| *c == conn)
        {
            c.1 = Some((session_id, app, resume_secret));
        }
    }

    /// (app, room) → member sessions, now.
    fn members(&self) -> BTreeSet<(u32, String, SessionId)> {
        let mut m = BTreeSet::new();
        for (app_id, app) in &self.state.apps {
            for (room_id, room) in &app.rooms {
                for sid in room.members.values() {
                    m.insert((*app_id, room_id.clone(), *sid));
                }
            }
        }
        m
    }
}

/// Checks one step's outputs against the room rule: a room event goes only to sessions that
/// were members of that room before or after the step.
fn room_events_reach_members(
    world: &World,
    before: &BTreeSet<(u32, String, SessionId)>,
    conn_sessions: &std::collections::HashMap<ConnId, (SessionId, u32)>,
    out: &[Output],
) {
    let after = world.members();
    for o in out {
        let Output::Send { to, msg } = o else {
            continue;
        };
        let room_id = match msg {
            ServerMessage::UserUpdate { room_id, .. }
            | ServerMessage::StreamUpdate { room_id, .. }
            | ServerMessage::RoomMessages { room_id, .. }
            | ServerMessage::CustomCommand { room_id, .. }
            | ServerMessage::RoomExtraInfoUpdate { room_id, .. }
            | ServerMessage::StreamExtraInfoUpdate { room_id, .. }
            | ServerMessage::StreamMuteUpdate { room_id, .. }
            | ServerMessage::NetworkQuality { room_id, .. } => room_id,
            _ => continue,
        };
        for conn in to {
            let Some((sid, app)) = conn_sessions.get(conn).copied().or_else(|| {
                let s = world.state.conns.get(conn)?.session?;
                Some((s, world.state.sessions.get(&s)?.app_id))
            }) else {
                panic!("room event for {room_id} to connection {conn} without a session");
            };
            let key = (app, room_id.clone(), sid);
            assert!(
                before.contains(&key) || after.contains(&key),
                "room event of {room_id} to session {sid}, never a member"
            );
        }
    }
}

/// `/metrics` says what the state holds.
fn metrics_agree(state: &RelayState) {
    let g = state.gauges();
    let text = crate::metrics::render(&state.counters, &g);
    let value = |name: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(value("onair_connections"), state.conns.len());
    assert_eq!(value("onair_sessions"), state.sessions.len());
    let memberships: usize = state.sessions.values().map(|s| s.rooms.len()).sum();
    assert_eq!(value("onair_users"), memberships);
    let rooms: usize = state.apps.values().map(|a| a.rooms.len()).sum();
    assert_eq!(value("onair_rooms"), rooms);
    let plays: usize = state.sessions.values().map(|s| s.playing.len()).sum();
    assert_eq!(value("onair_players"), plays);
    let streams: usize = state.apps.values().map(|a| a.streams.len()).sum();
    assert_eq!(value("onair_streams"), streams);
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_sequence_keeps_every_rule(ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World::new();
        for op in &ops {
            let before = w.members();
            let conn_sessions: std::collections::HashMap<ConnId, (SessionId, u32)> = w
                .state
                .conns
                .iter()
                .filter_map(|(c, k)| {
                    let sid = k.session?;
                    Some((*c, (sid, w.state.sessions.get(&sid)?.app_id)))
                })
                .collect();
            let out = w.apply(op);
            w.held.extend(negotiations(&out));
            // Negotiations for sessions that are gone are still answered (the SFU is slow).
            w.state.check_invariants();
            room_events_reach_members(&w, &before, &conn_sessions, &out);
            metrics_agree(&w.state);
            // Closed connections are gone from the world's list.
            let live: BTreeSet<ConnId> = w.state.conns.keys().copied().collect();
            w.conns.retain(|(c, _)| live.contains(c));
        }
    }
}
