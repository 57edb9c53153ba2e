//! Netting rounds in the store: one record per round (`RoundRecord`, postcard) and
//! one entry per (round, party) (`PartyEntry`: the party-signed header, which nodes
//! hold it, refusals, and after close the nodes' sealed outputs for the party),
//! and for limit-checked rounds one `LimitsOutcome` per round (the nodes' signed
//! verdicts, their sealed bits per party, the king's costs, the attempts) in its
//! own table, so records written before limit checks existed still decode.
//! Public data only. Rounds that were open, closing or settling when the previous
//! process stopped are marked failed on open (their live state was in memory).

use quorate_protocol::netting::{BundleHeader, PartyOutputs, RoundId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{storage, Store};
use crate::{
    error::CoordinatorError,
    netting::{
        limits::LimitsOutcome,
        record::{PartyEntry, RoundRecord},
        NodeAck,
    },
};

pub(super) const ROUNDS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("coordinator_netting_rounds");
pub(super) const PARTIES: TableDefinition<'_, (&str, u32), &[u8]> =
    TableDefinition::new("coordinator_netting_parties");
pub(super) const LIMITS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("coordinator_netting_limits");

fn key(round: &RoundId) -> String {
    round.to_string()
}

/// Marks every live round failed (`coordinator-restarted`); returns how many.
pub(super) fn recover_rounds(
    txn: &WriteTransaction,
    now: u64,
    path: &std::path::Path,
) -> Result<usize, CoordinatorError> {
    txn.open_table(PARTIES).map_err(|e| storage(path, e))?;
    txn.open_table(LIMITS).map_err(|e| storage(path, e))?;
    let mut t = txn.open_table(ROUNDS).map_err(|e| storage(path, e))?;
    let mut live = Vec::new();
    for item in t.iter().map_err(|e| storage(path, e))? {
        let (k, v) = item.map_err(|e| storage(path, e))?;
        let r: RoundRecord = postcard::from_bytes(v.value()).map_err(|e| storage(path, e))?;
        if !r.state.is_final() {
            live.push((k.value().to_owned(), r));
        }
    }
    let n = live.len();
    for (k, mut r) in live {
        let was = r.state.as_str();
        r.fail(
            "coordinator-restarted",
            format!(
                "the coordinator restarted while the round was {was}; its live state is \
                 lost. Create a new round (new id) and submit the bundles again"
            ),
            now,
        );
        let bytes = postcard::to_allocvec(&r).map_err(|e| storage(path, e))?;
        t.insert(k.as_str(), bytes.as_slice())
            .map_err(|e| storage(path, e))?;
    }
    Ok(n)
}

impl Store {
    /// Stores a new round, or returns the one already stored under its id.
    pub fn create_round(
        &self,
        record: &RoundRecord,
    ) -> Result<Option<RoundRecord>, CoordinatorError> {
        let k = key(&record.spec.id);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let existing = {
            let mut t = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
            let existing = t
                .get(k.as_str())
                .map_err(|e| self.err(e))?
                .map(|v| postcard::from_bytes::<RoundRecord>(v.value()))
                .transpose()
                .map_err(|e| self.err(e))?;
            if existing.is_none() {
                let bytes = postcard::to_allocvec(record).map_err(|e| self.err(e))?;
                t.insert(k.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            existing
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(existing)
    }

    /// One round.
    pub fn round(&self, round: &RoundId) -> Result<Option<RoundRecord>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
        let v = t.get(key(round).as_str()).map_err(|e| self.err(e))?;
        v.map(|v| postcard::from_bytes(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }

    /// Changes a round atomically: `change` returns whether to write it back.
    /// Returns the round as stored afterwards (`None`: no such round).
    pub fn update_round(
        &self,
        round: &RoundId,
        change: impl FnOnce(&mut RoundRecord) -> bool,
    ) -> Result<Option<RoundRecord>, CoordinatorError> {
        let k = key(round);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = {
            let mut t = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
            let current = t
                .get(k.as_str())
                .map_err(|e| self.err(e))?
                .map(|v| postcard::from_bytes::<RoundRecord>(v.value()))
                .transpose()
                .map_err(|e| self.err(e))?;
            match current {
                Some(mut r) => {
                    if change(&mut r) {
                        let bytes = postcard::to_allocvec(&r).map_err(|e| self.err(e))?;
                        t.insert(k.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Some(r)
                }
                None => None,
            }
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Folds one bundle submission's answers into the party's entry (atomically)
    /// and returns the entry.
    pub fn merge_party(
        &self,
        round: &RoundId,
        party: u32,
        header: &BundleHeader,
        acks: &[NodeAck],
    ) -> Result<PartyEntry, CoordinatorError> {
        self.change_party(round, party, |e| e.merge(header, acks))
    }

    /// Stores the nodes' outputs for each party (`outputs[p]`).
    pub fn put_party_outputs(
        &self,
        round: &RoundId,
        outputs: &[Vec<PartyOutputs>],
    ) -> Result<(), CoordinatorError> {
        for (p, o) in outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            self.change_party(round, p as u32, |e| e.outputs = o.clone())?;
        }
        Ok(())
    }

    fn change_party(
        &self,
        round: &RoundId,
        party: u32,
        change: impl FnOnce(&mut PartyEntry),
    ) -> Result<PartyEntry, CoordinatorError> {
        let k = key(round);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let entry = {
            let mut t = txn.open_table(PARTIES).map_err(|e| self.err(e))?;
            let mut entry = t
                .get((k.as_str(), party))
                .map_err(|e| self.err(e))?
                .map(|v| postcard::from_bytes::<PartyEntry>(v.value()))
                .transpose()
                .map_err(|e| self.err(e))?
                .unwrap_or_default();
            change(&mut entry);
            let bytes = postcard::to_allocvec(&entry).map_err(|e| self.err(e))?;
            t.insert((k.as_str(), party), bytes.as_slice())
                .map_err(|e| self.err(e))?;
            entry
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(entry)
    }

    /// Stores the limit phase of a limit-checked round's close.
    pub fn put_limits(
        &self,
        round: &RoundId,
        outcome: &LimitsOutcome,
    ) -> Result<(), CoordinatorError> {
        let bytes = postcard::to_allocvec(outcome).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(LIMITS).map_err(|e| self.err(e))?;
            t.insert(key(round).as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The limit phase of a round's close (`None`: not limit-checked, or not
    /// closed yet).
    pub fn limits(&self, round: &RoundId) -> Result<Option<LimitsOutcome>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match txn.open_table(LIMITS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let v = t.get(key(round).as_str()).map_err(|e| self.err(e))?;
        v.map(|v| postcard::from_bytes(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }

    /// One party's entry (default when nothing was stored).
    pub fn party(&self, round: &RoundId, party: u32) -> Result<PartyEntry, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(PARTIES).map_err(|e| self.err(e))?;
        let v = t
            .get((key(round).as_str(), party))
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| postcard::from_bytes(v.value()))
            .transpose()
            .map_err(|e| self.err(e))?
            .unwrap_or_default())
    }

    /// Every party's entry of a round with `parties` parties, in party order.
    pub fn parties(
        &self,
        round: &RoundId,
        parties: usize,
    ) -> Result<Vec<PartyEntry>, CoordinatorError> {
        let k = key(round);
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(PARTIES).map_err(|e| self.err(e))?;
        let mut out = vec![PartyEntry::default(); parties];
        for item in t
            .range((k.as_str(), 0u32)..=(k.as_str(), u32::MAX))
            .map_err(|e| self.err(e))?
        {
            let (kk, v) = item.map_err(|e| self.err(e))?;
            let (_, p) = kk.value();
            if let Some(slot) = out.get_mut(p as usize) {
                *slot = postcard::from_bytes(v.value()).map_err(|e| self.err(e))?;
            }
        }
        Ok(out)
    }
}
