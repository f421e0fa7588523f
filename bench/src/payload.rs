//! The bytes of a benchmark record: a stamp, then filler.
//!
//! Layout, version 1, big-endian, [`STAMP_BYTES`] = 32 bytes at the start of
//! the record value:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FRB1` |
//! | 4 | 4 | producer index in the run |
//! | 8 | 8 | run id |
//! | 16 | 8 | sequence number within the producer |
//! | 24 | 8 | intended send time, Unix nanoseconds |
//!
//! The rest of the value is pseudo-random filler, made once per producer, so
//! that compression codecs see data they cannot shrink (the worst case for the
//! broker, and the same for every run). Records are sent without a key. The
//! stamp lets the delivery report and the consumer compute latencies without
//! any per-record state in the generator, and lets a consumer skip records of
//! other runs on the same topic.

/// The size of the stamp; a record must be at least this long.
pub const STAMP_BYTES: usize = 32;

const MAGIC: [u8; 4] = *b"FRB1";

/// What a record says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub producer: u32,
    pub run_id: u64,
    pub seq: u64,
    pub intended_unix_ns: u64,
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_BYTES`] of `value`.
    ///
    /// # Panics
    ///
    /// If `value` is shorter than [`STAMP_BYTES`]; the run's configuration
    /// rejects such record sizes up front.
    pub fn write(&self, value: &mut [u8]) {
        let v = &mut value[..STAMP_BYTES];
        v[0..4].copy_from_slice(&MAGIC);
        v[4..8].copy_from_slice(&self.producer.to_be_bytes());
        v[8..16].copy_from_slice(&self.run_id.to_be_bytes());
        v[16..24].copy_from_slice(&self.seq.to_be_bytes());
        v[24..32].copy_from_slice(&self.intended_unix_ns.to_be_bytes());
    }

    /// Reads the stamp at the start of `value`, or `None` if it has none.
    pub fn read(value: &[u8]) -> Option<Stamp> {
        let v = value.get(..STAMP_BYTES)?;
        if v[0..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&v[4..8]);
        Some(Stamp {
            producer: u32::from_be_bytes(p),
            run_id: u64_at(8),
            seq: u64_at(16),
            intended_unix_ns: u64_at(24),
        })
    }
}

/// A record value of `len` bytes: room for the stamp, then filler drawn from
/// a xorshift generator seeded with `seed`.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut value = Vec::with_capacity(len);
    while value.len() < len {
        // xorshift64 (Marsaglia): never reaches zero from a non-zero state.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = (len - value.len()).min(8);
        value.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip_and_leaves_the_filler_alone() {
        let mut v = filler(100, 7);
        let tail = v[STAMP_BYTES..].to_vec();
        let s = Stamp {
            producer: 3,
            run_id: 0xdead_beef,
            seq: 42,
            intended_unix_ns: 1_700_000_000_123_456_789,
        };
        s.write(&mut v);
        assert_eq!(Stamp::read(&v), Some(s));
        assert_eq!(&v[STAMP_BYTES..], &tail[..]);
        assert_eq!(&v[..4], b"FRB1");
        assert_eq!(&v[4..8], &[0, 0, 0, 3]);
    }

    #[test]
    fn foreign_or_short_values_have_no_stamp() {
        assert_eq!(Stamp::read(b"short"), None);
        assert_eq!(Stamp::read(&[0u8; 64]), None);
    }

    #[test]
    fn filler_has_the_size_asked_and_depends_on_the_seed() {
        assert_eq!(filler(1_021, 1).len(), 1_021);
        assert_ne!(filler(64, 1), filler(64, 2));
        assert_eq!(filler(64, 9), filler(64, 9));
    }
}
