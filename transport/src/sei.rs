//! The capture time travels inside the H.264 stream as an SEI message (user data unregistered,
//! with our UUID) placed before each access unit, so a player knows when its frame was captured
//! and reports true end-to-end delay.

/// Our capture-time payload's UUID.
const UUID: [u8; 16] = *b"onair-capture-us";

/// The UUID before application data sent with `send_sei` (ZEGO's SEI): a receiver strips it;
/// user-data-unregistered payloads with any other UUID (another encoder's) are delivered whole.
const USER_UUID: [u8; 16] = *b"onair-user-sei-1";

/// The most application data one SEI may carry (ZEGO's limit).
pub const MAX_USER_DATA: usize = 4096;

/// SEI payload type "user data unregistered".
const USER_DATA_UNREGISTERED: u32 = 5;

/// Appends `rbsp` to `nal` with emulation prevention: no 00 00 0x (x ≤ 3) inside a NAL body.
fn escape_into(nal: &mut Vec<u8>, rbsp: &[u8]) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Appends an SEI payload type or size: runs of 0xFF, then the rest.
fn push_ff_coded(out: &mut Vec<u8>, mut n: usize) {
    while n >= 255 {
        out.push(0xff);
        n -= 255;
    }
    out.push(n as u8);
}

/// A user-data-unregistered SEI NAL unit (with start code) holding `uuid` then `data`.
fn user_data_unregistered(uuid: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(data.len() + 24);
    push_ff_coded(&mut rbsp, USER_DATA_UNREGISTERED as usize);
    push_ff_coded(&mut rbsp, uuid.len() + data.len());
    rbsp.extend_from_slice(uuid);
    rbsp.extend_from_slice(data);
    let mut nal = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 6);
    nal.extend_from_slice(&[0, 0, 0, 1, 0x06]);
    escape_into(&mut nal, &rbsp);
    nal.push(0x80); // rbsp trailing bits
    nal
}

/// An SEI NAL unit (with start code) carrying `capture_time_us`.
pub fn capture_time_nal(capture_time_us: u64) -> Vec<u8> {
    user_data_unregistered(&UUID, &capture_time_us.to_be_bytes())
}

/// An SEI NAL unit (with start code) carrying application data (at most [`MAX_USER_DATA`]
/// bytes are meant to go in one; longer data is still coded correctly).
pub fn user_data_nal(data: &[u8]) -> Vec<u8> {
    user_data_unregistered(&USER_UUID, data)
}

/// Reads an SEI payload type or size at `*pos`.
fn read_ff_coded(body: &[u8], pos: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    loop {
        let b = *body.get(*pos)?;
        *pos += 1;
        n = n.checked_add(usize::from(b))?;
        if b != 0xff {
            return Some(n);
        }
    }
}

/// Every user-data-unregistered SEI payload (UUID first) in an access unit.
fn user_data_payloads(access_unit: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for nal in nal_units(access_unit) {
        if nal.first().map(|h| h & 0x1f) != Some(6) {
            continue;
        }
        let body = unescape(&nal[1..]);
        let mut pos = 0;
        // Messages until only the trailing bits are left.
        while pos < body.len() && !(pos + 1 == body.len() && body[pos] == 0x80) {
            let (Some(kind), Some(size)) = (
                read_ff_coded(&body, &mut pos),
                read_ff_coded(&body, &mut pos),
            ) else {
                break;
            };
            let Some(payload) = pos.checked_add(size).and_then(|end| body.get(pos..end)) else {
                break;
            };
            if kind == USER_DATA_UNREGISTERED as usize && payload.len() >= 16 {
                found.push(payload.to_vec());
            }
            pos += size;
        }
    }
    found
}

/// The application data in an access unit's SEI messages, in order: ours without its UUID,
/// other encoders' user data whole (UUID first). The capture-time stamp is not included.
pub fn read_user_data(access_unit: &[u8]) -> Vec<Vec<u8>> {
    user_data_payloads(access_unit)
        .into_iter()
        .filter(|p| p[..16] != UUID)
        .map(|p| match p.strip_prefix(&USER_UUID) {
            Some(data) => data.to_vec(),
            None => p,
        })
        .collect()
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
    user_data_payloads(access_unit)
        .into_iter()
        .find(|p| p.len() >= 24 && p[..16] == UUID)
        .map(|p| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&p[16..24]);
            u64::from_be_bytes(t)
        })
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

    #[test]
    fn user_data_of_any_size_rides_with_the_capture_time() {
        for len in [0usize, 1, 200, 238, 239, 254, 255, 256, 1000, MAX_USER_DATA] {
            // Zeros and small bytes exercise emulation prevention.
            let data: Vec<u8> = (0..len).map(|i| (i % 5) as u8).collect();
            let mut au = capture_time_nal(42);
            au.extend(user_data_nal(&data));
            au.extend(user_data_nal(b"second"));
            au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
            assert_eq!(read_capture_time(&au), Some(42), "len {len}");
            assert_eq!(
                read_user_data(&au),
                vec![data, b"second".to_vec()],
                "len {len}"
            );
        }
    }

    #[test]
    fn another_encoders_user_data_is_delivered_whole() {
        let mut payload = b"0123456789abcdef".to_vec();
        payload.extend_from_slice(b"x264 options");
        // Type 5, size, payload, then a second message of another type in the same NAL.
        let mut nal = vec![0, 0, 1, 0x06, 5, payload.len() as u8];
        nal.extend_from_slice(&payload);
        nal.extend_from_slice(&[1, 1, 0x42, 0x80]);
        assert_eq!(read_user_data(&nal), vec![payload]);
        assert_eq!(read_capture_time(&nal), None);
    }
}
