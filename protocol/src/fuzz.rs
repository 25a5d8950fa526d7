//! Fuzzing the signaling protocol and tokens, as property tests: any text a client sends is
//! parsed or refused (never a panic), well-formed requests with hostile field values parse
//! and round-trip, and any string offered as a token is refused or verified without a panic.
//! `PROPTEST_CASES` raises the number of cases.

use proptest::prelude::*;

use crate::messages::{Request, ServerMessage};
use crate::{ids, token};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that stress JSON and ID rules: empty, long, unicode, quotes, control characters.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".repeat(300)),
        Just("\"\\\u{0}\u{7f}".to_string()),
        Just("房间-1".to_string()),
        Just("../../etc/passwd".to_string()),
        prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]
}

fn request_json() -> impl Strategy<Value = serde_json::Value> {
    let kinds = prop::sample::select(vec![
        "hello",
        "login",
        "logout",
        "heartbeat",
        "publish",
        "play",
        "stop_play",
        "stop_publish",
        "renew_token",
        "nonsense",
    ]);
    (
        any::<u64>(),
        kinds,
        hostile(),
        hostile(),
        hostile(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(id, kind, a, b, c, n, flag)| {
            serde_json::json!({
                "id": id, "type": kind, "protocol": n, "app_id": n,
                "room_id": a, "stream_id": b, "token": c, "sdp": c, "extra_info": a,
                "user": {"user_id": b, "user_name": a},
                "is_user_status_notify": flag,
                "resume": if flag { serde_json::json!({"session_id": id, "secret": c}) }
                          else { serde_json::Value::Null },
            })
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused(text in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&text);
        let _ = serde_json::from_str::<Request>(&text);
        let _ = serde_json::from_str::<ServerMessage>(&text);
    }

    #[test]
    fn requests_with_hostile_fields_parse_and_round_trip(v in request_json()) {
        if let Ok(req) = serde_json::from_value::<Request>(v) {
            let again: Request = serde_json::from_str(
                &serde_json::to_string(&req).expect("serialise"),
            ).expect("re-parse");
            prop_assert_eq!(format!("{req:?}"), format!("{again:?}"));
        }
    }

    #[test]
    fn id_rules_take_any_string(s in hostile()) {
        let _ = ids::check_room_id(&s);
        let _ = ids::check_user_id(&s);
        let _ = ids::check_stream_id(&s);
        let _ = ids::check_user_name(&s);
    }

    #[test]
    fn any_token_is_refused_or_verified(
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..5),
        raw in hostile(),
    ) {
        let sign = token::AppSign::random();
        use base64::Engine as _;
        let joined = parts
            .iter()
            .map(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(p))
            .collect::<Vec<_>>()
            .join(".");
        for t in [joined.as_str(), raw.as_str()] {
            prop_assert!(token::verify(t, &sign, token::unix_now()).is_err());
            let _ = token::peek_app_id(t);
            let _ = token::peek_user_id(t);
        }
    }
}
