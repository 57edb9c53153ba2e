//! Arithmetic in the Ristretto255 scalar field `ℓ = 2^252 + 27742317777372353535851937790883648493`
//! in Montgomery form (crypto-bigint's constant-modulus residues), about twice as fast
//! as round-tripping through `curve25519_dalek::Scalar` for the long products of
//! the limit-check MPC. Values convert exactly to and from `Scalar`, so party
//! sharings and MPC sharings are the same field elements.
//!
//! Wire form: 32-byte canonical little-endian encoding of the value (as `Scalar`);
//! non-canonical encodings are refused on decode (invariant 8).

use core::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crypto_bigint::{
    modular::constant_mod::{Residue, ResidueParams},
    Encoding, U256,
};
use curve25519_dalek::Scalar;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod modulus {
    #![allow(missing_docs)]
    use crypto_bigint::{impl_modulus, U256};
    impl_modulus!(
        Ell,
        U256,
        "1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed"
    );
}
use modulus::Ell;

/// One field element.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct F(Residue<Ell, { U256::LIMBS }>);

impl core::fmt::Debug for F {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "F({})", hex::encode(self.to_bytes()))
    }
}

impl Default for F {
    fn default() -> Self {
        Self::ZERO
    }
}

impl F {
    /// 0.
    pub const ZERO: F = F(Residue::ZERO);
    /// 1.
    pub const ONE: F = F(Residue::ONE);

    /// The element `v`.
    pub const fn from_u64(v: u64) -> F {
        F(Residue::new(&U256::from_u64(v)))
    }

    /// The element `v` (negative values wrap: `−1 = ℓ − 1`).
    pub fn from_i128(v: i128) -> F {
        let mag = F(Residue::new(&U256::from_u128(v.unsigned_abs())));
        if v < 0 {
            -mag
        } else {
            mag
        }
    }

    /// `2^k` for `k < 252`.
    pub fn pow2(k: u32) -> F {
        F(Residue::new(&U256::ONE.shl_vartime(k as usize)))
    }

    /// An element from 32 uniformly random bytes: the top four bits are cleared and
    /// the rest read as a Montgomery representative, so the result is within
    /// `2^-124` of uniform on the field (no reduction needed).
    pub fn from_random_bytes(mut b: [u8; 32]) -> F {
        b[31] &= 0x0f;
        F(Residue::from_montgomery(U256::from_le_bytes(b)))
    }

    /// The integer in `[0, 2^bits)` read from the low `bits` of 16 random bytes
    /// (`bits ≤ 128`).
    pub fn bounded_from_bytes(b: [u8; 16], bits: u32) -> F {
        let v = u128::from_le_bytes(b);
        let v = if bits >= 128 {
            v
        } else {
            v & ((1u128 << bits) - 1)
        };
        F(Residue::new(&U256::from_u128(v)))
    }

    /// Canonical little-endian encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.retrieve().to_le_bytes()
    }

    /// Decodes a canonical encoding (`None` when `≥ ℓ`).
    pub fn from_canonical(b: [u8; 32]) -> Option<F> {
        let v = U256::from_le_bytes(b);
        if v >= Ell::MODULUS {
            None
        } else {
            Some(F(Residue::new(&v)))
        }
    }

    /// The low 128 bits of the canonical representative.
    pub fn low_u128(&self) -> u128 {
        let b = self.to_bytes();
        let mut lo = [0u8; 16];
        lo.copy_from_slice(&b[..16]);
        u128::from_le_bytes(lo)
    }

    /// Whether the canonical representative fits in 128 bits.
    pub fn fits_u128(&self) -> bool {
        self.to_bytes()[16..].iter().all(|&x| x == 0)
    }

    /// From a dalek scalar.
    pub fn from_scalar(s: &Scalar) -> F {
        F(Residue::new(&U256::from_le_bytes(s.to_bytes())))
    }

    /// To a dalek scalar.
    pub fn to_scalar(&self) -> Scalar {
        // The representative is canonical, so this does not reduce.
        Scalar::from_bytes_mod_order(self.to_bytes())
    }

    /// The inverse (`None` for 0).
    pub fn invert(&self) -> Option<F> {
        let (inv, ok) = self.0.invert();
        bool::from(ok).then_some(F(inv))
    }

    /// Inverts every element with one field inversion (`None` when one is 0).
    pub fn batch_invert(xs: &[F]) -> Option<Vec<F>> {
        let mut prefix = Vec::with_capacity(xs.len());
        let mut acc = F::ONE;
        for x in xs {
            prefix.push(acc);
            acc *= *x;
        }
        let mut inv = acc.invert()?;
        let mut out = vec![F::ZERO; xs.len()];
        for i in (0..xs.len()).rev() {
            out[i] = inv * prefix[i];
            inv *= xs[i];
        }
        Some(out)
    }

    /// `self^e` for a 256-bit little-endian exponent.
    fn pow(&self, e: &U256) -> F {
        F(self.0.pow(e))
    }

    /// A square root (`None` when `self` is not a square). `ℓ ≡ 5 (mod 8)`, so
    /// Atkin's formula applies: `v = (2q)^((ℓ−5)/8)`, `i = 2q·v²`, `s = q·v·(i − 1)`.
    pub fn sqrt(&self) -> Option<F> {
        if *self == F::ZERO {
            return Some(F::ZERO);
        }
        let exp = Ell::MODULUS.wrapping_sub(&U256::from_u8(5)).shr_vartime(3);
        let two_q = *self + *self;
        let v = two_q.pow(&exp);
        let i = two_q * v * v;
        let s = *self * v * (i - F::ONE);
        (s * s == *self).then_some(s)
    }
}

impl Add for F {
    type Output = F;
    fn add(self, o: F) -> F {
        F(self.0 + o.0)
    }
}
impl Sub for F {
    type Output = F;
    fn sub(self, o: F) -> F {
        F(self.0 - o.0)
    }
}
impl Mul for F {
    type Output = F;
    fn mul(self, o: F) -> F {
        F(self.0 * o.0)
    }
}
impl Neg for F {
    type Output = F;
    fn neg(self) -> F {
        F(-self.0)
    }
}
impl AddAssign for F {
    fn add_assign(&mut self, o: F) {
        self.0 = self.0 + o.0;
    }
}
impl SubAssign for F {
    fn sub_assign(&mut self, o: F) {
        self.0 = self.0 - o.0;
    }
}
impl MulAssign for F {
    fn mul_assign(&mut self, o: F) {
        self.0 = self.0 * o.0;
    }
}

impl Serialize for F {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for F {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = <[u8; 32]>::deserialize(d)?;
        F::from_canonical(b)
            .ok_or_else(|| serde::de::Error::custom("field element is not canonical"))
    }
}

/// Lagrange weights at 0 for the points `xs` (distinct, non-zero).
pub fn lagrange_at_zero(xs: &[F]) -> Vec<F> {
    let mut num = Vec::with_capacity(xs.len());
    let mut den = Vec::with_capacity(xs.len());
    for (i, xi) in xs.iter().enumerate() {
        let (mut n, mut d) = (F::ONE, F::ONE);
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                n *= *xj;
                d *= *xj - *xi;
            }
        }
        num.push(n);
        den.push(d);
    }
    let inv = F::batch_invert(&den).unwrap_or_default();
    num.iter().zip(&inv).map(|(n, d)| *n * *d).collect()
}

/// Weights `w_j` such that `p(x) = Σ_j w_j p(xs_j)` for every polynomial of degree
/// `< xs.len()`.
pub fn lagrange_at(xs: &[F], x: F) -> Vec<F> {
    let shifted: Vec<F> = xs.iter().map(|xi| *xi - x).collect();
    lagrange_at_zero(&shifted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn field_agrees_with_dalek_scalars() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for _ in 0..200 {
            let (a, b) = (Scalar::random(&mut rng), Scalar::random(&mut rng));
            let (fa, fb) = (F::from_scalar(&a), F::from_scalar(&b));
            assert_eq!((fa * fb).to_scalar(), a * b);
            assert_eq!((fa + fb).to_scalar(), a + b);
            assert_eq!((fa - fb).to_scalar(), a - b);
            assert_eq!((-fa).to_scalar(), -a);
            assert_eq!(fa.invert().expect("non-zero").to_scalar(), a.invert());
            assert_eq!(F::from_canonical(fa.to_bytes()), Some(fa));
        }
        assert_eq!(F::from_i128(-1).to_scalar(), -Scalar::ONE);
        assert_eq!(
            F::pow2(200).to_scalar(),
            Scalar::from(2u8) * {
                let mut p = Scalar::ONE;
                for _ in 0..199 {
                    p *= Scalar::from(2u8);
                }
                p
            }
        );
        let max = [0xffu8; 32];
        assert!(F::from_canonical(max).is_none());
        let mut ell = (-F::ONE).to_bytes();
        ell[0] += 1;
        assert!(F::from_canonical(ell).is_none());
        ell[0] -= 1;
        assert_eq!(F::from_canonical(ell), Some(-F::ONE));
    }

    #[test]
    fn sqrt_of_squares_and_refusal_of_non_squares() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let mut non_squares = 0;
        for _ in 0..100 {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            let x = F::from_random_bytes(b);
            let s = (x * x).sqrt().expect("a square");
            assert!(s == x || s == -x);
            if x.sqrt().is_none() {
                non_squares += 1;
            }
        }
        assert!(non_squares > 20 && non_squares < 80, "{non_squares}");
    }

    #[test]
    fn batch_inverse_and_lagrange() {
        let xs: Vec<F> = (1..=5).map(F::from_u64).collect();
        let inv = F::batch_invert(&xs).expect("non-zero");
        for (x, i) in xs.iter().zip(&inv) {
            assert_eq!(*x * *i, F::ONE);
        }
        assert!(F::batch_invert(&[F::ONE, F::ZERO]).is_none());
        // p(x) = 7 + 3x + 2x^2 through 5 points.
        let p = |x: F| F::from_u64(7) + F::from_u64(3) * x + F::from_u64(2) * x * x;
        let w = lagrange_at_zero(&xs);
        let v: F = xs
            .iter()
            .zip(&w)
            .fold(F::ZERO, |acc, (x, w)| acc + p(*x) * *w);
        assert_eq!(v, F::from_u64(7));
        let w9 = lagrange_at(&xs[..3], F::from_u64(9));
        let v9 = xs[..3]
            .iter()
            .zip(&w9)
            .fold(F::ZERO, |acc, (x, w)| acc + p(*x) * *w);
        assert_eq!(v9, p(F::from_u64(9)));
    }
}
