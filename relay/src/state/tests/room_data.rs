//! Mute states and shared network quality.

use super::*;

/// Every `(conn, message)` in `out` whose type is `kind`.
fn messages_of<'a>(out: &'a [Output], kind: &str) -> Vec<(ConnId, &'a ServerMessage)> {
    let mut v = Vec::new();
    for o in out {
        if let Output::Send { to, msg } = o
            && serde_json::to_value(msg)
                .ok()
                .and_then(|j| j["type"].as_str().map(String::from))
                == Some(kind.to_string())
        {
            v.extend(to.iter().map(|c| (*c, msg)));
        }
    }
    v
}

#[test]
fn a_mute_reaches_the_room_once_and_newcomers_see_it_in_the_list() {
    let mut h = Harness::roomy();
    let host = h.client();
    let viewer = h.client();
    h.login(host, "r1", "host");
    h.login(viewer, "r1", "v");
    h.publish_flowing(host, "r1", "cam");
    let mute =
        json!({"type":"set_stream_mute","stream_id":"cam","audio_muted":true,"video_muted":false});
    let out = h.request(host, mute.clone());
    assert_eq!(response(&out, host.conn), Some(Ok(ResponseBody::Done)));
    let updates = messages_of(&out, "stream_mute_update");
    assert_eq!(updates.len(), 1, "{out:?}");
    assert_eq!(updates[0].0, viewer.conn);
    let ServerMessage::StreamMuteUpdate {
        stream_id,
        audio_muted,
        video_muted,
        ..
    } = updates[0].1
    else {
        unreachable!()
    };
    assert_eq!(
        (stream_id.as_str(), *audio_muted, *video_muted),
        ("cam", true, false)
    );
    // The same state again tells nobody.
    let out = h.request(host, mute);
    assert!(messages_of(&out, "stream_mute_update").is_empty());
    // A newcomer sees the state in the stream list.
    let late = h.client();
    let out = h.login(late, "r1", "late");
    let Some(Ok(ResponseBody::Login { streams, .. })) = response(&out, late.conn) else {
        panic!("login refused: {out:?}");
    };
    let listed = streams.first().expect("login lists the stream");
    assert!(listed.audio_muted && !listed.video_muted);
    // Only the publisher may mute its stream.
    let out = h.request(
        viewer,
        json!({"type":"set_stream_mute","stream_id":"cam","audio_muted":false,"video_muted":true}),
    );
    assert_eq!(
        error_code(&out, viewer.conn),
        Some(ErrorCode::NotPublishing.code())
    );
    h.check();
}

#[test]
fn a_publishers_upstream_quality_reaches_its_room_at_most_once_a_second() {
    let mut h = Harness::roomy();
    let host = h.client();
    let viewer = h.client();
    let other = h.client();
    h.login(host, "r1", "host");
    h.login(viewer, "r1", "v");
    h.login(other, "r2", "o");
    // Not publishing: nobody hears of it.
    let report = |q: u8| json!({"type":"report_network_quality","upstream":q});
    let out = h.request(host, report(1));
    assert_eq!(response(&out, host.conn), Some(Ok(ResponseBody::Done)));
    assert!(messages_of(&out, "network_quality").is_empty());
    h.publish_flowing(host, "r1", "cam");
    h.now += Duration::from_secs(1);
    let out = h.request(host, report(3));
    let shared = messages_of(&out, "network_quality");
    assert_eq!(shared.len(), 1, "{out:?}");
    assert_eq!(shared[0].0, viewer.conn);
    assert!(matches!(
        shared[0].1,
        ServerMessage::NetworkQuality { user_id, upstream: 3, room_id } if user_id == "host" && room_id == "r1"
    ));
    // A second report within the second is answered and ignored.
    let out = h.request(host, report(0));
    assert_eq!(response(&out, host.conn), Some(Ok(ResponseBody::Done)));
    assert!(messages_of(&out, "network_quality").is_empty());
    // Out-of-range levels are Unknown.
    h.now += Duration::from_secs(1);
    let out = h.request(host, report(200));
    assert!(matches!(
        messages_of(&out, "network_quality")[0].1,
        ServerMessage::NetworkQuality { upstream: 5, .. }
    ));
    h.check();
}
