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
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::engine::Engine;
use super::keys::{commit_record_key, data_key, intent_key, tid_of_data_key, DATA_PREFIX};
use super::outcome::{AbortCause, Outcome};
use super::record::Decision;
use super::transaction::Phase;
use crate::meta::{CommitMeta, HybridClock, VersionedKey, BASE_TID};

impl Engine {
    /// One local GC pass. Returns the number of storage keys deleted.
    ///
    /// A superseded version is dropped from the index (and its data deleted)
    /// once no transaction running here can need it (`meta::index`) and, on
    /// a clustered node, once the commit that superseded it is older than
    /// the cluster-wide watermark: no transaction on any live node, however
    /// old, can need it then, nor can a DAG that continues onto this node.
    /// A clustered node that does not know the watermark yet (it just
    /// started and has not heard from every peer) drops nothing.
    pub async fn collect_garbage(&self) -> usize {
        let below = if self.config.clustered {
            match self.global_watermark.get().and_then(|w| w()) {
                Some(watermark) => Some(watermark),
                None => return self.retry_pending_deletes().await,
            }
        } else {
            None
        };
        self.collect_below(below).await
    }

    /// The regression [`super::Regression::RestartCollectsAlone`]: a pass as
    /// if this node were the only one.
    pub(crate) async fn collect_alone(&self) -> usize {
        self.collect_below(None).await
    }

    async fn collect_below(&self, below: Option<u64>) -> usize {
        let min_start = self.min_running_start_seq();
        let outcome = self.index.collect(min_start, below);
        for dropped in &outcome.dropped {
            self.cache.remove(&VersionedKey {
                key: Arc::from(dropped.key.as_str()),
                version: dropped.version.clone(),
            });
        }
        self.metrics
            .gc_dropped_versions
            .inc_by(outcome.dropped.len() as u64);
        self.metrics.index_versions.set(self.index.size().1 as i64);
        let mut garbage: Vec<Vec<u8>> = std::mem::take(&mut *self.pending_deletes.lock());
        garbage.extend(outcome.dropped.iter().map(|d| data_key(&d.version, &d.key)));
        // A retired transaction's intent goes with its data (publication of
        // a fully superseded write set is moot), before its record.
        garbage.extend(outcome.retired_txns.iter().map(|(tid, _)| intent_key(tid)));
        // A retired transaction's commit record stays a while longer: it is
        // how a retried commit of it (after this node forgot its outcome, or
        // on another node) still answers COMMITTED.
        let now = Instant::now();
        let records: Vec<Vec<u8>> = {
            let mut retiring = self.retiring.lock();
            retiring.extend(
                outcome
                    .retired_txns
                    .iter()
                    .map(|(tid, _)| (now, commit_record_key(tid))),
            );
            let keep = self.config.retired_record_retention;
            let mut due = Vec::new();
            while retiring
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= keep)
            {
                if let Some((_, key)) = retiring.pop_front() {
                    due.push(key);
                }
            }
            due
        };
        // Data first, records after: a crash in between leaves records whose
        // versions are all superseded, which a later pass retires again.
        self.delete_now_or_later([garbage, records]).await
    }

    /// Deletes the given batches in order, stopping at the first failure
    /// (what was not deleted is retried by the next pass).
    async fn delete_now_or_later<const N: usize>(&self, batches: [Vec<Vec<u8>>; N]) -> usize {
        let mut deleted = 0;
        let mut failed = false;
        for batch in batches {
            if batch.is_empty() {
                continue;
            }
            if failed {
                self.pending_deletes.lock().extend(batch);
                continue;
            }
            match self.storage.delete_many(&batch).await {
                Ok(()) => deleted += batch.len(),
                Err(e) => {
                    warn!(error = %e, keys = batch.len(), "GC delete failed; will retry");
                    self.pending_deletes.lock().extend(batch);
                    failed = true;
                }
            }
        }
        self.metrics.gc_deleted_keys.inc_by(deleted as u64);
        deleted
    }

    async fn retry_pending_deletes(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending_deletes.lock());
        self.delete_now_or_later([pending]).await
    }

    /// The smallest index sequence at which a transaction running here
    /// started (or continued) here; the current sequence if none runs.
    fn min_running_start_seq(&self) -> u64 {
        let txns = self.txns.lock();
        let current = self.index.current_seq();
        txns.values()
            .map(|slot| slot.lock().start_seq)
            .min()
            .unwrap_or(current)
            .min(current)
    }

    /// The GC watermark this node advertises to its peers: a superseded
    /// version whose superseding commit is older than this cannot be needed
    /// by any transaction running here, nor by one that starts (or
    /// continues here) later. It is the smallest of: now minus `margin`
    /// (commits still travelling by gossip), the start of every transaction
    /// running here minus `margin` (it may need what was current when it
    /// started, anywhere), and the superseders of versions this node's own
    /// transactions hold.
    pub fn local_gc_watermark(&self, margin: Duration) -> u64 {
        let margin = margin.as_micros() as u64;
        let now = self.clock.wall_micros();
        let oldest_start = self
            .txns
            .lock()
            .values()
            .map(|slot| slot.lock().start_ts)
            .min();
        let pinned = self.index.pinned_superseder(self.min_running_start_seq());
        [Some(now), oldest_start]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_sub(margin))
            .chain(pinned)
            .min()
            .unwrap_or(0)
    }

    /// Remembers abort markers seen in storage, for the orphan sweep.
    pub(crate) fn note_abort_markers(&self, tids: Vec<String>) {
        let now = Instant::now();
        let mut noted = self.abort_markers.lock();
        for tid in tids {
            noted.entry(tid).or_insert(now);
        }
    }

    /// Deletes data of transactions that did not commit (no commit record,
    /// or an abort marker), are older than the orphan grace period, and were
    /// found so by this node at least the fence delay ago, by its own clock
    /// (a commit still writing its record when a sweep looked is never taken
    /// for an orphan: by then it has landed or never will). Also deletes
    /// abort markers noted longer ago than the grace period, and learns the
    /// commits whose data it finds with a commit record this node did not
    /// know (records that landed late). Returns the number of keys deleted.
    pub async fn sweep_orphans(&self) -> usize {
        let keys = match self.storage.scan_prefix(DATA_PREFIX).await {
            Ok(keys) => keys,
            Err(e) => {
                warn!(error = %e, "orphan sweep could not scan storage");
                return 0;
            }
        };
        let candidates: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| tid_of_data_key(k))
            .filter(|tid| *tid != BASE_TID)
            .filter(|tid| !self.index.contains_txn(tid) && !self.txns.lock().contains_key(*tid))
            .filter(|tid| self.older_than_grace(tid))
            .map(str::to_string)
            .collect();
        let tids: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let decisions = match self.read_decisions(&tids).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "orphan sweep could not read commit records");
                return 0;
            }
        };
        // Data of a committed transaction this node does not know: its
        // record landed after this node last looked (a commit whose outcome
        // was unknown, a record that landed late, while this node restarted).
        // Learn it: it then serves reads, and GC reclaims it in turn.
        let (committed, orphans_now): (Vec<_>, Vec<_>) = tids
            .iter()
            .zip(decisions)
            .partition(|(_, decision)| matches!(decision, Decision::Committed(_)));
        let late: Vec<CommitMeta> = committed
            .into_iter()
            .filter_map(|(_, decision)| match decision {
                Decision::Committed(meta) => Some(meta),
                _ => None,
            })
            .collect();
        let learned = self.learn_commits(&late);
        if learned > 0 {
            info!(
                commits = learned,
                "the orphan sweep found commits this node did not know"
            );
        }
        let now = Instant::now();
        let settled_after = self.fence_delay();
        let confirmed: BTreeSet<String> = {
            let mut suspected = self.suspected_orphans.lock();
            let orphans_now: BTreeSet<&str> = orphans_now.iter().map(|(tid, _)| **tid).collect();
            suspected.retain(|tid, _| orphans_now.contains(tid.as_str()));
            for tid in &orphans_now {
                suspected.entry(tid.to_string()).or_insert(now);
            }
            suspected
                .iter()
                .filter(|(_, first)| now.duration_since(**first) >= settled_after)
                .map(|(tid, _)| tid.clone())
                .collect()
        };
        let bases = self.stray_base_values(&keys);
        let garbage: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| tid_of_data_key(k).is_some_and(|t| confirmed.contains(t)))
            .collect();
        let intents: Vec<Vec<u8>> = confirmed.iter().map(|tid| intent_key(tid)).collect();
        if let Err(e) = self.storage.delete_many(&intents).await {
            warn!(error = %e, "orphan sweep could not delete intents; will retry");
            self.pending_deletes.lock().extend(intents);
        }
        let markers = self.old_abort_markers().await;
        let deleted = self.delete_now_or_later([garbage, markers, bases]).await;
        if deleted > 0 {
            debug!(
                keys = deleted,
                txns = confirmed.len(),
                "orphaned data and old abort markers deleted"
            );
        }
        deleted
    }

    /// Saved base values no index here needs, found by the sweep's scan:
    /// the key has committed versions, its base is not among them (GC
    /// dropped it, or it was written by a first commit that aborted, or
    /// landed late), and the oldest version this node holds committed below
    /// the cluster watermark (on a single node, any time), so no transaction
    /// anywhere can read the base any more. A base first seen less than the
    /// fence delay ago is left for a later sweep (its commit may be landing).
    fn stray_base_values(&self, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let prefix = data_key(&crate::meta::Version::base(), "");
        let below = if self.config.clustered {
            match self.global_watermark.get().and_then(|w| w()) {
                Some(watermark) => watermark,
                None => return Vec::new(),
            }
        } else {
            u64::MAX
        };
        let now = Instant::now();
        let settled_after = self.fence_delay();
        let view = self.index.view();
        let mut seen = self.bases_seen.lock();
        let stray: Vec<(&Vec<u8>, &str)> = keys
            .iter()
            .filter_map(|k| {
                let key = std::str::from_utf8(k.strip_prefix(prefix.as_slice())?).ok()?;
                let oldest = view.versions(key).first()?;
                (!oldest.version.is_base() && oldest.version.timestamp < below).then_some((k, key))
            })
            .collect();
        seen.retain(|key, _| stray.iter().any(|(_, k)| k == key));
        stray
            .into_iter()
            .filter_map(|(k, key)| {
                let first = *seen.entry(key.to_string()).or_insert(now);
                (now.duration_since(first) >= settled_after).then(|| k.clone())
            })
            .collect()
    }

    /// The decision keys of abort markers noted longer ago than the grace
    /// period (and the fence delay) that still hold an abort marker (a key
    /// that holds a commit record is never deleted here; one that is already
    /// gone is just forgotten).
    async fn old_abort_markers(&self) -> Vec<Vec<u8>> {
        let after = self.config.orphan_grace.max(self.fence_delay());
        let old: Vec<String> = self
            .abort_markers
            .lock()
            .iter()
            .filter(|(_, noted)| noted.elapsed() >= after)
            .map(|(tid, _)| tid.clone())
            .collect();
        if old.is_empty() {
            return Vec::new();
        }
        let tids: Vec<&str> = old.iter().map(String::as_str).collect();
        let Ok(decisions) = self.read_decisions(&tids).await else {
            return Vec::new();
        };
        let mut noted = self.abort_markers.lock();
        let mut keys = Vec::new();
        for (tid, decision) in old.iter().zip(decisions) {
            noted.remove(tid);
            if decision == Decision::Aborted {
                keys.push(commit_record_key(tid));
            }
        }
        keys
    }

    /// Whether transaction `tid` (a UUID v7, which embeds its start time) is
    /// older than the orphan grace period. Ids that carry no time count as old.
    fn older_than_grace(&self, tid: &str) -> bool {
        let grace = self.config.orphan_grace.as_micros() as u64;
        match HybridClock::tid_time_micros(tid) {
            Some(started) => self.clock.wall_micros().saturating_sub(started) > grace,
            None => true,
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
        let mut expired = expired;
        expired.sort();
        for tid in &expired {
            warn!(tid = %tid, "transaction lease expired; aborting");
            self.finish(
                tid,
                Outcome::Aborted {
                    cause: AbortCause::LeaseExpired(lease),
                },
            );
        }
        expired.len()
    }
}
