//! The ROAST-style retry loop run by the coordinator for each signing request.
//!
//! Each attempt is a fresh FROST session with `t` signers. When an attempt fails,
//! the culprits it names (invalid shares, silence until the deadline) are
//! excluded for the rest of the request and another subset is tried, up to the
//! attempt cap (`n - t + 1` by default). With `f <= n - t` faulty signers every
//! failed attempt excludes at least one of them, so the request succeeds within
//! `f + 1 <= n - t + 1` attempts.

use std::collections::BTreeSet;

use quorate_protocol::ids::SessionId;
use rand_core::RngCore;

use crate::{engine::Micros, random, scenario::Selection};

/// Final state of a signing request or DKG run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Signature (or key) produced.
    Signed,
    /// Gave up after attempts that ended with provable faults.
    Aborted,
    /// Gave up after an attempt that ended with its deadline.
    TimedOut,
    /// The coordinator crashed with the request in flight.
    Lost,
    /// Still running when the simulation ended.
    Unfinished,
}

impl Outcome {
    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Aborted => "aborted",
            Self::TimedOut => "timed-out",
            Self::Lost => "lost",
            Self::Unfinished => "unfinished",
        }
    }
}

/// One culprit named by a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blame {
    /// Node named.
    pub node: usize,
    /// What it was blamed for.
    pub fault: String,
    /// True if the node really was faulty (byzantine, or down during the attempt).
    pub correct: bool,
}

/// The running attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Its session.
    pub session: SessionId,
    /// Signers asked.
    pub signers: Vec<usize>,
    /// When it started.
    pub started: Micros,
}

/// A signing request and its retries.
#[derive(Debug, Clone)]
pub struct Request {
    /// Request number.
    pub id: u64,
    /// Committee whose key signs.
    pub committee: usize,
    /// Bytes to sign.
    pub message: Vec<u8>,
    /// Arrival time.
    pub arrived: Micros,
    /// Attempts started.
    pub attempts: u32,
    /// Excluded signers (named as culprits in an earlier attempt).
    pub excluded: BTreeSet<usize>,
    /// Everyone named, over all attempts.
    pub blames: Vec<Blame>,
    /// The attempt in flight.
    pub current: Option<Attempt>,
    /// Signers of the latest attempt.
    pub last_signers: Vec<usize>,
    /// Fault of the last failed attempt.
    pub last_fault: Option<String>,
    /// True if the last failure was a deadline.
    pub last_timeout: bool,
    /// Set when the request is over.
    pub finished: Option<(Micros, Outcome)>,
    /// Messages sent for this request.
    pub messages: u64,
    /// Bytes sent for this request.
    pub bytes: u64,
}

impl Request {
    /// A new request.
    pub fn new(id: u64, committee: usize, message: Vec<u8>, arrived: Micros) -> Self {
        Self {
            id,
            committee,
            message,
            arrived,
            attempts: 0,
            excluded: BTreeSet::new(),
            blames: Vec::new(),
            current: None,
            last_signers: Vec::new(),
            last_fault: None,
            last_timeout: false,
            finished: None,
            messages: 0,
            bytes: 0,
        }
    }

    /// The outcome when no further attempt is possible.
    pub fn give_up_outcome(&self) -> Outcome {
        if self.last_timeout {
            Outcome::TimedOut
        } else {
            Outcome::Aborted
        }
    }
}

/// Picks `t` signers among `members` not in `excluded`; `None` if too few remain.
///
/// `score[i]` ranks member `members[i]` for [`Selection::Responsive`] (higher first).
pub fn choose(
    members: &[usize],
    excluded: &BTreeSet<usize>,
    t: usize,
    selection: Selection,
    score: &[i64],
    rng: &mut impl RngCore,
) -> Option<Vec<usize>> {
    let mut candidates: Vec<(usize, i64)> = members
        .iter()
        .zip(score.iter().chain(std::iter::repeat(&0)))
        .filter(|(m, _)| !excluded.contains(m))
        .map(|(m, s)| (*m, *s))
        .collect();
    if candidates.len() < t {
        return None;
    }
    match selection {
        Selection::First => {}
        Selection::Random => random::shuffle(rng, &mut candidates),
        Selection::Responsive => candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0))),
    }
    let mut chosen: Vec<usize> = candidates.into_iter().take(t).map(|(m, _)| m).collect();
    chosen.sort_unstable();
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{stream, Stream};

    #[test]
    fn choose_skips_excluded_and_fails_when_too_few() {
        let members: Vec<usize> = (0..5).collect();
        let mut rng = stream(1, Stream::Selection);
        let excluded: BTreeSet<usize> = [0, 1].into_iter().collect();
        let c = choose(&members, &excluded, 3, Selection::First, &[], &mut rng).expect("enough");
        assert_eq!(c, vec![2, 3, 4]);
        let excluded: BTreeSet<usize> = [0, 1, 2].into_iter().collect();
        assert!(choose(&members, &excluded, 3, Selection::Random, &[], &mut rng).is_none());
    }

    #[test]
    fn responsive_prefers_high_scores() {
        let members: Vec<usize> = (0..4).collect();
        let mut rng = stream(1, Stream::Selection);
        let c = choose(
            &members,
            &BTreeSet::new(),
            2,
            Selection::Responsive,
            &[0, 5, -1, 5],
            &mut rng,
        )
        .expect("enough");
        assert_eq!(c, vec![1, 3]);
    }
}
