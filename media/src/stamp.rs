//! The burned-in stamp: a frame number and a capture time written into the picture as a block
//! barcode, so delay and lost or repeated frames can be measured from decoded pixels alone.
//!
//! 112 bits (frame number u32, capture time µs u64, CRC-16) as black/white 8×8 luma blocks along
//! the top of the frame. Blocks that size survive H.264 at normal bitrates; the CRC rejects a
//! misread.

use crate::frame::VideoFrame;

/// What a stamp carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The source's frame counter.
    pub frame_number: u32,
    /// Wall-clock capture time, µs since the Unix epoch.
    pub capture_time_us: u64,
}

const BITS: usize = 32 + 64 + 16;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// The block size and the number of blocks per row for a frame `width` wide. Blocks are 8 px,
/// so from 896 px wide up the whole stamp sits in the first macroblock row: the first the
/// encoder codes, and the last its rate control would starve.
fn geometry(width: u32) -> (usize, usize) {
    let block = 8;
    (block, (width as usize / block).max(1))
}

/// Rows of pixels the stamp covers at the top of a `width`×`height` frame.
pub fn stamp_height(width: u32) -> usize {
    let (block, per_row) = geometry(width);
    BITS.div_ceil(per_row) * block
}

fn crc16(bytes: &[u8]) -> u16 {
    // CRC-16/CCITT-FALSE.
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn payload(stamp: Stamp) -> [u8; 14] {
    let mut p = [0u8; 14];
    p[..4].copy_from_slice(&stamp.frame_number.to_be_bytes());
    p[4..12].copy_from_slice(&stamp.capture_time_us.to_be_bytes());
    let crc = crc16(&p[..12]);
    p[12..].copy_from_slice(&crc.to_be_bytes());
    p
}

/// Writes `stamp` into an I420 frame (luma blocks, neutral chroma under them).
pub fn burn(frame: &mut VideoFrame, stamp: Stamp) {
    let (block, per_row) = geometry(frame.width);
    if stamp_height(frame.width) > frame.height as usize {
        return;
    }
    let bytes = payload(stamp);
    let y = frame.planes[0];
    for bit in 0..BITS {
        let on = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
        let (bx, by) = ((bit % per_row) * block, (bit / per_row) * block);
        let value = if on { WHITE } else { BLACK };
        for row in by..by + block {
            let start = y.offset + row * y.stride + bx;
            if let Some(px) = frame.data.get_mut(start..start + block) {
                px.fill(value);
            }
        }
    }
    // Neutral chroma under the whole stamp, so colour does not bleed into the blocks.
    let rows = stamp_height(frame.width) / 2;
    for i in 1..frame.plane_count() {
        let p = frame.planes[i];
        let end = (p.offset + rows * p.stride).min(frame.data.len());
        if let Some(c) = frame.data.get_mut(p.offset..end) {
            c.fill(128);
        }
    }
}

/// Reads a stamp back from a (decoded) frame; `None` if it is missing or misread.
pub fn read(frame: &VideoFrame) -> Option<Stamp> {
    let (block, per_row) = geometry(frame.width);
    if stamp_height(frame.width) > frame.height as usize {
        return None;
    }
    let mut bytes = [0u8; 14];
    let inner = (block / 4).max(1);
    for bit in 0..BITS {
        let (bx, by) = ((bit % per_row) * block, (bit / per_row) * block);
        // Average the block's centre, away from edges the codec may blur.
        let mut sum = 0u32;
        let mut n = 0u32;
        for yy in by + inner..by + block - inner {
            for xx in bx + inner..bx + block - inner {
                sum += u32::from(frame.luma(xx, yy));
                n += 1;
            }
        }
        if n > 0 && sum / n > 128 {
            bytes[bit / 8] |= 0x80 >> (bit % 8);
        }
    }
    let crc = u16::from_be_bytes([bytes[12], bytes[13]]);
    if crc16(&bytes[..12]) != crc {
        return None;
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&bytes[..4]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&bytes[4..12]);
    Some(Stamp {
        frame_number: u32::from_be_bytes(n),
        capture_time_us: u64::from_be_bytes(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_and_read_at_every_preset_size() {
        for (w, h) in [
            (320, 180),
            (480, 270),
            (640, 360),
            (960, 540),
            (1280, 720),
            (1920, 1080),
        ] {
            let mut f = VideoFrame::new_i420(w, h);
            let s = Stamp {
                frame_number: 0xDEAD_BEEF,
                capture_time_us: 1_795_000_000_123_456,
            };
            burn(&mut f, s);
            assert_eq!(read(&f), Some(s), "{w}x{h}");
            assert!(
                stamp_height(w) * 4 <= h as usize,
                "the stamp stays a thin strip at {w}x{h}"
            );
        }
    }

    #[test]
    fn a_blank_or_damaged_frame_reads_as_none() {
        let mut f = VideoFrame::new_i420(640, 360);
        assert_eq!(read(&f), None);
        burn(
            &mut f,
            Stamp {
                frame_number: 7,
                capture_time_us: 9,
            },
        );
        // Flip one block.
        let (block, _) = geometry(640);
        for row in 0..block {
            let o = row * 640 + 3 * block;
            let v = f.data[o];
            f.data[o..o + block].fill(if v > 128 { BLACK } else { WHITE });
        }
        assert_eq!(read(&f), None);
    }
}
