//! The cluster's rules in the state machine, without Redis: two states as two nodes, their
//! room events carried by hand.

use super::*;
use crate::state::{ClusterOutput, RoomEvent};
use onair_protocol::messages::{StreamInfo, User};

/// A clustered node.
fn node() -> Harness {
    let mut h = Harness::roomy();
    h.state.set_clustered(true);
    h
}

/// The room events in `out`.
fn events(out: &[Output]) -> Vec<RoomEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cluster(ClusterOutput::Room { event, .. }) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn stream(id: &str, user: &str) -> StreamInfo {
    StreamInfo {
        stream_id: id.into(),
        user: User::new(user),
        extra_info: String::new(),
        since_unix_ms: 0,
        audio_muted: false,
        video_muted: false,
    }
}

/// A new connection that says hello and logs into room `r` as `user`: its connection and
/// the login's outputs.
fn hello_login(h: &mut Harness, user: &str) -> (ConnId, Vec<Output>) {
    let conn = h.state.open_conn(h.now);
    h.send(
        conn,
        json!({"id":1,"type":"hello","protocol":PROTOCOL_VERSION,"app_id":1}),
    );
    let out = login_again(h, conn, user);
    (conn, out)
}

/// `conn` logs into room `r` as `user` (again).
fn login_again(h: &mut Harness, conn: ConnId, user: &str) -> Vec<Output> {
    let sign = h.sign.to_hex();
    h.send(
        conn,
        json!({"id":2,"type":"login","room_id":"r","user":{"user_id":user},"app_sign":sign}),
    )
}

#[test]
fn a_single_relay_says_nothing_to_a_cluster() {
    let mut h = Harness::roomy();
    let (_, out) = hello_login(&mut h, "u");
    assert!(!out.iter().any(|o| matches!(o, Output::Cluster(_))));
}

#[test]
fn a_login_opens_the_room_and_tells_the_other_nodes() {
    let mut a = node();
    let (conn, out) = hello_login(&mut a, "alice");
    assert!(out.contains(&Output::Cluster(ClusterOutput::Opened {
        app_id: 1,
        room_id: "r".into()
    })));
    assert_eq!(
        events(&out),
        [RoomEvent::UserAdd {
            user: User {
                user_id: "alice".into(),
                user_name: String::new(),
            }
        }]
    );
    // Logging out: the user leaves, and the room (empty here) closes.
    let out = a.send(conn, json!({"id":3,"type":"logout","room_id":"r"}));
    assert_eq!(
        events(&out),
        [RoomEvent::UserDelete {
            user_id: "alice".into()
        }]
    );
    assert!(out.contains(&Output::Cluster(ClusterOutput::Closed {
        app_id: 1,
        room_id: "r".into()
    })));
}

#[test]
fn other_nodes_users_and_streams_are_members_and_streams_of_the_room() {
    let mut a = node();
    let alice = a.join("r", "alice", true);
    // Bob logs in on node b: Alice hears him; a newcomer here gets him in the snapshot.
    let out = a.state.cluster_event(
        "b",
        1,
        "r",
        RoomEvent::UserAdd {
            user: User::new("bob"),
        },
    );
    assert_eq!(sent(&out), [(alice, "user_update".into())]);
    // Bob's stream: listed, its ID taken here, and playing it pulls from node b.
    let out = a.state.cluster_event(
        "b",
        1,
        "r",
        RoomEvent::StreamAdd {
            stream: stream("cam", "bob"),
        },
    );
    assert_eq!(sent(&out), [(alice, "stream_update".into())]);
    a.check();
    let out = a.send(
        alice,
        json!({"id":5,"type":"publish","room_id":"r","stream_id":"cam","sdp":"v=0"}),
    );
    assert!(
        format!("{out:?}").contains(&ErrorCode::StreamIdTaken.code().to_string()),
        "the ID is another node's: {out:?}"
    );
    let out = a.send(
        alice,
        json!({"id":6,"type":"play","stream_id":"cam","sdp":"v=0"}),
    );
    let origin = out.iter().find_map(|o| match o {
        Output::Negotiate { origin, .. } => Some(origin.clone()),
        _ => None,
    });
    assert_eq!(origin, Some(Some("b".to_string())));
    a.check();
    // Node b dies: Bob and his stream leave; Alice's play stops.
    let (out, gone) = a.state.cluster_node_gone("b");
    let s = sent(&out);
    assert!(s.contains(&(alice, "user_update".into())), "{s:?}");
    assert!(s.contains(&(alice, "stream_update".into())), "{s:?}");
    assert!(s.contains(&(alice, "play_stopped".into())), "{s:?}");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].users, ["bob"]);
    assert_eq!(gone[0].streams, ["cam"]);
    assert!(a.state.cluster_nodes().is_empty());
    a.check();
}

#[test]
fn the_same_user_on_another_node_kicks_the_session_here() {
    let mut a = node();
    let alice = a.join("r", "alice", true);
    let bob = a.join("r", "bob", true);
    let out = a.state.cluster_event(
        "b",
        1,
        "r",
        RoomEvent::UserAdd {
            user: User::new("alice"),
        },
    );
    let s = sent(&out);
    assert!(s.contains(&(alice, "kicked".into())), "{s:?}");
    assert!(
        !s.contains(&(bob, "user_update".into())),
        "Alice stays in the room, now on b: {s:?}"
    );
    // A record read after this node's own login of the same user never kicks it.
    let carol = a.join("r", "carol", true);
    let out = a.state.cluster_snapshot(
        1,
        "r",
        vec![("b".into(), User::new("carol"))],
        Vec::new(),
        Vec::new(),
    );
    assert!(!sent(&out).contains(&(carol, "kicked".into())));
    a.check();
}

#[test]
fn without_redis_logins_are_refused_with_their_code() {
    let mut a = node();
    a.state.set_cluster_up(false);
    let (conn, out) = hello_login(&mut a, "u");
    assert!(
        format!("{out:?}").contains(&ErrorCode::ClusterUnavailable.code().to_string()),
        "{out:?}"
    );
    a.state.set_cluster_up(true);
    let out = login_again(&mut a, conn, "u");
    assert!(!format!("{out:?}").contains("code"), "{out:?}");
}
