//! Cheap random numbers for IDs (request IDs, trace and span IDs): a
//! per-thread SplitMix64 generator seeded from the operating system's
//! randomness, so a number costs no system call and no lock. Unique, not
//! secret.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // On failure the thread's start time stands in: still distinct
    // between threads and runs, which is all IDs need.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        use std::hash::BuildHasher;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let thread =
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id());
        b = (t ^ thread).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

/// SplitMix64: one step.
fn step(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The next 64 random bits of this thread.
pub(crate) fn next_u64() -> u64 {
    STATE.with(step)
}

/// The next 128 random bits of this thread.
pub(crate) fn next_u128() -> (u64, u64) {
    STATE.with(|s| (step(s), step(s)))
}

/// Each byte's two lowercase hex digits.
static HEX: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 0xf]];
        i += 1;
    }
    t
};

/// `bytes` as lowercase hex into `out` (twice as long): how IDs are
/// written. A table load and a two-byte store per byte: about half the
/// instructions of making the digits in a register (SWAR), once inlined
/// with the fixed lengths of IDs (the loop unrolled, no bounds checks).
#[inline]
pub(crate) fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX[usize::from(*b)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_what_format_writes() {
        let mut bytes = [0u8; 27];
        for round in 0..2000u64 {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = match round {
                    0 => 0,
                    1 => 0xff,
                    _ => next_u64().to_le_bytes()[i % 8],
                };
            }
            for len in [0, 1, 3, 4, 5, 8, 16, 27] {
                let mut out = vec![0u8; len * 2];
                put_hex(&mut out, &bytes[..len]);
                let want: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
    }
}
