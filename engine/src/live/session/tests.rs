//! The publish and play session machines, step by step.

use super::*;

fn states(actions: &[Action]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(Event::PublisherStateUpdate {
                state, error_code, ..
            }) => Some((format!("{state:?}"), *error_code)),
            Action::Emit(Event::PlayerStateUpdate {
                state, error_code, ..
            }) => Some((format!("{state:?}"), *error_code)),
            _ => None,
        })
        .collect()
}

fn has(actions: &[Action], want: &Action) -> bool {
    actions.iter().any(|a| a == want)
}

fn wire(code: ErrorCode) -> WireError {
    WireError::new(code, "refused")
}

#[test]
fn publish_follows_the_seed_sequence() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, out) = PublishSession::start("s1", SessionTimers::default());
    assert_eq!(states(&out), [("PublishRequesting".into(), 0)]);
    assert!(
        p.negotiate_if_ready(false, &mut gens, t0).is_empty(),
        "not ready: wait"
    );
    let out = p.negotiate_if_ready(true, &mut gens, t0);
    assert_eq!(out, [Action::Offer { generation: 1 }]);
    assert!(
        p.negotiate_if_ready(true, &mut gens, t0).is_empty(),
        "one at a time"
    );
    assert_eq!(p.offer_ready(1), [Action::SendRequest { generation: 1 }]);
    let out = p.on_answer(1, Ok("v=0".into()), t0);
    assert_eq!(
        out,
        [Action::Accept {
            generation: 1,
            sdp: "v=0".into()
        }]
    );
    let out = p.on_peer(1, PeerLink::Up, t0);
    assert_eq!(states(&out), [("Publishing".into(), 0)]);
    assert_eq!(p.phase(), Phase::Up);
    let out = p.stop(true);
    assert!(has(&out, &Action::SendStop) && has(&out, &Action::ReleaseChannel));
    assert_eq!(states(&out), [("NoPublish".into(), 0)]);
    assert!(p.is_ended());
}

#[test]
fn a_final_refusal_ends_the_publish_with_its_code() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::StreamIdTaken)), t0);
    assert_eq!(states(&out), [("NoPublish".into(), 1003028)]);
    assert!(has(&out, &Action::ReleaseChannel) && has(&out, &Action::DropPeer));
    assert!(p.is_ended());
    assert_eq!(p.poll_timeout(), None);
    assert!(p.negotiate_if_ready(true, &mut gens, t0).is_empty());
}

#[test]
fn a_passing_refusal_retries_after_a_second_with_a_new_generation() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::Internal)), t0);
    assert_eq!(
        states(&out),
        [("PublishRequesting".into(), ErrorCode::Internal.code())]
    );
    assert_eq!(p.poll_timeout(), Some(t0 + RETRY_AFTER));
    p.handle_timeout(t0 + Duration::from_millis(999));
    assert!(
        p.negotiate_if_ready(true, &mut gens, t0).is_empty(),
        "too early"
    );
    p.handle_timeout(t0 + RETRY_AFTER);
    assert_eq!(
        p.negotiate_if_ready(true, &mut gens, t0),
        [Action::Offer { generation: 2 }]
    );
    // A late answer to the first attempt changes nothing.
    assert!(p.on_answer(1, Ok("late".into()), t0).is_empty());
    assert!(p.on_peer(1, PeerLink::Up, t0).is_empty());
    assert_eq!(p.state(), PublisherState::PublishRequesting);
}

#[test]
fn a_lost_publisher_connection_tells_the_relay_and_retries() {
    let t0 = Instant::now();
    let mut gens = 5;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    assert_eq!(p.generation(), 6, "generations are engine-wide");
    p.offer_ready(6);
    p.on_answer(6, Ok("sdp".into()), t0);
    p.on_peer(6, PeerLink::Up, t0);
    let out = p.on_peer(6, PeerLink::Down, t0);
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::MediaNegotiationFailed.code()
        )]
    );
    assert!(has(&out, &Action::DropPeer) && has(&out, &Action::SendStop));
    assert!(matches!(p.phase(), Phase::RetryAt(_)));
    // The relay's own stop after that is one more report, with its code.
    let out = p.on_relay_stopped(ErrorCode::StreamNotFound.code(), "gone", t0);
    assert_eq!(
        states(&out),
        [("PublishRequesting".into(), ErrorCode::StreamNotFound.code())]
    );
}

#[test]
fn reports_of_a_dropped_connection_change_nothing() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    // The relay ends the media before the connection reported up; we drop the peer.
    let out = p.on_relay_stopped(ErrorCode::MediaNegotiationFailed.code(), "gone", t0);
    assert!(has(&out, &Action::DropPeer));
    // The closing connection's late reports are not news.
    assert!(
        p.on_peer(1, PeerLink::Up, t0).is_empty(),
        "no Publishing without a connection"
    );
    assert!(
        p.on_peer(1, PeerLink::Down, t0).is_empty(),
        "no second loss report"
    );
    assert!(matches!(p.phase(), Phase::RetryAt(_)));

    let (mut q, _) = PlaySession::start("s1", SessionTimers::default(), t0);
    q.negotiate_if_ready(true, &mut gens, t0);
    q.offer_ready(2);
    q.on_answer(2, Ok("sdp".into()), t0);
    assert_eq!(
        states(&q.on_peer(2, PeerLink::Up, t0)),
        [("Playing".into(), 0)]
    );
    assert!(
        q.on_peer(2, PeerLink::Up, t0).is_empty(),
        "up twice is one report"
    );
    q.on_relay_stopped(ErrorCode::StreamNotFound.code(), "ended", t0);
    assert!(q.on_peer(2, PeerLink::Down, t0).is_empty());
    assert!(q.on_peer(2, PeerLink::Up, t0).is_empty());
}

#[test]
fn an_offer_that_cannot_be_made_is_retried() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    let out = p.offer_failed(1, "no interface", t0);
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::MediaNegotiationFailed.code()
        )]
    );
    assert_eq!(p.poll_timeout(), Some(t0 + RETRY_AFTER));
    let out = p.accept_failed(1, "late", t0);
    assert!(
        has(&out, &Action::DropPeer),
        "a failure of the current attempt still counts"
    );
}

#[test]
fn an_offer_for_an_old_generation_is_dropped() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    let _ = p.stop(true);
    assert_eq!(p.offer_ready(1), [Action::DropPeer]);
}

#[test]
fn play_waits_for_a_missing_stream_without_an_error_and_asks_again_when_it_appears() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, out) = PlaySession::start("s1", SessionTimers::default(), t0);
    assert_eq!(states(&out), [("PlayRequesting".into(), 0)]);
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::StreamNotFound)), t0);
    assert!(states(&out).is_empty(), "waiting is not an error");
    assert!(has(&out, &Action::DropPeer));
    p.on_stream_added();
    assert_eq!(
        p.negotiate_if_ready(true, &mut gens, t0),
        [Action::Offer { generation: 2 }]
    );
    p.offer_ready(2);
    let out = p.on_answer(2, Err(wire(ErrorCode::NotLoggedIn)), t0);
    assert_eq!(
        states(&out),
        [("PlayRequesting".into(), ErrorCode::NotLoggedIn.code())]
    );
}

#[test]
fn play_reports_playing_first_frames_and_loss() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PlaySession::start("s1", SessionTimers::default(), t0);
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    let out = p.on_peer(1, PeerLink::Up, t0);
    assert_eq!(states(&out), [("Playing".into(), 0)]);
    let out = p.on_first_video_frame(1, t0 + Duration::from_millis(33));
    assert_eq!(
        out,
        [Action::Emit(Event::PlayerRecvVideoFirstFrame {
            stream_id: "s1".into(),
            elapsed_ms: 33
        })]
    );
    assert!(p.on_first_video_frame(7, t0).is_empty(), "stale decoder");
    assert_eq!(p.on_first_audio_frame(1).len(), 1);
    // The stream ends: back to waiting, and the first-frame clock restarts.
    let t1 = t0 + Duration::from_secs(5);
    let out = p.on_relay_stopped(ErrorCode::StreamNotFound.code(), "ended", t1);
    assert_eq!(
        states(&out),
        [("PlayRequesting".into(), ErrorCode::StreamNotFound.code())]
    );
    p.handle_timeout(t1 + RETRY_AFTER);
    p.negotiate_if_ready(true, &mut gens, t1);
    p.offer_ready(2);
    p.on_answer(2, Ok("sdp".into()), t1);
    let out = p.on_first_video_frame(2, t1 + Duration::from_millis(1040));
    assert!(matches!(
        out.as_slice(),
        [Action::Emit(Event::PlayerRecvVideoFirstFrame {
            elapsed_ms: 1040,
            ..
        })]
    ));
    let out = p.stop();
    assert_eq!(states(&out), [("NoPlay".into(), 0)]);
    assert!(has(&out, &Action::SendStop));
    assert!(
        p.on_peer(2, PeerLink::Up, t1).is_empty(),
        "nothing after stop"
    );
}

#[test]
fn extended_data_is_json() {
    assert_eq!(extended_data(""), "{}");
    assert_eq!(extended_data("a\"b"), r#"{"message":"a\"b"}"#);
}

/// A publisher whose generation `gens + 1` is up (Publishing) at `now`.
fn publishing(gens: &mut u64, now: Instant) -> PublishSession {
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    connect_publisher(&mut p, gens, now);
    p
}

/// Runs the publisher's next negotiation up to Publishing at `now`.
fn connect_publisher(p: &mut PublishSession, gens: &mut u64, now: Instant) {
    p.negotiate_if_ready(true, gens, now);
    let g = p.generation();
    p.offer_ready(g);
    p.on_answer(g, Ok("sdp".into()), now);
    assert_eq!(
        states(&p.on_peer(g, PeerLink::Up, now)),
        [("Publishing".into(), 0)]
    );
}

/// A player whose generation `gens + 1` is up (Playing) at `now`.
fn playing(gens: &mut u64, now: Instant) -> PlaySession {
    let (mut p, _) = PlaySession::start("s1", SessionTimers::default(), now);
    p.negotiate_if_ready(true, gens, now);
    let g = p.generation();
    p.offer_ready(g);
    p.on_answer(g, Ok("sdp".into()), now);
    assert_eq!(
        states(&p.on_peer(g, PeerLink::Up, now)),
        [("Playing".into(), 0)]
    );
    p
}

/// How long after `now` the retry the session waits for is due.
fn retry_in(phase: Phase, now: Instant) -> Duration {
    match phase {
        Phase::RetryAt(at) => at - now,
        other => panic!("not waiting to retry: {other:?}"),
    }
}

#[test]
fn a_publisher_not_connected_within_the_timeout_fails_with_its_code_and_retries() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    // The timer counts afresh from the accepted answer.
    let t1 = t0 + Duration::from_secs(3);
    p.on_answer(1, Ok("sdp".into()), t1);
    assert_eq!(p.phase(), Phase::Connecting);
    let due = t1 + DEFAULT_CONNECT_TIMEOUT;
    assert_eq!(p.poll_timeout(), Some(due));
    assert!(p.handle_timeout(due - Duration::from_millis(1)).is_empty());
    let out = p.handle_timeout(due);
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::PublishConnectTimeout.code()
        )]
    );
    assert_eq!(ErrorCode::PublishConnectTimeout.code(), 1003021);
    assert!(has(&out, &Action::DropPeer) && has(&out, &Action::SendStop));
    assert_eq!(p.poll_timeout(), Some(due + RETRY_AFTER));
    // The given-up connection's late report is stale.
    assert!(p.on_peer(1, PeerLink::Up, due).is_empty());
    assert!(
        p.handle_timeout(due + Duration::from_millis(500))
            .is_empty()
    );
    p.handle_timeout(due + RETRY_AFTER);
    assert_eq!(
        p.negotiate_if_ready(true, &mut gens, due + RETRY_AFTER),
        [Action::Offer { generation: 2 }]
    );
}

#[test]
fn a_player_not_connected_within_the_timeout_fails_with_its_code_and_retries() {
    let t0 = Instant::now();
    let mut gens = 0;
    let timers = SessionTimers {
        connect_timeout: Duration::from_secs(3),
        ..SessionTimers::default()
    };
    let (mut p, _) = PlaySession::start("s1", timers, t0);
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    let due = t0 + Duration::from_secs(3);
    assert_eq!(p.poll_timeout(), Some(due), "the configured timeout holds");
    let out = p.handle_timeout(due);
    assert_eq!(
        states(&out),
        [(
            "PlayRequesting".into(),
            ErrorCode::PlayConnectTimeout.code()
        )]
    );
    assert_eq!(ErrorCode::PlayConnectTimeout.code(), 1004021);
    assert!(has(&out, &Action::DropPeer));
    assert!(!has(&out, &Action::SendStop), "a player just asks again");
    assert_eq!(p.poll_timeout(), Some(due + RETRY_AFTER));
    assert!(p.on_peer(1, PeerLink::Up, due).is_empty());
}

#[test]
fn a_relay_that_never_answers_cannot_keep_a_session_waiting() {
    let t0 = Instant::now();
    let due = t0 + DEFAULT_CONNECT_TIMEOUT;
    let mut gens = 0;
    // Requested: the answer never comes (say the link dropped it).
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    assert_eq!(p.poll_timeout(), Some(due));
    let out = p.handle_timeout(due);
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::PublishConnectTimeout.code()
        )]
    );
    assert!(has(&out, &Action::DropPeer) && has(&out, &Action::SendStop));
    assert!(
        p.on_answer(1, Ok("late".into()), due).is_empty(),
        "too late"
    );
    // Offering: the offer never gets made.
    let (mut q, _) = PlaySession::start("s1", SessionTimers::default(), t0);
    q.negotiate_if_ready(true, &mut gens, t0);
    assert_eq!(q.phase(), Phase::Offering);
    assert_eq!(q.poll_timeout(), Some(due));
    let out = q.handle_timeout(due);
    assert_eq!(
        states(&out),
        [(
            "PlayRequesting".into(),
            ErrorCode::PlayConnectTimeout.code()
        )]
    );
    assert!(matches!(q.phase(), Phase::RetryAt(_)));
    assert_eq!(q.offer_ready(2), [Action::DropPeer], "the late offer goes");
}

#[test]
fn a_disconnect_within_the_grace_then_up_emits_nothing() {
    let t0 = Instant::now();
    let mut gens = 0;
    let mut p = publishing(&mut gens, t0);
    let mut q = playing(&mut gens, t0);
    let t1 = t0 + Duration::from_secs(60);
    assert!(p.on_peer(1, PeerLink::Disconnected, t1).is_empty());
    assert!(q.on_peer(2, PeerLink::Disconnected, t1).is_empty());
    let grace_over = t1 + DEFAULT_DISCONNECT_GRACE;
    assert_eq!(p.phase(), Phase::Disconnected(grace_over));
    assert_eq!(
        q.poll_timeout(),
        Some(t1 + ICE_RESTART_AFTER),
        "the restart is due first"
    );
    assert_eq!(p.state(), PublisherState::Publishing, "a hiccup is no news");
    assert_eq!(q.state(), PlayerState::Playing);
    // Disconnected again does not move the deadline; time within the grace changes nothing.
    assert!(
        p.on_peer(1, PeerLink::Disconnected, t1 + Duration::from_secs(1))
            .is_empty()
    );
    assert_eq!(p.poll_timeout(), Some(t1 + ICE_RESTART_AFTER));
    assert!(p.handle_timeout(t1 + Duration::from_secs(1)).is_empty());
    let back = t1 + Duration::from_secs(1);
    assert!(p.on_peer(1, PeerLink::Up, back).is_empty());
    assert!(q.on_peer(2, PeerLink::Up, back).is_empty());
    assert_eq!((p.phase(), q.phase()), (Phase::Up, Phase::Up));
    assert_eq!((p.poll_timeout(), q.poll_timeout()), (None, None));
    assert!(p.handle_timeout(grace_over).is_empty());
    assert!(q.handle_timeout(grace_over).is_empty());
    assert_eq!(p.state(), PublisherState::Publishing);
}

#[test]
fn a_disconnect_gets_one_ice_restart_and_up_again_ends_it() {
    let t0 = Instant::now();
    let mut gens = 0;
    let mut q = playing(&mut gens, t0);
    q.on_peer(1, PeerLink::Disconnected, t0);
    assert!(
        q.handle_timeout(t0 + ICE_RESTART_AFTER - Duration::from_millis(1))
            .is_empty()
    );
    let at = t0 + ICE_RESTART_AFTER;
    assert_eq!(q.handle_timeout(at), [Action::RestartIce { generation: 1 }]);
    assert_eq!(
        q.state(),
        PlayerState::Playing,
        "a restart is no news either"
    );
    // Again every few seconds while it stays disconnected (a restart during the outage
    // spends its checks), within the one deadline the first restart set.
    assert!(q.handle_timeout(at + Duration::from_secs(2)).is_empty());
    assert_eq!(q.poll_timeout(), Some(at + ICE_RESTART_EVERY));
    assert_eq!(
        q.handle_timeout(at + ICE_RESTART_EVERY),
        [Action::RestartIce { generation: 1 }]
    );
    assert_eq!(
        q.phase(),
        Phase::Disconnected(at + DEFAULT_CONNECT_TIMEOUT),
        "later restarts do not extend the deadline"
    );
    // The restart brought it back; a later disconnection gets its own restart.
    let up = at + Duration::from_secs(3);
    assert!(q.on_peer(1, PeerLink::Up, up).is_empty());
    assert_eq!(q.poll_timeout(), None);
    let again = up + Duration::from_secs(30);
    q.on_peer(1, PeerLink::Disconnected, again);
    assert_eq!(
        q.handle_timeout(again + ICE_RESTART_AFTER),
        [Action::RestartIce { generation: 1 }]
    );
    // A connection that goes down for good is renegotiated, not restarted.
    let mut p = publishing(&mut gens, t0);
    p.on_peer(2, PeerLink::Disconnected, t0);
    let out = p.on_peer(2, PeerLink::Down, t0 + Duration::from_secs(1));
    assert!(has(&out, &Action::DropPeer));
    assert!(!has(&out, &Action::RestartIce { generation: 2 }));
    assert!(!has(
        &p.handle_timeout(t0 + ICE_RESTART_AFTER),
        &Action::RestartIce { generation: 2 }
    ));
}

#[test]
fn a_disconnect_through_which_packets_still_arrive_is_not_a_loss() {
    // ICE judges by its checks alone; on a very lossy link they fail while media gets through.
    let t0 = Instant::now();
    let mut gens = 0;
    let mut q = playing(&mut gens, t0);
    q.on_peer(1, PeerLink::Disconnected, t0);
    let mut now = t0;
    for _ in 0..6 {
        now += DEFAULT_DISCONNECT_GRACE;
        q.on_traffic(now - Duration::from_millis(1));
        assert!(
            q.handle_timeout(now).is_empty(),
            "still receiving: not lost, and not restarted (a restart drops the working pair)"
        );
    }
    assert_eq!(q.state(), PlayerState::Playing);
    // Silence for a whole grace: lost.
    let out = q.handle_timeout(now + DEFAULT_DISCONNECT_GRACE);
    assert_eq!(
        states(&out),
        [(
            "PlayRequesting".into(),
            ErrorCode::PlayNegotiationFailed.code()
        )]
    );
    // Traffic while up changes nothing.
    let mut r = playing(&mut gens, t0);
    r.on_traffic(t0);
    assert_eq!(r.phase(), Phase::Up);
}

#[test]
fn a_disconnect_past_the_grace_fails_like_a_lost_connection() {
    let t0 = Instant::now();
    let mut gens = 0;
    let mut p = publishing(&mut gens, t0);
    let mut q = playing(&mut gens, t0);
    p.on_peer(1, PeerLink::Disconnected, t0);
    q.on_peer(2, PeerLink::Disconnected, t0);
    // The ICE restart comes first and has the connect timeout to bring the connection back.
    let restart = t0 + ICE_RESTART_AFTER;
    assert_eq!(
        p.handle_timeout(restart),
        [Action::RestartIce { generation: 1 }]
    );
    assert_eq!(
        q.handle_timeout(restart),
        [Action::RestartIce { generation: 2 }]
    );
    let over = restart + DEFAULT_CONNECT_TIMEOUT;
    let mut now = restart;
    while now + ICE_RESTART_EVERY < over {
        now += ICE_RESTART_EVERY;
        assert_eq!(
            p.handle_timeout(now),
            [Action::RestartIce { generation: 1 }]
        );
        q.handle_timeout(now);
    }
    assert_eq!(p.poll_timeout(), Some(over));
    assert!(p.handle_timeout(over - Duration::from_millis(1)).is_empty());
    let out = p.handle_timeout(over);
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::MediaNegotiationFailed.code()
        )]
    );
    assert!(has(&out, &Action::DropPeer) && has(&out, &Action::SendStop));
    assert_eq!(p.poll_timeout(), Some(over + RETRY_AFTER));
    let out = q.handle_timeout(over);
    assert_eq!(
        states(&out),
        [(
            "PlayRequesting".into(),
            ErrorCode::PlayNegotiationFailed.code()
        )]
    );
    assert!(has(&out, &Action::DropPeer));
    // Back too late: stale.
    assert!(p.on_peer(1, PeerLink::Up, over).is_empty());
    assert!(q.on_peer(2, PeerLink::Up, over).is_empty());
    // Down during the grace fails at once.
    let mut r = publishing(&mut gens, t0);
    r.on_peer(3, PeerLink::Disconnected, t0);
    let out = r.on_peer(3, PeerLink::Down, t0 + Duration::from_secs(1));
    assert_eq!(
        states(&out),
        [(
            "PublishRequesting".into(),
            ErrorCode::MediaNegotiationFailed.code()
        )]
    );
}

#[test]
fn disconnected_while_connecting_waits_for_the_connect_timeout() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    p.negotiate_if_ready(true, &mut gens, t0);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    assert!(p.on_peer(1, PeerLink::Disconnected, t0).is_empty());
    assert_eq!(p.phase(), Phase::Connecting);
    assert_eq!(p.poll_timeout(), Some(t0 + DEFAULT_CONNECT_TIMEOUT));
    assert_eq!(
        states(&p.on_peer(1, PeerLink::Up, t0)),
        [("Publishing".into(), 0)]
    );
}

#[test]
fn retries_back_off_1_2_4_8_16_16_and_reset_once_up() {
    let secs = |d: Duration| d.as_secs();
    assert_eq!(
        (0..7).map(|n| secs(backoff(n))).collect::<Vec<_>>(),
        [1, 2, 4, 8, 16, 16, 16]
    );
    assert_eq!(backoff(u32::MAX), RETRY_MAX);
    let mut now = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1", SessionTimers::default());
    let mut waits = Vec::new();
    for _ in 0..6 {
        p.negotiate_if_ready(true, &mut gens, now);
        let g = p.generation();
        p.offer_ready(g);
        p.on_answer(g, Err(wire(ErrorCode::Internal)), now);
        let wait = retry_in(p.phase(), now);
        assert!(
            p.handle_timeout(now + wait - Duration::from_millis(1))
                .is_empty()
        );
        assert!(p.negotiate_if_ready(true, &mut gens, now).is_empty());
        waits.push(secs(wait));
        now += wait;
        p.handle_timeout(now);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 16]);
    // Media flows: the next loss starts over at a second.
    connect_publisher(&mut p, &mut gens, now);
    let g = p.generation();
    p.on_peer(g, PeerLink::Down, now);
    assert_eq!(retry_in(p.phase(), now), RETRY_AFTER);
    // Our side saw the loss first: the relay's stop is reported but not a second failure.
    let out = p.on_relay_stopped(ErrorCode::MediaNegotiationFailed.code(), "ingest", now);
    assert_eq!(states(&out).len(), 1);
    assert_eq!(retry_in(p.phase(), now), RETRY_AFTER);
    // Connect timeouts back off too.
    now += RETRY_AFTER;
    p.handle_timeout(now);
    p.negotiate_if_ready(true, &mut gens, now);
    now += DEFAULT_CONNECT_TIMEOUT;
    p.handle_timeout(now);
    assert_eq!(retry_in(p.phase(), now), Duration::from_secs(2));
}

#[test]
fn a_player_waiting_for_its_stream_polls_within_two_seconds_and_the_announcement_resets() {
    let mut now = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PlaySession::start("s1", SessionTimers::default(), now);
    let mut ask = |p: &mut PlaySession, answer: ErrorCode, now: Instant| {
        p.negotiate_if_ready(true, &mut gens, now);
        let g = p.generation();
        p.offer_ready(g);
        p.on_answer(g, Err(wire(answer)), now);
        retry_in(p.phase(), now)
    };
    // Not there (yet): every second, however long it takes.
    for _ in 0..5 {
        let wait = ask(&mut p, ErrorCode::StreamNotFound, now);
        assert_eq!(wait, RETRY_AFTER);
        now += wait;
        p.handle_timeout(now);
    }
    // Real failures back off (1, 2, 4 s) …
    for want in [1, 2, 4] {
        let wait = ask(&mut p, ErrorCode::Internal, now);
        assert_eq!(wait, Duration::from_secs(want));
        now += wait;
        p.handle_timeout(now);
    }
    // … but a missing stream is still looked for every 2 s at most, without backing off.
    for _ in 0..3 {
        let wait = ask(&mut p, ErrorCode::StreamNotFound, now);
        assert_eq!(wait, STREAM_POLL_MAX);
        now += wait;
        p.handle_timeout(now);
    }
    let wait = ask(&mut p, ErrorCode::Internal, now);
    assert_eq!(wait, Duration::from_secs(8), "waiting did not count");
    // The announcement: at once, and backing off from the start.
    p.on_stream_added();
    assert_eq!(p.phase(), Phase::Idle);
    assert_eq!(ask(&mut p, ErrorCode::Internal, now), RETRY_AFTER);
}

#[test]
fn a_played_stream_that_ends_is_looked_for_again_soon() {
    let t0 = Instant::now();
    let mut gens = 0;
    let mut p = playing(&mut gens, t0);
    p.on_peer(1, PeerLink::Down, t0);
    assert_eq!(retry_in(p.phase(), t0), RETRY_AFTER);
    // The relay says the stream ended: waiting, not a second failure, and no later retry.
    let t1 = t0 + Duration::from_millis(200);
    let out = p.on_relay_stopped(ErrorCode::StreamNotFound.code(), "ended", t1);
    assert_eq!(
        states(&out),
        [("PlayRequesting".into(), ErrorCode::StreamNotFound.code())]
    );
    assert_eq!(p.poll_timeout(), Some(t0 + RETRY_AFTER));
}

#[test]
fn reports_of_older_generations_change_nothing_in_any_phase() {
    let t0 = Instant::now();
    let mut gens = 0;
    let mut p = publishing(&mut gens, t0);
    p.on_peer(1, PeerLink::Down, t0);
    p.handle_timeout(t0 + RETRY_AFTER);
    connect_publisher(&mut p, &mut gens, t0 + RETRY_AFTER);
    assert_eq!(p.generation(), 2);
    for link in [PeerLink::Disconnected, PeerLink::Down, PeerLink::Up] {
        assert!(p.on_peer(1, link, t0).is_empty(), "{link:?} of gen 1");
    }
    assert_eq!(p.phase(), Phase::Up);
    p.on_peer(2, PeerLink::Disconnected, t0);
    assert!(p.on_peer(1, PeerLink::Up, t0).is_empty());
    assert!(
        matches!(p.phase(), Phase::Disconnected(_)),
        "gen 1 is not back"
    );
    let mut q = playing(&mut gens, t0);
    q.on_peer(3, PeerLink::Disconnected, t0);
    assert!(q.on_peer(1, PeerLink::Down, t0).is_empty());
    assert!(q.on_first_video_frame(1, t0).is_empty());
    assert!(matches!(q.phase(), Phase::Disconnected(_)));
    // After stop, nothing at all, and no timer left.
    let _ = q.stop();
    assert!(q.on_peer(3, PeerLink::Up, t0).is_empty());
    assert_eq!(q.poll_timeout(), None);
    assert!(q.handle_timeout(t0 + Duration::from_secs(60)).is_empty());
}
