//! Garbage collection and the lease reaper.
//!
//! - Local GC: drop index versions no running transaction can need (see
//!   `meta::index`), then delete their data, and the commit records of
//!   transactions with no version left.
//! - Orphan sweep: delete data of transactions that have no commit record
//!   and are too old to still be committing (crashed or aborted commits).
//! - Lease reaper: abort transactions idle for longer than the lease.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::engine::Engine;
use super::keys::{commit_record_key, data_key, tid_of_data_key, DATA_PREFIX};
use super::outcome::Outcome;
use super::transaction::Phase;
use crate::meta::{VersionedKey, BASE_TID};

impl Engine {
    /// One local GC pass. Returns the number of storage keys deleted.
    pub async fn collect_garbage(&self) -> usize {
        let min_start = {
            let txns = self.txns.lock();
            let current = self.index.current_seq();
            txns.values()
                .map(|slot| slot.lock().start_seq)
                .min()
                .unwrap_or(current)
                .min(current)
        };
        let outcome = self.index.collect(min_start);
        let mut garbage: Vec<Vec<u8>> = std::mem::take(&mut *self.pending_deletes.lock());
        let mut records: Vec<Vec<u8>> = Vec::new();
        for dropped in &outcome.dropped {
            self.cache.remove(&VersionedKey {
                key: Arc::from(dropped.key.as_str()),
                version: dropped.version.clone(),
            });
        }
        let data = outcome
            .dropped
            .iter()
            .map(|d| (d.superseded_by, data_key(&d.version, &d.key), false));
        let retired = outcome
            .retired_txns
            .iter()
            .map(|(tid, superseded_by)| (*superseded_by, commit_record_key(tid), true));
        match self.global_watermark.get().map(|w| w()) {
            // One node: nothing else can need what this node dropped.
            None => {
                for (_, key, is_record) in data.chain(retired) {
                    if is_record {
                        records.push(key);
                    } else {
                        garbage.push(key);
                    }
                }
            }
            // Multi-node: a version's data, and a retired transaction's
            // commit record (which other nodes read to learn a version their
            // transactions are bound to), go only once every live node has
            // installed the superseding commit and no longer needs them.
            Some(watermark) => {
                let mut deferred = self.deferred_deletes.lock();
                deferred.extend(data.chain(retired));
                let mut kept = std::collections::VecDeque::with_capacity(deferred.len());
                while let Some((superseded_by, key, is_record)) = deferred.pop_front() {
                    match (superseded_by < watermark, is_record) {
                        (true, true) => records.push(key),
                        (true, false) => garbage.push(key),
                        (false, _) => kept.push_back((superseded_by, key, is_record)),
                    }
                }
                *deferred = kept;
            }
        }
        // Data first, records after: a crash in between leaves records whose
        // versions are all superseded, which recovery drops again.
        self.metrics
            .gc_dropped_versions
            .inc_by(outcome.dropped.len() as u64);
        self.metrics.index_versions.set(self.index.size().1 as i64);
        let mut deleted = 0;
        for batch in [garbage, records] {
            if batch.is_empty() {
                continue;
            }
            match self.storage.delete_many(&batch).await {
                Ok(()) => deleted += batch.len(),
                Err(e) => {
                    warn!(error = %e, keys = batch.len(), "GC delete failed; will retry");
                    self.pending_deletes.lock().extend(batch);
                    break;
                }
            }
        }
        self.metrics.gc_deleted_keys.inc_by(deleted as u64);
        deleted
    }

    /// The GC watermark this node advertises to its peers: every version
    /// superseded by a commit older than this has been dropped here (or was
    /// never needed), as far as this node has heard of commits. Gossip lag is
    /// covered by a margin.
    pub fn local_gc_watermark(&self, gossip_margin: Duration) -> u64 {
        let horizon = crate::meta::now_micros().saturating_sub(gossip_margin.as_micros() as u64);
        self.index
            .oldest_retained_superseder()
            .map_or(horizon, |ts| ts.min(horizon))
    }

    /// Deletes data of transactions with no commit record that are older
    /// than the orphan grace period. Returns the number of keys deleted.
    pub async fn sweep_orphans(&self) -> usize {
        let keys = match self.storage.scan_prefix(DATA_PREFIX).await {
            Ok(keys) => keys,
            Err(e) => {
                warn!(error = %e, "orphan sweep could not scan storage");
                return 0;
            }
        };
        let grace = self.config.orphan_grace;
        let candidates: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| tid_of_data_key(k))
            .filter(|tid| *tid != BASE_TID)
            .filter(|tid| !self.index.contains_txn(tid) && !self.txns.lock().contains_key(*tid))
            .filter(|tid| older_than(tid, grace))
            .map(str::to_string)
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let tids: Vec<String> = candidates.into_iter().collect();
        let record_keys: Vec<Vec<u8>> = tids.iter().map(|t| commit_record_key(t)).collect();
        let records = match self.storage.get_many(&record_keys).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "orphan sweep could not read commit records");
                return 0;
            }
        };
        let orphans: BTreeSet<&str> = tids
            .iter()
            .zip(records)
            .filter(|(_, record)| record.is_none())
            .map(|(tid, _)| tid.as_str())
            .collect();
        let garbage: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| tid_of_data_key(k).is_some_and(|t| orphans.contains(t)))
            .collect();
        if garbage.is_empty() {
            return 0;
        }
        match self.storage.delete_many(&garbage).await {
            Ok(()) => {
                debug!(
                    keys = garbage.len(),
                    txns = orphans.len(),
                    "orphaned data deleted"
                );
                self.metrics.gc_deleted_keys.inc_by(garbage.len() as u64);
                garbage.len()
            }
            Err(e) => {
                warn!(error = %e, "orphan delete failed; will retry next sweep");
                0
            }
        }
    }

    /// Aborts every transaction idle for longer than the lease. Returns how many.
    pub fn reap_expired(&self) -> usize {
        let lease = self.config.lease;
        let now = Instant::now();
        let expired: Vec<Arc<str>> = self
            .txns
            .lock()
            .iter()
            .filter(|(_, slot)| {
                let txn = slot.lock();
                matches!(txn.phase, Phase::Running | Phase::Failed(_))
                    && now.duration_since(txn.last_active) > lease
            })
            .map(|(tid, _)| Arc::clone(tid))
            .collect();
        for tid in &expired {
            warn!(tid = %tid, "transaction lease expired; aborting");
            self.finish(
                tid,
                Outcome::Aborted {
                    reason: format!("lease of {lease:?} expired"),
                },
            );
        }
        expired.len()
    }
}

/// Whether transaction `tid` (a UUID v7, which embeds its start time) is
/// older than `age`. Ids that are not UUID v7 carry no time: treat as old.
fn older_than(tid: &str, age: Duration) -> bool {
    let Some((secs, nanos)) = uuid::Uuid::parse_str(tid)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|ts| ts.to_unix())
    else {
        return true;
    };
    let started = UNIX_EPOCH + Duration::new(secs, nanos);
    SystemTime::now()
        .duration_since(started)
        .is_ok_and(|elapsed| elapsed > age)
}
