//! The invariant under many sequences: the stream registry, the rooms' listings, the owners'
//! memberships and the players' plays stay in step through publishing, playing, stopping,
//! leaving, kick-out, session removal, media failures and WHIP/WHEP.

use super::*;

#[test]
fn the_registry_stays_in_step_through_publish_play_and_stop() {
    let mut h = Harness::cross_room();
    let host = h.client();
    let watcher = h.client();
    let viewer = h.client();
    h.login(host, "r1", "host");
    h.login(watcher, "r1", "w");
    h.login(viewer, "r2", "v");
    h.check();

    let out = h.publish(host, "r1", "sig");
    assert!(matches!(
        response(&out, host.conn),
        Some(Ok(ResponseBody::Publish { .. }))
    ));
    h.check();
    // Publishing the same stream again is idempotent and answers with the same stream.
    let again = h.publish(host, "r1", "sig");
    assert_eq!(response(&again, host.conn), response(&out, host.conn));
    h.check();

    // A media stream is registered but unlisted until it flows; nobody may play it yet.
    let out = h.publish_media(host, "r1", "cam");
    let pending = negotiations(&out);
    assert_eq!(pending.len(), 1);
    h.check();
    assert_eq!(listed(&h.login(watcher, "r1", "w"), watcher.conn), ["sig"]);
    assert_eq!(
        error_code(&h.play(watcher, "cam"), watcher.conn),
        Some(ErrorCode::StreamNotFound.code())
    );
    assert_eq!(
        error_code(&h.publish(viewer, "r2", "cam"), viewer.conn),
        Some(ErrorCode::StreamIdTaken.code())
    );
    h.check();
    let out = h.complete(&pending[0], Ok("answer"));
    assert!(matches!(
        response(&out, host.conn),
        Some(Ok(ResponseBody::Publish { sdp: Some(_), .. }))
    ));
    h.check();
    assert_eq!(
        sent(&h.state.stream_flowing(1, "cam")),
        [(watcher.conn, "stream_update".to_string())]
    );
    assert!(
        h.state.stream_flowing(1, "cam").is_empty(),
        "announced once"
    );
    h.check();
    assert_eq!(
        listed(&h.login(watcher, "r1", "w"), watcher.conn),
        ["cam", "sig"]
    );

    // Players from the stream's room and from another room.
    h.play_answered(watcher, "cam");
    h.check();
    h.play_answered(viewer, "cam");
    h.check();
    assert_eq!(h.players("cam"), [watcher.sid, viewer.sid]);
    // Playing again replaces the old play.
    let out = h.play_answered(watcher, "cam");
    assert!(sent(&out).contains(&(0, "end_play".to_string())));
    assert_eq!(h.players("cam"), [watcher.sid, viewer.sid]);
    h.check();
    // A signaling-only stream has no media to play.
    assert_eq!(
        error_code(&h.play(viewer, "sig"), viewer.conn),
        Some(ErrorCode::StreamNotFound.code())
    );
    h.check();

    let out = h.request(watcher, json!({"type":"stop_play","stream_id":"cam"}));
    assert!(matches!(response(&out, watcher.conn), Some(Ok(_))));
    assert!(h.playing(watcher).is_empty());
    assert_eq!(h.players("cam"), [viewer.sid]);
    h.check();
    let out = h.request(watcher, json!({"type":"stop_play","stream_id":"cam"}));
    assert_eq!(
        error_code(&out, watcher.conn),
        Some(ErrorCode::StreamNotFound.code())
    );
    let out = h.request(viewer, json!({"type":"stop_publish","stream_id":"cam"}));
    assert_eq!(
        error_code(&out, viewer.conn),
        Some(ErrorCode::NotPublishing.code())
    );
    h.check();

    // The stream ends: its media, its player and its room hear of it.
    let s = sent(&h.request(host, json!({"type":"stop_publish","stream_id":"cam"})));
    assert!(s.contains(&(0, "end_media".to_string())), "{s:?}");
    assert!(
        s.contains(&(viewer.conn, "play_stopped".to_string())),
        "{s:?}"
    );
    assert!(
        s.contains(&(watcher.conn, "stream_update".to_string())),
        "{s:?}"
    );
    assert!(h.playing(viewer).is_empty());
    assert_eq!(h.state.gauges().streams, 1);
    h.check();
    h.request(host, json!({"type":"stop_publish","stream_id":"sig"}));
    assert_eq!(h.state.gauges().streams, 0);
    h.check();
}

#[test]
fn snapshots_list_others_announced_streams_sorted_by_id() {
    let mut h = Harness::roomy();
    let host = h.client();
    let other = h.client();
    h.login(host, "r1", "host");
    h.login(other, "r1", "other");
    for id in ["c", "a", "b"] {
        h.publish(host, "r1", id);
    }
    h.publish_media(host, "r1", "d");
    h.publish(other, "r1", "e");
    h.check();
    let late = h.client();
    assert_eq!(
        listed(&h.login(late, "r1", "late"), late.conn),
        ["a", "b", "c", "e"]
    );
    // A resync leaves out the session's own streams.
    assert_eq!(listed(&h.login(host, "r1", "host"), host.conn), ["e"]);
    h.state.stream_flowing(1, "d");
    assert_eq!(
        listed(&h.login(late, "r1", "late"), late.conn),
        ["a", "b", "c", "d", "e"]
    );
    h.check();
}

#[test]
fn the_registry_stays_in_step_when_publishers_leave_or_are_kicked() {
    let mut h = Harness::cross_room();
    let host = h.client();
    let player = h.client();
    h.login(host, "r1", "host");
    h.login(host, "r2", "host");
    h.login(player, "r2", "p");
    h.publish_flowing(host, "r1", "a");
    h.publish(host, "r2", "b");
    h.publish(host, "r1", "c");
    h.publish_flowing(host, "r2", "d");
    h.check();
    h.play_answered(player, "a");
    h.play_answered(player, "d");
    h.check();
    assert_eq!(h.state.gauges().streams, 4);

    // Leaving r1 ends only r1's streams.
    let out = h.request(host, json!({"type":"logout","room_id":"r1"}));
    let s = sent(&out);
    assert!(
        s.contains(&(player.conn, "play_stopped".to_string())),
        "{s:?}"
    );
    assert_eq!(h.playing(player), ["d"]);
    assert_eq!(h.state.gauges().streams, 2);
    assert_eq!(h.state.gauges().rooms, 1, "r1 emptied and went");
    h.check();
    let out = h.request(host, json!({"type":"logout","room_id":"r1"}));
    assert_eq!(
        error_code(&out, host.conn),
        Some(ErrorCode::NotLoggedIn.code())
    );

    // The same user again from another session: the old one's streams in r2 end.
    let again = h.client();
    let out = h.login(again, "r2", "host");
    let s = sent(&out);
    assert!(s.contains(&(host.conn, "kicked".to_string())), "{s:?}");
    assert!(
        s.contains(&(player.conn, "play_stopped".to_string())),
        "{s:?}"
    );
    assert!(h.playing(player).is_empty());
    assert_eq!(h.state.gauges().streams, 0);
    h.check();
    // The IDs are free again, for the new session.
    h.publish_flowing(again, "r2", "d");
    h.play_answered(player, "d");
    assert_eq!(h.players("d"), [player.sid]);
    h.check();
    // The player leaves its only room: even cross-room play needs a room, so its play ends.
    let out = h.request(player, json!({"type":"logout","room_id":"r2"}));
    assert!(sent(&out).contains(&(player.conn, "play_stopped".to_string())));
    assert!(h.playing(player).is_empty());
    h.check();
}

#[test]
fn the_registry_stays_in_step_when_sessions_or_media_go() {
    let mut h = Harness::cross_room();
    let host = h.client();
    let player = h.client();
    let quitter = h.client();
    h.login(host, "r1", "host");
    h.login(player, "r1", "p");
    h.login(quitter, "r2", "q");
    h.publish_flowing(host, "r1", "s");
    h.publish_flowing(quitter, "r2", "t");
    h.play_answered(player, "s");
    h.play_answered(player, "t");
    h.play_answered(quitter, "s");
    h.check();

    // The quitter's connection closes and its session expires: its stream and play go.
    h.state.close_conn(quitter.conn, h.now);
    h.check();
    h.now += Duration::from_millis(1500);
    h.request(host, json!({"type":"heartbeat"}));
    h.request(player, json!({"type":"heartbeat"}));
    let s = sent(&h.state.tick(h.now));
    assert!(
        s.contains(&(player.conn, "play_stopped".to_string())),
        "{s:?}"
    );
    assert_eq!(h.players("s"), [player.sid]);
    assert_eq!(h.playing(player), ["s"]);
    assert_eq!(h.state.gauges().sessions, 2);
    h.check();

    // An engine player's connection fails: only its play goes.
    let s = sent(&h.state.player_failed(1, "s", player.sid, "ice failed"));
    assert_eq!(s, [(0, "end_play".to_string())]);
    assert!(h.players("s").is_empty());
    h.check();
    // A failed play negotiation unregisters the play.
    let out = h.play(player, "s");
    assert_eq!(h.players("s"), [player.sid]);
    h.check();
    let out = h.answer(out, Err("no codec"));
    assert_eq!(
        error_code(&out, player.conn),
        Some(ErrorCode::PlayNegotiationFailed.code())
    );
    assert!(h.players("s").is_empty());
    h.check();

    // A play answered after its stream ended is refused and unregistered.
    let out = h.play(player, "s");
    h.request(host, json!({"type":"stop_publish","stream_id":"s"}));
    h.check();
    let out = h.answer(negotiations(&out), Ok("answer"));
    assert_eq!(
        error_code(&out, player.conn),
        Some(ErrorCode::StreamNotFound.code())
    );
    assert!(h.playing(player).is_empty());
    h.check();

    // A failed publish negotiation ends the stream it registered.
    let out = h.publish_media(host, "r1", "s");
    assert_eq!(h.state.gauges().streams, 1);
    let out = h.answer(out, Err("bad offer"));
    assert_eq!(
        error_code(&out, host.conn),
        Some(ErrorCode::MediaNegotiationFailed.code())
    );
    assert_eq!(h.state.gauges().streams, 0);
    h.check();
    // A publish answered after its stream ended is refused and its media closed.
    let out = h.publish_media(host, "r1", "s");
    h.request(host, json!({"type":"logout","room_id":"r1"}));
    h.check();
    let s = sent(&h.answer(negotiations(&out), Ok("answer")));
    assert!(s.contains(&(0, "end_media".to_string())), "{s:?}");
    h.check();

    // A publisher's media fails: the stream ends, its players stop, the publisher hears.
    h.login(host, "r1", "host");
    h.publish_flowing(host, "r1", "s");
    h.play_answered(player, "s");
    h.check();
    let s = sent(&h.state.media_failed(1, "s", "dtls failed"));
    assert!(
        s.contains(&(host.conn, "publish_stopped".to_string())),
        "{s:?}"
    );
    assert!(h.playing(player).is_empty());
    assert_eq!(h.state.gauges().streams, 0);
    h.check();
}

#[test]
fn the_registry_stays_in_step_through_whip_and_whep() {
    let mut h = Harness::roomy();
    let watcher = h.client();
    h.login(watcher, "r1", "w");
    let mint = |h: &Harness, user: &str| {
        let mut claims = Claims::new(1, user, token::unix_now(), 3600);
        claims.privilege = Privilege {
            login: true,
            publish: true,
        };
        token::mint(&claims, &h.sign)
    };

    let whip = mint(&h, "obs");
    let (publisher, secret, app_id, out) = h
        .state
        .http_begin(&whip, "r1", "live", true, h.now)
        .expect("WHIP accepted");
    assert!(
        negotiations(&out).is_empty(),
        "the caller negotiates itself"
    );
    h.check();
    h.state
        .negotiated(0, 0, publisher, app_id, "live", true, Ok("answer".into()));
    h.state.stream_flowing(1, "live");
    h.check();

    let whep = mint(&h, "browser");
    let (player, player_secret, _, _) = h
        .state
        .http_begin(&whep, "r1", "live", false, h.now)
        .expect("WHEP accepted");
    h.state
        .negotiated(0, 0, player, app_id, "live", false, Ok("answer".into()));
    assert_eq!(h.players("live"), [player]);
    h.check();
    // Sessions without sockets do not expire.
    h.now += Duration::from_millis(5000);
    h.request(watcher, json!({"type":"heartbeat"}));
    h.state.tick(h.now);
    assert_eq!(h.state.gauges().sessions, 3);
    h.check();

    // The same stream twice is refused, and the failed session leaves nothing behind.
    let again = mint(&h, "obs2");
    let refused = h.state.http_begin(&again, "r1", "live", true, h.now);
    assert!(matches!(refused, Err(e) if e.code == ErrorCode::StreamIdTaken.code()));
    assert_eq!(h.state.gauges().sessions, 3);
    h.check();

    // A WHEP player whose connection fails is removed; a wrong secret removes nothing.
    h.state.player_failed(1, "live", player, "closed");
    assert!(h.players("live").is_empty());
    assert!(!h.state.http_end(player, &player_secret).0);
    assert!(!h.state.http_end(publisher, "wrong").0);
    h.check();
    let (found, out) = h.state.http_end(publisher, &secret);
    assert!(found);
    assert!(sent(&out).contains(&(watcher.conn, "stream_update".to_string())));
    assert_eq!(h.state.gauges().streams, 0);
    assert_eq!(h.state.gauges().sessions, 1);
    h.check();
}

/// A small deterministic pseudo-random source (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[test]
fn random_sequences_keep_the_registry_in_step() {
    const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
    const ROOMS: [&str; 2] = ["r0", "r1"];
    const STREAMS: [&str; 5] = ["s0", "s1", "s2", "s3", "s4"];
    for seed in [1, 2, 3, 0x5eed, 0xdead_beef] {
        // Half the runs in an app that allows cross-room play.
        let mut h = if seed % 2 == 0 {
            Harness::cross_room()
        } else {
            Harness::roomy()
        };
        let mut rng = Rng(seed);
        let mut clients: Vec<Client> = Vec::new();
        // Negotiations the SFU has not answered yet.
        let mut held: Vec<Output> = Vec::new();
        for step in 0..1500 {
            if clients.is_empty() {
                let c = h.client();
                clients.push(c);
            }
            let c = clients[rng.below(clients.len())];
            let room = rng.pick(&ROOMS);
            let op = rng.below(24);
            // Mostly a registered stream (a pending one to flow, a flowing one to play).
            let wanted = match op {
                10..=12 => Some(Some(Media::Pending)),
                13..=17 => Some(Some(Media::Flowing)),
                _ => None,
            };
            let registered: Vec<String> = h.state.apps.get(&1).map_or_else(Vec::new, |a| {
                a.streams
                    .iter()
                    .filter(|(_, e)| wanted.is_none_or(|m| e.media == m))
                    .map(|(id, _)| id.clone())
                    .collect()
            });
            let stream = if registered.is_empty() || rng.below(4) == 0 {
                rng.pick(&STREAMS).to_string()
            } else {
                registered[rng.below(registered.len())].clone()
            };
            let out = match op {
                0 if clients.len() < 6 => {
                    let c = h.client();
                    clients.push(c);
                    Vec::new()
                }
                0..=3 => {
                    let user = rng.pick(&USERS);
                    h.login(c, room, user)
                }
                4 => h.request(c, json!({"type":"logout","room_id":room})),
                5 | 6 => h.publish(c, room, &stream),
                7..=9 => h.publish_media(c, room, &stream),
                10..=12 => h.state.stream_flowing(1, &stream),
                13..=17 => h.play(c, &stream),
                18 => h.request(c, json!({"type":"stop_play","stream_id":stream})),
                19 => h.request(c, json!({"type":"stop_publish","stream_id":stream})),
                20 => h.state.media_failed(1, &stream, "failed"),
                21 => h.state.player_failed(1, &stream, c.sid, "failed"),
                22 if rng.below(3) == 0 => {
                    // A connection goes; its session expires while the others beat.
                    h.state.close_conn(c.conn, h.now);
                    clients.retain(|k| *k != c);
                    h.now += Duration::from_millis(1500);
                    for k in clients.clone() {
                        h.request(k, json!({"type":"heartbeat"}));
                    }
                    h.state.tick(h.now)
                }
                _ => Vec::new(),
            };
            held.extend(negotiations(&out));
            // The SFU answers some held negotiations, in any order, some with failure.
            while !held.is_empty() && rng.below(3) > 0 {
                let n = held.swap_remove(rng.below(held.len()));
                let answer = if rng.below(5) == 0 {
                    Err("failed")
                } else {
                    Ok("answer")
                };
                h.complete(&n, answer);
                h.state.check_invariants();
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.check()));
            assert!(result.is_ok(), "seed {seed}, step {step}, op {op}");
        }
        assert!(h.state.counters.messages_in > 1000);
    }
}

#[test]
fn a_player_that_logs_out_stops_playing_at_once_and_goes_with_its_connection() {
    let mut h = Harness::roomy();
    let host = h.client();
    let player = h.client();
    h.login(host, "r1", "host");
    h.login(player, "r1", "p");
    h.publish_flowing(host, "r1", "s");
    h.play_answered(player, "s");
    let out = h.request(player, json!({"type":"logout","room_id":"r1"}));
    assert!(
        sent(&out).contains(&(0, "end_play".to_string())),
        "the SFU hears the play end"
    );
    let stopped = out.iter().find_map(|o| match o {
        Output::Send {
            msg: ServerMessage::PlayStopped { code, .. },
            to,
        } if to == &[player.conn] => Some(*code),
        _ => None,
    });
    assert_eq!(stopped, Some(ErrorCode::PlayNotAuthorized.code()));
    assert!(h.players("s").is_empty());
    h.check();
    // A session in no room and playing nothing goes with its connection.
    h.state.close_conn(player.conn, h.now);
    assert_eq!(h.state.gauges().sessions, 1);
    h.check();
}
