//! How much the network as a whole can sign per window, as a function of the
//! window quorum.

use serde::{Deserialize, Serialize};

/// The network-wide bound for one window quorum, in multiples of one node's
/// window `W` (`per_window`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowBound {
    /// The window quorum `q`.
    pub window_quorum: u16,
    /// Worst case, with `t − 1` compromised members and a malicious coordinator:
    /// `(n − t + 1)/(q − t + 1)`.
    pub multiple: f64,
    /// Numerator of `multiple`: `n − t + 1`.
    pub numerator: u32,
    /// Denominator of `multiple`: `q − t + 1`.
    pub denominator: u32,
    /// With every member honest (a malicious coordinator only): `n / q`.
    pub multiple_all_honest: f64,
}

/// The worst-case multiple of `W` the network can sign per window for a `t`-of-`n`
/// key whose signers require `q` approvals, as the fraction
/// `(n − t + 1, q − t + 1)`: every signed amount is reserved at `q − (t − 1)` or
/// more honest members, and at least `n − t + 1` honest members hold at most `W`
/// each. A quorum at or below `t` gives `(n − t + 1, 1)` (no better than no
/// certificate: the signers themselves reserve). `None` unless `2 ≤ t ≤ n` and
/// `q ≤ n` (a larger quorum can never be met).
pub fn worst_case_multiple(n: u16, t: u16, q: u16) -> Option<(u32, u32)> {
    if t < 1 || t > n || q > n {
        return None;
    }
    let effective = q.max(t);
    Some((u32::from(n - t) + 1, u32::from(effective - t) + 1))
}

/// The bound for every quorum from `t` to `n` (empty for an impossible key).
pub fn bounds(n: u16, t: u16) -> Vec<WindowBound> {
    if t < 1 || t > n {
        return Vec::new();
    }
    (t..=n)
        .filter_map(|q| {
            let (numerator, denominator) = worst_case_multiple(n, t, q)?;
            Some(WindowBound {
                window_quorum: q,
                multiple: f64::from(numerator) / f64::from(denominator),
                numerator,
                denominator,
                multiple_all_honest: f64::from(n) / f64::from(q),
            })
        })
        .collect()
}
