//! Signed 64-bit amounts in minor units, embedded in the Ristretto255 scalar field.
//!
//! A non-negative amount `v` is the scalar `v`; a negative amount is `ℓ − |v|`. The
//! field (ℓ ≈ 2^252) is far larger than any sum a round can form (at most 2^20 terms
//! of products of two i64, under 2^147), so sums on shares never wrap and an opened
//! scalar maps back to exactly one integer — or to none, which [`to_i64`] reports.

use curve25519_dalek::Scalar;

/// The scalar that represents `v`.
pub fn to_scalar(v: i64) -> Scalar {
    coefficient(i128::from(v))
}

/// The integer an opened scalar represents, `None` when it is outside the i64 range.
pub fn to_i64(s: &Scalar) -> Option<i64> {
    fn small(s: &Scalar) -> Option<u64> {
        let b = s.to_bytes();
        if b[8..].iter().any(|&x| x != 0) {
            return None;
        }
        let mut le = [0u8; 8];
        le.copy_from_slice(&b[..8]);
        Some(u64::from_le_bytes(le))
    }
    if let Some(v) = small(s) {
        return i64::try_from(v).ok();
    }
    let m = small(&-s)?;
    if m <= 1u64 << 63 {
        // m == 2^63 is i64::MIN; wrapping_neg maps it onto itself.
        Some((m as i64).wrapping_neg())
    } else {
        None
    }
}

/// The scalar for a public signed coefficient held in i128 (units, sums).
pub(crate) fn coefficient(v: i128) -> Scalar {
    if v >= 0 {
        Scalar::from(v.unsigned_abs())
    } else {
        -Scalar::from(v.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_through_the_field() {
        for v in [0, 1, -1, 42, -42, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(to_i64(&to_scalar(v)), Some(v), "{v}");
        }
    }

    #[test]
    fn scalars_outside_i64_map_to_none() {
        assert_eq!(to_i64(&Scalar::from(1u128 << 63)), None);
        assert_eq!(to_i64(&-Scalar::from((1u128 << 63) + 1)), None);
        assert_eq!(to_i64(&Scalar::from(u128::MAX)), None);
    }
}
