//! `onair bench fec`: what Reed–Solomon repair packets cost the sender (the relay makes them
//! per player, per frame) and the receiver, on the blocks a 720p stream makes: a P-frame of
//! five packets at the mild and the heaviest repair share, and a keyframe of 48. Beside each,
//! rtc's FlexFEC-03 XOR encoder on the same block in the same run, so the cost is a ratio.

use std::time::Instant;

use clap::Args;
use onair_transport::fec::{MAX_SHARE, repairs_for};
use onair_transport::rs_fec::{RsFecReceiver, repair_packets};
use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use serde_json::{Value, json};

use super::stats;

/// `onair bench fec` flags.
#[derive(Args, Debug)]
pub struct FecArgs {
    /// Blocks per measurement.
    #[arg(long, default_value_t = 2000)]
    blocks: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// A block of `n` media packets of about 1,200 bytes (the last one shorter), numbered from
/// `seq`, with varied bytes.
fn block(n: usize, seq: u16) -> Vec<rtc::rtp::Packet> {
    (0..n)
        .map(|j| {
            let len = if j + 1 == n { 700 } else { 1_180 };
            rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 102,
                    sequence_number: seq.wrapping_add(j as u16),
                    timestamp: u32::from(seq) * 3_000,
                    ssrc: 7,
                    marker: j + 1 == n,
                    ..Default::default()
                },
                payload: (0..len)
                    .map(|b| (b as u8).wrapping_mul(13) ^ (j as u8) ^ (seq as u8))
                    .collect::<Vec<u8>>()
                    .into(),
            }
        })
        .collect()
}

fn tagged(p: rtc::rtp::Packet) -> TaggedPacket {
    TaggedPacket {
        now: Instant::now(),
        transport: Default::default(),
        message: AttributedPacket::new(Packet::Rtp(p)),
    }
}

/// Encode and decode times (µs per block) for blocks of `n` at `share`, the receiver missing
/// as many media packets as there are repairs (the most it can rebuild), and the XOR encoder's
/// time on the same blocks.
fn measure(n: usize, share: f64, blocks: usize) -> anyhow::Result<Value> {
    let k = repairs_for(n, share) as usize;
    let mut encode = Vec::with_capacity(blocks);
    let mut decode = Vec::with_capacity(blocks);
    let mut xor = Vec::with_capacity(blocks);
    let mut receiver = RsFecReceiver::new();
    receiver.bind_remote_stream(&StreamInfo {
        ssrc: 7,
        ssrc_fec: Some(9),
        payload_type_fec: Some(118),
        ..Default::default()
    });
    let mut flexfec = rtc::interceptor::FlexFec03Encoder::new(118, 9);
    let mut repair_seq = 0u16;
    let mut rebuilt_total = 0usize;
    for b in 0..blocks {
        let seq = (b * n) as u16;
        let media = block(n, seq);
        let t0 = Instant::now();
        let repairs = repair_packets(&media, k, 9, &mut repair_seq);
        encode.push(t0.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(repairs.len() == k, "{} repairs for {k}", repairs.len());
        let t0 = Instant::now();
        let x = flexfec.encode(&media, k.min(n) as u32);
        xor.push(t0.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(!x.is_empty(), "no XOR repairs");
        // The first min(k, n) media packets lost; the rest and every repair arrive.
        let lost = k.min(n);
        let t0 = Instant::now();
        let mut rebuilt = 0;
        for p in media.into_iter().skip(lost).chain(repairs) {
            receiver
                .handle_read(tagged(p))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            while let Some(m) = receiver.poll_read() {
                rebuilt += usize::from(
                    m.message
                        .attributes
                        .iter()
                        .any(|a| matches!(a, rtc::interceptor::Attribute::RecoveredByFec)),
                );
            }
        }
        decode.push(t0.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(rebuilt == lost, "rebuilt {rebuilt} of {lost}");
        rebuilt_total += rebuilt;
    }
    let p50 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        stats::percentile(&v, 50.0)
    };
    let ratio = p50(&encode) / p50(&xor).max(1e-3);
    Ok(json!({
        "media_packets": n,
        "repair_packets": k,
        "lost_and_rebuilt_per_block": lost_per(rebuilt_total, blocks),
        "encode_us": stats::summary(encode),
        "decode_us": stats::summary(decode),
        "xor_encode_us": stats::summary(xor),
        "encode_vs_xor": (ratio * 100.0).round() / 100.0,
    }))
}

fn lost_per(total: usize, blocks: usize) -> f64 {
    total as f64 / blocks.max(1) as f64
}

/// Runs the benchmark.
pub fn run(args: FecArgs) -> anyhow::Result<()> {
    let blocks = args.blocks.max(10);
    let frame_mild = measure(5, 0.3, blocks)?;
    let frame_max = measure(5, MAX_SHARE, blocks)?;
    let keyframe = measure(48, MAX_SHARE, (blocks / 10).max(10))?;
    // One player at the heaviest share: 30 such frames a second, and a keyframe every two.
    let per_second_us =
        |v: &Value, per_s: f64| v["encode_us"]["p50"].as_f64().unwrap_or(0.0) * per_s;
    let player_cpu = (per_second_us(&frame_max, 30.0) + per_second_us(&keyframe, 0.5)) / 1e6;
    let report = json!({
        "bench": "fec",
        "cores": stats::cores(),
        "frame_5_packets_share_0.3": frame_mild,
        "frame_5_packets_share_max": frame_max,
        "keyframe_48_packets_share_max": keyframe,
        "sender_cpu_share_per_player_at_max": (player_cpu * 1e4).round() / 1e4,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
