//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Words are taken as they sit in memory: the ones' complement sum is
//! independent of byte order, so no swapping is needed on the packet path.

/// Accumulates the changes made to a checksummed region, to be applied once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumDelta(u32);

impl ChecksumDelta {
    #[inline(always)]
    #[must_use]
    pub const fn new() -> Self {
        Self(0)
    }

    /// Records that a 16-bit word changed from `old` to `new` (RFC 1624 eqn. 3).
    #[inline(always)]
    #[must_use]
    pub const fn replace16(self, old: u16, new: u16) -> Self {
        Self(self.0 + (!old) as u32 + new as u32)
    }

    /// Records that a 32-bit field changed, as its two words.
    #[inline(always)]
    #[must_use]
    pub fn replace32(self, old: [u16; 2], new: [u16; 2]) -> Self {
        self.replace16(old[0], new[0]).replace16(old[1], new[1])
    }

    /// Adds the changes recorded in `other`.
    #[inline(always)]
    #[must_use]
    pub const fn merge(self, other: Self) -> Self {
        Self(fold_carries(self.0) + fold_carries(other.0))
    }

    /// The checksum field after the recorded changes.
    #[inline(always)]
    #[must_use]
    pub const fn apply(self, check: u16) -> u16 {
        !(fold_carries(fold_carries((!check) as u32 + self.0)) as u16)
    }
}

#[inline(always)]
const fn fold_carries(sum: u32) -> u32 {
    (sum & 0xffff) + (sum >> 16)
}

/// Ones' complement sum of `bytes` (odd length padded with zero), added to
/// `initial`, not yet complemented.
#[must_use]
pub fn sum_bytes(initial: u32, bytes: &[u8]) -> u32 {
    let mut sum = u64::from(initial);
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_ne_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32
}

/// The checksum over `bytes` computed from scratch, as stored in a header
/// (the region's checksum field must be zero, or the result is 0 when the
/// stored checksum is valid).
#[must_use]
pub fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    !(sum_bytes(initial, bytes) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 -> sum ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let sum = sum_bytes(0, &bytes) as u16;
        assert_eq!(sum.to_ne_bytes(), [0xdd, 0xf2]);
    }

    #[test]
    fn incremental_matches_recomputation() {
        // An IPv4 header whose source and TTL change.
        let mut header: [u8; 20] = [
            0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 64, 6, 0, 0, 172, 16, 10, 99, 172, 16, 10, 12,
        ];
        let original = checksum(0, &header);
        header[10..12].copy_from_slice(&original.to_ne_bytes());
        assert_eq!(checksum(0, &header), 0, "a valid header sums to zero");

        let word = |h: &[u8; 20], i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        let old_src = [word(&header, 12), word(&header, 14)];
        let old_ttl = word(&header, 8);
        header[12..16].copy_from_slice(&[198, 51, 100, 250]);
        header[8] = 63;
        let delta = ChecksumDelta::new()
            .replace32(old_src, [word(&header, 12), word(&header, 14)])
            .replace16(old_ttl, word(&header, 8));
        let updated = delta.apply(original);
        header[10..12].copy_from_slice(&updated.to_ne_bytes());
        assert_eq!(checksum(0, &header), 0);
    }

    #[test]
    fn many_random_updates_stay_valid() {
        let mut state = 0x1234_5678_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..10_000 {
            let mut words = [0u16; 8];
            for w in &mut words {
                *w = next() as u16;
            }
            let bytes: std::vec::Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let check = checksum(0, &bytes);
            let i = (next() % 8) as usize;
            let new = next() as u16;
            let updated = ChecksumDelta::new().replace16(words[i], new).apply(check);
            words[i] = new;
            let bytes: std::vec::Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            // Valid iff the sum including the checksum folds to 0xffff.
            let total = sum_bytes(u32::from(updated), &bytes) as u16;
            assert_eq!(total, 0xffff, "words {words:?} check {updated:#x}");
        }
    }
}
