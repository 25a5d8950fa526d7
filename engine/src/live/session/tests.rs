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
    let (mut p, out) = PublishSession::start("s1");
    assert_eq!(states(&out), [("PublishRequesting".into(), 0)]);
    assert!(
        p.negotiate_if_ready(false, &mut gens).is_empty(),
        "not ready: wait"
    );
    let out = p.negotiate_if_ready(true, &mut gens);
    assert_eq!(out, [Action::Offer { generation: 1 }]);
    assert!(
        p.negotiate_if_ready(true, &mut gens).is_empty(),
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
    let out = p.on_peer(1, true, t0);
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
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::StreamIdTaken)), t0);
    assert_eq!(states(&out), [("NoPublish".into(), 1003028)]);
    assert!(has(&out, &Action::ReleaseChannel) && has(&out, &Action::DropPeer));
    assert!(p.is_ended());
    assert_eq!(p.poll_timeout(), None);
    assert!(p.negotiate_if_ready(true, &mut gens).is_empty());
}

#[test]
fn a_passing_refusal_retries_after_a_second_with_a_new_generation() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::Internal)), t0);
    assert_eq!(
        states(&out),
        [("PublishRequesting".into(), ErrorCode::Internal.code())]
    );
    assert_eq!(p.poll_timeout(), Some(t0 + RETRY_AFTER));
    p.handle_timeout(t0 + Duration::from_millis(999));
    assert!(
        p.negotiate_if_ready(true, &mut gens).is_empty(),
        "too early"
    );
    p.handle_timeout(t0 + RETRY_AFTER);
    assert_eq!(
        p.negotiate_if_ready(true, &mut gens),
        [Action::Offer { generation: 2 }]
    );
    // A late answer to the first attempt changes nothing.
    assert!(p.on_answer(1, Ok("late".into()), t0).is_empty());
    assert!(p.on_peer(1, true, t0).is_empty());
    assert_eq!(p.state(), PublisherState::PublishRequesting);
}

#[test]
fn a_lost_publisher_connection_tells_the_relay_and_retries() {
    let t0 = Instant::now();
    let mut gens = 5;
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
    assert_eq!(p.generation(), 6, "generations are engine-wide");
    p.offer_ready(6);
    p.on_answer(6, Ok("sdp".into()), t0);
    p.on_peer(6, true, t0);
    let out = p.on_peer(6, false, t0);
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
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    // The relay ends the media before the connection reported up; we drop the peer.
    let out = p.on_relay_stopped(ErrorCode::MediaNegotiationFailed.code(), "gone", t0);
    assert!(has(&out, &Action::DropPeer));
    // The closing connection's late reports are not news.
    assert!(
        p.on_peer(1, true, t0).is_empty(),
        "no Publishing without a connection"
    );
    assert!(p.on_peer(1, false, t0).is_empty(), "no second loss report");
    assert!(matches!(p.phase(), Phase::RetryAt(_)));

    let (mut q, _) = PlaySession::start("s1", t0);
    q.negotiate_if_ready(true, &mut gens);
    q.offer_ready(2);
    q.on_answer(2, Ok("sdp".into()), t0);
    assert_eq!(states(&q.on_peer(2, true, t0)), [("Playing".into(), 0)]);
    assert!(q.on_peer(2, true, t0).is_empty(), "up twice is one report");
    q.on_relay_stopped(ErrorCode::StreamNotFound.code(), "ended", t0);
    assert!(q.on_peer(2, false, t0).is_empty());
    assert!(q.on_peer(2, true, t0).is_empty());
}

#[test]
fn an_offer_that_cannot_be_made_is_retried() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
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
    let mut gens = 0;
    let (mut p, _) = PublishSession::start("s1");
    p.negotiate_if_ready(true, &mut gens);
    let _ = p.stop(true);
    assert_eq!(p.offer_ready(1), [Action::DropPeer]);
}

#[test]
fn play_waits_for_a_missing_stream_without_an_error_and_asks_again_when_it_appears() {
    let t0 = Instant::now();
    let mut gens = 0;
    let (mut p, out) = PlaySession::start("s1", t0);
    assert_eq!(states(&out), [("PlayRequesting".into(), 0)]);
    p.negotiate_if_ready(true, &mut gens);
    p.offer_ready(1);
    let out = p.on_answer(1, Err(wire(ErrorCode::StreamNotFound)), t0);
    assert!(states(&out).is_empty(), "waiting is not an error");
    assert!(has(&out, &Action::DropPeer));
    p.on_stream_added();
    assert_eq!(
        p.negotiate_if_ready(true, &mut gens),
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
    let (mut p, _) = PlaySession::start("s1", t0);
    p.negotiate_if_ready(true, &mut gens);
    p.offer_ready(1);
    p.on_answer(1, Ok("sdp".into()), t0);
    let out = p.on_peer(1, true, t0);
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
    p.negotiate_if_ready(true, &mut gens);
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
    assert!(p.on_peer(2, true, t1).is_empty(), "nothing after stop");
}

#[test]
fn extended_data_is_json() {
    assert_eq!(extended_data(""), "{}");
    assert_eq!(extended_data("a\"b"), r#"{"message":"a\"b"}"#);
}
