//! ROAST (Ruffing, Ronge, Jin, Schneider-Bensch, Schröder, CCS 2022) on the
//! simulated coordinator, over the protocol's presigning code.
//!
//! - Every signer node keeps a real [`NoncePool`] per key (a new random epoch each
//!   time the node starts) and sends the coordinator a `PresignOffer` at start and
//!   whenever it refills. The pool refills one nonce as soon as one is taken
//!   (`refill_below = size`), and that one-commitment offer leaves right after the
//!   share, in the same hop: ROAST's piggy-backed next commitment, as a second
//!   envelope. With a pool of more than one nonce the signer is responsive again as
//!   soon as its share checks out (the book still holds its older commitments).
//! - Every `presign_refresh_ms` a signer also drops expired nonces and tops up.
//!   Offers can be lost, and the book refuses one that arrives after a later offer
//!   of the same node; a `PresignedSign` can be lost too. Either way the node holds
//!   nonces its coordinator will never ask for. The book hands a node's
//!   commitments out oldest first, so a node drops (zeroizes) every nonce below one
//!   it was asked for more than a second ago and offers fresh ones; a pool nothing
//!   was taken from between two refreshes is replaced whole (new epoch, which makes
//!   the book start over for the node), as after a reconnection.
//! - The coordinator files every offer in a real [`PresignBook`]. Per request it
//!   keeps ROAST's responsive set R, computed when needed: members with an unused
//!   commitment in the book that are in no running session of the request and not
//!   marked malicious for it. Whenever |R| ≥ t it takes t of them
//!   ([`PresignBook::take_set`]) and starts a one-round session with
//!   [`Aggregator::presigned`] at once, as many as R allows, at most n − t + 1
//!   running at a time.
//! - Each share is checked on arrival ([`ShareCheck`]): a valid one frees its signer
//!   (responsive again once its next commitment is in the book) and goes to the
//!   session's aggregator; an invalid one marks the signer malicious for the request
//!   and ends the session's aggregator (that session can never finish). A silent
//!   signer just stays in its session. The first aggregator to produce a signature
//!   finishes the request; every other session is abandoned.
//! - Rounds: a message's round is its causal depth. Offers made outside a request
//!   are round 1; a session's round is the highest round of the messages that made
//!   its signers responsive, its `PresignedSign`s are one more and its shares (and
//!   the piggy-backed offers) two more. The request's rounds are the round of the
//!   share completing the signature: 3 without faults, at most 2(n − t) + 3 (the
//!   bound of the ROAST paper: the offer round and n − t + 1 sessions of two
//!   rounds). A session that would exceed the bound is not started.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use quorate_protocol::{
    aggregate::AggregatorConfig,
    ids::SessionId,
    local::Party,
    presign::{book::Offer, random_epoch, BookConfig, NoncePool, PoolConfig, PresignBook},
    sign::SignerConfig,
    Aggregator, Envelope, Fault, Input, KeyId, Payload, ProtocolError, SignTarget, Signer,
    Timestamp,
};
use rand_core::RngCore;

use super::{
    share_check::{GroupKeys, ShareCheck},
    Event, Owner, World,
};
use crate::{
    cost::Op,
    engine::{ms_to_us, Micros},
    node::{Liveness, Role, Session, Work},
    report::{PresignReport, RoastRecord},
    robust::{self, Blame, Outcome},
    scenario::SigningStrategy,
};

/// The book stops using a commitment this long before the node drops it.
pub(crate) const PRESIGN_MARGIN_MS: u64 = 5_000;

/// How long after a later nonce was asked for a node gives up on an earlier one
/// it still holds (covers reordering in transit).
const ORPHAN_GRACE_US: Micros = 1_000_000;

/// Session id of offers made outside any signing session.
const NO_SESSION: SessionId = SessionId([0u8; 32]);

/// One ROAST session of a request.
struct RoastSession {
    signers: Vec<usize>,
    /// Signers whose share has not arrived.
    pending: BTreeSet<usize>,
    check: ShareCheck,
    /// Round of the session (see the module docs).
    round: u32,
    started: Micros,
    /// False once its aggregator is gone (an invalid share arrived, or it failed).
    live: bool,
}

/// ROAST state of one signing request.
#[derive(Default)]
pub(super) struct RoastRun {
    malicious: BTreeSet<usize>,
    /// Signer → the session it is in (has not answered yet).
    busy: BTreeMap<usize, SessionId>,
    /// Round of the message that last made a signer responsive (1 if none).
    round: BTreeMap<usize, u32>,
    sessions: BTreeMap<SessionId, RoastSession>,
    /// Reporting.
    started: u32,
    max_running: u32,
    rounds: Option<u32>,
    round_capped: u32,
}

impl RoastRun {
    fn running(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| !s.pending.is_empty())
            .count()
    }
}

/// The coordinator's book and the run's presigning counters.
pub(super) struct Presign {
    book: PresignBook,
    runs: BTreeMap<u64, RoastRun>,
    /// Requests still running.
    open: BTreeSet<u64>,
    by_session: BTreeMap<SessionId, u64>,
    /// Every commitment handed out: (node, epoch, index).
    used: BTreeSet<(usize, [u8; 16], u64)>,
    /// Decoded key packages for the share checks, per key.
    keys: BTreeMap<KeyId, GroupKeys>,
    report: PresignReport,
}

impl Presign {
    pub(super) fn new() -> Self {
        Self {
            book: new_book(),
            runs: BTreeMap::new(),
            open: BTreeSet::new(),
            by_session: BTreeMap::new(),
            used: BTreeSet::new(),
            keys: BTreeMap::new(),
            report: PresignReport::default(),
        }
    }
}

fn new_book() -> PresignBook {
    let config = BookConfig {
        safety_margin_ms: PRESIGN_MARGIN_MS,
        ..BookConfig::default()
    };
    // The default cap is positive, so this cannot fail; fall back to the default.
    PresignBook::new(config).unwrap_or_default()
}

impl World {
    pub(super) fn roast_mode(&self) -> bool {
        self.scenario.signing.strategy == SigningStrategy::Roast
    }

    /// True when request `id` runs ROAST.
    pub(super) fn is_roast(&self, id: u64) -> bool {
        self.presign
            .as_ref()
            .is_some_and(|p| p.runs.contains_key(&id))
    }

    fn local(&self, node: usize, offset: Micros) -> Timestamp {
        Timestamp(self.nodes[node].clock.local_ms(self.now + offset))
    }

    /// Times `f` in calibration mode (recording `ops` at `k`) and returns its result
    /// and the virtual cost of `ops`.
    fn costed<T>(&mut self, ops: &[Op], k: usize, f: impl FnOnce(&mut Self) -> T) -> (T, Micros) {
        let timer = self.measure.is_some().then(std::time::Instant::now);
        let out = f(self);
        if let (Some(samples), Some(t)) = (self.measure.as_mut(), timer) {
            samples.push(super::Sample {
                ops: ops.to_vec(),
                k,
                elapsed: t.elapsed(),
            });
        }
        let cost = self.costs.as_ref().map_or(0, |c| c.charge(ops, k, 1.0));
        (out, cost)
    }

    // ---- signer side -------------------------------------------------------

    /// Schedules every member's first presigning (time 0) in ROAST mode.
    pub(super) fn schedule_presigning(&mut self) {
        if !self.roast_mode() {
            return;
        }
        for c in 0..self.topo.count {
            for m in self.topo.members(c) {
                self.events
                    .push(0, Event::PresignRefresh { node: m, epoch: 0 });
            }
        }
    }

    /// A member's periodic top-up (or its first presigning).
    pub(super) fn presign_refresh(&mut self, node: usize, epoch: u32) {
        let n = &mut self.nodes[node];
        if n.epoch != epoch || n.liveness == Liveness::Crashed {
            return;
        }
        n.queue.push_back(Work::Presign);
        let every = ms_to_us(self.scenario.signing.presign_refresh_ms as f64);
        self.events
            .push(self.now + every, Event::PresignRefresh { node, epoch });
        self.pump(node);
    }

    /// A member (re)started: new pools, new epoch, a fresh offer and refresh chain.
    pub(super) fn presign_restarted(&mut self, node: usize) {
        if !self.roast_mode() || self.topo.committee_of(node).is_none() {
            return;
        }
        let epoch = self.nodes[node].epoch;
        self.presign_refresh(node, epoch);
    }

    /// The coordinator came back with an empty book: every member reconnects and
    /// starts a new pool (new epoch), as the presign module prescribes.
    pub(super) fn presign_coordinator_back(&mut self) {
        if !self.roast_mode() {
            return;
        }
        for c in 0..self.topo.count {
            for m in self.topo.members(c).collect::<Vec<_>>() {
                let n = &mut self.nodes[m];
                n.drop_pools();
                n.queue.push_back(Work::Presign);
                self.pump(m);
            }
        }
    }

    /// `Work::Presign`: create missing pools (fresh epoch), top every pool up and
    /// offer the new commitments. A pool nothing was taken from since the last
    /// top-up is replaced by a new one (new epoch, offered whole): the coordinator
    /// has not asked for its nonces, so it may not know them (offers lost or
    /// refused in transit), and only a new epoch makes the book start over, as a
    /// node reconnecting to its coordinator does.
    pub(super) fn presign_work(&mut self, node: usize) -> Micros {
        let keys: Vec<KeyId> = self.nodes[node].keys.keys().copied().collect();
        let config = PoolConfig {
            size: self.scenario.signing.presign_pool,
            refill_below: self.scenario.signing.presign_pool,
            lifetime_ms: self.scenario.signing.presign_lifetime_ms,
        };
        // At least half a refresh period since the last top-up: a queue of
        // top-ups (after a pause) or a restart next to a refresh counts once.
        let period = ms_to_us(self.scenario.signing.presign_refresh_ms as f64);
        let now = self.now;
        let mut cost = 0;
        for key in keys {
            let n = &mut self.nodes[node];
            let idle = match (
                n.pools.get(&key),
                n.pool_track.get(&key).and_then(|t| t.mark),
            ) {
                (Some(pool), Some((taken, at))) => {
                    taken == pool.stats().taken && now >= at + period / 2
                }
                _ => false,
            };
            if idle {
                n.drop_pool(&key);
            }
            if !self.nodes[node].pools.contains_key(&key) {
                let epoch = random_epoch(&mut self.rng_proto);
                let n = &mut self.nodes[node];
                let Some(share) = n.keys.get(&key) else {
                    continue;
                };
                match NoncePool::new(share, epoch, config) {
                    Ok(pool) => {
                        n.pools.insert(key, pool);
                    }
                    Err(_) => continue,
                }
            }
            self.drop_orphans(node, key, cost);
            cost += self.refill_pool(node, key, NO_SESSION, cost);
            let n = &mut self.nodes[node];
            if let Some(taken) = n.pools.get(&key).map(|p| p.stats().taken) {
                n.pool_track.entry(key).or_default().mark = Some((taken, now));
            }
        }
        cost
    }

    /// Drops the nonces of `node`'s pool for `key` its coordinator will never ask
    /// for. The book hands a node's commitments out oldest first, so a held index
    /// below one taken more than [`ORPHAN_GRACE_US`] ago was lost on the way (its
    /// offer, lost or refused, or the `PresignedSign` naming it). The nonces are
    /// taken out and dropped (zeroized); the top-up that follows offers new ones.
    fn drop_orphans(&mut self, node: usize, key: KeyId, offset: Micros) {
        let now = self.now + offset;
        let local = self.local(node, offset);
        let n = &mut self.nodes[node];
        let (Some(pool), Some(track)) = (n.pools.get_mut(&key), n.pool_track.get_mut(&key)) else {
            return;
        };
        while let Some(&(at, index)) = track.takes.front() {
            if at + ORPHAN_GRACE_US > now {
                break;
            }
            track.takes.pop_front();
            track.settled = Some(track.settled.map_or(index, |s| s.max(index)));
        }
        let Some(settled) = track.settled else {
            return;
        };
        let orphans: Vec<u64> = track.held.range(..settled).copied().collect();
        let epoch = pool.epoch();
        let mut dropped = 0;
        for index in orphans {
            track.held.remove(&index);
            // An expired nonce is refused (and dropped by the pool itself).
            if let Ok(nonces) = pool.take(epoch, index, local) {
                drop(nonces);
                dropped += 1;
            }
        }
        if let Some(p) = self.presign.as_mut() {
            p.report.orphans_dropped += dropped;
        }
    }

    /// Tops up `node`'s pool for `key` and sends the offer (tagged `session`) to
    /// the coordinator once the work is done. Returns the cost.
    fn refill_pool(
        &mut self,
        node: usize,
        key: KeyId,
        session: SessionId,
        offset: Micros,
    ) -> Micros {
        let now = self.local(node, offset);
        let timer = self.measure.is_some().then(std::time::Instant::now);
        let n = &mut self.nodes[node];
        let Some(pool) = n.pools.get_mut(&key) else {
            return 0;
        };
        let Some(payload) = pool.refill(now, &mut self.rng_proto) else {
            return 0;
        };
        let (first, count) = match &payload {
            Payload::PresignOffer {
                first, commitments, ..
            } => (*first, commitments.len()),
            _ => (0, 0),
        };
        n.pool_track
            .entry(key)
            .or_default()
            .held
            .extend((0..count as u64).map(|i| first + i));
        let env = Envelope::seal(&n.identity, pool.suite(), key, session, payload);
        let ops = [Op::PresignRefill];
        if let (Some(samples), Some(t)) = (self.measure.as_mut(), timer) {
            samples.push(super::Sample {
                ops: ops.to_vec(),
                k: count,
                elapsed: t.elapsed(),
            });
        }
        let cost = self
            .costs
            .as_ref()
            .map_or(0, |c| c.charge(&ops, count, 1.0));
        let coordinator = self.nodes[self.topo.coordinator()].id;
        self.send(node, &coordinator, env, self.now + offset + cost);
        cost
    }

    /// A `PresignedSign` reached a signer: take the named nonces from its pool,
    /// sign in one round, and send the next commitment after the share.
    pub(super) fn join_presigned(&mut self, node: usize, env: Envelope) -> Micros {
        let timer = self.measure.is_some().then(std::time::Instant::now);
        let Payload::PresignedSign {
            message,
            tweak,
            epoch,
            index,
            ..
        } = &env.payload
        else {
            return 0;
        };
        let (target, epoch, index) = (
            SignTarget {
                message: message.clone(),
                tweak: *tweak,
            },
            *epoch,
            *index,
        );
        let now = self.local(node, 0);
        let timeout_ms = self
            .scenario
            .signing
            .signer_timeout_ms
            .unwrap_or(self.scenario.signing.timeout_ms.saturating_mul(2));
        let n = &mut self.nodes[node];
        if n.finished.contains(&env.session) {
            n.stats.stale += 1;
            return 0;
        }
        let (Some(share), Some(pool)) = (n.keys.get(&env.key), n.pools.get_mut(&env.key)) else {
            n.stats.rejected += 1;
            return 0;
        };
        if env.verify().is_err() {
            n.stats.rejected += 1;
            return 0;
        }
        let nonces = match pool.take(epoch, index, now) {
            Ok(nonces) => {
                let track = n.pool_track.entry(env.key).or_default();
                track.held.remove(&index);
                track.takes.push_back((self.now, index));
                nonces
            }
            Err(_) => {
                n.stats.rejected += 1;
                if let Some(p) = self.presign.as_mut() {
                    p.report.signer_refusals += 1;
                }
                return 0;
            }
        };
        let config = SignerConfig {
            session: env.session,
            coordinator: env.sender,
            target,
            timeout_ms,
        };
        let k = usize::from(share.public.threshold);
        let key = env.key;
        let signer = Signer::presigned(n.identity.clone(), share, config, nonces);
        let signer = match signer.map(|s| match &self.round2_cache {
            Some(cache) => s.with_round2_cache(cache.clone()),
            None => s,
        }) {
            Ok(s) => s,
            Err(_) => {
                n.stats.rejected += 1;
                return 0;
            }
        };
        n.sessions.insert(
            env.session,
            Session {
                party: Party::Signer(signer),
                role: Role::Signer,
                k,
            },
        );
        if let Some(t) = timer {
            self.join_extra = t.elapsed();
        }
        let session = env.session;
        let cost = self.step(node, session, Input::Message(env));
        self.drop_orphans(node, key, cost);
        cost + self.refill_pool(node, key, session, cost)
    }

    // ---- coordinator side --------------------------------------------------

    /// The coordinator received an offer: file it, then start whatever sessions
    /// the new commitments allow.
    pub(super) fn on_offer(&mut self, env: Envelope) -> Micros {
        let count = match &env.payload {
            Payload::PresignOffer { commitments, .. } => commitments.len(),
            _ => 0,
        };
        let coordinator = self.topo.coordinator();
        let now = self.local(coordinator, 0);
        let sender = self.index.get(&env.sender).copied();
        let committee = sender.and_then(|s| self.topo.committee_of(s));
        let public = committee.and_then(|c| self.publics[c].clone());
        let (filed, cost) = self.costed(&[Op::AggOffer], count, |w| {
            let public = public.as_ref()?;
            if env.key != public.key_id
                || !public.members.contains_key(&env.sender)
                || env.verify().is_err()
            {
                return None;
            }
            let offer = Offer::try_from(env.payload).ok()?;
            let p = w.presign.as_mut()?;
            p.book
                .offer(public.key_id, public.suite, env.sender, offer, now)
                .ok()
        });
        let Some(p) = self.presign.as_mut() else {
            return cost;
        };
        p.report.offers += 1;
        match filed {
            Some(n) => p.report.commitments_filed += n as u64,
            None => p.report.offers_refused += 1,
        }
        match committee {
            Some(c) => cost + self.roast_wake(c, cost),
            None => cost,
        }
    }

    /// Tries every open ROAST request of `committee` (new commitments arrived).
    fn roast_wake(&mut self, committee: usize, offset: Micros) -> Micros {
        let open: Vec<u64> = self
            .presign
            .as_ref()
            .map(|p| p.open.iter().copied().collect())
            .unwrap_or_default();
        let mut cost = 0;
        for id in open {
            let mine = self
                .requests
                .get(&id)
                .is_some_and(|r| r.committee == committee && r.finished.is_none());
            if mine {
                cost += self.roast_try(id, offset + cost);
            }
        }
        cost
    }

    /// A signing request starts under ROAST (instead of the retry loop).
    pub(super) fn roast_begin(&mut self, id: u64) -> Micros {
        let Some(p) = self.presign.as_mut() else {
            return 0;
        };
        p.runs.insert(id, RoastRun::default());
        p.open.insert(id);
        let deadline = self.now + ms_to_us(self.scenario.signing.roast_deadline_ms as f64);
        self.events.push(deadline, Event::RoastDeadline(id));
        self.roast_try(id, 0)
    }

    /// Starts sessions of request `id` while ROAST allows one: |R| ≥ t, fewer than
    /// n − t + 1 running, within the round bound. Returns the cost.
    fn roast_try(&mut self, id: u64, offset: Micros) -> Micros {
        let mut cost = 0;
        while let Some(c) = self.roast_start_one(id, offset + cost) {
            cost += c;
        }
        cost
    }

    /// Starts one session if ROAST allows it; `None` otherwise.
    fn roast_start_one(&mut self, id: u64, offset: Micros) -> Option<Micros> {
        let t = usize::from(self.scenario.committee.threshold);
        let n = usize::from(self.scenario.committee.n);
        let req = self.requests.get(&id)?;
        if req.finished.is_some() {
            return None;
        }
        let (committee, message) = (req.committee, req.message.clone());
        let cap = if self.scenario.signing.retry {
            self.scenario.signing.max_attempts.unwrap_or(u32::MAX)
        } else {
            1
        };
        let public = self.publics[committee].clone()?;
        let coordinator = self.topo.coordinator();
        let now_local = self.local(coordinator, offset);
        let members: Vec<usize> = self.topo.members(committee).collect();
        let p = self.presign.as_ref()?;
        let run = p.runs.get(&id)?;
        if run.started >= cap || run.running() > n - t {
            return None;
        }
        let responsive: BTreeSet<usize> = members
            .iter()
            .copied()
            .filter(|m| {
                !run.malicious.contains(m)
                    && !run.busy.contains_key(m)
                    && p.book
                        .available(public.key_id, self.nodes[*m].id, now_local)
                        > 0
            })
            .collect();
        if responsive.len() < t {
            return None;
        }
        let excluded: BTreeSet<usize> = members
            .iter()
            .copied()
            .filter(|m| !responsive.contains(m))
            .collect();
        let scores: Vec<i64> = members
            .iter()
            .map(|m| {
                let node = &self.nodes[*m];
                if node.penalty_until > self.now {
                    i64::MIN / 2
                } else {
                    -(node.rtt_us.unwrap_or(0.0) as i64)
                }
            })
            .collect();
        let selection = self.selection();
        let signers = robust::choose(
            &members,
            &excluded,
            t,
            selection,
            &scores,
            &mut self.rng_sel,
        )?;
        let p = self.presign.as_mut()?;
        let run = p.runs.get_mut(&id)?;
        let round = signers
            .iter()
            .map(|s| run.round.get(s).copied().unwrap_or(1))
            .max()
            .unwrap_or(1);
        let bound = 2 * u32::try_from(n - t).unwrap_or(u32::MAX / 4) + 3;
        if round + 2 > bound {
            run.round_capped += 1;
            return None;
        }
        if let Entry::Vacant(slot) = p.keys.entry(public.key_id) {
            match GroupKeys::new(&public) {
                Ok(k) => {
                    slot.insert(k);
                }
                Err(e) => {
                    if let Some(r) = self.requests.get_mut(&id) {
                        r.last_fault = Some(e);
                    }
                    return None;
                }
            }
        }
        let ids: Vec<_> = signers.iter().map(|s| self.nodes[*s].id).collect();
        let refs = p.book.take_set(public.key_id, &ids, now_local)?;
        for (s, node_id) in signers.iter().zip(&ids) {
            if let Some(r) = refs.get(node_id) {
                p.report.commitments_used += 1;
                if !p.used.insert((*s, r.epoch, r.index)) {
                    p.report.reused += 1;
                }
            }
        }
        // Charged after the start below: the coordinator sends the requests first
        // and prepares the checks while they travel.
        let (check, setup) = self.costed(&[Op::AggCheckSetup], t, |w| {
            let keys = w
                .presign
                .as_ref()
                .and_then(|p| p.keys.get(&public.key_id))
                .ok_or_else(|| "no key package".to_string())?;
            ShareCheck::new(&public, keys, &refs, &message)
        });
        let check = match check {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.last_fault = Some(e);
                }
                return None;
            }
        };
        let mut session = [0u8; 32];
        self.rng_proto.fill_bytes(&mut session);
        let session = SessionId(session);
        let config = AggregatorConfig {
            session,
            signers: ids,
            target: SignTarget {
                message,
                tweak: None,
            },
            request: Vec::new(),
            // ROAST has no timeout: the request's safety deadline (at most this
            // long away, less a second of clock rounding) ends the session first.
            timeout_ms: self
                .scenario
                .signing
                .roast_deadline_ms
                .saturating_add(1_000),
        };
        let identity = self.nodes[coordinator].identity.clone();
        let aggregator = match Aggregator::presigned(identity, &public, config, refs) {
            Ok(a) => a,
            Err(e) => {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.last_fault = Some(e.to_string());
                }
                return None;
            }
        };
        self.nodes[coordinator].sessions.insert(
            session,
            Session {
                party: Party::Aggregator(aggregator),
                role: Role::Aggregator { request: id },
                k: t,
            },
        );
        self.owners.insert(session, Owner::Request(id));
        self.adversary.on_session(session, &signers);
        let p = self.presign.as_mut()?;
        p.by_session.insert(session, id);
        let run = p.runs.get_mut(&id)?;
        for s in &signers {
            run.busy.insert(*s, session);
        }
        run.sessions.insert(
            session,
            RoastSession {
                signers: signers.clone(),
                pending: signers.iter().copied().collect(),
                check,
                round,
                started: self.now + offset,
                live: true,
            },
        );
        run.started += 1;
        let running = u32::try_from(run.running()).unwrap_or(u32::MAX);
        run.max_running = run.max_running.max(running);
        if let Some(r) = self.requests.get_mut(&id) {
            r.attempts += 1;
            r.last_signers = signers;
        }
        Some(self.step_after(coordinator, session, Input::Start, offset) + setup)
    }

    /// The request `id` of a ROAST session `session`, if it is one.
    pub(super) fn roast_request_of(&self, session: &SessionId) -> Option<u64> {
        self.presign.as_ref()?.by_session.get(session).copied()
    }

    /// A share for a ROAST session reached the coordinator.
    pub(super) fn roast_share(&mut self, id: u64, env: Envelope) -> Micros {
        let session = env.session;
        let Some(sender) = self.index.get(&env.sender).copied() else {
            return 0;
        };
        let coordinator = self.topo.coordinator();
        let Some((live, pending, started)) = self
            .presign
            .as_ref()
            .and_then(|p| p.runs.get(&id))
            .and_then(|r| r.sessions.get(&session))
            .map(|s| (s.live, s.pending.contains(&sender), s.started))
        else {
            return 0;
        };
        if !pending {
            self.nodes[coordinator].stats.stale += 1;
            return 0;
        }
        let Payload::SignShare { share } = &env.payload else {
            return 0;
        };
        let share = share.clone();
        let t = usize::from(self.scenario.committee.threshold);
        // Without a live aggregator the coordinator admits the envelope itself.
        let mut cost = 0;
        if !live {
            let (ok, c) = self.costed(&[Op::AggShare], t, |_| env.verify().is_ok());
            cost += c;
            if !ok {
                self.nodes[coordinator].stats.rejected += 1;
                return cost;
            }
        }
        let node_id = env.sender;
        let (valid, c) = self.costed(&[Op::AggShareCheck], t, |w| {
            w.presign
                .as_ref()
                .and_then(|p| p.runs.get(&id))
                .and_then(|r| r.sessions.get(&session))
                .is_some_and(|s| s.check.valid(&node_id, &share))
        });
        cost += c;
        let sample = (self.now + cost).saturating_sub(started) as f64;
        let n = &mut self.nodes[sender];
        n.rtt_us = Some(n.rtt_us.map_or(sample, |old| 0.5 * old + 0.5 * sample));
        let Some(run) = self.presign.as_mut().and_then(|p| p.runs.get_mut(&id)) else {
            return cost;
        };
        let Some(s) = run.sessions.get_mut(&session) else {
            return cost;
        };
        s.pending.remove(&sender);
        let round = s.round + 2;
        run.busy.remove(&sender);
        if valid {
            run.round.insert(sender, round);
            if live {
                cost += self.step_after(coordinator, session, Input::Message(env), cost);
            }
        } else {
            run.malicious.insert(sender);
            let malicious = run.malicious.len();
            if let Some(s) = run.sessions.get_mut(&session) {
                s.live = false;
            }
            let done = self.now + cost;
            let correct = self.adversary.is_byzantine(sender)
                || self.nodes[sender].down_during(started, done);
            let fault = Fault::InvalidSignatureShare.to_string();
            if let Some(r) = self.requests.get_mut(&id) {
                r.blames.push(Blame {
                    node: sender,
                    fault: fault.clone(),
                    correct,
                });
                r.excluded.insert(sender);
                r.last_fault = Some(fault);
            }
            let n = &mut self.nodes[sender];
            n.blamed += 1;
            n.penalty_until = done + super::signing::PENALTY_US;
            if live {
                let c = &mut self.nodes[coordinator];
                c.sessions.remove(&session);
                c.finished.insert(session);
            }
            let members = usize::from(self.scenario.committee.n);
            if members - malicious < t {
                self.finish_request(id, Outcome::Aborted, done);
                return cost;
            }
        }
        cost + self.roast_try(id, cost)
    }

    /// A ROAST session's aggregator failed (not through a checked share): the
    /// session is dead; its silent signers stay where they are.
    pub(super) fn roast_session_failed(
        &mut self,
        id: u64,
        session: SessionId,
        error: &ProtocolError,
    ) {
        if let Some(s) = self
            .presign
            .as_mut()
            .and_then(|p| p.runs.get_mut(&id))
            .and_then(|r| r.sessions.get_mut(&session))
        {
            s.live = false;
        }
        if let Some(r) = self.requests.get_mut(&id) {
            r.last_fault = Some(super::signing::fault_name(error));
        }
    }

    /// The session `session` produced the signature of request `id`.
    pub(super) fn roast_succeeded(&mut self, id: u64, session: &SessionId) {
        let Some(run) = self.presign.as_mut().and_then(|p| p.runs.get_mut(&id)) else {
            return;
        };
        if let Some(s) = run.sessions.get(session) {
            run.rounds = Some(s.round + 2);
            let signers = s.signers.clone();
            if let Some(r) = self.requests.get_mut(&id) {
                r.last_signers = signers;
            }
        }
    }

    /// The safety deadline of request `id`.
    pub(super) fn roast_deadline(&mut self, id: u64) {
        let open = self.requests.get(&id).is_some_and(|r| r.finished.is_none());
        if !open {
            return;
        }
        let now = self.now;
        // Name the signers it still waits for, as a timeout would.
        let waiting: Vec<(usize, Micros)> = self
            .presign
            .as_ref()
            .and_then(|p| p.runs.get(&id))
            .map(|r| {
                r.sessions
                    .values()
                    .flat_map(|s| s.pending.iter().map(|m| (*m, s.started)))
                    .collect()
            })
            .unwrap_or_default();
        let fault = Fault::Timeout.to_string();
        let blames: Vec<Blame> = waiting
            .into_iter()
            .map(|(m, started)| Blame {
                node: m,
                fault: fault.clone(),
                correct: self.adversary.is_byzantine(m) || self.nodes[m].down_during(started, now),
            })
            .collect();
        if let Some(r) = self.requests.get_mut(&id) {
            r.blames.extend(blames);
            r.last_fault = Some(fault);
            r.last_timeout = true;
        }
        self.finish_request(id, Outcome::TimedOut, now);
    }

    /// Request `id` is over: abandon its sessions.
    pub(super) fn roast_finish(&mut self, id: u64) {
        let coordinator = self.topo.coordinator();
        let Some(p) = self.presign.as_mut() else {
            return;
        };
        p.open.remove(&id);
        let Some(run) = p.runs.get_mut(&id) else {
            return;
        };
        let sessions: Vec<SessionId> = std::mem::take(&mut run.sessions).into_keys().collect();
        run.busy.clear();
        for s in &sessions {
            p.by_session.remove(s);
        }
        for s in sessions {
            self.adversary.end_session(&s);
            let c = &mut self.nodes[coordinator];
            if c.sessions.remove(&s).is_some() {
                c.finished.insert(s);
            }
        }
    }

    /// The coordinator crashed: its book is gone.
    pub(super) fn presign_coordinator_lost(&mut self) {
        if let Some(p) = self.presign.as_mut() {
            p.book = new_book();
        }
    }

    /// The ROAST figures of request `id`, for its session record.
    pub(super) fn roast_record(&self, id: u64) -> Option<RoastRecord> {
        let run = self.presign.as_ref()?.runs.get(&id)?;
        Some(RoastRecord {
            sessions: run.started,
            max_concurrent: run.max_running,
            rounds: run.rounds,
            malicious: run.malicious.iter().map(|m| self.topo.label(*m)).collect(),
            round_capped: run.round_capped,
        })
    }

    /// The run's presigning counters (ROAST mode only).
    pub(super) fn presign_report(&self) -> Option<PresignReport> {
        let p = self.presign.as_ref()?;
        let mut pools = crate::node::PoolTotals::default();
        for n in &self.nodes {
            pools.add_totals(n.lost_pools);
            for pool in n.pools.values() {
                pools.add(pool.stats());
            }
        }
        let mut r = p.report.clone();
        r.pool_generated = pools.generated;
        r.pool_taken = pools.taken;
        r.pool_expired = pools.expired;
        r.pool_refused = pools.refused;
        r.sessions = p.runs.values().map(|r| u64::from(r.started)).sum();
        r.max_concurrent = p.runs.values().map(|r| r.max_running).max().unwrap_or(0);
        r.max_rounds = p.runs.values().filter_map(|r| r.rounds).max();
        Some(r)
    }
}
