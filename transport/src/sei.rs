//! The capture time travels inside the H.264 stream as an SEI message (user data unregistered,
//! with our UUID) placed before each access unit, so a player knows when its frame was captured
//! and reports true end-to-end delay.

/// Our SEI payload's UUID.
const UUID: [u8; 16] = *b"onair-capture-us";

/// An SEI NAL unit (with start code) carrying `capture_time_us`.
pub fn capture_time_nal(capture_time_us: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&UUID);
    payload.extend_from_slice(&capture_time_us.to_be_bytes());
    let mut nal = vec![0, 0, 0, 1, 0x06, 0x05, payload.len() as u8];
    // Emulation prevention: no 00 00 0x (x ≤ 3) inside the NAL body.
    let mut zeros = 0;
    for b in payload {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    nal.push(0x80); // rbsp trailing bits
    nal
}

/// Removes emulation-prevention bytes.
fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut zeros = 0;
    for &b in body {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Splits Annex-B data into NAL units (without start codes).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |n| n - 3);
        // A four-byte start code leaves a zero before the next three.
        while end > s && data[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        units.push(&data[s..end]);
    }
    units
}

/// The capture time in an access unit's SEI, if it carries ours.
pub fn read_capture_time(access_unit: &[u8]) -> Option<u64> {
    for nal in nal_units(access_unit) {
        if nal.first().map(|h| h & 0x1f) != Some(6) || nal.len() < 3 || nal[1] != 5 {
            continue;
        }
        let body = unescape(&nal[3..]);
        if body.len() >= 24 && body[..16] == UUID {
            let mut t = [0u8; 8];
            t.copy_from_slice(&body[16..24]);
            return Some(u64::from_be_bytes(t));
        }
    }
    None
}

/// Whether an access unit holds an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit)
        .iter()
        .any(|n| n.first().is_some_and(|h| h & 0x1f == 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_including_escaped_zeros() {
        for t in [
            0u64,
            1,
            0x0000_0300_0001_0203,
            1_795_000_000_123_456,
            u64::MAX,
        ] {
            let mut au = capture_time_nal(t);
            au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
            assert_eq!(read_capture_time(&au), Some(t), "{t:#x}");
            assert!(is_keyframe(&au));
        }
        assert_eq!(read_capture_time(&[0, 0, 1, 0x41, 1, 2]), None);
    }
}
