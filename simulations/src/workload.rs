//! Arrival processes: fixed-rate, Poisson and bursty signing requests, DKG runs,
//! and a mix of both. Arrivals are generated up front from their own random
//! stream, so they do not depend on what happens during the run.

use rand_core::RngCore;

use crate::{
    engine::{s_to_us, Micros},
    random,
    scenario::{WorkloadKind, WorkloadSpec},
};

/// What arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A signing request for a committee's key.
    Sign {
        /// Committee index.
        committee: usize,
    },
    /// A DKG run in a committee.
    Dkg {
        /// Committee index.
        committee: usize,
    },
    /// A resharing run in a committee.
    Reshare {
        /// Committee index.
        committee: usize,
    },
}

/// All arrivals of a run, in time order.
pub fn arrivals(
    spec: &WorkloadSpec,
    committees: usize,
    rng: &mut impl RngCore,
) -> Vec<(Micros, Arrival)> {
    let start = spec.start_s;
    let end = spec.start_s + spec.duration_s;
    let cap = spec.count.unwrap_or(u64::MAX);
    let mut times: Vec<(f64, bool)> = Vec::new();
    let period = 1.0 / spec.rate_per_s;
    match spec.kind {
        WorkloadKind::Netting => {}
        WorkloadKind::FixedRate | WorkloadKind::Dkg | WorkloadKind::Reshare => {
            let dkg = spec.kind == WorkloadKind::Dkg;
            let mut t = start;
            while t < end && (times.len() as u64) < cap {
                times.push((t, dkg));
                t += period;
            }
        }
        WorkloadKind::Poisson | WorkloadKind::Mixed => {
            let mut t = start + random::exponential(rng, spec.rate_per_s);
            while t < end && (times.len() as u64) < cap {
                times.push((t, false));
                t += random::exponential(rng, spec.rate_per_s);
            }
            if spec.kind == WorkloadKind::Mixed && spec.dkg_every_s > 0.0 {
                let mut t = start;
                while t < end {
                    times.push((t, true));
                    t += spec.dkg_every_s;
                }
                times.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        WorkloadKind::Burst => {
            let mut t = start;
            'outer: while t < end {
                for _ in 0..spec.burst_size {
                    if times.len() as u64 >= cap {
                        break 'outer;
                    }
                    times.push((t, false));
                }
                t += spec.burst_interval_s;
            }
        }
    }
    let committees = committees.max(1);
    times
        .into_iter()
        .enumerate()
        .map(|(i, (t, dkg))| {
            let committee = i % committees;
            let a = if spec.kind == WorkloadKind::Reshare {
                Arrival::Reshare { committee }
            } else if dkg {
                Arrival::Dkg { committee }
            } else {
                Arrival::Sign { committee }
            };
            (s_to_us(t), a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{stream, Stream};

    fn spec(kind: WorkloadKind) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            rate_per_s: 2.0,
            count: None,
            start_s: 0.0,
            duration_s: 100.0,
            drain_s: 0.0,
            burst_size: 5,
            burst_interval_s: 10.0,
            dkg_every_s: 50.0,
        }
    }

    #[test]
    fn fixed_rate_is_evenly_spaced() {
        let a = arrivals(
            &spec(WorkloadKind::FixedRate),
            1,
            &mut stream(1, Stream::Workload),
        );
        assert_eq!(a.len(), 200);
        assert_eq!(a[1].0 - a[0].0, 500_000);
    }

    #[test]
    fn poisson_rate_is_close() {
        let a = arrivals(
            &spec(WorkloadKind::Poisson),
            1,
            &mut stream(1, Stream::Workload),
        );
        assert!((150..250).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn bursts_arrive_together() {
        let a = arrivals(
            &spec(WorkloadKind::Burst),
            3,
            &mut stream(1, Stream::Workload),
        );
        assert_eq!(a.len(), 50);
        assert!(a[..5].iter().all(|x| x.0 == 0));
        assert_eq!(a[5].0, 10_000_000);
        assert_eq!(a[1].1, Arrival::Sign { committee: 1 });
    }
}
