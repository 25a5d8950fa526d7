//! Fuzzing, as property tests on stable Rust: everything a remote sender controls goes through
//! the parsers and state machines we own — the H.264 assembler (any payloads, sequence numbers,
//! timestamps and markers), the SEI and NAL scanners, the jitter buffer, playout and NACK
//! state — with arbitrary input, and none of them may panic, hold more than their bounds, or
//! release a packet twice. `PROPTEST_CASES` raises the number of cases.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use crate::assembler::Assembler;
use crate::jitter::{Buffered, JitterBuffer};
use crate::nack::{NackState, NackStats};
use crate::playout::Playout;
use crate::sei;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An RTP-ish packet: sequence step, timestamp step, marker, payload. Payloads are biased
/// towards H.264 shapes (FU-A, STAP-A, single NALs) so the depacketiser gets past its first
/// byte.
fn packet() -> impl Strategy<Value = (u16, u32, bool, Vec<u8>)> {
    let head = prop_oneof![
        Just(vec![0x7c, 0x85]),
        Just(vec![0x7c, 0x05]),
        Just(vec![0x7c, 0x45]),
        Just(vec![0x78]),
        Just(vec![0x65]),
        Just(vec![0x41]),
        Just(vec![0x06, 0x05]),
        Just(Vec::new()),
    ];
    (
        prop_oneof![8 => Just(1u16), 1 => any::<u16>(), 1 => Just(0u16)],
        prop_oneof![3 => Just(0u32), 2 => Just(3000u32), 1 => any::<u32>()],
        any::<bool>(),
        head,
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ds, dt, m, mut head, tail)| {
            head.extend(tail);
            (ds, dt, m, head)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_assembler_takes_any_packets(packets in prop::collection::vec(packet(), 0..200)) {
        let mut a = Assembler::with_max_unit_bytes(8 * 1024);
        let (mut seq, mut ts) = (0u16, 0u32);
        for (ds, dt, marker, payload) in packets {
            seq = seq.wrapping_add(ds);
            ts = ts.wrapping_add(dt);
            let fed = a.push(seq, ts, marker, &Bytes::from(payload));
            if let Some(unit) = fed.unit {
                prop_assert!(unit.data.len() <= 8 * 1024 + 300);
                // What the assembler hands on, the scanners take too.
                let _ = sei::read_capture_time(&unit.data);
                let _ = sei::nal_units(&unit.data);
            }
        }
    }

    #[test]
    fn the_nal_and_sei_scanners_take_any_bytes(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        let nals = sei::nal_units(&data);
        prop_assert!(nals.iter().map(|n| n.len()).sum::<usize>() <= data.len());
        let _ = sei::read_capture_time(&data);
        let _ = sei::is_keyframe(&data);
        // A real stamp inside garbage is still found or ignored, never a panic.
        let mut with_stamp = data.clone();
        with_stamp.extend(sei::capture_time_nal(123_456));
        let _ = sei::read_capture_time(&with_stamp);
        let _ = sei::read_user_data(&data);
        // Application data after garbage comes back whole when the garbage ends a NAL.
        let mut with_data = data.clone();
        with_data.extend(sei::user_data_nal(&data));
        prop_assert!(sei::read_user_data(&with_data).len() <= with_data.len());
    }

    #[test]
    fn the_jitter_buffer_releases_each_packet_at_most_once(
        arrivals in prop::collection::vec((any::<u16>(), 0u64..40, any::<bool>()), 0..300),
        start in any::<u16>(),
    ) {
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(200));
        let t0 = Instant::now();
        let mut now = t0;
        let mut released = std::collections::HashSet::new();
        let mut taken = |out: Vec<Buffered>| -> Result<(), TestCaseError> {
            for p in out {
                prop_assert!(released.insert(p.seq), "seq {} released twice", p.seq);
            }
            Ok(())
        };
        for (offset, dt_ms, jump) in arrivals {
            now += Duration::from_millis(dt_ms);
            // Reordered, duplicated and lost within a window, sometimes jumping further ahead
            // (never a whole cycle, so a number released twice would be a bug).
            let seq = start.wrapping_add(if jump { offset % 16_000 } else { offset % 64 });
            let p = Buffered {
                seq,
                timestamp: u32::from(seq).wrapping_mul(3000),
                marker: true,
                payload: Bytes::new(),
                new_encoding: offset % 7 == 0,
            };
            taken(jb.push(p, now))?;
            if let Some(d) = jb.deadline() {
                prop_assert!(d <= now + Duration::from_millis(200) + Duration::from_millis(1));
            }
            taken(jb.release(now))?;
        }
        taken(jb.release(now + Duration::from_secs(5)))?;
    }

    #[test]
    fn the_jitter_buffer_takes_any_sequence_numbers(
        arrivals in prop::collection::vec((any::<u16>(), any::<u32>(), 0u64..40), 0..300),
    ) {
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(200));
        let mut now = Instant::now();
        let mut pushed = 0usize;
        let mut released = 0usize;
        for (seq, timestamp, dt_ms) in arrivals {
            now += Duration::from_millis(dt_ms);
            pushed += 1;
            let p = Buffered {
                seq,
                timestamp,
                marker: dt_ms % 3 == 0,
                payload: Bytes::new(),
                new_encoding: dt_ms % 5 == 0,
            };
            released += jb.push(p, now).len();
            released += jb.release(now).len();
            prop_assert!(released <= pushed);
        }
    }

    #[test]
    fn playout_never_schedules_more_than_its_bound_ahead(
        frames in prop::collection::vec((any::<u32>(), 0u64..200), 0..300),
    ) {
        let max = Duration::from_secs(1);
        let mut p = Playout::new(90_000, max);
        let mut now = Instant::now();
        for (ts, dt) in frames {
            now += Duration::from_millis(dt);
            let at = p.schedule(ts, now);
            prop_assert!(at <= now + max + Duration::from_millis(1), "{:?} ahead", at - now);
            prop_assert!(p.delay() <= max);
        }
    }

    #[test]
    fn nack_state_takes_any_sequence_numbers_and_bounds_what_it_asks(
        seqs in prop::collection::vec((any::<u16>(), 0u64..30), 0..400),
    ) {
        let stats = std::sync::Arc::new(NackStats::default());
        let mut n = NackState::new(stats);
        n.watch(7);
        let mut now = Instant::now();
        for (seq, dt) in seqs {
            now += Duration::from_millis(dt);
            n.on_packet(7, seq, now);
            for (ssrc, asked) in n.due(now) {
                prop_assert_eq!(ssrc, 7);
                prop_assert!(asked.len() <= u16::MAX as usize);
            }
        }
    }
}
