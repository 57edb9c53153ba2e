//! A simulated node: identity, keystore, live protocol sessions, an input queue
//! processed one item at a time (CPU cost makes the node busy), crash/restart
//! and pause/resume.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
};

use quorate_protocol::{
    ids::SessionId,
    local::Party,
    presign::{NoncePool, PoolStats},
    Envelope, KeyId, KeyShare, NodeId, NodeIdentity,
};
use serde::Serialize;

use crate::{engine::Micros, link::Clock};

/// Work waiting for a node's CPU.
#[derive(Debug)]
pub(crate) enum Work {
    /// A delivered message.
    Message {
        /// Sender node index.
        from: usize,
        /// The message.
        env: Box<Envelope>,
    },
    /// A session deadline fired.
    Timeout {
        /// Session of the timer.
        session: SessionId,
        /// Which timer.
        timer: quorate_protocol::TimerId,
    },
    /// Signer (ROAST): create its nonce pools if it has none (a new epoch after a
    /// start or restart), top them up and offer the new commitments.
    Presign,
    /// Coordinator: start the next attempt of a signing request.
    StartAttempt {
        /// Request number.
        request: u64,
    },
    /// Member: start a DKG run.
    StartDkg {
        /// Run number.
        run: u64,
    },
    /// Dealer or new member: start a resharing run.
    StartReshare {
        /// Run number.
        run: u64,
    },
    /// A delivered netting message.
    Netting {
        /// Sender endpoint (node or party).
        from: usize,
        /// The message.
        msg: Box<crate::sim::netting::NetMsg>,
    },
    /// Coordinator: close a netting round (its cut-off).
    NettingClose {
        /// Round number.
        round: usize,
    },
    /// Coordinator: build a netting round's settlement batch and sign it.
    NettingSettle {
        /// Round number.
        round: usize,
    },
}

/// Sums of [`PoolStats`] over pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PoolTotals {
    pub generated: u64,
    pub taken: u64,
    pub expired: u64,
    pub refused: u64,
}

impl PoolTotals {
    pub(crate) fn add(&mut self, s: PoolStats) {
        self.generated += s.generated;
        self.taken += s.taken;
        self.expired += s.expired;
        self.refused += s.refused;
    }

    pub(crate) fn add_totals(&mut self, s: PoolTotals) {
        self.generated += s.generated;
        self.taken += s.taken;
        self.expired += s.expired;
        self.refused += s.refused;
    }
}

/// A node's own record of one pool: which indices it offered and still holds,
/// and which the coordinator asked for, so that it can tell nonces its
/// coordinator will never ask for (see `sim::roast`).
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolTrack {
    /// Offered, not taken (nor found expired).
    pub held: BTreeSet<u64>,
    /// Recent takes: (when, index), oldest first.
    pub takes: VecDeque<(Micros, u64)>,
    /// Highest index taken longer ago than the grace period.
    pub settled: Option<u64>,
    /// The pool's `taken` count at the last top-up, and when (idle detection).
    pub mark: Option<(u64, Micros)>,
}

/// Liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Up,
    Crashed,
    Paused,
}

/// What kind of machine a session runs (for cost classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Signer,
    Aggregator { request: u64 },
    Dkg { run: u64 },
    Reshare { run: u64 },
}

/// A live protocol session on a node.
pub(crate) struct Session {
    pub party: Party,
    pub role: Role,
    /// Participants (for cost scaling).
    pub k: usize,
}

/// Per-node counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeStats {
    /// Messages sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages delivered to the node.
    pub received: u64,
    /// Bytes delivered to the node.
    pub received_bytes: u64,
    /// Messages the machines rejected (bad context, duplicate round, …).
    pub rejected: u64,
    /// Messages for sessions the node no longer (or never) had.
    pub stale: u64,
    /// Messages lost because the node was down.
    pub dropped_down: u64,
    /// CPU time charged (µs).
    pub cpu_us: u64,
}

pub(crate) struct SimNode {
    pub identity: Arc<NodeIdentity>,
    pub id: NodeId,
    /// Keystore: survives crashes.
    pub keys: BTreeMap<KeyId, KeyShare>,
    /// Memory: lost on crash.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Sessions this node already took part in (refuses to join them again).
    pub finished: BTreeSet<SessionId>,
    pub queue: VecDeque<Work>,
    pub busy_until: Micros,
    pub liveness: Liveness,
    /// Bumped on every crash so that timers of the old incarnation are ignored.
    pub epoch: u32,
    pub clock: Clock,
    /// Times the node was down: `(from, to)`; `to = MAX` while still down.
    pub down: Vec<(Micros, Micros)>,
    pub stats: NodeStats,
    /// The coordinator's estimate of this signer's commitment round trip (µs,
    /// exponentially weighted), used by responsive selection.
    pub rtt_us: Option<f64>,
    /// Times this node was blamed.
    pub blamed: u32,
    /// Responsive selection avoids this node until then (it was blamed).
    pub penalty_until: Micros,
    /// Presigned nonces per key (ROAST): memory, lost on crash.
    pub pools: BTreeMap<KeyId, NoncePool>,
    /// Counters of pools lost in crashes or replaced (added to the live pools' in
    /// reports).
    pub lost_pools: PoolTotals,
    /// What the node knows about each pool's nonces (see [`PoolTrack`]).
    pub pool_track: BTreeMap<KeyId, PoolTrack>,
}

impl SimNode {
    pub(crate) fn new(identity: Arc<NodeIdentity>, clock: Clock) -> Self {
        Self {
            id: identity.node_id(),
            identity,
            keys: BTreeMap::new(),
            sessions: BTreeMap::new(),
            finished: BTreeSet::new(),
            queue: VecDeque::new(),
            busy_until: 0,
            liveness: Liveness::Up,
            epoch: 0,
            clock,
            down: Vec::new(),
            stats: NodeStats::default(),
            rtt_us: None,
            blamed: 0,
            penalty_until: 0,
            pools: BTreeMap::new(),
            lost_pools: PoolTotals::default(),
            pool_track: BTreeMap::new(),
        }
    }

    /// Crash: memory (sessions, nonces, nonce pools, queue) is gone; the keystore stays.
    pub(crate) fn crash(&mut self, now: Micros) {
        if self.liveness != Liveness::Crashed {
            self.mark_down(now);
        }
        self.liveness = Liveness::Crashed;
        self.sessions.clear();
        self.finished.clear();
        self.queue.clear();
        self.drop_pools();
        self.epoch += 1;
        self.busy_until = now;
    }

    /// Drops every nonce pool (its nonces are zeroized), keeping its counters.
    pub(crate) fn drop_pools(&mut self) {
        for pool in std::mem::take(&mut self.pools).into_values() {
            self.lost_pools.add(pool.stats());
        }
        self.pool_track.clear();
    }

    /// Drops the pool of `key`, keeping its counters.
    pub(crate) fn drop_pool(&mut self, key: &KeyId) {
        if let Some(pool) = self.pools.remove(key) {
            self.lost_pools.add(pool.stats());
        }
        self.pool_track.remove(key);
    }

    /// Pause: stops processing; inputs queue up.
    pub(crate) fn pause(&mut self, now: Micros) {
        if self.liveness == Liveness::Up {
            self.mark_down(now);
            self.liveness = Liveness::Paused;
        }
    }

    /// Restart after a crash or resume after a pause.
    pub(crate) fn up(&mut self, now: Micros) {
        if self.liveness != Liveness::Up {
            if let Some(last) = self.down.last_mut() {
                last.1 = now;
            }
            self.liveness = Liveness::Up;
            self.busy_until = self.busy_until.max(now);
        }
    }

    fn mark_down(&mut self, now: Micros) {
        self.down.push((now, Micros::MAX));
    }

    /// True if the node was down at any time in `[from, to]`.
    pub(crate) fn down_during(&self, from: Micros, to: Micros) -> bool {
        self.down.iter().any(|(a, b)| *a <= to && *b >= from)
    }
}
