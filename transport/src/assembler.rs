//! RTP packets of one H.264 stream back into access units: depacketise (single NAL, STAP-A,
//! FU-A), group by RTP timestamp, close a unit on the marker bit. A gap in sequence numbers
//! drops the broken unit and everything up to the next keyframe, and asks for one. A unit
//! larger than the limit (4 MiB by default) is dropped the same way as it grows, so a sender
//! cannot make a player hold unbounded memory by never setting the marker.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::sei;

/// A complete access unit.
#[derive(Clone, Debug)]
pub struct AccessUnit {
    /// Annex-B data.
    pub data: Vec<u8>,
    /// The RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// An IDR.
    pub keyframe: bool,
}

/// What the assembler wants the caller to do besides decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Packets taken.
    pub packets: u64,
    /// Packets missing (by sequence number).
    pub lost: u64,
    /// Units dropped while waiting for a keyframe.
    pub dropped_units: u64,
    /// Units dropped for growing past the size limit.
    pub oversized_units: u64,
}

/// The largest access unit assembled by default: far above any real frame (a 4K keyframe
/// at a high bitrate is well under 1 MiB), far below what would hurt a player.
pub const DEFAULT_MAX_UNIT_BYTES: usize = 4 * 1024 * 1024;

/// Reassembles one video stream.
pub struct Assembler {
    depacketizer: H264Packet,
    current: Vec<u8>,
    current_ts: Option<u32>,
    last_seq: Option<u16>,
    broken: bool,
    waiting_for_keyframe: bool,
    /// The current unit outgrew `max_unit_bytes`: its remaining packets are discarded.
    discarding: bool,
    /// Payload bytes taken for the current unit (the depacketiser holds FU-A fragments
    /// itself until the last one, so this, not `current`, is what the unit costs).
    unit_bytes: usize,
    max_unit_bytes: usize,
    /// Counters.
    pub stats: AssemblerStats,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler {
            depacketizer: H264Packet::default(),
            current: Vec::new(),
            current_ts: None,
            last_seq: None,
            broken: false,
            waiting_for_keyframe: true,
            discarding: false,
            unit_bytes: 0,
            max_unit_bytes: DEFAULT_MAX_UNIT_BYTES,
            stats: AssemblerStats::default(),
        }
    }
}

/// The result of feeding one packet.
#[derive(Debug, Default)]
pub struct Fed {
    /// A unit completed by this packet.
    pub unit: Option<AccessUnit>,
    /// Ask the sender for a keyframe.
    pub request_keyframe: bool,
}

impl Assembler {
    /// An assembler dropping units larger than `max_unit_bytes`.
    pub fn with_max_unit_bytes(max_unit_bytes: usize) -> Self {
        Assembler {
            max_unit_bytes,
            ..Assembler::default()
        }
    }

    /// Drops units until the next keyframe (the consumer lost one, so what follows would not
    /// decode).
    pub fn require_keyframe(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Feeds one RTP packet (sequence number, timestamp, marker, payload).
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) -> Fed {
        let mut fed = Fed::default();
        self.stats.packets += 1;
        if let Some(last) = self.last_seq {
            let gap = seq.wrapping_sub(last);
            if gap == 0 || gap > 0x8000 {
                return fed; // duplicate or late: already past it
            }
            if gap > 1 {
                self.stats.lost += u64::from(gap - 1);
                self.broken = true;
            }
        }
        self.last_seq = Some(seq);
        if self.current_ts != Some(timestamp) {
            // A new unit began without the last one's marker: the tail was lost.
            if self.current_ts.is_some() && !self.current.is_empty() {
                self.broken = true;
            }
            self.current.clear();
            self.discarding = false;
            self.unit_bytes = 0;
            // A NAL never spans two timestamps: fragments of an unfinished one go too.
            self.depacketizer = H264Packet::default();
            self.current_ts = Some(timestamp);
            if self.broken {
                self.waiting_for_keyframe = true;
                fed.request_keyframe = true;
                self.broken = false;
            }
        }
        self.unit_bytes = self.unit_bytes.saturating_add(payload.len());
        if !self.discarding && self.unit_bytes > self.max_unit_bytes {
            // Give the memory back now (ours and the depacketiser's fragments); the unit is
            // dropped at its end, and a keyframe asked for.
            self.current = Vec::new();
            self.depacketizer = H264Packet::default();
            self.discarding = true;
            self.broken = true;
            self.stats.oversized_units += 1;
            tracing::warn!(
                limit = self.max_unit_bytes,
                "dropping an access unit over the size limit"
            );
        }
        if !self.discarding {
            // rtc's depacketiser indexes past the end of a STAP-A whose last size field is cut
            // short (a panic on a remote sender's bytes): such a packet is broken here first.
            if !stap_a_well_formed(payload) {
                self.broken = true;
            } else {
                match self.depacketizer.depacketize(payload) {
                    Ok(nals) => self.current.extend_from_slice(&nals),
                    Err(_) => self.broken = true,
                }
            }
        }
        if marker {
            let data = std::mem::take(&mut self.current);
            self.current_ts = None;
            if self.broken {
                self.broken = false;
                self.waiting_for_keyframe = true;
                self.stats.dropped_units += 1;
                fed.request_keyframe = true;
                return fed;
            }
            let keyframe = sei::is_keyframe(&data);
            if self.waiting_for_keyframe && !keyframe {
                // Joined mid-GOP (or the keyframe was lost before the connection was up): ask.
                self.stats.dropped_units += 1;
                fed.request_keyframe = true;
                return fed;
            }
            self.waiting_for_keyframe = false;
            fed.unit = Some(AccessUnit {
                data,
                rtp_timestamp: timestamp,
                keyframe,
            });
        }
        fed
    }
}

/// Whether a payload is not a STAP-A, or is one whose size fields all fit: each NAL unit's
/// two-byte size is whole and within the packet.
/// The sequence parameter set an Annex-B access unit carries, if any (its NAL unit without the
/// start code): a keyframe whose SPS differs from the last one starts a new encoding (another
/// simulcast layer, a new resolution).
pub fn sps_of(annex_b: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut start = None;
    while i + 3 <= annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            if let Some(s) = start {
                // The NAL unit ends where the next start code (3 or 4 bytes) begins.
                let end = if i > 0 && annex_b[i - 1] == 0 {
                    i - 1
                } else {
                    i
                };
                if end > s && annex_b[s] & 0x1f == 7 {
                    return Some(&annex_b[s..end]);
                }
            }
            start = Some(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    start
        .filter(|s| *s < annex_b.len() && annex_b[*s] & 0x1f == 7)
        .map(|s| &annex_b[s..])
}

fn stap_a_well_formed(payload: &[u8]) -> bool {
    if payload.first().map(|h| h & 0x1f) != Some(24) {
        return true;
    }
    let mut i = 1;
    while i < payload.len() {
        let Some(size) = payload.get(i..i + 2) else {
            return false;
        };
        i += 2 + usize::from(u16::from_be_bytes([size[0], size[1]]));
        if i > payload.len() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sps_is_found_in_an_access_unit() {
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9];
        let pps = [0x68, 0xce, 0x3c];
        let idr = [0x65, 0x88, 0x84];
        let mut au = vec![0, 0, 0, 1];
        au.extend_from_slice(&sps);
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&pps);
        au.extend_from_slice(&[0, 0, 1]);
        au.extend_from_slice(&idr);
        assert_eq!(sps_of(&au), Some(&sps[..]));
        // Last in the unit, and absent.
        let mut tail = vec![0, 0, 1];
        tail.extend_from_slice(&idr);
        tail.extend_from_slice(&[0, 0, 1]);
        tail.extend_from_slice(&sps);
        assert_eq!(sps_of(&tail), Some(&sps[..]));
        assert_eq!(sps_of(&[0, 0, 1, 0x41, 1, 2]), None);
        assert_eq!(sps_of(&[]), None);
        assert_eq!(sps_of(&[0, 0, 1]), None);
    }

    #[test]
    fn a_stap_a_cut_short_is_broken_not_a_panic() {
        assert!(stap_a_well_formed(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]));
        assert!(!stap_a_well_formed(&[0x78, 0, 2, 0x67, 0x42, 0])); // half a size field
        assert!(!stap_a_well_formed(&[0x78, 0, 9, 0x67])); // larger than the packet
        assert!(stap_a_well_formed(&[0x65, 1, 2]));
        let mut a = Assembler::default();
        let fed = a.push(
            1,
            0,
            true,
            &Bytes::from_static(&[0x78, 0, 2, 0x67, 0x42, 0]),
        );
        assert!(fed.unit.is_none());
    }

    /// A single-NAL packet of type `nal_type` with `len` bytes of body.
    fn nal(nal_type: u8, len: usize) -> Bytes {
        let mut p = vec![0x60 | nal_type];
        p.extend(std::iter::repeat_n(0xAB, len));
        Bytes::from(p)
    }

    /// FU-A fragments of one NAL of type `nal_type`: `parts` fragments of `len` bytes.
    fn fu_a(nal_type: u8, parts: usize, len: usize) -> Vec<Bytes> {
        (0..parts)
            .map(|i| {
                let mut header = nal_type;
                if i == 0 {
                    header |= 0x80;
                }
                if i + 1 == parts {
                    header |= 0x40;
                }
                let mut p = vec![0x60 | 28, header];
                p.extend(std::iter::repeat_n(0xCD, len));
                Bytes::from(p)
            })
            .collect()
    }

    #[test]
    fn units_close_on_the_marker_and_start_at_a_keyframe() {
        let mut a = Assembler::default();
        // Mid-GOP first: dropped, and a keyframe is asked for.
        let fed = a.push(1, 100, true, &nal(1, 50));
        assert!(fed.unit.is_none() && fed.request_keyframe);
        // An IDR in three fragments, then a P-frame.
        let mut seq = 2;
        let parts = fu_a(5, 3, 1000);
        let mut unit = None;
        for (i, p) in parts.iter().enumerate() {
            unit = a.push(seq, 200, i + 1 == parts.len(), p).unit;
            seq += 1;
        }
        let unit = unit.expect("the keyframe");
        assert!(unit.keyframe);
        assert_eq!(unit.rtp_timestamp, 200);
        let p = a.push(seq, 300, true, &nal(1, 40)).unit.expect("a P-frame");
        assert!(!p.keyframe);
        // A gap: the broken unit goes, and the next keyframe is waited for.
        let fed = a.push(seq + 2, 400, true, &nal(1, 40));
        assert!(fed.unit.is_none() && fed.request_keyframe);
        assert_eq!(a.stats.lost, 1);
    }

    #[test]
    fn a_unit_that_never_ends_is_dropped_at_the_limit_and_memory_stays_bounded() {
        let mut a = Assembler::with_max_unit_bytes(64 * 1024);
        let mut seq = 0u16;
        // A good keyframe first.
        for (i, p) in fu_a(5, 2, 1000).iter().enumerate() {
            a.push(seq, 10, i == 1, p);
            seq = seq.wrapping_add(1);
        }
        // A sender that never sets the marker: 10 MB of one unit.
        let parts = fu_a(1, 10_000, 1000);
        let mut asked = false;
        for p in &parts[..parts.len() - 1] {
            asked |= a.push(seq, 20, false, p).request_keyframe;
            seq = seq.wrapping_add(1);
            assert!(
                a.current.len() <= 64 * 1024,
                "held {} bytes",
                a.current.len()
            );
            assert!(a.unit_bytes <= 64 * 1024 || a.discarding);
        }
        assert_eq!(a.stats.oversized_units, 1);
        // Its end: dropped, a keyframe asked for.
        let fed = a.push(seq, 20, true, &parts[parts.len() - 1]);
        seq = seq.wrapping_add(1);
        assert!(fed.unit.is_none());
        assert!(asked || fed.request_keyframe);
        // A normal keyframe after it decodes again.
        let mut unit = None;
        for (i, p) in fu_a(5, 2, 1000).iter().enumerate() {
            unit = a.push(seq, 30, i == 1, p).unit;
            seq = seq.wrapping_add(1);
        }
        assert!(unit.is_some_and(|u| u.keyframe));
    }

    #[test]
    fn fragments_that_never_end_across_timestamps_hold_no_memory() {
        let mut a = Assembler::with_max_unit_bytes(64 * 1024);
        // An FU-A start, then middle fragments, each with a new timestamp, forever.
        let start = fu_a(5, 3, 1000);
        a.push(0, 0, false, &start[0]);
        for i in 1..5_000u16 {
            a.push(i, u32::from(i) * 3000, false, &start[1]);
        }
        // Then a normal keyframe still decodes.
        let mut unit = None;
        for (i, p) in fu_a(5, 2, 1000).iter().enumerate() {
            unit = a.push(5_000 + i as u16, 99_000_000, i == 1, p).unit;
        }
        assert!(unit.is_some_and(|u| u.keyframe && u.data.len() < 4_000));
    }
}
