//! The commit protocol.
//!
//! 1. Phase one: every upstream node that buffers writes of the transaction
//!    persists them (`Remote::prepare`); this node writes its own buffered
//!    values, each at its version key `aft/d/<tid>/<key>`, in one batch,
//!    plus the base values of keys written for the first time.
//! 2. The commit record `aft/c/<tid>` is written: the commit point. Where
//!    the backend's batches are atomic, data and record go in one batch.
//! 3. The version index installs the commit, the client is answered, the
//!    upstream nodes learn the outcome, and the new values are published to
//!    their plain keys in the background.
//!
//! Any failure before the commit point aborts: upstream nodes are told,
//! written data is deleted (or collected later as an orphan). If the commit
//! record write itself fails, its outcome is settled by reading it back; a
//! transaction reported aborted has its record deleted (fenced) so it can
//! never surface later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tracing::{info_span, warn, Instrument};

use super::engine::Engine;
use super::keys::{commit_record_key, data_key, data_key_for_tid, key_marker};
use super::outcome::Outcome;
use super::recovery::Decision;
use super::transaction::Phase;
use super::TxnError;
use crate::meta::{CommitMeta, Version, VersionedKey};
use crate::metrics::Metrics;
use crate::proto::anna::LwwValue;
use crate::proto::records::CommitRecord;
use crate::storage::Storage;

/// Current format of commit records.
pub const COMMIT_RECORD_FORMAT: u32 = 1;

/// What the commit of one transaction has to write.
struct CommitPlan {
    local: BTreeMap<String, Bytes>,
    /// Other nodes holding buffered writes -> keys they must not persist
    /// (the DAG's latest write of those keys is elsewhere).
    remote: BTreeMap<String, Vec<String>>,
}

impl CommitPlan {
    /// Builds the plan: `upstream_writes` maps each key buffered upstream to
    /// the node holding its latest write; `nodes` are all other nodes of the DAG.
    fn new(
        local: BTreeMap<String, Bytes>,
        upstream_writes: &std::collections::HashMap<String, String>,
        nodes: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in nodes.into_iter().chain(upstream_writes.values().cloned()) {
            remote.entry(node).or_default();
        }
        for (node, exclude) in remote.iter_mut() {
            exclude.extend(local.keys().cloned());
            exclude.extend(
                upstream_writes
                    .iter()
                    .filter(|(key, owner)| *owner != node && !local.contains_key(*key))
                    .map(|(key, _)| key.clone()),
            );
            exclude.sort();
            exclude.dedup();
        }
        CommitPlan { local, remote }
    }
}

impl Engine {
    /// Commits transaction `tid` and answers how it ended.
    ///
    /// Idempotent: a retry answers the first outcome. A transaction unknown
    /// here is committed iff its commit record exists in storage. `Ok` with
    /// `Outcome::Aborted` means nothing of the transaction is or will become
    /// visible; `Outcome::Committed` is returned only once the commit record
    /// is durable.
    pub async fn commit(&self, tid: &str) -> Result<Outcome, TxnError> {
        self.commit_with(tid, &[]).await
    }

    /// [`Engine::commit`] for a DAG that also ran on `nodes` (bare node
    /// addresses, as executors list them): every one of them other than this
    /// node is asked to persist what it buffered for `tid`.
    pub async fn commit_with(&self, tid: &str, nodes: &[String]) -> Result<Outcome, TxnError> {
        if let Some(outcome) = self.outcomes.lock().get(tid) {
            return Ok(outcome);
        }
        let slot = self.txns.lock().get(tid).cloned();
        let Some(slot) = slot else {
            return Ok(match self.read_decision(tid).await {
                Ok(Decision::Committed(timestamp)) => Outcome::Committed { timestamp },
                Ok(_) => Outcome::Aborted {
                    reason: "unknown transaction".into(),
                },
                Err(e) => Outcome::Aborted {
                    reason: format!("unknown transaction ({e})"),
                },
            });
        };
        let plan = {
            let mut txn = slot.lock();
            match &txn.phase {
                Phase::Committing | Phase::Prepared { .. } => None,
                Phase::Failed(reason) => {
                    let reason = reason.clone();
                    drop(txn);
                    return Ok(self.finish(tid, Outcome::Aborted { reason }));
                }
                Phase::Running => {
                    txn.phase = Phase::Committing;
                    let local = std::mem::take(&mut txn.writes);
                    let me = &self.config.node_address;
                    let others = txn
                        .upstream
                        .iter()
                        .chain(nodes)
                        .filter(|n| *n != me && !n.is_empty())
                        .cloned()
                        .collect::<Vec<_>>();
                    Some(CommitPlan::new(local, &txn.upstream_writes, others))
                }
            }
        };
        let Some(plan) = plan else {
            return Ok(self.await_outcome(tid).await);
        };
        let started = Instant::now();
        let outcome = self
            .run_commit(tid, plan)
            .instrument(info_span!("commit", tid = %tid))
            .await;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(self.finish(tid, outcome))
    }

    /// Waits for a concurrent commit of `tid` to finish.
    async fn await_outcome(&self, tid: &str) -> Outcome {
        let deadline = Instant::now() + self.storage_deadline() * 4;
        loop {
            if let Some(outcome) = self.outcomes.lock().get(tid) {
                return outcome;
            }
            if Instant::now() > deadline {
                return Outcome::Aborted {
                    reason: "commit still in progress".into(),
                };
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn storage_deadline(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn run_commit(&self, tid: &str, plan: CommitPlan) -> Outcome {
        let timestamp = self.clock.next();
        let mut write_set: Vec<String> = plan.local.keys().cloned().collect();
        match self.prepare_upstream(tid, timestamp, &plan).await {
            Ok(remote_keys) => write_set.extend(remote_keys),
            Err(e) => {
                let mut known = write_set.clone();
                known.extend(plan.remote.values().flatten().cloned());
                return self.abort_commit(tid, &plan, &known, e.to_string()).await;
            }
        }
        crate::failpoint::hit("commit.after_prepare");
        write_set.sort();
        write_set.dedup();
        if write_set.is_empty() {
            // Nothing written anywhere: commits trivially, no record needed.
            let meta = CommitMeta {
                tid: Arc::from(tid),
                timestamp,
                write_set: Vec::new().into(),
                base_keys: Vec::new(),
            };
            self.decide_upstream(tid, &plan, Some(&meta)).await;
            return Outcome::Committed { timestamp };
        }

        // Keys with no committed version yet: save their plain value as the base.
        let base_keys: Vec<String> = {
            let view = self.index.view();
            write_set
                .iter()
                .filter(|k| view.versions(k).is_empty())
                .cloned()
                .collect()
        };
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut base_keys = base_keys;
        if !base_keys.is_empty() {
            // A key is written for the first time only if no commit anywhere
            // wrote it (no marker): then its plain value becomes the base.
            match self.read_plain_with_markers(&base_keys).await {
                Ok((plain, markers)) => {
                    let mut first_writes = Vec::new();
                    for ((key, value), marker) in base_keys.iter().zip(plain).zip(markers) {
                        if marker.is_some() {
                            continue;
                        }
                        if let Some(value) = value {
                            entries.push((data_key(&Version::base(), key), value.to_vec()));
                        }
                        first_writes.push(key.clone());
                    }
                    base_keys = first_writes;
                }
                Err(e) => {
                    let reason = TxnError::storage(tid, e).to_string();
                    return self.abort_commit(tid, &plan, &write_set, reason).await;
                }
            }
        }
        for (key, value) in &plan.local {
            entries.push((data_key_for_tid(tid, key), value.to_vec()));
        }
        let record = CommitRecord {
            format_version: COMMIT_RECORD_FORMAT,
            tid: tid.to_string(),
            timestamp,
            write_set: write_set.clone(),
            coordinator: self.config.node_address.clone(),
            base_keys: base_keys.clone(),
            aborted: false,
        }
        .encode_to_vec();
        let record_key = commit_record_key(tid);
        crate::failpoint::hit("commit.before_data");

        let record_write = if !plan.remote.is_empty() {
            // Participants may claim the decision key with an abort marker
            // if we are too slow: write the record only if the key is free.
            if let Err(e) = self.storage.put_many(&entries).await {
                let reason = TxnError::storage(tid, e).to_string();
                return self.abort_commit(tid, &plan, &write_set, reason).await;
            }
            crate::failpoint::hit("commit.after_data");
            match self.storage.put_if_absent(&record_key, &record).await {
                Ok(true) => Ok(()),
                Ok(false) => match self.read_decision(tid).await {
                    Ok(Decision::Committed(_)) => Ok(()),
                    _ => {
                        let reason =
                            "a participant gave up waiting and aborted the commit".to_string();
                        return self.abort_commit(tid, &plan, &write_set, reason).await;
                    }
                },
                Err(e) => Err(e),
            }
        } else if self.storage.atomic_batches() {
            entries.push((record_key, record));
            self.storage.put_many(&entries).await
        } else {
            if let Err(e) = self.storage.put_many(&entries).await {
                let reason = TxnError::storage(tid, e).to_string();
                return self.abort_commit(tid, &plan, &write_set, reason).await;
            }
            crate::failpoint::hit("commit.after_data");
            self.storage.put(&record_key, &record).await
        };
        if let Err(e) = record_write {
            // The record may or may not have landed: read it back.
            match self.read_decision(tid).await {
                Ok(Decision::Committed(_)) => {}
                _ => {
                    let reason = TxnError::storage(tid, e).to_string();
                    return self.abort_commit(tid, &plan, &write_set, reason).await;
                }
            }
        }

        crate::failpoint::hit("commit.after_record");
        // Committed. Install, answer, tell participants, publish.
        let meta = CommitMeta {
            tid: Arc::from(tid),
            timestamp,
            write_set: write_set.clone().into(),
            base_keys,
        };
        self.index.install(&meta);
        let version = meta.version();
        for (key, value) in &plan.local {
            self.cache.insert(
                VersionedKey {
                    key: Arc::from(key.as_str()),
                    version: version.clone(),
                },
                Some(value.clone()),
            );
        }
        let outcome = Outcome::Committed { timestamp };
        self.decide_upstream(tid, &plan, Some(&meta)).await;
        if let Some(feed) = self.commit_feed.get() {
            let _ = feed.send(meta.clone());
        }
        spawn_publish(
            Arc::clone(&self.storage),
            self.metrics.clone(),
            tid,
            timestamp,
            write_set.clone(),
            plan.local.clone(),
        );
        outcome
    }

    /// Phase one on every upstream node, concurrently.
    async fn prepare_upstream(
        &self,
        tid: &str,
        timestamp: u64,
        plan: &CommitPlan,
    ) -> Result<Vec<String>, TxnError> {
        if plan.remote.is_empty() {
            return Ok(Vec::new());
        }
        let Some(remote) = self.remote.get() else {
            return Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: plan.remote.keys().cloned().collect::<Vec<_>>().join(","),
                reason: "no peer layer configured".into(),
            });
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (node, exclude) in &plan.remote {
            let (remote, node, exclude, tid) = (
                Arc::clone(remote),
                node.clone(),
                exclude.clone(),
                tid.to_string(),
            );
            tasks.spawn(async move { remote.prepare(&node, &tid, timestamp, &exclude).await });
        }
        let mut written = Vec::new();
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(keys)) => written.extend(keys),
                Ok(Err(e)) => return Err(e),
                Err(join) => {
                    return Err(TxnError::Peer {
                        tid: tid.to_string(),
                        peer: "?".into(),
                        reason: join.to_string(),
                    })
                }
            }
        }
        Ok(written)
    }

    /// Tells every upstream node the outcome (best effort: a participant
    /// that misses it learns a commit from gossip and the commit record, and
    /// an abort from its lease and the orphan sweep).
    async fn decide_upstream(&self, tid: &str, plan: &CommitPlan, commit: Option<&CommitMeta>) {
        let Some(remote) = self.remote.get() else {
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        for node in plan.remote.keys() {
            let (remote, node, tid, commit) = (
                Arc::clone(remote),
                node.clone(),
                tid.to_string(),
                commit.cloned(),
            );
            tasks.spawn(async move {
                if let Err(e) = remote.decide(&node, &tid, commit.as_ref()).await {
                    warn!(tid = %tid, peer = %node, error = %e, "could not deliver commit decision");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Aborts a commit that failed before its commit point: fences the commit
    /// record, deletes the data written, tells upstream nodes.
    async fn abort_commit(
        &self,
        tid: &str,
        plan: &CommitPlan,
        write_set: &[String],
        reason: String,
    ) -> Outcome {
        warn!(tid = %tid, %reason, "commit failed before its commit point; aborting");
        let outcome = Outcome::Aborted { reason };
        self.decide_upstream(tid, plan, None).await;
        let mut garbage: Vec<Vec<u8>> = vec![commit_record_key(tid)];
        garbage.extend(write_set.iter().map(|k| data_key_for_tid(tid, k)));
        if let Err(e) = self.storage.delete_many(&garbage).await {
            warn!(tid = %tid, error = %e, "cleanup of aborted commit failed; retrying in GC");
            self.pending_deletes.lock().extend(garbage);
        }
        outcome
    }
}

/// After a commit: writes the key markers (`aft/k/{key}`, "this key has
/// committed versions"), then publishes the committed values to their plain
/// keys (LWW with the commit timestamp) so readers outside the sidecar see
/// them. Markers always land before publications, so a reader that finds a
/// published value and then looks for the marker finds it. Never a source
/// of truth for transactions; failures are counted and logged.
fn spawn_publish(
    storage: Arc<dyn Storage>,
    metrics: Metrics,
    tid: &str,
    timestamp: u64,
    write_set: Vec<String>,
    values: BTreeMap<String, Bytes>,
) {
    let tid = tid.to_string();
    tokio::spawn(async move {
        let markers: Vec<(Vec<u8>, Vec<u8>)> = write_set
            .iter()
            .map(|key| (key_marker(key), tid.as_bytes().to_vec()))
            .collect();
        if let Err(e) = storage.put_many(&markers).await {
            metrics.publish_failures.inc();
            warn!(tid = %tid, error = %e, "writing key markers failed; not publishing plain values");
            return;
        }
        let published: Vec<(Vec<u8>, u64, Vec<u8>)> = values
            .iter()
            .filter_map(|(key, payload)| {
                let lww = LwwValue::decode(payload.as_ref()).ok()?;
                let value = LwwValue {
                    timestamp,
                    value: lww.value,
                }
                .encode_to_vec();
                Some((key.as_bytes().to_vec(), timestamp, value))
            })
            .collect();
        if let Err(e) = storage.merge_lww_many(&published).await {
            metrics.publish_failures.inc();
            warn!(tid = %tid, error = %e, "publishing committed values to their plain keys failed");
        }
    });
}
