//! Arithmetic in the Ristretto255 scalar field `ℓ = 2^252 + 27742317777372353535851937790883648493`
//! in Montgomery form (four 64-bit limbs, CIOS multiplication; crypto-bigint's
//! residues for inversion), several times faster than round-tripping through
//! `curve25519_dalek::Scalar` for the long products of the limit-check MPC. Values convert exactly to and from `Scalar`, so party
//! sharings and MPC sharings are the same field elements.
//!
//! Wire form: 32-byte canonical little-endian encoding of the value (as `Scalar`);
//! non-canonical encodings are refused on decode (invariant 8).

use core::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crypto_bigint::{
    modular::constant_mod::{Residue, ResidueParams},
    U256,
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

/// One field element, in Montgomery form (`x·2^256 mod ℓ`, four little-endian
/// 64-bit limbs, always `< ℓ`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct F([u64; 4]);

/// ℓ, little-endian limbs.
const P: [u64; 4] = [
    0x5812631a5cf5d3ed,
    0x14def9dea2f79cd6,
    0,
    0x1000000000000000,
];

/// `−ℓ^{-1} mod 2^64`.
const INV: u64 = {
    let mut inv: u64 = 1;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(P[0].wrapping_mul(inv)));
        i += 1;
    }
    inv.wrapping_neg()
};

#[inline(always)]
fn mac(a: u64, b: u64, c: u64, carry: u64) -> (u64, u64) {
    let r = u128::from(a) * u128::from(b) + u128::from(c) + u128::from(carry);
    (r as u64, (r >> 64) as u64)
}

#[inline(always)]
fn adc(a: u64, b: u64, carry: u64) -> (u64, u64) {
    let r = u128::from(a) + u128::from(b) + u128::from(carry);
    (r as u64, (r >> 64) as u64)
}

#[inline(always)]
fn sbb(a: u64, b: u64, borrow: u64) -> (u64, u64) {
    let r = u128::from(a).wrapping_sub(u128::from(b) + u128::from(borrow >> 63));
    (r as u64, (r >> 64) as u64)
}

/// `a − ℓ` when `a ≥ ℓ`, else `a` (branch-free select).
#[inline(always)]
fn reduce_once(a: [u64; 4], hi: u64) -> [u64; 4] {
    let (d0, b) = sbb(a[0], P[0], 0);
    let (d1, b) = sbb(a[1], P[1], b);
    let (d2, b) = sbb(a[2], P[2], b);
    let (d3, b) = sbb(a[3], P[3], b);
    let (_, b) = sbb(hi, 0, b);
    // b is all ones when a < ℓ (keep a), zero otherwise (take a − ℓ).
    let keep = b;
    [
        (a[0] & keep) | (d0 & !keep),
        (a[1] & keep) | (d1 & !keep),
        (a[2] & keep) | (d2 & !keep),
        (a[3] & keep) | (d3 & !keep),
    ]
}

/// Montgomery product `a·b·2^-256 mod ℓ` (CIOS).
#[inline(always)]
fn mont_mul(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let mut t = [0u64; 6];
    for bi in b {
        let mut c = 0u64;
        for j in 0..4 {
            (t[j], c) = mac(a[j], *bi, t[j], c);
        }
        let (s, c2) = adc(t[4], c, 0);
        t[4] = s;
        t[5] = c2;
        let m = t[0].wrapping_mul(INV);
        let (_, mut c) = mac(m, P[0], t[0], 0);
        for j in 1..4 {
            (t[j - 1], c) = mac(m, P[j], t[j], c);
        }
        let (s, c2) = adc(t[4], c, 0);
        t[3] = s;
        t[4] = t[5] + c2;
    }
    reduce_once([t[0], t[1], t[2], t[3]], t[4])
}

const R2: [u64; 4] = {
    let w = <Ell as ResidueParams<{ U256::LIMBS }>>::R2.to_words();
    [w[0], w[1], w[2], w[3]]
};
const R1: [u64; 4] = {
    let w = <Ell as ResidueParams<{ U256::LIMBS }>>::R.to_words();
    [w[0], w[1], w[2], w[3]]
};

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

// `Zeroize` for `F` and collections of it: overwritten with 0 (= `F::default`).
impl zeroize::DefaultIsZeroes for F {}

impl F {
    /// 0.
    pub const ZERO: F = F([0; 4]);
    /// 1.
    pub const ONE: F = F(R1);

    fn from_limbs(v: [u64; 4]) -> F {
        // v < 2^256; v·R2·R^-1 = v·R mod ℓ. mont_mul needs a < ℓ·2^? — fine for
        // any 256-bit v since R2 < ℓ (the CIOS bound holds for a < 2^256, b < ℓ).
        F(mont_mul(&v, &R2))
    }

    fn to_limbs(self) -> [u64; 4] {
        mont_mul(&self.0, &[1, 0, 0, 0])
    }

    fn residue(self) -> Residue<Ell, { U256::LIMBS }> {
        Residue::from_montgomery(U256::from_words(self.0))
    }

    fn from_residue(r: Residue<Ell, { U256::LIMBS }>) -> F {
        F(r.as_montgomery().to_words())
    }

    /// The element `v`.
    pub fn from_u64(v: u64) -> F {
        F::from_limbs([v, 0, 0, 0])
    }

    /// The element `v` (negative values wrap: `−1 = ℓ − 1`).
    pub fn from_i128(v: i128) -> F {
        let m = v.unsigned_abs();
        let mag = F::from_limbs([m as u64, (m >> 64) as u64, 0, 0]);
        if v < 0 {
            -mag
        } else {
            mag
        }
    }

    /// `2^k` for `k < 252`.
    pub fn pow2(k: u32) -> F {
        let mut l = [0u64; 4];
        l[(k / 64) as usize] = 1 << (k % 64);
        F::from_limbs(l)
    }

    /// An element from 32 uniformly random bytes: the top four bits are cleared and
    /// the rest read as a Montgomery representative (`< 2^252 < ℓ`), so the result
    /// is within `2^-124` of uniform on the field (no reduction needed).
    pub fn from_random_bytes(mut b: [u8; 32]) -> F {
        b[31] &= 0x0f;
        F(words(&b))
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
        F::from_limbs([v as u64, (v >> 64) as u64, 0, 0])
    }

    /// Canonical little-endian encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        let l = self.to_limbs();
        let mut out = [0u8; 32];
        for (i, w) in l.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The Montgomery representative's bytes (cheap; for hashing transcripts).
    pub fn montgomery_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, w) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Decodes a canonical encoding (`None` when `≥ ℓ`).
    pub fn from_canonical(b: [u8; 32]) -> Option<F> {
        let v = words(&b);
        let (_, b0) = sbb(v[0], P[0], 0);
        let (_, b1) = sbb(v[1], P[1], b0);
        let (_, b2) = sbb(v[2], P[2], b1);
        let (_, b3) = sbb(v[3], P[3], b2);
        // Borrow out means v < ℓ.
        (b3 != 0).then(|| F::from_limbs(v))
    }

    /// The low 128 bits of the canonical representative.
    pub fn low_u128(&self) -> u128 {
        let l = self.to_limbs();
        u128::from(l[0]) | (u128::from(l[1]) << 64)
    }

    /// Whether the canonical representative fits in 128 bits.
    pub fn fits_u128(&self) -> bool {
        let l = self.to_limbs();
        l[2] == 0 && l[3] == 0
    }

    /// From a dalek scalar.
    pub fn from_scalar(s: &Scalar) -> F {
        F::from_limbs(words(&s.to_bytes()))
    }

    /// To a dalek scalar.
    pub fn to_scalar(&self) -> Scalar {
        // The representative is canonical, so this does not reduce.
        Scalar::from_bytes_mod_order(self.to_bytes())
    }

    /// The inverse (`None` for 0).
    pub fn invert(&self) -> Option<F> {
        let (inv, ok) = self.residue().invert();
        bool::from(ok).then_some(F::from_residue(inv))
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

    /// `self^e` for a public exponent (variable time: square and multiply).
    fn pow_vartime(&self, e: &[u64; 4]) -> F {
        let mut acc = F::ONE;
        let mut started = false;
        for w in e.iter().rev() {
            for bit in (0..64).rev() {
                if started {
                    acc = acc * acc;
                }
                if (w >> bit) & 1 == 1 {
                    acc = if started { acc * *self } else { *self };
                    started = true;
                }
            }
        }
        acc
    }

    /// A square root (`None` when `self` is not a square). `ℓ ≡ 5 (mod 8)`, so
    /// Atkin's formula applies: `v = (2q)^((ℓ−5)/8)`, `i = 2q·v²`, `s = q·v·(i − 1)`.
    /// Variable time: only for public values.
    pub fn sqrt(&self) -> Option<F> {
        if *self == F::ZERO {
            return Some(F::ZERO);
        }
        let exp = Ell::MODULUS
            .wrapping_sub(&U256::from_u8(5))
            .shr_vartime(3)
            .to_words();
        let two_q = *self + *self;
        let v = two_q.pow_vartime(&exp);
        let i = two_q * v * v;
        let s = *self * v * (i - F::ONE);
        (s * s == *self).then_some(s)
    }
}

fn words(b: &[u8; 32]) -> [u64; 4] {
    let mut v = [0u64; 4];
    for (i, w) in v.iter_mut().enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(x);
    }
    v
}

impl Add for F {
    type Output = F;
    #[inline(always)]
    fn add(self, o: F) -> F {
        let (s0, c) = adc(self.0[0], o.0[0], 0);
        let (s1, c) = adc(self.0[1], o.0[1], c);
        let (s2, c) = adc(self.0[2], o.0[2], c);
        let (s3, c) = adc(self.0[3], o.0[3], c);
        F(reduce_once([s0, s1, s2, s3], c))
    }
}
impl Sub for F {
    type Output = F;
    #[inline(always)]
    fn sub(self, o: F) -> F {
        let (d0, b) = sbb(self.0[0], o.0[0], 0);
        let (d1, b) = sbb(self.0[1], o.0[1], b);
        let (d2, b) = sbb(self.0[2], o.0[2], b);
        let (d3, b) = sbb(self.0[3], o.0[3], b);
        // Add ℓ back when it borrowed (b all ones).
        let (a0, c) = adc(d0, P[0] & b, 0);
        let (a1, c) = adc(d1, P[1] & b, c);
        let (a2, c) = adc(d2, P[2] & b, c);
        let (a3, _) = adc(d3, P[3] & b, c);
        F([a0, a1, a2, a3])
    }
}
impl Mul for F {
    type Output = F;
    #[inline(always)]
    fn mul(self, o: F) -> F {
        F(mont_mul(&self.0, &o.0))
    }
}
impl Neg for F {
    type Output = F;
    fn neg(self) -> F {
        F::ZERO - self
    }
}
impl AddAssign for F {
    #[inline(always)]
    fn add_assign(&mut self, o: F) {
        *self = *self + o;
    }
}
impl SubAssign for F {
    #[inline(always)]
    fn sub_assign(&mut self, o: F) {
        *self = *self - o;
    }
}
impl MulAssign for F {
    #[inline(always)]
    fn mul_assign(&mut self, o: F) {
        *self = *self * o;
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
