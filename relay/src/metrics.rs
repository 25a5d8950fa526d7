//! `/metrics` in Prometheus text format, rendered from the state machine's counters and gauges.

use std::fmt::Write as _;

use crate::state::{Counters, Gauges};
use onair_protocol::error::ErrorCode;

/// Renders the exposition text.
pub fn render(counters: &Counters, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(2048);
    let mut gauge = |name: &str, help: &str, value: usize| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "onair_connections",
        "Open signaling connections.",
        gauges.connections,
    );
    gauge(
        "onair_sessions",
        "Live sessions, connected or awaiting resume.",
        gauges.sessions,
    );
    gauge("onair_rooms", "Rooms with at least one user.", gauges.rooms);
    gauge("onair_users", "Users logged into rooms.", gauges.users);
    gauge("onair_streams", "Streams being published.", gauges.streams);
    gauge(
        "onair_players",
        "Plays through the SFU (one per player and stream).",
        gauges.players,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "onair_messages_in_total",
        "Signaling messages received.",
        counters.messages_in,
    );
    counter(
        "onair_messages_out_total",
        "Signaling messages sent, one per recipient.",
        counters.messages_out,
    );
    counter(
        "onair_logins_total",
        "Successful room logins.",
        counters.logins,
    );
    counter(
        "onair_heartbeat_timeouts_total",
        "Sessions removed after missing heartbeats.",
        counters.heartbeat_timeouts,
    );
    let _ = writeln!(
        out,
        "# HELP onair_errors_total Errors reported, by code.\n# TYPE onair_errors_total counter"
    );
    for (code, n) in &counters.errors_by_code {
        let name = ErrorCode::from_code(*code).map_or("Unknown", |c| c.name());
        let _ = writeln!(
            out,
            "onair_errors_total{{code=\"{code}\",name=\"{name}\"}} {n}"
        );
    }
    out
}
