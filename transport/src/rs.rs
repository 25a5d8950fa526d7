//! A Reed–Solomon erasure code over GF(2⁸): systematic, from a Cauchy matrix, so any `n` of a
//! block's `n` data and `k` repair symbols give its data back (the code is MDS). What FEC needs
//! on a link losing packets at random: `k` repair packets rebuild *any* `k` lost packets of a
//! frame, where XOR parity rebuilds one per parity group.
//!
//! Repair symbol `i` of a block of `n` is `Σⱼ c(i, j)·dⱼ` with `c(i, j) = 1 / (xᵢ + yⱼ)`,
//! `xᵢ = n + i`, `yⱼ = j` (all distinct, so every square submatrix is invertible). Symbols
//! shorter than the block's length count as zero-padded. Pure functions, no I/O.

/// The field's reduction polynomial, x⁸ + x⁴ + x³ + x² + 1.
const POLY: u16 = 0x11d;

/// Data and repair symbols a block may have together (the field's size).
pub const MAX_SYMBOLS: usize = 256;

/// Why a block could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    /// More data symbols are missing than repair symbols arrived.
    #[error("{missing} data symbols missing and only {repairs} repair symbols")]
    TooFew {
        /// Data symbols missing.
        missing: usize,
        /// Repair symbols at hand.
        repairs: usize,
    },
    /// The block's shape is out of range (more than [`MAX_SYMBOLS`], a repair index past
    /// `k`, or a symbol longer than the block's length).
    #[error("malformed block: {0}")]
    Malformed(&'static str),
}

struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

const fn tables() -> Tables {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    // Doubled, so a sum of two logs needs no reduction.
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    Tables { exp, log }
}

static TABLES: Tables = tables();

/// `a · b` in GF(2⁸).
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    TABLES.exp[usize::from(TABLES.log[usize::from(a)]) + usize::from(TABLES.log[usize::from(b)])]
}

/// `1 / a` in GF(2⁸) (`a` ≠ 0; 0 maps to 0).
pub fn inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    TABLES.exp[255 - usize::from(TABLES.log[usize::from(a)])]
}

/// The coefficient of data symbol `j` in repair symbol `i` of a block of `n`.
fn coef(n: usize, i: usize, j: usize) -> u8 {
    // n + i < 256 and j < n, so the two differ and their sum (XOR) is not zero.
    inv(((n + i) as u8) ^ (j as u8))
}

/// `dst += c · src` over the first `src.len()` bytes (the rest of `dst` counts `src` as
/// zero).
fn mul_acc(dst: &mut [u8], src: &[u8], c: u8) {
    match c {
        0 => {}
        1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s),
        _ => {
            // One product table per coefficient: a lookup per byte.
            let mut row = [0u8; 256];
            for (b, r) in row.iter_mut().enumerate() {
                *r = mul(c, b as u8);
            }
            dst.iter_mut()
                .zip(src)
                .for_each(|(d, s)| *d ^= row[usize::from(*s)]);
        }
    }
}

/// `k` repair symbols of `len` bytes for `data` (each at most `len` bytes, zero-padded).
pub fn encode(data: &[&[u8]], k: usize, len: usize) -> Result<Vec<Vec<u8>>, RsError> {
    let n = data.len();
    if n == 0 || n + k > MAX_SYMBOLS {
        return Err(RsError::Malformed("block size"));
    }
    if data.iter().any(|d| d.len() > len) {
        return Err(RsError::Malformed("symbol longer than the block's length"));
    }
    Ok((0..k)
        .map(|i| {
            let mut out = vec![0u8; len];
            for (j, d) in data.iter().enumerate() {
                mul_acc(&mut out, d, coef(n, i, j));
            }
            out
        })
        .collect())
}

/// Rebuilds the missing (`None`) symbols of `data` (a block of `data.len()` symbols, `len`
/// bytes each; the present ones at most `len`, zero-padded) from repair symbols `(index,
/// bytes)` of a block with `k` repairs. Returns the indices rebuilt (each `Some`, `len` bytes,
/// afterwards).
pub fn decode(
    data: &mut [Option<Vec<u8>>],
    k: usize,
    repairs: &[(usize, &[u8])],
    len: usize,
) -> Result<Vec<usize>, RsError> {
    let n = data.len();
    if n == 0 || n + k > MAX_SYMBOLS {
        return Err(RsError::Malformed("block size"));
    }
    let missing: Vec<usize> = (0..n).filter(|&j| data[j].is_none()).collect();
    let m = missing.len();
    if m == 0 {
        return Ok(Vec::new());
    }
    // Distinct repairs in range, the first `m` of them.
    let mut chosen: Vec<(usize, &[u8])> = Vec::with_capacity(m);
    for &(i, r) in repairs {
        if i >= k || r.len() != len {
            return Err(RsError::Malformed("repair index or length"));
        }
        if !chosen.iter().any(|(c, _)| *c == i) && chosen.len() < m {
            chosen.push((i, r));
        }
    }
    if chosen.len() < m {
        return Err(RsError::TooFew {
            missing: m,
            repairs: chosen.len(),
        });
    }
    if data.iter().flatten().any(|d| d.len() > len) {
        return Err(RsError::Malformed("symbol longer than the block's length"));
    }
    // What each chosen repair says of the missing symbols alone: its bytes less the present
    // symbols' part.
    let mut rhs: Vec<Vec<u8>> = chosen
        .iter()
        .map(|&(i, r)| {
            let mut s = r.to_vec();
            for (j, d) in data.iter().enumerate() {
                if let Some(d) = d {
                    mul_acc(&mut s, d, coef(n, i, j));
                }
            }
            s
        })
        .collect();
    // The m × m Cauchy submatrix, inverted by Gauss–Jordan (always invertible).
    let mut a: Vec<Vec<u8>> = chosen
        .iter()
        .map(|&(i, _)| missing.iter().map(|&j| coef(n, i, j)).collect())
        .collect();
    let mut b: Vec<Vec<u8>> = (0..m)
        .map(|r| (0..m).map(|c| u8::from(r == c)).collect())
        .collect();
    for col in 0..m {
        let pivot = (col..m)
            .find(|&r| a[r][col] != 0)
            .ok_or(RsError::Malformed("singular matrix"))?;
        a.swap(col, pivot);
        b.swap(col, pivot);
        let p = inv(a[col][col]);
        for c in 0..m {
            a[col][c] = mul(a[col][c], p);
            b[col][c] = mul(b[col][c], p);
        }
        for r in 0..m {
            let f = a[r][col];
            if r != col && f != 0 {
                for c in 0..m {
                    a[r][c] ^= mul(f, a[col][c]);
                    b[r][c] ^= mul(f, b[col][c]);
                }
            }
        }
    }
    // Missing symbol t = Σᵣ inverse[t][r] · rhsᵣ.
    for (t, &j) in missing.iter().enumerate() {
        let mut out = vec![0u8; len];
        for (r, s) in rhs.iter_mut().enumerate() {
            mul_acc(&mut out, s, b[t][r]);
        }
        data[j] = Some(out);
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_field_is_a_field() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
        // Distributive over XOR, on a sample.
        for (a, b, c) in [(3u8, 7u8, 200u8), (255, 254, 1), (29, 76, 143)] {
            assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
        }
    }

    fn block(n: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..n)
            .map(|j| {
                (0..(20 + j * 7 % 31))
                    .map(|b| (b as u8).wrapping_mul(31).wrapping_add(seed ^ j as u8))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn any_k_losses_are_rebuilt_and_k_plus_one_are_not() {
        let n = 6;
        let k = 3;
        let data = block(n, 9);
        let len = data.iter().map(Vec::len).max().unwrap_or(0);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let repairs = encode(&refs, k, len).expect("encodes");
        // Every loss pattern of up to k data symbols, with every choice of k repairs.
        for lost in 0u32..(1 << n) {
            let m = lost.count_ones() as usize;
            if m > k {
                continue;
            }
            let mut held: Vec<Option<Vec<u8>>> = (0..n)
                .map(|j| (lost & (1 << j) == 0).then(|| data[j].clone()))
                .collect();
            // The last m repairs only: the code must not depend on which arrived.
            let rs: Vec<(usize, &[u8])> = (k - m..k).map(|i| (i, repairs[i].as_slice())).collect();
            let rebuilt = decode(&mut held, k, &rs, len).expect("rebuilds");
            assert_eq!(rebuilt.len(), m);
            for j in 0..n {
                let got = held[j].as_ref().expect("present");
                assert_eq!(
                    &got[..data[j].len()],
                    &data[j][..],
                    "symbol {j}, lost {lost:b}"
                );
                assert!(got[data[j].len()..].iter().all(|&b| b == 0));
            }
        }
        // One more loss than repairs: an error, nothing invented.
        let mut held: Vec<Option<Vec<u8>>> =
            (0..n).map(|j| (j >= 4).then(|| data[j].clone())).collect();
        let rs: Vec<(usize, &[u8])> = (0..k).map(|i| (i, repairs[i].as_slice())).collect();
        assert_eq!(
            decode(&mut held, k, &rs, len),
            Err(RsError::TooFew {
                missing: 4,
                repairs: 3
            })
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        let d = [&b"abc"[..]];
        assert!(encode(&d, 300, 3).is_err());
        assert!(encode(&d, 1, 2).is_err());
        assert!(encode(&[], 1, 2).is_err());
        let mut held = vec![None, Some(b"x".to_vec())];
        assert!(decode(&mut held, 1, &[(5, &b"abc"[..])], 3).is_err());
        assert!(decode(&mut held, 1, &[(0, &b"ab"[..])], 3).is_err());
    }

    proptest! {
        #[test]
        fn random_blocks_and_losses_round_trip(
            n in 1usize..40,
            k in 1usize..40,
            seed in any::<u8>(),
            lost_bits in any::<u64>(),
            repair_bits in any::<u64>(),
        ) {
            let data = block(n, seed);
            let len = data.iter().map(Vec::len).max().unwrap_or(0);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let repairs = encode(&refs, k, len).expect("encodes");
            let mut held: Vec<Option<Vec<u8>>> = (0..n)
                .map(|j| (lost_bits & (1 << j) == 0).then(|| data[j].clone()))
                .collect();
            let missing = held.iter().filter(|d| d.is_none()).count();
            let rs: Vec<(usize, &[u8])> = (0..k)
                .filter(|i| repair_bits & (1 << i) != 0)
                .map(|i| (i, repairs[i].as_slice()))
                .collect();
            match decode(&mut held, k, &rs, len) {
                Ok(_) => {
                    prop_assert!(rs.len() >= missing);
                    for j in 0..n {
                        let got = held[j].as_ref().expect("present");
                        prop_assert_eq!(&got[..data[j].len()], &data[j][..]);
                    }
                }
                Err(e) => {
                    prop_assert!(rs.len() < missing, "{e}");
                }
            }
        }
    }
}
