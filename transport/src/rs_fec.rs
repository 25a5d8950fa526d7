//! Reed–Solomon repair packets for RTP ([`crate::rs`]), between our own engine and relay only:
//! how a block of media packets becomes repair packets, and the receive interceptor
//! ([`RsFecReceiver`]) that rebuilds lost media packets from them.
//!
//! A repair packet goes on the stream's FlexFEC repair SSRC (negotiated as FlexFEC-03, which
//! gives each protected stream one) with our own payload type [`RS_PAYLOAD_TYPE`], so a receiver
//! tells it from a FlexFEC-03 packet. Only our relay and engine send or expect one (the relay
//! sends repairs only to players of our own engine, see `sfu`). Its payload:
//!
//! ```text
//! "OR" | version 1 | n | k | index | first media seq (u16) | symbol length (u16) |
//!     check (u32, FNV-1a over the block's media symbols) | symbol
//! ```
//!
//! A block is `n` media packets with consecutive sequence numbers (a frame, or part of a large
//! one); symbol `j` is media packet `j` in its canonical form (`fec_form`), marshalled, behind
//! its length as a u16, zero-padded to the block's symbol length. Any `n` of the block's `n + k`
//! packets rebuild it; the check proves the rebuilt packets are the ones sent (not a mix with
//! an older block's, or a damaged repair's). A receiver forgets a block after
//! [`BLOCK_LIFE`] or once the stream is [`RING`] packets past it.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, Unmarshal};

use crate::rs;

/// The payload type of a Reed–Solomon repair packet (not offered in SDP: only our own engine
/// and relay send and expect it, on the FlexFEC repair SSRC).
pub const RS_PAYLOAD_TYPE: u8 = 119;
const MAGIC: [u8; 2] = *b"OR";
const VERSION: u8 = 1;
/// The repair header's length before the symbol.
const HEADER: usize = 14;
/// Recent media packets a receiver keeps per stream, by sequence number.
const RING: usize = 1024;
/// Blocks a receiver keeps per stream (about two seconds of frames while repairs come).
const MAX_BLOCKS: usize = 64;
/// How long a receiver keeps a block (a frame repaired later than this is long played).
const BLOCK_LIFE: std::time::Duration = std::time::Duration::from_secs(2);
/// The largest block a receiver takes (our sender's: 48 media packets, 1.5 repairs each):
/// what a hostile peer can make it compute is bounded.
const MAX_N: usize = 64;

/// FNV-1a over the unpadded media symbols of a block, in order.
fn check(symbols: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for s in symbols {
        for &b in *s {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The unpadded part of a (possibly rebuilt, zero-padded) symbol.
fn unpadded(s: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*s.first()?, *s.get(1)?]));
    s.get(..2 + len)
}

/// The symbol of one media packet: its length as a u16, then the packet as marshalled.
fn symbol(p: &rtc::rtp::Packet) -> Option<Vec<u8>> {
    let raw = p.marshal().ok()?;
    let len = u16::try_from(raw.len()).ok()?;
    let mut s = Vec::with_capacity(raw.len() + 2);
    s.extend_from_slice(&len.to_be_bytes());
    s.extend_from_slice(&raw);
    Some(s)
}

/// The media packet a rebuilt symbol holds.
fn unsymbol(s: &[u8]) -> Option<rtc::rtp::Packet> {
    let len = usize::from(u16::from_be_bytes([*s.first()?, *s.get(1)?]));
    let mut raw = s.get(2..2 + len)?;
    rtc::rtp::Packet::unmarshal(&mut raw).ok()
}

/// `k` repair packets for `block` (media packets with consecutive sequence numbers, in the
/// canonical form the receiver will hold them in), on `ssrc_fec`, numbered on from `seq`.
/// None for an empty block, one of more than [`rs::MAX_SYMBOLS`], or one that does not marshal.
pub fn repair_packets(
    block: &[rtc::rtp::Packet],
    k: usize,
    ssrc_fec: u32,
    seq: &mut u16,
) -> Vec<rtc::rtp::Packet> {
    let (Some(first), Some(last)) = (block.first(), block.last()) else {
        return Vec::new();
    };
    let n = block.len();
    if k == 0 || n + k > rs::MAX_SYMBOLS {
        return Vec::new();
    }
    let Some(symbols) = block.iter().map(symbol).collect::<Option<Vec<_>>>() else {
        return Vec::new();
    };
    let len = symbols.iter().map(Vec::len).max().unwrap_or(0);
    let Ok(len16) = u16::try_from(len) else {
        return Vec::new();
    };
    let refs: Vec<&[u8]> = symbols.iter().map(Vec::as_slice).collect();
    let Ok(repairs) = rs::encode(&refs, k, len) else {
        return Vec::new();
    };
    let sum = check(&refs);
    repairs
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut payload = BytesMut::with_capacity(HEADER + len);
            payload.put_slice(&MAGIC);
            payload.put_u8(VERSION);
            // n + k ≤ 256 with both at least one: each fits a byte.
            payload.put_u8((n - 1) as u8);
            payload.put_u8((k - 1) as u8);
            payload.put_u8(i as u8);
            payload.put_u16(first.header.sequence_number);
            payload.put_u16(len16);
            payload.put_u32(sum);
            payload.put_slice(&r);
            let s = *seq;
            *seq = seq.wrapping_add(1);
            rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: RS_PAYLOAD_TYPE,
                    sequence_number: s,
                    timestamp: last.header.timestamp,
                    ssrc: ssrc_fec,
                    ..Default::default()
                },
                payload: payload.freeze(),
            }
        })
        .collect()
}

/// A parsed repair packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Repair {
    n: usize,
    k: usize,
    index: usize,
    base: u16,
    len: usize,
    check: u32,
    symbol: Bytes,
}

fn parse(payload: &Bytes) -> Option<Repair> {
    if payload.len() < HEADER || payload[..2] != MAGIC || payload[2] != VERSION {
        return None;
    }
    let n = usize::from(payload[3]) + 1;
    let k = usize::from(payload[4]) + 1;
    let index = usize::from(payload[5]);
    let base = u16::from_be_bytes([payload[6], payload[7]]);
    let len = usize::from(u16::from_be_bytes([payload[8], payload[9]]));
    let check = u32::from_be_bytes([payload[10], payload[11], payload[12], payload[13]]);
    if index >= k || n > MAX_N || k > 2 * n || payload.len() != HEADER + len {
        return None;
    }
    Some(Repair {
        n,
        k,
        index,
        base,
        len,
        check,
        symbol: payload.slice(HEADER..),
    })
}

/// One block being received.
struct Block {
    base: u16,
    n: usize,
    k: usize,
    len: usize,
    check: u32,
    repairs: Vec<(usize, Bytes)>,
    /// Whole (rebuilt, or nothing was missing when last looked) or beyond repair.
    done: bool,
    /// When its first repair came.
    born: Instant,
}

impl Block {
    fn covers(&self, seq: u16) -> bool {
        usize::from(seq.wrapping_sub(self.base)) < self.n
    }
}

/// One protected media stream at the receiver.
struct Stream {
    ssrc: u32,
    recent: Vec<Option<rtc::rtp::Packet>>,
    blocks: VecDeque<Block>,
    /// The newest media sequence number seen.
    newest: Option<u16>,
}

impl Stream {
    fn new(ssrc: u32) -> Stream {
        Stream {
            ssrc,
            recent: vec![None; RING],
            blocks: VecDeque::new(),
            newest: None,
        }
    }

    /// Forgets blocks too old to matter: past [`BLOCK_LIFE`], or so far behind the newest
    /// packet that their packets have left the ring (a block whose numbers come round again
    /// is never mistaken for an old one).
    fn expire(&mut self, now: Instant) {
        let newest = self.newest;
        self.blocks.retain(|b| {
            let young = now.saturating_duration_since(b.born) < BLOCK_LIFE;
            let near = newest.is_none_or(|h| {
                let behind = h.wrapping_sub(b.base);
                // Ahead of the newest (repairs before their media) or within the ring.
                behind > u16::MAX / 2 || usize::from(behind) + b.n <= RING
            });
            young && near
        });
    }

    fn get(&self, seq: u16) -> Option<&rtc::rtp::Packet> {
        self.recent[usize::from(seq) % RING]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
    }

    fn keep(&mut self, p: &rtc::rtp::Packet) {
        let seq = p.header.sequence_number;
        self.recent[usize::from(seq) % RING] = Some(p.clone());
        if self
            .newest
            .is_none_or(|h| seq.wrapping_sub(h) != 0 && seq.wrapping_sub(h) < u16::MAX / 2)
        {
            self.newest = Some(seq);
        }
    }

    /// Rebuilds what block `b` misses if it can; the packets rebuilt.
    fn try_block(&mut self, b: usize) -> Vec<rtc::rtp::Packet> {
        let Some(block) = self.blocks.get(b) else {
            return Vec::new();
        };
        if block.done {
            return Vec::new();
        }
        let (base, n, k, len, sum) = (block.base, block.n, block.k, block.len, block.check);
        let missing = (0..n)
            .filter(|&j| self.get(base.wrapping_add(j as u16)).is_none())
            .count();
        if missing == 0 {
            self.blocks[b].done = true;
            return Vec::new();
        }
        if missing > self.blocks[b].repairs.len() {
            return Vec::new();
        }
        let mut data: Vec<Option<Vec<u8>>> = (0..n)
            .map(|j| self.get(base.wrapping_add(j as u16)).and_then(symbol))
            .collect();
        if data.iter().filter(|d| d.is_none()).count() != missing {
            // A held packet that does not marshal: nothing to rebuild from.
            self.blocks[b].done = true;
            return Vec::new();
        }
        let repairs: Vec<(usize, &[u8])> = self.blocks[b]
            .repairs
            .iter()
            .map(|(i, s)| (*i, s.as_ref()))
            .collect();
        let rebuilt = rs::decode(&mut data, k, &repairs, len);
        self.blocks[b].done = true;
        let Ok(rebuilt) = rebuilt else {
            return Vec::new();
        };
        // The rebuilt symbols must make the block the sender checked, or none is used.
        let whole: Option<Vec<&[u8]>> = data
            .iter()
            .map(|d| d.as_deref().and_then(unpadded))
            .collect();
        if whole.is_none_or(|w| check(&w) != sum) {
            tracing::debug!(
                ssrc = self.ssrc,
                base,
                "rs fec: a rebuilt block fails its check"
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for j in rebuilt {
            let seq = base.wrapping_add(j as u16);
            // A symbol that does not hold the packet it should (a sender's bug, a damaged
            // repair): dropped, never passed on as media.
            if let Some(p) = data[j].as_deref().and_then(unsymbol)
                && p.header.ssrc == self.ssrc
                && p.header.sequence_number == seq
            {
                self.keep(&p);
                out.push(p);
            }
        }
        out
    }
}

/// The receive side (below rtc's FlexFEC-03 decoder, above the transport-wide number's
/// removal): swallows our repair packets and passes on, after the packet that completed them,
/// the media packets they rebuilt, marked [`Attribute::RecoveredByFec`]. FlexFEC-03 packets
/// and everything else pass through.
#[derive(Default)]
pub struct RsFecReceiver {
    /// Repair SSRC → protected media SSRC, and the payload type negotiated for FlexFEC-03.
    repair_to_media: HashMap<u32, (u32, Option<u8>)>,
    streams: HashMap<u32, Stream>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RsFecReceiver {
    /// A receiver that learns the repair SSRCs as the remote's streams are bound.
    pub fn new() -> RsFecReceiver {
        RsFecReceiver::default()
    }

    fn queue_rebuilt(
        &mut self,
        now: Instant,
        transport: rtc::shared::TransportContext,
        rebuilt: Vec<rtc::rtp::Packet>,
    ) {
        for p in rebuilt {
            self.read.push_back(TaggedPacket {
                now,
                transport,
                message: AttributedPacket::new(Packet::Rtp(p)).with(Attribute::RecoveredByFec),
            });
        }
    }

    fn read_rtp(&mut self, msg: TaggedPacket) {
        let Packet::Rtp(p) = &msg.message.packet else {
            self.read.push_back(msg);
            return;
        };
        let (now, transport) = (msg.now, msg.transport);
        if p.header.payload_type == RS_PAYLOAD_TYPE
            && let Some(&(media, flexfec)) = self.repair_to_media.get(&p.header.ssrc)
            && flexfec != Some(RS_PAYLOAD_TYPE)
            && let Some(r) = parse(&p.payload)
        {
            // Ours: swallowed. (Anything else on the repair SSRC, a FlexFEC-03 packet whose
            // payload type the remote chose as ours included, goes on to rtc's decoder.)
            let stream = self
                .streams
                .entry(media)
                .or_insert_with(|| Stream::new(media));
            stream.expire(now);
            let at = match stream.blocks.iter().position(|b| b.base == r.base) {
                Some(at)
                    if stream.blocks[at].n == r.n
                        && stream.blocks[at].k == r.k
                        && stream.blocks[at].len == r.len
                        && stream.blocks[at].check == r.check =>
                {
                    at
                }
                other => {
                    // New, or another block at the same place (the numbers came round): this
                    // one replaces it.
                    if let Some(at) = other {
                        stream.blocks.remove(at);
                    }
                    if stream.blocks.len() >= MAX_BLOCKS {
                        stream.blocks.pop_front();
                    }
                    stream.blocks.push_back(Block {
                        base: r.base,
                        n: r.n,
                        k: r.k,
                        len: r.len,
                        check: r.check,
                        repairs: Vec::new(),
                        done: false,
                        born: now,
                    });
                    stream.blocks.len() - 1
                }
            };
            let block = &mut stream.blocks[at];
            if !block.done && !block.repairs.iter().any(|(i, _)| *i == r.index) {
                block.repairs.push((r.index, r.symbol));
            }
            let rebuilt = stream.try_block(at);
            self.queue_rebuilt(now, transport, rebuilt);
            return;
        }
        let Some(stream) = self.streams.get_mut(&p.header.ssrc) else {
            self.read.push_back(msg);
            return;
        };
        stream.keep(p);
        stream.expire(now);
        let seq = p.header.sequence_number;
        let mut rebuilt = Vec::new();
        for b in 0..stream.blocks.len() {
            if stream.blocks[b].covers(seq) {
                rebuilt.extend(stream.try_block(b));
            }
        }
        // The live packet first; what it completed after it.
        self.read.push_back(msg);
        self.queue_rebuilt(now, transport, rebuilt);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RsFecReceiver {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_rtp(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RsFecReceiver {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(fec) = info.ssrc_fec {
            self.repair_to_media
                .insert(fec, (info.ssrc, info.payload_type_fec));
            self.streams
                .entry(info.ssrc)
                .or_insert_with(|| Stream::new(info.ssrc));
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(fec) = info.ssrc_fec {
            self.repair_to_media.remove(&fec);
        }
        self.streams.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(seq: u16, marker: bool) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 102,
                sequence_number: seq,
                timestamp: 9000,
                ssrc: 7,
                marker,
                ..Default::default()
            },
            payload: Bytes::from(vec![seq as u8; 700 + usize::from(seq % 5) * 90]),
        }
    }

    fn tagged(p: rtc::rtp::Packet) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(p)),
        }
    }

    fn receiver() -> RsFecReceiver {
        let mut r = RsFecReceiver::new();
        r.bind_remote_stream(&StreamInfo {
            ssrc: 7,
            ssrc_fec: Some(9),
            payload_type_fec: Some(118),
            ..Default::default()
        });
        r
    }

    /// Feeds `packets` in; what comes out (media, in order).
    fn run(r: &mut RsFecReceiver, packets: Vec<rtc::rtp::Packet>) -> Vec<(rtc::rtp::Packet, bool)> {
        let mut out = Vec::new();
        for p in packets {
            r.handle_read(tagged(p)).expect("takes it");
            while let Some(m) = r.poll_read() {
                let rebuilt = m
                    .message
                    .attributes
                    .iter()
                    .any(|a| matches!(a, Attribute::RecoveredByFec));
                if let Packet::Rtp(p) = m.message.packet {
                    out.push((p, rebuilt));
                }
            }
        }
        out
    }

    #[test]
    fn a_frame_missing_as_many_packets_as_it_has_repairs_is_rebuilt_whatever_was_lost() {
        let frame: Vec<_> = (65531..=65535u16)
            .chain(0..1)
            .enumerate()
            .map(|(i, s)| media(s, i == 5))
            .collect();
        let mut seq = 100;
        let repairs = repair_packets(&frame, 3, 9, &mut seq);
        assert_eq!(repairs.len(), 3);
        assert_eq!(seq, 103);
        assert!(
            repairs
                .iter()
                .all(|r| r.header.payload_type == RS_PAYLOAD_TYPE && r.header.ssrc == 9)
        );
        // Three of six lost (across the number's wrap), one repair lost too, the rest late.
        let lost = [0usize, 3, 5];
        let mut r = receiver();
        let mut packets: Vec<_> = repairs.iter().skip(1).cloned().collect();
        packets.extend(
            frame
                .iter()
                .enumerate()
                .filter(|(i, _)| !lost.contains(i))
                .map(|(_, p)| p.clone()),
        );
        let out = run(&mut r, packets.clone());
        let rebuilt: Vec<_> = out
            .iter()
            .filter(|(_, b)| *b)
            .map(|(p, _)| p.clone())
            .collect();
        // Two repairs for three losses: nothing yet.
        assert!(rebuilt.is_empty());
        assert_eq!(out.len(), 3, "the live media passes, the repairs do not");
        let out = run(&mut r, vec![repairs[0].clone()]);
        let seqs: Vec<u16> = out.iter().map(|(p, _)| p.header.sequence_number).collect();
        assert_eq!(out.len(), 3, "{seqs:?}");
        for (p, b) in &out {
            assert!(b);
            let want = frame
                .iter()
                .find(|f| f.header.sequence_number == p.header.sequence_number)
                .expect("one of the frame's");
            assert_eq!(p, want);
        }
        // A resend of a rebuilt packet passes as it is; nothing is rebuilt twice.
        let out = run(&mut r, vec![frame[3].clone(), repairs[1].clone()]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].1);
    }

    #[test]
    fn damaged_or_foreign_repairs_are_dropped_and_other_packets_pass() {
        let frame: Vec<_> = (10..14u16).map(|s| media(s, s == 13)).collect();
        let mut seq = 0;
        let mut repairs = repair_packets(&frame, 2, 9, &mut seq);
        // A damaged symbol: what it would rebuild does not hold the packet it should.
        let mut bad = repairs[0].payload.to_vec();
        for b in &mut bad[HEADER..] {
            *b ^= 0x5a;
        }
        repairs[0].payload = Bytes::from(bad);
        let mut r = receiver();
        let out = run(
            &mut r,
            vec![
                frame[0].clone(),
                frame[2].clone(),
                repairs[0].clone(),
                repairs[1].clone(),
            ],
        );
        assert!(
            out.iter().all(|(_, b)| !b),
            "nothing made up from a damaged repair"
        );
        // Truncated, wrong magic, unknown SSRC: dropped or passed, never a panic.
        let mut short = repairs[1].clone();
        short.payload = Bytes::from_static(b"OR\x01");
        let mut other = repairs[1].clone();
        other.header.ssrc = 55;
        let mut flexfec = repairs[1].clone();
        flexfec.header.payload_type = 118;
        let out = run(&mut r, vec![short, other.clone(), flexfec.clone()]);
        assert_eq!(
            out.len(),
            3,
            "what is not ours (unparsable, another SSRC, FlexFEC) passes on"
        );
        // An audio packet on an unprotected SSRC passes untouched.
        let mut audio = media(1, false);
        audio.header.ssrc = 3;
        assert_eq!(run(&mut r, vec![audio.clone()]), vec![(audio, false)]);
    }

    #[test]
    fn an_old_blocks_repairs_never_rebuild_a_newer_packet_with_the_same_numbers() {
        // Frame A's repairs came but its media did not (nothing rebuildable: four lost, two
        // repairs). Later packets with the same numbers (the numbers came round) are B's.
        let a: Vec<_> = (10..14u16).map(|s| media(s, s == 13)).collect();
        let b: Vec<_> = a
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.payload = Bytes::from(vec![0xEE; p.payload.len()]);
                p
            })
            .collect();
        let mut seq = 0;
        let a_repairs = repair_packets(&a, 2, 9, &mut seq);
        let mut r = receiver();
        assert!(run(&mut r, a_repairs).is_empty());
        // B arrives without two of its packets and without repairs of its own: A's repairs
        // would "rebuild" them wrong; the check refuses.
        let out = run(&mut r, vec![b[0].clone(), b[3].clone()]);
        assert!(out.iter().all(|(_, rebuilt)| !rebuilt), "{out:?}");
        // With B's own repairs (another check: a new block in the old one's place) they are
        // rebuilt right.
        let b_repairs = repair_packets(&b, 2, 9, &mut seq);
        let out = run(&mut r, b_repairs);
        assert_eq!(out.len(), 2);
        for (p, rebuilt) in out {
            assert!(rebuilt);
            assert_eq!(p.payload[0], 0xEE);
        }
    }

    #[test]
    fn a_block_is_forgotten_after_its_life() {
        let a: Vec<_> = (10..14u16).map(|s| media(s, s == 13)).collect();
        let mut seq = 0;
        let repairs = repair_packets(&a, 2, 9, &mut seq);
        let mut r = receiver();
        let t = Instant::now();
        r.handle_read(TaggedPacket {
            now: t,
            ..tagged(repairs[0].clone())
        })
        .expect("takes it");
        // The media come after the block's life: nothing is rebuilt from it.
        for p in [a[0].clone(), a[1].clone(), a[2].clone()] {
            r.handle_read(TaggedPacket {
                now: t + BLOCK_LIFE + std::time::Duration::from_millis(1),
                ..tagged(p)
            })
            .expect("takes it");
        }
        let mut rebuilt = 0;
        while let Some(m) = r.poll_read() {
            rebuilt += usize::from(
                m.message
                    .attributes
                    .iter()
                    .any(|a| matches!(a, Attribute::RecoveredByFec)),
            );
        }
        assert_eq!(rebuilt, 0);
        assert!(r.streams.get(&7).is_some_and(|s| s.blocks.is_empty()));
    }

    #[test]
    fn parse_rejects_what_it_does_not_know() {
        let frame: Vec<_> = (0..3u16).map(|s| media(s, s == 2)).collect();
        let mut seq = 0;
        let r = repair_packets(&frame, 2, 9, &mut seq);
        assert!(parse(&r[0].payload).is_some());
        let mut v = r[0].payload.to_vec();
        v[2] = 2;
        assert!(parse(&Bytes::from(v)).is_none(), "another version");
        let mut v = r[0].payload.to_vec();
        v[5] = 7;
        assert!(parse(&Bytes::from(v)).is_none(), "an index past k");
        let mut v = r[0].payload.to_vec();
        v.pop();
        assert!(
            parse(&Bytes::from(v)).is_none(),
            "a length that does not match"
        );
        assert!(repair_packets(&[], 2, 9, &mut seq).is_empty());
        assert!(repair_packets(&frame, 0, 9, &mut seq).is_empty());
    }
}
