//! Unit tests of the state machine, driven through its public entry points, with a check that
//! the stream registry, the rooms and the sessions agree after every step.

use std::collections::{BTreeMap, BTreeSet};

use onair_protocol::messages::PROTOCOL_VERSION;
use onair_protocol::token::{self, AppSign, Claims, Privilege};
use serde_json::json;

use super::stream::Media;
use super::*;

mod cluster;
mod invariants;
mod properties;
mod room_data;
mod security;

impl RelayState {
    /// Panics unless every stream entry, room listing, membership and play agree: each entry's
    /// owner exists and lists it in its membership of the entry's room, that room lists it, each
    /// player plays it (and each play has its entry), rooms list exactly the entries naming them,
    /// and the gauges count the entries.
    fn check_invariants(&self) {
        let mut entries = 0;
        for (&app_id, app) in &self.apps {
            entries += app.streams.values().filter(|e| e.origin.is_none()).count();
            for (id, e) in &app.streams {
                assert_eq!(&e.info.stream_id, id);
                if e.origin.is_some() {
                    // Another node's stream: no local owner; its room (with local members)
                    // lists it.
                    assert_eq!(e.owner, super::cluster::REMOTE_OWNER);
                    let room = app.rooms.get(&e.room_id).unwrap_or_else(|| {
                        panic!("remote stream {id}: room {} is gone", e.room_id)
                    });
                    assert!(room.streams.contains(id), "remote stream {id}: not listed");
                    continue;
                }
                let owner = self
                    .sessions
                    .get(&e.owner)
                    .unwrap_or_else(|| panic!("stream {id}: owner {} is gone", e.owner));
                assert_eq!(owner.app_id, app_id, "stream {id}: owner in another app");
                let m = owner.rooms.get(&e.room_id).unwrap_or_else(|| {
                    panic!("stream {id}: owner {} not in room {}", e.owner, e.room_id)
                });
                assert!(
                    m.streams.contains(id),
                    "stream {id}: owner does not list it"
                );
                assert_eq!(
                    m.user.user_id, e.info.user.user_id,
                    "stream {id}: publisher"
                );
                let room = app
                    .rooms
                    .get(&e.room_id)
                    .unwrap_or_else(|| panic!("stream {id}: room {} is gone", e.room_id));
                assert!(
                    room.streams.contains(id),
                    "stream {id}: room does not list it"
                );
                if !e.players.is_empty() {
                    assert_eq!(
                        e.media,
                        Some(Media::Flowing),
                        "stream {id}: played unflowing"
                    );
                }
                for p in &e.players {
                    let s = self
                        .sessions
                        .get(p)
                        .unwrap_or_else(|| panic!("stream {id}: player {p} is gone"));
                    assert_eq!(s.app_id, app_id);
                    assert!(
                        s.playing.contains(id),
                        "stream {id}: player {p} not playing"
                    );
                }
            }
            let mut seats = 0;
            for (room_id, room) in &app.rooms {
                assert!(!room.members.is_empty(), "room {room_id}: empty but kept");
                seats += room.members.len();
                let named: BTreeSet<&String> = app
                    .streams
                    .iter()
                    .filter(|(_, e)| &e.room_id == room_id)
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(
                    room.streams.iter().collect::<BTreeSet<_>>(),
                    named,
                    "room {room_id}: listing"
                );
                for (uid, sid) in &room.members {
                    let m = self
                        .sessions
                        .get(sid)
                        .and_then(|s| s.rooms.get(room_id))
                        .unwrap_or_else(|| panic!("room {room_id}: member {sid} has no seat"));
                    assert_eq!(&m.user.user_id, uid);
                }
            }
            assert_eq!(app.seats, seats, "seats");
        }
        for (&app_id, app) in &self.apps {
            let mut users: std::collections::HashMap<String, BTreeMap<SessionId, usize>> =
                Default::default();
            for room in app.rooms.values() {
                for (uid, sid) in &room.members {
                    *users
                        .entry(uid.clone())
                        .or_default()
                        .entry(*sid)
                        .or_default() += 1;
                }
            }
            assert_eq!(app.users, users, "app {app_id}: user index");
            let http = self
                .sessions
                .values()
                .filter(|s| s.app_id == app_id && s.http)
                .count();
            assert_eq!(app.http_sessions, http, "app {app_id}: WHIP/WHEP sessions");
        }
        let mut by_ip: std::collections::HashMap<std::net::IpAddr, usize> = Default::default();
        for ip in self.conns.values().filter_map(|c| c.ip) {
            *by_ip.entry(ip).or_default() += 1;
        }
        for ip in self
            .sessions
            .values()
            .filter(|s| s.http)
            .filter_map(|s| s.ip)
        {
            *by_ip.entry(ip).or_default() += 1;
        }
        assert_eq!(self.by_ip, by_ip, "connections by address");
        assert_eq!(
            self.http_total,
            self.sessions.values().filter(|s| s.http).count(),
            "WHIP/WHEP sessions"
        );
        for (sid, s) in &self.sessions {
            let app = self.apps.get(&s.app_id).expect("session of a known app");
            assert!(
                s.playing.len() <= self.limits.max_plays_per_session,
                "session {sid}: too many plays"
            );
            for id in &s.playing {
                let e = app
                    .streams
                    .get(id)
                    .unwrap_or_else(|| panic!("session {sid} plays missing stream {id}"));
                assert!(
                    e.players.contains(sid),
                    "stream {id}: player {sid} not listed"
                );
                assert!(
                    self.may_play(*sid, s.app_id, &e.room_id),
                    "session {sid} plays {id} of a room it may not play from"
                );
            }
            for (room_id, m) in &s.rooms {
                let seat = app
                    .rooms
                    .get(room_id)
                    .and_then(|r| r.members.get(&m.user.user_id));
                assert_eq!(seat, Some(sid), "session {sid}: seat in {room_id}");
                for id in &m.streams {
                    let e = app
                        .streams
                        .get(id)
                        .unwrap_or_else(|| panic!("session {sid} lists missing stream {id}"));
                    assert_eq!((e.owner, &e.room_id), (*sid, room_id), "stream {id}");
                }
            }
        }
        assert_eq!(self.gauges().streams, entries, "gauged streams");
    }
}

/// A client that said hello: its connection and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Client {
    conn: ConnId,
    sid: SessionId,
}

struct Harness {
    state: RelayState,
    sign: AppSign,
    now: Instant,
    next_id: u64,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let sign = AppSign::random();
        let mut config = RelayConfig::single_app(1, sign.clone());
        config.limits = limits;
        Harness {
            state: RelayState::new(config),
            sign,
            now: Instant::now(),
            next_id: 100,
        }
    }

    /// Limits no test sequence runs into (but the heartbeat timeout).
    fn roomy() -> Self {
        Harness::new(Limits {
            requests_per_second: 1e9,
            request_burst: 1e9,
            max_consecutive_errors: u32::MAX,
            heartbeat_timeout_ms: 1000,
            ..Limits::default()
        })
    }

    fn send(&mut self, conn: ConnId, json: serde_json::Value) -> Vec<Output> {
        self.state.on_text(conn, &json.to_string(), self.now)
    }

    fn join(&mut self, room: &str, user: &str, notify: bool) -> ConnId {
        let conn = self.state.open_conn(self.now);
        self.send(
            conn,
            serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
        );
        let sign = self.sign.to_hex();
        self.send(
            conn,
            serde_json::json!({"id":2,"type":"login","room_id":room,"user":{"user_id":user},
                "app_sign":sign,"is_user_status_notify":notify}),
        );
        conn
    }

    /// Like [`Self::roomy`], for an app that allows cross-room play.
    fn cross_room() -> Self {
        let mut h = Harness::roomy();
        for app in h.state.apps.values_mut() {
            app.config.cross_room_play = true;
        }
        h
    }

    /// Runs the invariant check.
    fn check(&self) {
        self.state.check_invariants();
    }

    /// A new connection with a new session, in no room.
    fn client(&mut self) -> Client {
        let conn = self.state.open_conn(self.now);
        let out = self.send(
            conn,
            json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
        );
        let Some(Ok(ResponseBody::Hello { session_id, .. })) = response(&out, conn) else {
            panic!("hello refused: {out:?}");
        };
        Client {
            conn,
            sid: session_id,
        }
    }

    /// Sends `body` (a request without its id) from `c`.
    fn request(&mut self, c: Client, mut body: serde_json::Value) -> Vec<Output> {
        self.next_id += 1;
        body["id"] = json!(self.next_id);
        self.send(c.conn, body)
    }

    fn login(&mut self, c: Client, room: &str, user: &str) -> Vec<Output> {
        let sign = self.sign.to_hex();
        self.request(
            c,
            json!({"type":"login","room_id":room,"user":{"user_id":user},"app_sign":sign,
                "is_user_status_notify":true}),
        )
    }

    /// A signaling-only publish.
    fn publish(&mut self, c: Client, room: &str, stream: &str) -> Vec<Output> {
        self.request(
            c,
            json!({"type":"publish","room_id":room,"stream_id":stream}),
        )
    }

    /// A publish with an offer; the SFU's answer is left to the caller.
    fn publish_media(&mut self, c: Client, room: &str, stream: &str) -> Vec<Output> {
        self.request(
            c,
            json!({"type":"publish","room_id":room,"stream_id":stream,"sdp":"offer"}),
        )
    }

    fn play(&mut self, c: Client, stream: &str) -> Vec<Output> {
        self.request(c, json!({"type":"play","stream_id":stream,"sdp":"offer"}))
    }

    /// The SFU answers every negotiation asked for in `out` with `answer`; returns `out` and
    /// what the answers produced.
    fn answer(&mut self, mut out: Vec<Output>, answer: Result<&str, &str>) -> Vec<Output> {
        for n in negotiations(&out) {
            out.extend(self.complete(&n, answer));
        }
        out
    }

    /// The SFU answers one negotiation.
    fn complete(&mut self, n: &Output, answer: Result<&str, &str>) -> Vec<Output> {
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
            panic!("not a negotiation: {n:?}");
        };
        self.state.negotiated(
            *conn,
            *request_id,
            *session,
            *app_id,
            stream_id,
            *publish,
            answer.map(String::from).map_err(String::from),
        )
    }

    /// A media publish that is answered and flowing.
    fn publish_flowing(&mut self, c: Client, room: &str, stream: &str) -> Vec<Output> {
        let out = self.publish_media(c, room, stream);
        let mut out = self.answer(out, Ok("answer"));
        out.extend(self.state.stream_flowing(1, stream));
        out
    }

    /// A play that is answered.
    fn play_answered(&mut self, c: Client, stream: &str) -> Vec<Output> {
        let out = self.play(c, stream);
        self.answer(out, Ok("answer"))
    }

    /// The streams `c` plays, as the relay has them.
    fn playing(&self, c: Client) -> Vec<String> {
        self.state
            .sessions
            .get(&c.sid)
            .map(|s| s.playing.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The players of `stream`, as its entry has them.
    fn players(&self, stream: &str) -> Vec<SessionId> {
        self.state
            .stream(1, stream)
            .map(|e| e.players.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The negotiations asked for in `outputs`.
fn negotiations(outputs: &[Output]) -> Vec<Output> {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Negotiate { .. }))
        .cloned()
        .collect()
}

/// The last response to `conn` in `outputs`: its result, or its error code.
fn response(outputs: &[Output], conn: ConnId) -> Option<Result<ResponseBody, u32>> {
    outputs.iter().rev().find_map(|o| match o {
        Output::Send {
            to,
            msg: ServerMessage::Response { result, error, .. },
        } if to.contains(&conn) => Some(match (result, error) {
            (Some(r), _) => Ok(r.clone()),
            (None, e) => Err(e.as_ref().map_or(0, |e| e.code)),
        }),
        _ => None,
    })
}

/// The error code `outputs` answered `conn` with, if an error.
fn error_code(outputs: &[Output], conn: ConnId) -> Option<u32> {
    response(outputs, conn).and_then(|r| r.err())
}

/// The stream IDs listed by a login response.
fn listed(outputs: &[Output], conn: ConnId) -> Vec<String> {
    match response(outputs, conn) {
        Some(Ok(ResponseBody::Login { streams, .. })) => {
            streams.into_iter().map(|s| s.stream_id).collect()
        }
        other => panic!("not a login response: {other:?}"),
    }
}

/// (recipient, message type) pairs, in order.
fn sent(outputs: &[Output]) -> Vec<(ConnId, String)> {
    let mut v = Vec::new();
    for o in outputs {
        match o {
            Output::Send { to, msg } => {
                let kind = serde_json::to_value(msg)
                    .ok()
                    .and_then(|j| j["type"].as_str().map(String::from));
                for c in to {
                    v.push((*c, kind.clone().unwrap_or_default()));
                }
            }
            Output::Close { conn, .. } => v.push((*conn, "close".into())),
            Output::Negotiate { conn, .. } => v.push((*conn, "negotiate".into())),
            Output::RestartIce { conn, .. } => v.push((*conn, "restart_ice".into())),
            Output::EndMedia { .. } => v.push((0, "end_media".into())),
            Output::EndPlay { .. } => v.push((0, "end_play".into())),
            Output::SetLayer { .. } => v.push((0, "set_layer".into())),
            Output::Cluster(_) => v.push((0, "cluster".into())),
        }
    }
    v
}

#[test]
fn an_ice_restart_is_for_the_sessions_own_publish_or_play_only() {
    let mut h = Harness::new(Limits::default());
    let host = h.client();
    h.login(host, "r", "host");
    h.publish_flowing(host, "r", "cam");
    let viewer = h.client();
    h.login(viewer, "r", "viewer");
    let restart = |h: &mut Harness, c: Client, publish: bool| {
        h.request(
            c,
            json!({"type":"restart_ice","stream_id":"cam","publish":publish,"sdp":"offer"}),
        )
    };
    let not_found = Some(ErrorCode::StreamNotFound.code());
    let out = restart(&mut h, viewer, false);
    assert_eq!(
        error_code(&out, viewer.conn),
        not_found,
        "not playing it yet"
    );
    let out = restart(&mut h, viewer, true);
    assert_eq!(
        error_code(&out, viewer.conn),
        not_found,
        "someone else's publish"
    );
    h.play_answered(viewer, "cam");
    for (c, publish, code) in [
        (viewer, false, ErrorCode::PlayNegotiationFailed),
        (host, true, ErrorCode::MediaNegotiationFailed),
    ] {
        let out = restart(&mut h, c, publish);
        assert!(
            response(&out, c.conn).is_none(),
            "answered once the SFU has"
        );
        let (conn, request_id) = out
            .iter()
            .find_map(|o| match o {
                Output::RestartIce {
                    conn,
                    request_id,
                    session,
                    stream_id,
                    publish: p,
                    ..
                } if *session == c.sid && stream_id == "cam" && *p == publish => {
                    Some((*conn, *request_id))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no restart for the SFU: {out:?}"));
        let out = h
            .state
            .ice_restarted(conn, request_id, publish, Ok("answer".into()));
        assert_eq!(
            response(&out, c.conn),
            Some(Ok(ResponseBody::IceRestarted {
                sdp: "answer".into()
            }))
        );
        let out = h
            .state
            .ice_restarted(conn, request_id, publish, Err("gone".into()));
        assert_eq!(error_code(&out, c.conn), Some(code.code()));
    }
}

#[test]
fn user_updates_reach_only_notify_members_of_the_same_room() {
    let mut h = Harness::new(Limits::default());
    let loud = h.join("r1", "loud", true);
    let quiet = h.join("r1", "quiet", false);
    let other = h.join("r2", "other", true);
    let conn = h.state.open_conn(h.now);
    h.send(
        conn,
        serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
    );
    let sign = h.sign.to_hex();
    let out = h.send(
        conn,
        serde_json::json!({"id":2,"type":"login","room_id":"r1","user":{"user_id":"new"},"app_sign":sign}),
    );
    let s = sent(&out);
    assert!(s.contains(&(conn, "response".into())));
    assert!(s.contains(&(loud, "user_update".into())));
    assert!(!s.iter().any(|(c, _)| *c == quiet || *c == other), "{s:?}");
    // Streams go to every member, notify or not.
    let out = h.send(
        conn,
        serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s"}),
    );
    let s = sent(&out);
    assert!(s.contains(&(loud, "stream_update".into())));
    assert!(s.contains(&(quiet, "stream_update".into())));
    assert!(!s.iter().any(|(c, _)| *c == other));
    assert_eq!(h.state.gauges().streams, 1);
}

#[test]
fn a_closed_connection_expires_after_the_timeout_and_frees_its_streams() {
    let mut h = Harness::new(Limits {
        heartbeat_timeout_ms: 1000,
        ..Limits::default()
    });
    let watcher = h.join("r1", "w", true);
    let gone = h.join("r1", "g", true);
    h.send(
        gone,
        serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s"}),
    );
    h.state.close_conn(gone, h.now);
    // The watcher keeps itself alive; the closed session does not.
    h.now += Duration::from_millis(600);
    h.send(watcher, serde_json::json!({"id":9,"type":"heartbeat"}));
    assert!(h.state.tick(h.now).is_empty());
    h.now += Duration::from_millis(600);
    h.send(watcher, serde_json::json!({"id":10,"type":"heartbeat"}));
    let s = sent(&h.state.tick(h.now));
    assert_eq!(
        s,
        [
            (watcher, "stream_update".into()),
            (watcher, "user_update".into())
        ]
    );
    assert_eq!(
        h.state.gauges(),
        Gauges {
            connections: 1,
            sessions: 1,
            rooms: 1,
            users: 1,
            streams: 0,
            players: 0
        }
    );
    assert_eq!(h.state.counters.heartbeat_timeouts, 1);
}

#[test]
fn the_same_user_again_kicks_the_older_session_without_a_leave() {
    let mut h = Harness::new(Limits::default());
    let watcher = h.join("r1", "w", true);
    let old = h.join("r1", "dup", true);
    let conn = h.state.open_conn(h.now);
    h.send(
        conn,
        serde_json::json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
    );
    let sign = h.sign.to_hex();
    let out = h.send(
        conn,
        serde_json::json!({"id":2,"type":"login","room_id":"r1","user":{"user_id":"dup"},"app_sign":sign}),
    );
    let s = sent(&out);
    assert!(s.contains(&(old, "kicked".into())));
    assert!(
        !s.iter().any(|(c, _)| *c == watcher),
        "no leave/join for a replaced seat: {s:?}"
    );
    assert_eq!(h.state.gauges().users, 2);
}

#[test]
fn a_media_stream_is_announced_only_once_it_flows_and_its_end_reaches_players() {
    let mut h = Harness::new(Limits::default());
    let watcher = h.join("r1", "w", false);
    let host = h.join("r1", "host", false);
    let out = h.send(
        host,
        serde_json::json!({"id":3,"type":"publish","room_id":"r1","stream_id":"s","sdp":"offer"}),
    );
    assert_eq!(
        sent(&out),
        [(host, "negotiate".to_string())],
        "no answer and no Add yet"
    );
    // Playing a stream that is not flowing yet is refused.
    let out = h.send(
        watcher,
        serde_json::json!({"id":4,"type":"play","stream_id":"s","sdp":"offer"}),
    );
    assert_eq!(sent(&out), [(watcher, "response".to_string())]);
    let out = h
        .state
        .negotiated(host, 3, 2, 1, "s", true, Ok("answer".into()));
    assert_eq!(sent(&out), [(host, "response".to_string())]);
    let out = h.state.stream_flowing(1, "s");
    assert_eq!(sent(&out), [(watcher, "stream_update".to_string())]);
    let out = h.send(
        watcher,
        serde_json::json!({"id":5,"type":"play","stream_id":"s","sdp":"offer"}),
    );
    assert_eq!(sent(&out), [(watcher, "negotiate".to_string())]);
    let out = h
        .state
        .negotiated(watcher, 5, 1, 1, "s", false, Ok("answer".into()));
    assert_eq!(sent(&out), [(watcher, "response".to_string())]);
    // The publisher's media fails: the stream ends, the player and the owner are told.
    let s = sent(&h.state.media_failed(1, "s", "ice failed"));
    assert!(s.contains(&(0, "end_media".to_string())), "{s:?}");
    assert!(s.contains(&(watcher, "play_stopped".to_string())), "{s:?}");
    assert!(s.contains(&(watcher, "stream_update".to_string())), "{s:?}");
    assert!(s.contains(&(host, "publish_stopped".to_string())), "{s:?}");
    assert_eq!(h.state.gauges().streams, 0);
}
