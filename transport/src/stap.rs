//! Small NAL units of one access unit packed into STAP-A aggregates (RFC 6184 §5.7.1) before
//! the RTP payloader sees them, so they share one packet instead of one packet each.
//!
//! rtc's payloader sends every NAL unit in its own packet, except SPS and PPS, which it packs
//! together. Our frames carry a capture-time SEI before their slices, and x264's sliced
//! threads cut each picture into several slices: a 180p P-frame was three packets of 106, 240
//! and 240 bytes, so 80 bytes of headers each (Ethernet, IP, UDP, RTP, extensions, SRTP tag)
//! made 100 kbit/s of video cost 160 kbit/s on the wire. [`aggregate`] rewrites the Annex-B
//! access unit so that each run of units that fits one packet is a single STAP-A unit; the
//! payloader then sends it whole as it sends any unit that fits.

use crate::sei::nal_units;

/// Payload bytes one RTP packet carries in webrtc-rs's sample writer (1200 − the RTP header).
pub const MAX_PAYLOAD: usize = 1188;

/// NAL unit type of a STAP-A aggregate.
const STAP_A: u8 = 24;
/// Types the payloader drops: access unit delimiter, filler.
const DROPPED: [u8; 2] = [9, 12];

/// The access unit `annex_b` with each run of consecutive NAL units that fits `max` payload
/// bytes together packed into one STAP-A unit, in order. Units too big to share a packet (the
/// payloader cuts them into FU-A fragments) and runs of one stay as they were; AUD and filler
/// units, which the payloader drops, are dropped here.
pub fn aggregate(annex_b: &[u8], max: usize) -> Vec<u8> {
    // Sizes are 16-bit.
    let max = max.min(usize::from(u16::MAX));
    let mut units = nal_units(annex_b);
    if units.is_empty() {
        // Not Annex-B: nothing to pack.
        return annex_b.to_vec();
    }
    units.retain(|u| u.first().is_some_and(|h| !DROPPED.contains(&(h & 0x1f))));
    let mut out = Vec::with_capacity(annex_b.len() + 4 * units.len());
    let mut run: Vec<&[u8]> = Vec::new();
    // A STAP-A's size: its header byte, then a 16-bit size before each unit.
    let mut run_size = 1;
    for unit in units {
        if !run.is_empty() && run_size + 2 + unit.len() > max {
            flush(&run, &mut out);
            run.clear();
            run_size = 1;
        }
        run.push(unit);
        run_size += 2 + unit.len();
    }
    flush(&run, &mut out);
    out
}

/// Appends `run` to `out` as one STAP-A unit, or unit by unit when it is one unit or the
/// aggregate would not survive the trip through Annex-B.
fn flush(run: &[&[u8]], out: &mut Vec<u8>) {
    if let [_, _, ..] = run {
        // Written in place; taken back if it would not read back whole.
        let start = out.len();
        let nri = run.iter().map(|u| u[0] & 0x60).max().unwrap_or(0);
        let forbidden = run.iter().fold(0, |f, u| f | (u[0] & 0x80));
        out.extend_from_slice(&[0, 0, 0, 1, forbidden | nri | STAP_A]);
        for unit in run {
            // A run never exceeds `max` (≤ 65,535), so each size fits 16 bits.
            out.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            out.extend_from_slice(unit);
        }
        if survives_annex_b(&out[start + 4..]) {
            return;
        }
        out.truncate(start);
    }
    for unit in run {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
    }
}

/// Whether `unit`, written after a start code, reads back whole: no `00 00 01` inside it, the
/// only pattern the payloader splits on (the size fields are not emulation-protected: a size
/// of 1 after a unit ending in 0x00 would make one; `00 00 03`, the emulation-prevention byte
/// every NAL unit may carry, is not one), and no zero byte at its end, which would be read as
/// the next start code's.
fn survives_annex_b(unit: &[u8]) -> bool {
    unit.last().is_some_and(|b| *b != 0) && !unit.windows(3).any(|w| w == [0, 0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annex_b(units: &[&[u8]]) -> Vec<u8> {
        units
            .iter()
            .flat_map(|u| [&[0u8, 0, 0, 1][..], u].concat())
            .collect()
    }

    /// The payloads rtc's payloader makes of an Annex-B access unit, depacketised again the way
    /// the player does, give the same units.
    fn round_trip(au: &[u8]) -> (usize, Vec<u8>) {
        use bytes::Bytes;
        use rtc::rtp::packetizer::{Depacketizer, Payloader};
        let mut payloader = rtc::rtp::codec::h264::H264Payloader::default();
        let payloads = payloader
            .payload(MAX_PAYLOAD, &Bytes::copy_from_slice(au))
            .expect("payload");
        let mut depacketizer = rtc::rtp::codec::h264::H264Packet::default();
        let mut out = Vec::new();
        for p in &payloads {
            out.extend_from_slice(&depacketizer.depacketize(p).expect("depacketize"));
        }
        (payloads.len(), out)
    }

    const SEI: &[u8] = &[0x06, 0x05, 0x10, 0xaa, 0xbb, 0x80];
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn slice(kind: u8, len: usize) -> Vec<u8> {
        let mut s = vec![kind];
        s.extend((0..len - 1).map(|i| (i % 250) as u8 + 4));
        s
    }

    #[test]
    fn small_units_share_one_packet_and_read_back_in_order() {
        let (a, b) = (slice(0x41, 230), slice(0x41, 240));
        let au = annex_b(&[SEI, &a, &b]);
        assert_eq!(round_trip(&au).0, 3, "one packet a unit before");
        let packed = aggregate(&au, MAX_PAYLOAD);
        let (packets, units) = round_trip(&packed);
        assert_eq!(packets, 1);
        assert_eq!(nal_units(&units), vec![SEI, &a[..], &b[..]]);
        // The aggregate carries the highest NRI of its units (the slices' 2).
        assert_eq!(nal_units(&packed)[0][0], 0x40 | STAP_A);
    }

    #[test]
    fn a_keyframe_packs_its_parameter_sets_and_fragments_what_is_big() {
        let idr = slice(0x65, 3000);
        let p = slice(0x65, 400);
        let au = annex_b(&[&[0x09, 0xf0][..], SPS, PPS, SEI, &idr, &p]);
        let packed = aggregate(&au, MAX_PAYLOAD);
        let units = nal_units(&packed);
        // SPS, PPS and SEI together; the big slice alone (cut by the payloader); the small
        // slice alone (nothing after it to share with). The delimiter is gone.
        assert_eq!(units.len(), 3);
        assert_eq!(units[0][0] & 0x1f, STAP_A);
        assert!(crate::simulcast::starts_keyframe(units[0]));
        assert_eq!(crate::simulcast::rtp_sps(units[0]), Some(SPS));
        let (_, back) = round_trip(&packed);
        assert_eq!(nal_units(&back), vec![SPS, PPS, SEI, &idr[..], &p[..]]);
    }

    #[test]
    fn a_run_stops_at_the_payload_size() {
        let units: Vec<Vec<u8>> = (0..5).map(|_| slice(0x41, 500)).collect();
        let refs: Vec<&[u8]> = units.iter().map(|u| &u[..]).collect();
        let packed = aggregate(&annex_b(&refs), MAX_PAYLOAD);
        let out = nal_units(&packed);
        // 1 + 2 × 502 fits 1188, a third does not: pairs, then the last alone.
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|u| u.len() <= MAX_PAYLOAD));
        let (_, back) = round_trip(&packed);
        assert_eq!(nal_units(&back), refs);
    }

    #[test]
    fn an_aggregate_that_would_read_as_a_start_code_is_not_made() {
        assert!(!survives_annex_b(&[
            0x78, 0x00, 0x02, 0x41, 0x00, 0x00, 0x01, 0x09
        ]));
        assert!(!survives_annex_b(&[0x78, 0x00, 0x02, 0x41, 0x00]));
        // (Units split from Annex-B never end in 0x00 — trailing zeros are padding — nor hold
        // 00 00 01, so this guards broken input only.)
        // An emulation-prevention byte (00 00 03) inside a unit is no start code: packed.
        let sps: &[u8] = &[0x67, 0x42, 0x00, 0x00, 0x03, 0x01, 0x80];
        let packed = aggregate(&annex_b(&[SEI, sps, PPS]), MAX_PAYLOAD);
        assert_eq!(nal_units(&packed).len(), 1);
        assert_eq!(nal_units(&round_trip(&packed).1), vec![SEI, sps, PPS]);
    }

    #[test]
    fn three_byte_start_codes_are_read_and_what_is_not_annex_b_is_left_alone() {
        let au = [
            0, 0, 1, 0x41, 0x9a, 0, 0, 0, 1, 0x41, 0x9b, 0, 0, 1, 0x06, 0x05,
        ];
        let packed = aggregate(&au, MAX_PAYLOAD);
        assert_eq!(
            nal_units(&round_trip(&packed).1),
            vec![&[0x41, 0x9a][..], &[0x41, 0x9b][..], &[0x06, 0x05][..]]
        );
        assert_eq!(aggregate(&[0x41, 0x9a], MAX_PAYLOAD), vec![0x41, 0x9a]);
        assert!(aggregate(&[], MAX_PAYLOAD).is_empty());
    }
}
