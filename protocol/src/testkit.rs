//! Test support (feature `testkit`): a small deterministic generator for
//! sample messages, and the round-trip check the generated
//! `messages::ROUND_TRIPS` table uses.

use crate::wire::{Message, Uuid, Writer};
use bytes::Bytes;

/// A xorshift generator: deterministic, so a failing seed can be replayed.
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    pub fn new(seed: u64) -> SampleRng {
        SampleRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        Uuid(b)
    }

    pub fn string(&mut self) -> crate::wire::KStr {
        let n = self.below(12) as usize;
        let s: String = (0..n)
            .map(|_| {
                // Mostly ASCII, with a multi-byte character now and then.
                if self.one_in(8) {
                    'ž'
                } else {
                    char::from(b'a' + self.below(26) as u8)
                }
            })
            .collect();
        s.into()
    }

    pub fn bytes(&mut self) -> Bytes {
        let n = self.below(20) as usize;
        (0..n)
            .map(|_| self.next_u64() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

/// Encodes `m` at `v`, decodes it back, and checks the value and the bytes
/// of a second encoding are the same.
pub fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M, v: i16) -> Result<(), String> {
    let mut w = Writer::new();
    m.encode(&mut w, v)
        .map_err(|e| format!("{} v{v}: encode: {e}", M::NAME))?;
    let encoded = w.into_bytes();
    let back = M::decode(&encoded, v).map_err(|e| format!("{} v{v}: decode: {e}", M::NAME))?;
    if &back != m {
        return Err(format!(
            "{} v{v}: decoded value differs\n sent: {m:?}\n got:  {back:?}",
            M::NAME
        ));
    }
    let again = back
        .encode_to_bytes(v)
        .map_err(|e| format!("{} v{v}: re-encode: {e}", M::NAME))?;
    if again != encoded {
        return Err(format!("{} v{v}: re-encoded bytes differ", M::NAME));
    }
    Ok(())
}
