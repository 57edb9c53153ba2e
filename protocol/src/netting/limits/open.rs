//! Robust opening of degree-`d` sharings from all `n ≥ 2d + 1` shares: the value
//! is interpolated from the first `d + 1` positions and every other share must lie
//! on the same polynomial. With at most `d` corrupt positions, `n − d ≥ d + 1`
//! honest shares fix the polynomial, so any corrupt share that changes the value
//! is off it and detected. A position is named only when it alone explains the
//! mismatch *and* `n ≥ 2d + 2`: below that, `d` colluding nodes can make an honest
//! node's share look like the odd one out (the code's distance is `n − d`), so the
//! run aborts without a name.

use super::field::{lagrange_at, lagrange_at_zero, F};

/// Precomputed interpolation weights for one committee.
#[derive(Debug, Clone)]
pub struct Opener {
    xs: Vec<F>,
    d: usize,
    at_zero: Vec<F>,
    predict: Vec<Vec<F>>,
}

impl Opener {
    /// For points `xs` and degree `d` (`xs.len() ≥ d + 1`).
    pub fn new(xs: &[F], d: usize) -> Self {
        let base = &xs[..d + 1];
        Self {
            xs: xs.to_vec(),
            d,
            at_zero: lagrange_at_zero(base),
            predict: xs[d + 1..].iter().map(|x| lagrange_at(base, *x)).collect(),
        }
    }

    /// The opened value, or the positions blamed (empty: inconsistent, nobody
    /// identified).
    pub fn open(&self, shares: &[F]) -> Result<F, Vec<usize>> {
        let base = &shares[..self.d + 1];
        for (j, w) in self.predict.iter().enumerate() {
            let p = dot(w, base);
            if p != shares[self.d + 1 + j] {
                return Err(self.blame(shares));
            }
        }
        Ok(dot(&self.at_zero, base))
    }

    /// Which single position, left out, makes the rest consistent.
    fn blame(&self, shares: &[F]) -> Vec<usize> {
        // Up to d corrupt shares plus one honest share can be a codeword difference
        // (weight d + 1) unless d + 1 < n − d, the code's distance: only then does a
        // single explaining position prove who lied.
        let n = self.xs.len();
        if self.d + 1 >= n - self.d {
            return Vec::new();
        }
        let mut found = Vec::new();
        for c in 0..n {
            let xs: Vec<F> = (0..n).filter(|&i| i != c).map(|i| self.xs[i]).collect();
            let ys: Vec<F> = (0..n).filter(|&i| i != c).map(|i| shares[i]).collect();
            let base = &xs[..self.d + 1];
            let ok = (self.d + 1..xs.len())
                .all(|j| dot(&lagrange_at(base, xs[j]), &ys[..self.d + 1]) == ys[j]);
            if ok {
                found.push(c);
            }
        }
        if found.len() == 1 {
            found
        } else {
            Vec::new()
        }
    }
}

pub(crate) fn dot(w: &[F], v: &[F]) -> F {
    w.iter().zip(v).fold(F::ZERO, |a, (x, y)| a + *x * *y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_detects_and_names_a_single_bad_share() {
        let xs: Vec<F> = [1u64, 2, 4, 5, 9, 10]
            .iter()
            .map(|&x| F::from_u64(x))
            .collect();
        let p = |x: F| F::from_u64(42) + F::from_u64(5) * x + F::from_u64(11) * x * x;
        let mut shares: Vec<F> = xs.iter().map(|x| p(*x)).collect();
        let o = Opener::new(&xs, 2);
        assert_eq!(o.open(&shares), Ok(F::from_u64(42)));
        shares[3] += F::ONE;
        assert_eq!(o.open(&shares), Err(vec![3]));
        shares[0] += F::ONE;
        assert_eq!(o.open(&shares), Err(vec![]));
        // n = 2d + 1: two colluders could frame an honest node, so nobody is named.
        let o5 = Opener::new(&xs[..5], 2);
        let mut s5: Vec<F> = xs[..5].iter().map(|x| p(*x)).collect();
        s5[3] += F::ONE;
        assert_eq!(o5.open(&s5), Err(vec![]));
        // The framing: errors at x = 1 and x = 5 look like one error at x = 9.
        s5[0] += F::ONE;
        assert!(o5.open(&s5).is_err());
        // n = 3, d = 1: detected, nobody named.
        let o3 = Opener::new(&xs[..3], 1);
        let q = |x: F| F::from_u64(7) + F::from_u64(3) * x;
        let mut s3: Vec<F> = xs[..3].iter().map(|x| q(*x)).collect();
        assert_eq!(o3.open(&s3), Ok(F::from_u64(7)));
        s3[1] += F::ONE;
        assert_eq!(o3.open(&s3), Err(vec![]));
    }
}
