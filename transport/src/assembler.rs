//! RTP packets of one H.264 stream back into access units: depacketise (single NAL, STAP-A,
//! FU-A), group by RTP timestamp, close a unit on the marker bit. A gap in sequence numbers
//! drops the broken unit and everything up to the next keyframe, and asks for one.

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
}

/// Reassembles one video stream.
pub struct Assembler {
    depacketizer: H264Packet,
    current: Vec<u8>,
    current_ts: Option<u32>,
    last_seq: Option<u16>,
    broken: bool,
    waiting_for_keyframe: bool,
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
            self.current_ts = Some(timestamp);
            if self.broken {
                self.waiting_for_keyframe = true;
                fed.request_keyframe = true;
                self.broken = false;
            }
        }
        match self.depacketizer.depacketize(payload) {
            Ok(nals) => self.current.extend_from_slice(&nals),
            Err(_) => self.broken = true,
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
