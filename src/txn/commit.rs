//! The commit protocol, coordinator side, in named steps:
//!
//! 1. **Prepare participants**: every other node of the DAG that buffers
//!    writes persists them at their version keys and votes.
//! 2. **Write data**: this node's buffered values, the base values of keys
//!    written for the first time, and a publication intent.
//! 3. **Write the record** (`aft/c/<tid>`), only if the decision key is
//!    free: the commit point. Where the backend's batches are atomic, steps
//!    2 and 3 are one guarded batch that also carries the key markers;
//!    elsewhere the markers follow the record. Either way the markers are in
//!    storage before the commit is acknowledged.
//! 4. **Install and announce**: the index installs the commit, participants
//!    learn the decision, gossip carries it; the whole write set is then
//!    published to its plain keys in the background (`publish.rs`).
//!
//! A failure before the commit point aborts everywhere, with one place that
//! does it ([`Engine::abort_commit`]). A record write whose outcome is
//! unknown is settled by claiming the decision key with an abort marker: if
//! the record is found instead, the commit stands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info_span, warn, Instrument};

use super::engine::Engine;
use super::keys::{
    commit_record_key, data_key, data_key_for_tid, encode_base, intent_key, key_marker,
};
use super::outcome::{AbortCause, Outcome};
use super::publish::Publication;
use super::record::{encode_commit, encode_intent, Decision};
use super::remote::PrepareRequest;
use super::transaction::Phase;
use super::{PeerFailure, TxnError};
use crate::meta::{CommitMeta, Version, VersionedKey};

/// What the commit of one transaction has to write.
struct CommitPlan {
    /// This node's buffered writes.
    local: BTreeMap<String, Bytes>,
    /// What the transaction read on this node (with its upstream chain).
    reads: BTreeMap<String, Version>,
    /// Every other node of the DAG (the participants) -> keys it must not
    /// persist (the DAG's latest write of those keys is elsewhere).
    participants: BTreeMap<String, Vec<String>>,
    /// Every (node, incarnation) the transaction is known here to have been on.
    visited: Vec<(String, u64)>,
}

impl CommitPlan {
    /// Builds the plan: `upstream_writes` maps each key buffered upstream to
    /// the node holding its latest write; `nodes` are all other nodes of the DAG.
    fn new(
        local: BTreeMap<String, Bytes>,
        upstream_writes: &BTreeMap<String, String>,
        nodes: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut participants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in nodes.into_iter().chain(upstream_writes.values().cloned()) {
            participants.entry(node).or_default();
        }
        for (node, exclude) in participants.iter_mut() {
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
        CommitPlan {
            local,
            reads: BTreeMap::new(),
            participants,
            visited: Vec::new(),
        }
    }
}

/// A commit that reached its commit point: what steps 3 and 4 need.
struct Durable {
    meta: CommitMeta,
    /// Whether the write set reached its plain keys with the record.
    published: bool,
    /// The participants' writes that came with their votes (written here).
    shipped: BTreeMap<String, Bytes>,
    /// Whether the key markers are already in storage.
    markers_written: bool,
}

/// What the participants answered in phase one, together.
#[derive(Default)]
struct Votes {
    /// The keys they persisted.
    keys: Vec<String>,
    /// What the transaction read on them.
    reads: Vec<(String, Version)>,
    /// The values they returned instead of persisting.
    shipped: BTreeMap<String, Bytes>,
    /// Every (node, incarnation) they know the transaction was on.
    visited: Vec<(String, u64)>,
}

/// A node the DAG ran on in two incarnations, if any: it restarted while
/// the DAG ran, and what the DAG did there before (a branch's reads and
/// buffered writes) is lost, whatever a later `continue` brought back.
fn restarted_under_the_dag(visited: &[(String, u64)]) -> Option<&str> {
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for (node, incarnation) in visited {
        match seen.insert(node, *incarnation) {
            Some(other) if other != *incarnation => return Some(node),
            _ => {}
        }
    }
    None
}

/// A step that failed: why, and which keys of this node it may have written.
struct Failed {
    reason: AbortCause,
    written: Vec<String>,
    /// The record write's outcome could not be settled (storage failed
    /// while fencing it): the commit may yet turn out committed.
    unsettled: Option<CommitMeta>,
}

impl Engine {
    /// Commits transaction `tid` and answers how it ended.
    ///
    /// Idempotent: a retry answers the first outcome. A transaction unknown
    /// here is committed iff its commit record exists in storage. `Ok` with
    /// `Outcome::Aborted` means nothing of the transaction is or will become
    /// visible; `Outcome::Committed` is returned only once the commit record
    /// and the key markers are durable.
    pub async fn commit(&self, tid: &str) -> Result<Outcome, TxnError> {
        self.commit_with(tid, &[]).await
    }

    /// [`Engine::commit`] for a DAG that also ran on `nodes` (bare node
    /// addresses, as executors list them): every one of them other than this
    /// node is asked to persist what it buffered for `tid`.
    pub async fn commit_with(&self, tid: &str, nodes: &[String]) -> Result<Outcome, TxnError> {
        self.notice_stall();
        if let Some(outcome) = self.outcomes.lock().get(tid) {
            return Ok(outcome);
        }
        let slot = self.txns.lock().get(tid).cloned();
        let Some(slot) = slot else {
            return Ok(self.settle_unknown(tid, nodes).await);
        };
        enum Next {
            Wait,
            Abort(String, CommitPlan),
            Commit(CommitPlan),
        }
        let next = {
            let mut txn = slot.lock();
            let me = &self.config.node_address;
            let others: Vec<String> = txn
                .upstream
                .iter()
                .chain(nodes)
                .filter(|n| *n != me && !n.is_empty())
                .cloned()
                .collect();
            match (&txn.phase, txn.doomed.as_ref()) {
                (Phase::Committing | Phase::Prepared { .. }, _) => Next::Wait,
                (Phase::Failed(reason), _) | (Phase::Running, Some(reason)) => {
                    let reason = reason.clone();
                    txn.phase = Phase::Committing;
                    let plan = CommitPlan::new(BTreeMap::new(), &txn.upstream_writes, others);
                    Next::Abort(reason, plan)
                }
                (Phase::Running, None) => {
                    txn.phase = Phase::Committing;
                    let local = std::mem::take(&mut txn.writes);
                    let mut plan = CommitPlan::new(local, &txn.upstream_writes, others);
                    plan.reads = txn.reads.clone();
                    plan.visited = txn.visited.clone();
                    Next::Commit(plan)
                }
            }
        };
        let outcome = match next {
            Next::Wait => return Ok(self.await_outcome(tid).await),
            Next::Abort(reason, plan) => {
                self.abort_commit(tid, &plan, &[], AbortCause::Doomed(reason))
                    .await
            }
            Next::Commit(plan) => {
                let started = Instant::now();
                let outcome = self
                    .run_commit(tid, plan)
                    .instrument(info_span!("commit", tid = %tid))
                    .await;
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                outcome
            }
        };
        Ok(self.finish(tid, outcome))
    }

    /// Answers a commit of a transaction this node does not run: committed
    /// iff its record exists. Otherwise the decision key is claimed with an
    /// abort marker, so it can never commit later, and the other `nodes` of
    /// its DAG are told to drop what they buffered. If storage cannot be
    /// read, the answer is `Unknown`.
    async fn settle_unknown(&self, tid: &str, nodes: &[String]) -> Outcome {
        let decision = match self.read_decision(tid).await {
            // Without conditional writes a fence could be overwritten by a
            // record still on its way from a coordinator this node does not
            // know of: no truthful answer.
            Ok(Decision::Undecided) if !self.storage.conditional_writes() => {
                return Outcome::Unknown {
                    reason: "not known here, and undecided in storage".into(),
                }
            }
            Ok(Decision::Undecided) => self.claim_abort(tid).await,
            other => other,
        };
        match decision {
            Ok(Decision::Committed(meta)) => Outcome::Committed {
                timestamp: meta.timestamp,
            },
            Ok(_) => {
                let me = &self.config.node_address;
                let others = nodes.iter().filter(|n| *n != me && !n.is_empty()).cloned();
                let plan = CommitPlan::new(BTreeMap::new(), &BTreeMap::new(), others);
                self.decide_participants(tid, &plan, None).await;
                Outcome::Aborted {
                    cause: AbortCause::UnknownTransaction,
                }
            }
            // Storage cannot say: no truthful answer yet.
            Err(e) => Outcome::Unknown {
                reason: format!("cannot read the transaction's decision: {e}"),
            },
        }
    }

    /// Waits for a concurrent commit of `tid` (here, or by a coordinator
    /// this node is prepared for) to finish. If it does not in time, the
    /// answer comes from storage, as for a transaction unknown here: the
    /// record if it landed, else an abort marker claimed now (so the answer
    /// ABORTED stays true).
    async fn await_outcome(&self, tid: &str) -> Outcome {
        let deadline = Instant::now() + self.config.decision_timeout + self.config.storage_timeout;
        loop {
            if let Some(outcome) = self.outcomes.lock().get(tid) {
                return outcome;
            }
            if Instant::now() > deadline {
                return self.settle_unknown(tid, &[]).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Runs the steps; answers how the commit ended.
    async fn run_commit(&self, tid: &str, plan: CommitPlan) -> Outcome {
        let started = Instant::now();
        let timestamp = self.clock.next();
        match self
            .reach_commit_point(tid, timestamp, &plan, started)
            .await
        {
            Ok(Some(durable)) => self.install_and_announce(&plan, durable),
            Ok(None) => {
                // Nothing written anywhere: commits trivially, no record needed.
                let meta = CommitMeta {
                    tid: Arc::from(tid),
                    timestamp,
                    write_set: Vec::new().into(),
                    base_keys: Vec::new(),
                };
                self.decide_participants(tid, &plan, Some(&meta)).await;
                Outcome::Committed { timestamp }
            }
            Err(Failed {
                unsettled: Some(meta),
                reason,
                written,
            }) => {
                self.settle_in_background(tid, plan, meta, written);
                Outcome::Unknown {
                    reason: format!(
                        "{reason}; the commit is being settled, retry it to learn the outcome"
                    ),
                }
            }
            Err(failed) => {
                self.abort_commit(tid, &plan, &failed.written, failed.reason)
                    .await
            }
        }
    }

    /// Settles a commit whose record write could not be confirmed either
    /// way: claims the decision key with an abort marker until storage
    /// answers. If the record turns out to have landed, the commit is
    /// installed, announced and published like any other; otherwise it is
    /// aborted everywhere. Retried commits answer from the outcome then.
    fn settle_in_background(
        &self,
        tid: &str,
        plan: CommitPlan,
        meta: CommitMeta,
        written: Vec<String>,
    ) {
        // Weak: the task must not keep a stopped engine alive.
        let me = self.me.clone();
        let tid = tid.to_string();
        let most = self.config.storage_timeout.max(Duration::from_millis(100));
        // Without conditional writes, a fence is safe only once the record
        // write can no longer land.
        let first = if self.storage.conditional_writes() {
            Duration::from_millis(100)
        } else {
            self.config.write_horizon
        };
        self.spawn_tied(async move {
            let mut pause = first;
            loop {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(most);
                let Some(engine) = me.upgrade() else {
                    return;
                };
                match engine.claim_abort(&tid).await {
                    Ok(Decision::Committed(_)) => {
                        // Values shipped by participants are read back
                        // from their data keys by the publication.
                        let durable = Durable {
                            meta,
                            // Publishing again is harmless (LWW merges).
                            published: false,
                            shipped: BTreeMap::new(),
                            markers_written: false,
                        };
                        let outcome = engine.install_and_announce(&plan, durable);
                        engine.finish(&tid, outcome);
                        return;
                    }
                    Ok(_) => {
                        let reason = AbortCause::storage(TxnError::Failed {
                            tid: tid.clone(),
                            reason: "storage failed at the commit point; fenced afterwards".into(),
                        });
                        let outcome = engine.abort_commit(&tid, &plan, &written, reason).await;
                        engine.finish(&tid, outcome);
                        return;
                    }
                    Err(e) => warn!(tid = %tid, error = %e, "still cannot settle the commit"),
                }
            }
        });
    }

    /// Steps 1 to 3. `Ok(None)`: the transaction wrote nothing.
    async fn reach_commit_point(
        &self,
        tid: &str,
        timestamp: u64,
        plan: &CommitPlan,
        started: Instant,
    ) -> Result<Option<Durable>, Failed> {
        let mut write_set: Vec<String> = plan.local.keys().cloned().collect();
        let mut mine = write_set.clone();
        // Before step 3 nothing of this node is written yet.
        let failed = |reason| Failed {
            reason,
            written: Vec::new(),
            unsettled: None,
        };
        // Step 1.
        let Votes {
            keys: remote_keys,
            reads: remote_reads,
            shipped,
            visited,
        } = self
            .prepare_participants(tid, timestamp, plan)
            .await
            .map_err(|e| failed(AbortCause::participant(e)))?;
        if !plan.participants.is_empty() {
            let mut everywhere = visited;
            everywhere.extend(plan.visited.iter().cloned());
            everywhere.push((self.config.node_address.clone(), self.incarnation));
            if let Some(node) = restarted_under_the_dag(&everywhere) {
                return Err(failed(AbortCause::Doomed(format!(
                    "node {node} restarted while the DAG ran on it: what the DAG did there before is lost"
                ))));
            }
        }
        // Shipped values are written here, with this node's own.
        mine.extend(shipped.keys().cloned());
        write_set.extend(shipped.keys().cloned());
        self.failpoint("commit.after_prepare").await;
        if !remote_reads.is_empty() {
            // Branches that ran side by side meet here: their reads must be
            // read-atomic together, or the DAG cannot commit.
            let mut reads = plan.reads.clone();
            let conflicts = super::read_rule::merge_reads(&mut reads, remote_reads);
            if !conflicts.is_empty() {
                return Err(failed(AbortCause::Inconsistent(format!(
                    "branches of the DAG read {} at different versions",
                    conflicts.join(", ")
                ))));
            }
            self.check_reads_together(&reads)
                .await
                .map_err(|why| failed(AbortCause::Inconsistent(why)))?;
        }
        let remote_keys_persisted = remote_keys.len();
        write_set.extend(remote_keys);
        write_set.sort();
        write_set.dedup();
        if write_set.is_empty() {
            return Ok(None);
        }
        // Step 2: the entries to write.
        let bases = self
            .first_writes(tid, &write_set)
            .await
            .map_err(|e| failed(AbortCause::storage(e)))?;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = bases
            .iter()
            .map(|(key, value)| {
                (
                    data_key(&Version::base(), key),
                    encode_base(value.as_deref()),
                )
            })
            .collect();
        let meta = CommitMeta {
            tid: Arc::from(tid),
            timestamp,
            write_set: write_set.into(),
            base_keys: bases.into_iter().map(|(key, _)| key).collect(),
        };
        for (key, value) in plan.local.iter().chain(&shipped) {
            entries.push((data_key_for_tid(tid, key), value.to_vec()));
        }
        // Where the store applies a commit's record, data and LWW merges in
        // one atomic step, and every value is at hand (none persisted by a
        // participant), the commit publishes its write set with its record:
        // no intent, nothing left to do after the acknowledgement.
        // Otherwise an intent goes with the data and publication follows.
        // One atomic step only if the whole batch fits the store's atomic
        // batches (counted at its largest: data, markers, record, and a
        // merge and the intent besides).
        let values: usize = entries.iter().map(|(_, v)| v.len()).sum();
        let atomic = self
            .storage
            .atomic_batch_fits(entries.len() + 2 * meta.write_set.len() + 2, 2 * values);
        let publish_now = self.storage.atomic_publication() && atomic && remote_keys_persisted == 0;
        let merges = if publish_now {
            let shipped_too =
                self.config.regression != Some(super::Regression::UnpublishedParticipantWrites);
            super::publish::plain_merges(
                timestamp,
                plan.local
                    .iter()
                    .chain(shipped.iter().filter(|_| shipped_too))
                    .map(|(k, v)| (k.as_str(), v)),
            )
        } else {
            entries.push((
                intent_key(tid),
                encode_intent(&self.config.node_address, self.clock.wall_micros()),
            ));
            Vec::new()
        };
        // Step 3: the commit point, unless the commit has run so long that a
        // participant or a sweep may fence it any moment.
        let ignores_deadline =
            self.config.regression == Some(super::Regression::CoordinatorIgnoresDeadline);
        if started.elapsed() > self.record_deadline(!plan.participants.is_empty())
            && !ignores_deadline
        {
            return Err(failed(AbortCause::TooSlow(started.elapsed())));
        }
        self.failpoint("commit.before_data").await;
        let markers_written = self
            .write_record(tid, &meta, entries, &merges, mine, atomic)
            .await?;
        self.failpoint("commit.after_record").await;
        Ok(Some(Durable {
            meta,
            published: publish_now,
            shipped,
            markers_written,
        }))
    }

    /// How long after its start a commit may still write its record.
    /// Participants claim the decision with an abort marker `decision_timeout`
    /// after they prepared (after this commit started), and the record write
    /// itself may take up to `storage_timeout` to land: stopping at
    /// `decision_timeout - storage_timeout` keeps the two apart (at half the
    /// decision timeout at least, for configurations where the storage
    /// timeout is the longer). Without participants only the publication
    /// sweep can fence, after `decision_timeout + storage_timeout` of wall time.
    fn record_deadline(&self, has_participants: bool) -> Duration {
        let decision = self.config.decision_timeout;
        if !has_participants {
            return decision;
        }
        if self.storage.conditional_writes() {
            decision
                .saturating_sub(self.config.storage_timeout)
                .max(decision / 2)
        } else {
            // Without conditional writes a late record would overwrite a
            // participant's marker: stop a whole write horizon earlier.
            decision
                .saturating_sub(self.config.write_horizon)
                .max(decision / 4)
        }
    }

    /// How long after a commit began writing (its intent's time) a sweep may
    /// fence it: by then its record has landed, or never will.
    pub(crate) fn fence_delay(&self) -> Duration {
        let landing = if self.storage.conditional_writes() {
            self.config.storage_timeout
        } else {
            self.config.write_horizon
        };
        self.config.decision_timeout + landing + self.config.storage_timeout
    }

    /// Keys of the write set with no committed version known anywhere (no
    /// key marker), with their plain values, which become their base
    /// versions. The value saved is the one read *with* the marker (one
    /// snapshot, or plain first and marker second): a plain value read
    /// later may already be a concurrent first writer's publication (which
    /// lands with its marker), and saving that as the base would show the
    /// other commit's write as the key's value "before" it (found by
    /// `ipc::thirty_two_concurrent_clients_produce_a_read_atomic_history`
    /// under load, once publication went with the commit record).
    async fn first_writes(
        &self,
        tid: &str,
        write_set: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, TxnError> {
        let unknown: Vec<String> = {
            let view = self.index.view();
            write_set
                .iter()
                .filter(|k| view.versions(k).is_empty())
                .cloned()
                .collect()
        };
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let (values, markers) = self
            .read_plain_with_markers(&unknown)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        Ok(unknown
            .into_iter()
            .zip(values.into_iter().zip(markers))
            .filter(|(_, (_, marker))| marker.is_none())
            .map(|(key, (value, _))| (key, value))
            .collect())
    }

    /// Writes `entries` and the commit record, the record only if the
    /// decision key is free. Returns whether the key markers went with it.
    async fn write_record(
        &self,
        tid: &str,
        meta: &CommitMeta,
        mut entries: Vec<(Vec<u8>, Vec<u8>)>,
        merges: &[crate::storage::LwwMerge],
        written: Vec<String>,
        atomic: bool,
    ) -> Result<bool, Failed> {
        let record_key = commit_record_key(tid);
        let markers = marker_entries(meta);
        if atomic {
            entries.extend(markers.iter().cloned());
        }
        let record = encode_commit(meta, &self.config.node_address);
        let wrote = if atomic {
            entries.push((record_key.clone(), record));
            if merges.is_empty() {
                self.storage.put_many_if_absent(&record_key, &entries).await
            } else {
                self.storage
                    .put_many_if_absent_and_merge(&record_key, &entries, merges)
                    .await
            }
        } else {
            // Data first, the record last: a crash in between leaves data
            // without a record, which is never visible (and is swept).
            match self.storage.put_many(&entries).await {
                Ok(()) => {
                    self.failpoint("commit.after_data").await;
                    self.storage.put_if_absent(&record_key, &record).await
                }
                Err(e) => Err(e),
            }
        };
        let wrote = match wrote {
            Ok(wrote) => Ok(wrote),
            Err(e) if !self.storage.conditional_writes() => {
                // The record may still land (no conditional write can stop
                // it): only once the write horizon has passed can it be
                // settled, in the background.
                warn!(tid = %tid, error = %e, "commit record write failed; settling it after the write horizon");
                Err(Failed {
                    reason: AbortCause::storage(TxnError::storage(tid, e)),
                    written: written.clone(),
                    unsettled: Some(meta.clone()),
                })
            }
            Err(e) => {
                // The record may or may not have landed: settle it.
                warn!(tid = %tid, error = %e, "commit record write failed; settling its outcome");
                match self.claim_abort(tid).await {
                    Ok(Decision::Committed(_)) => Ok(true),
                    Ok(_) => Err(Failed {
                        reason: AbortCause::storage(TxnError::storage(tid, e)),
                        written: written.clone(),
                        unsettled: None,
                    }),
                    Err(settle) => {
                        // Neither the record nor a fence could be confirmed:
                        // the outcome is unknown until storage answers.
                        warn!(tid = %tid, error = %settle, "cannot settle the commit record yet");
                        Err(Failed {
                            reason: AbortCause::storage(TxnError::storage(tid, e)),
                            written: written.clone(),
                            unsettled: Some(meta.clone()),
                        })
                    }
                }
            }
        }?;
        if !wrote {
            return Err(Failed {
                reason: AbortCause::Fenced,
                written,
                unsettled: None,
            });
        }
        if atomic {
            return Ok(true);
        }
        match self.storage.put_many(&markers).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // Committed all the same; publication writes them again.
                warn!(tid = %tid, error = %e, "key markers not written before the acknowledgement");
                Ok(false)
            }
        }
    }

    /// Step 4: installs the commit, announces it (participants learn it from
    /// that gossip), and publishes the write set to its plain keys in the
    /// background unless it went with the record.
    fn install_and_announce(&self, plan: &CommitPlan, durable: Durable) -> Outcome {
        let Durable {
            meta,
            published,
            shipped,
            markers_written,
        } = durable;
        self.index.install(&meta);
        let version = meta.version();
        let mut known = plan.local.clone();
        known.extend(shipped);
        for (key, value) in &known {
            self.cache.insert(
                VersionedKey {
                    key: Arc::from(key.as_str()),
                    version: version.clone(),
                },
                Some(value.clone()),
            );
        }
        // Participants learn the commit from its gossip, which every peer
        // gets at once, and let go of the transaction then (a participant
        // that misses it settles from the commit record at its decision
        // timeout): no decision round trip, on the executor's path or off it.
        if let Some(feed) = self.commit_feed.get() {
            let _ = feed.send(meta.clone());
        }
        if !published {
            self.spawn_publication(Publication {
                meta: meta.clone(),
                known,
                markers_written,
            });
        }
        Outcome::Committed {
            timestamp: meta.timestamp,
        }
    }

    /// Phase one on every participant, concurrently: their votes, together.
    async fn prepare_participants(
        &self,
        tid: &str,
        timestamp: u64,
        plan: &CommitPlan,
    ) -> Result<Votes, TxnError> {
        if plan.participants.is_empty() {
            return Ok(Votes::default());
        }
        let Some(remote) = self.remote.get() else {
            return Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: plan
                    .participants
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                failure: PeerFailure::Off,
            });
        };
        let ship_up_to = self.config.ship_values_up_to;
        let local_bytes: usize = plan.local.iter().map(|(k, v)| k.len() + v.len()).sum();
        let coordinator_values: Vec<(String, Bytes)> = if local_bytes <= ship_up_to {
            plan.local
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (node, exclude) in &plan.participants {
            let request = PrepareRequest {
                timestamp,
                exclude: exclude.clone(),
                ship_up_to,
                coordinator_values: coordinator_values.clone(),
            };
            let (remote, node, tid) = (Arc::clone(remote), node.clone(), tid.to_string());
            tasks.spawn(async move { remote.prepare(&node, &tid, &request).await });
        }
        let mut votes = Votes::default();
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(vote)) => {
                    votes.keys.extend(vote.keys);
                    votes.reads.extend(vote.reads);
                    votes.shipped.extend(vote.shipped);
                    votes.visited.extend(vote.visited);
                }
                Ok(Err(e)) => return Err(e),
                Err(join) => {
                    return Err(TxnError::Peer {
                        tid: tid.to_string(),
                        peer: "?".into(),
                        failure: PeerFailure::Transport(join.to_string()),
                    })
                }
            }
        }
        Ok(votes)
    }

    /// Tells every participant the outcome (best effort: a participant that
    /// misses it learns a commit from gossip and the commit record, and an
    /// abort from its decision timeout and its lease).
    async fn decide_participants(&self, tid: &str, plan: &CommitPlan, commit: Option<&CommitMeta>) {
        let Some(remote) = self.remote.get() else {
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        for node in plan.participants.keys() {
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

    /// The one place a commit aborts before its commit point: tells every
    /// participant, deletes this node's data and intent (or leaves them to
    /// the orphan sweep if that fails).
    async fn abort_commit(
        &self,
        tid: &str,
        plan: &CommitPlan,
        written: &[String],
        reason: AbortCause,
    ) -> Outcome {
        warn!(tid = %tid, %reason, "commit aborted before its commit point");
        self.decide_participants(tid, plan, None).await;
        if !written.is_empty() {
            let mut garbage: Vec<Vec<u8>> =
                written.iter().map(|k| data_key_for_tid(tid, k)).collect();
            garbage.push(intent_key(tid));
            if let Err(e) = self.storage.delete_many(&garbage).await {
                warn!(tid = %tid, error = %e, "cleanup of an aborted commit failed; retrying in GC");
                self.pending_deletes.lock().extend(garbage);
            }
        }
        Outcome::Aborted { cause: reason }
    }
}

/// `aft/k/<key>` = tid for every key of the write set.
pub(crate) fn marker_entries(meta: &CommitMeta) -> Vec<(Vec<u8>, Vec<u8>)> {
    meta.write_set
        .iter()
        .map(|key| (key_marker(key), meta.tid.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::restarted_under_the_dag;

    #[test]
    fn a_node_seen_in_two_incarnations_is_named() {
        let visits = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(n, i)| (n.to_string(), *i)).collect()
        };
        assert_eq!(restarted_under_the_dag(&[]), None);
        assert_eq!(
            restarted_under_the_dag(&visits(&[("a", 1), ("b", 2), ("a", 1), ("b", 2)])),
            None
        );
        assert_eq!(
            restarted_under_the_dag(&visits(&[("a", 1), ("b", 2), ("c", 3), ("b", 5)])),
            Some("b")
        );
    }
}
