//! The player's jitter buffer: puts RTP packets back in sequence order and waits, briefly, for
//! a missing one (reordered, or on its way back after a NACK) before giving up on it.
//!
//! Sized for low delay and adapting to the link: packets that arrive in order are released the
//! instant they arrive — nothing is held "just in case". Only behind a gap does it wait: for
//! `2 × jitter + 2 ms` (RFC 3550 interarrival jitter) or the time a NACK resend takes to come
//! back (the repair time, from the round trip), whichever is longer, at most `max_wait`.
//! Sans-I/O: the caller passes the time and sleeps until [`JitterBuffer::deadline`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One buffered packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffered {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit (last packet of a frame).
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
    /// The first packet of a keyframe that starts a new encoding (the caller knows the codec;
    /// for H.264 a new SPS: another simulcast layer). Held behind a gap, it ends the wait on
    /// every gap before it: nothing before it is needed, and what the old encoding lost is
    /// not resent (the relay starts the player over at the switch). Gaps inside the new
    /// keyframe are waited for as any. A keyframe of the same encoding does not: the frames
    /// before it are still repaired and shown.
    pub new_encoding: bool,
}

/// Reorders one RTP stream.
pub struct JitterBuffer {
    /// Extended sequence number → packet, waiting behind a gap.
    held: BTreeMap<u64, (Buffered, Instant)>,
    /// The next extended sequence number to release.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    highest: u64,
    clock_rate: f64,
    /// RFC 3550 interarrival jitter, in seconds.
    jitter: f64,
    last_transit: Option<f64>,
    epoch: Instant,
    max_wait: Duration,
    repair: Duration,
    /// Packets given up on.
    pub lost: u64,
    /// Held packets flagged [`Buffered::new_encoding`] (the scan for one runs
    /// only while there is one).
    new_encodings: usize,
    /// The RTP timestamp of the last packet released.
    released_ts: Option<u32>,
}

impl JitterBuffer {
    /// A buffer for a stream with `clock_rate` Hz timestamps, waiting at most `max_wait`.
    pub fn new(clock_rate: u32, max_wait: Duration) -> JitterBuffer {
        JitterBuffer {
            held: BTreeMap::new(),
            next: None,
            highest: 0,
            clock_rate: f64::from(clock_rate.max(1)),
            jitter: 0.0,
            last_transit: None,
            epoch: Instant::now(),
            max_wait,
            repair: Duration::ZERO,
            lost: 0,
            new_encodings: 0,
            released_ts: None,
        }
    }

    /// How long a NACK resend takes to arrive (round trip plus the NACK interval): a gap is
    /// waited for at least this long, so a packet lost once is repaired rather than given up.
    pub fn set_repair_time(&mut self, repair: Duration) {
        self.repair = repair;
    }

    /// The measured interarrival jitter.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// How long a gap is waited for now.
    pub fn wait(&self) -> Duration {
        (Duration::from_secs_f64(2.0 * self.jitter) + Duration::from_millis(2))
            .max(self.repair)
            .min(self.max_wait)
    }

    fn extend(&self, seq: u16) -> u64 {
        // Pick the extended number closest to the highest seen.
        let base = self.highest & !0xFFFF;
        let candidates =
            [base.wrapping_sub(0x1_0000), base, base + 0x1_0000].map(|b| b + u64::from(seq));
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(self.highest))
            .unwrap_or(u64::from(seq))
    }

    /// Takes a packet; returns the packets that can now go on, in order.
    pub fn push(&mut self, packet: Buffered, now: Instant) -> Vec<Buffered> {
        // Jitter (RFC 3550 §6.4.1), from arrival time against RTP time.
        let arrival = now.duration_since(self.epoch).as_secs_f64();
        let transit = arrival - f64::from(packet.timestamp) / self.clock_rate;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // A timestamp wrap or a new source shows as a huge jump: not jitter.
            if d < 1.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);

        let ext = if self.next.is_none() {
            self.highest = u64::from(packet.seq) + 0x1_0000;
            self.highest
        } else {
            self.extend(packet.seq)
        };
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.held.contains_key(&ext) {
            return Vec::new(); // late (already given up on) or a duplicate
        }
        self.highest = self.highest.max(ext);
        self.new_encodings += usize::from(packet.new_encoding);
        self.held.insert(ext, (packet, now));
        self.release(now)
    }

    /// Releases what is ready at `now`: the run from the next expected packet, and, past a gap
    /// whose wait is over, what follows it.
    pub fn release(&mut self, now: Instant) -> Vec<Buffered> {
        let mut out = Vec::new();
        let wait = self.wait();
        while let Some(next) = self.next {
            if let Some((packet, _)) = self.held.remove(&next) {
                self.new_encodings = self
                    .new_encodings
                    .saturating_sub(usize::from(packet.new_encoding));
                self.released_ts = Some(packet.timestamp);
                out.push(packet);
                self.next = Some(next + 1);
                continue;
            }
            // A gap: give up on it once the oldest packet behind it has waited long enough,
            // or at once when a new encoding has begun behind it.
            if let Some(key) = self.new_encoding_start() {
                // What came before it is dropped with the gaps among it.
                let kept = self.held.split_off(&key);
                let before = std::mem::replace(&mut self.held, kept);
                let flagged = before.values().filter(|(p, _)| p.new_encoding).count();
                self.new_encodings = self.new_encodings.saturating_sub(flagged);
                let dropped = before.len() as u64;
                self.lost += (key - next).saturating_sub(dropped);
                self.next = Some(key);
                continue;
            }
            match self.held.iter().next() {
                Some((&first, (_, since))) if now.saturating_duration_since(*since) >= wait => {
                    self.lost += first - next;
                    self.next = Some(first);
                }
                _ => break,
            }
        }
        out
    }

    /// Where the latest held new encoding starts: the first held packet of the frame whose
    /// packet is flagged (the frame's SEI may go in a packet before its SPS). None once part of
    /// that frame went out: a gap inside it is waited for like any.
    fn new_encoding_start(&self) -> Option<u64> {
        if self.new_encodings == 0 {
            return None;
        }
        let (&flagged, (packet, _)) = self.held.iter().rev().find(|(_, (p, _))| p.new_encoding)?;
        let ts = packet.timestamp;
        if self.released_ts == Some(ts) {
            return None;
        }
        self.held
            .range(..=flagged)
            .rev()
            .take_while(|(_, (p, _))| p.timestamp == ts)
            .last()
            .map(|(&ext, _)| ext)
    }

    /// When [`Self::release`] should be called next (a gap's wait ends), if anything is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|(_, since)| *since + self.wait())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32) -> Buffered {
        Buffered {
            new_encoding: false,
            seq,
            timestamp: ts,
            marker: false,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn seqs(v: &[Buffered]) -> Vec<u16> {
        v.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(50));
        for s in 0..5u16 {
            assert_eq!(seqs(&jb.push(pkt(s, u32::from(s) * 3000), t)), [s]);
        }
        assert_eq!(jb.deadline(), None, "nothing is held");
    }

    #[test]
    fn a_reordered_packet_is_waited_for_and_order_restored() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(50));
        assert_eq!(seqs(&jb.push(pkt(10, 0), t)), [10]);
        assert!(jb.push(pkt(12, 0), t).is_empty(), "12 waits for 11");
        assert!(jb.deadline().is_some());
        assert_eq!(
            seqs(&jb.push(pkt(11, 0), t + Duration::from_millis(1))),
            [11, 12]
        );
        assert_eq!(jb.lost, 0);
    }

    #[test]
    fn a_lost_packet_is_given_up_on_after_the_wait() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(50));
        jb.push(pkt(1, 0), t);
        assert!(jb.push(pkt(3, 0), t).is_empty());
        assert!(
            jb.release(t + Duration::from_millis(1)).is_empty(),
            "still waiting"
        );
        let deadline = jb.deadline().expect("a deadline");
        assert_eq!(seqs(&jb.release(deadline)), [3]);
        assert_eq!(jb.lost, 1);
        // The retransmission arriving after that is late and dropped.
        assert!(
            jb.push(pkt(2, 0), deadline + Duration::from_millis(1))
                .is_empty()
        );
    }

    #[test]
    fn a_new_encoding_behind_a_gap_ends_the_wait_on_what_came_before() {
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(500));
        let t = Instant::now();
        assert_eq!(seqs(&jb.push(pkt(1, 0), t)), vec![1]);
        // 2 and 3 (the old layer) lost; a new layer's keyframe 4..=7 arrives, 6 lost.
        let key = |seq, marker| Buffered {
            new_encoding: seq == 4,
            marker,
            ..pkt(seq, 3000)
        };
        assert_eq!(seqs(&jb.push(key(4, false), t)), vec![4]);
        assert_eq!(jb.lost, 2);
        assert_eq!(seqs(&jb.push(key(5, false), t)), vec![5]);
        // The hole inside the keyframe is waited for like any: its resend completes it.
        assert!(jb.push(key(7, true), t).is_empty());
        assert_eq!(seqs(&jb.push(key(6, false), t)), vec![6, 7]);
        assert_eq!(jb.lost, 2);
        // The frame's packets before the flagged one (its SEI) are kept, and a gap inside the
        // frame, once part of it went out, is waited for.
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(500));
        assert_eq!(seqs(&jb.push(pkt(1, 0), t)), vec![1]);
        let frame = |seq: u16| Buffered {
            new_encoding: seq == 5,
            marker: seq == 8,
            ..pkt(seq, 6000)
        };
        assert!(jb.push(frame(4), t).is_empty(), "the SEI, behind the gap");
        assert_eq!(seqs(&jb.push(frame(5), t)), vec![4, 5]);
        assert!(jb.push(frame(7), t).is_empty());
        assert!(jb.push(frame(8), t).is_empty());
        assert_eq!(jb.lost, 2);
        assert_eq!(seqs(&jb.push(frame(6), t)), vec![6, 7, 8]);
        // A keyframe of the same encoding behind a gap does not end the wait.
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(500));
        assert_eq!(seqs(&jb.push(pkt(1, 0), t)), vec![1]);
        let same = Buffered {
            marker: true,
            ..pkt(4, 3000)
        };
        assert!(jb.push(same, t).is_empty());
        assert_eq!(jb.lost, 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(50));
        let out: Vec<u16> = [65534u16, 65535, 0, 1]
            .iter()
            .flat_map(|&s| seqs(&jb.push(pkt(s, 0), t)))
            .collect();
        assert_eq!(out, [65534, 65535, 0, 1]);
    }

    #[test]
    fn the_wait_grows_with_jitter_and_stays_bounded() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(40));
        // Frames every 33 ms arriving ±10 ms off their schedule.
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            jb.push(
                pkt(i as u16, i * 3000),
                t + Duration::from_millis(u64::from(i) * 33 + wobble),
            );
        }
        assert!(jb.jitter() > Duration::from_millis(3), "{:?}", jb.jitter());
        assert!(
            jb.wait() > Duration::from_millis(8) && jb.wait() <= Duration::from_millis(40),
            "{:?}",
            jb.wait()
        );
    }

    #[test]
    fn a_gap_is_waited_for_as_long_as_a_resend_takes() {
        let mut jb = JitterBuffer::new(90_000, Duration::from_millis(80));
        assert_eq!(
            jb.wait(),
            Duration::from_millis(2),
            "a still link waits 2 ms"
        );
        jb.set_repair_time(Duration::from_millis(25));
        assert_eq!(jb.wait(), Duration::from_millis(25));
        let t = Instant::now();
        assert_eq!(jb.push(pkt(0, 0), t).len(), 1);
        assert!(jb.push(pkt(2, 0), t).is_empty(), "held behind the gap");
        assert!(
            jb.release(t + Duration::from_millis(20)).is_empty(),
            "still waiting"
        );
        let repaired = jb.push(pkt(1, 0), t + Duration::from_millis(22));
        assert_eq!(repaired.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(jb.lost, 0);
        jb.set_repair_time(Duration::from_secs(5));
        assert_eq!(jb.wait(), Duration::from_millis(80), "never beyond the cap");
    }
}
