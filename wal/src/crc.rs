//! CRC32C of a concatenation from the CRCs of its parts, in time that
//! grows with the number of bits in the second part's length, not with its
//! bytes.
//!
//! The `crc32c` crate's `crc32c_combine` builds 32x32 bit matrices and
//! squares them once per bit of the length: a few microseconds a call, which
//! at a million batches a second is a tenth of a core. Here the shift by `n`
//! zero bytes is a product of precomputed powers `x^(2^k) mod P` instead
//! (the method zlib's `crc32_combine` now uses), about 30 shift-and-xor
//! steps per set bit of `n`.
//!
//! Polynomials are in the reflected form CRC32C computes in: bit 31 is the
//! coefficient of `x^0`, bit 0 that of `x^31`.

/// CRC32C's (Castagnoli) polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a * b mod P`.
const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    if a == 0 {
        return 0;
    }
    let mut m: u32 = 1 << 31;
    let mut product = 0;
    loop {
        if a & m != 0 {
            product ^= b;
            if a & (m - 1) == 0 {
                return product;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// `X_POW_2K[k] = x^(2^k) mod P`, for every `k` a `u64` byte count can
/// reach (8 bits a byte: up to 2^66). Each is computed, not assumed to
/// repeat with period 32 as zlib's table does for its own polynomial: for
/// CRC32C's they do not (the property test found `x^(2^32) != x` at a
/// length of 2^29 bytes).
const X_POW_2K: [u32; 67] = {
    let mut t = [0u32; 67];
    t[0] = 1 << 30; // x^1
    let mut k = 1;
    while k < 67 {
        t[k] = mul_mod_p(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// `x^(8 * bytes) mod P`: the operator that appends `bytes` zero bytes.
fn zeros_operator(bytes: u64) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    let mut n = bytes;
    let mut k = 3; // 8 = 2^3 bits a byte
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(X_POW_2K[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC32C of `A || B` from `crc32c(A)`, `crc32c(B)` and `B`'s length.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul_mod_p(zeros_operator(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for cut in [0, 1, 5, 21, 4096, 131_093, 199_999, 200_000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_crc32c_crate(a: u32, b: u32, len in 0u64..(1 << 40)) {
            prop_assert_eq!(
                crc32c_combine(a, b, len),
                crc32c::crc32c_combine(a, b, len as usize)
            );
        }
    }
}
