//! The engine's side of the peer protocol: what other sidecars ask of this
//! node (a transaction's state, a buffered value, phase one and two of a
//! commit) and what they tell it (commits made elsewhere).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::engine::Engine;
use super::keys::data_key_for_tid;
use super::outcome::{AbortCause, Outcome};
use super::record::Decision;
use super::remote::{PrepareRequest, PreparedVote, UpstreamState};
use super::transaction::Phase;
use super::TxnError;
use crate::meta::{CommitMeta, VersionedKey};

impl Engine {
    /// What this node knows of running transaction `tid`, for a node
    /// downstream in its DAG. Keys buffered here are reported with this node
    /// as their owner (their latest write in the DAG so far).
    /// `to` is the asking node and its incarnation: the transaction
    /// remembers it went there.
    pub fn export_state(
        &self,
        tid: &str,
        to: Option<(String, u64)>,
    ) -> Result<UpstreamState, TxnError> {
        let slot = self.slot(tid)?;
        let mut txn = slot.lock();
        txn.check_running()?;
        let here = (self.config.node_address.clone(), self.incarnation);
        txn.note_visits([here].into_iter().chain(to));
        let me = self.config.node_address.clone();
        let mut buffered: BTreeMap<String, String> = txn.upstream_writes.clone();
        for key in txn.writes.keys() {
            buffered.insert(key.clone(), me.clone());
        }
        // Values go along while they fit the ship-values budget.
        let mut budget = self.config.ship_values_up_to;
        let mut buffered_values = Vec::new();
        let known = txn.writes.iter().chain(
            txn.upstream_values
                .iter()
                .filter(|(key, _)| !txn.writes.contains_key(*key)),
        );
        for (key, value) in known {
            let size = key.len() + value.len();
            if size <= budget {
                budget -= size;
                buffered_values.push((key.clone(), value.clone()));
            }
        }
        let mut upstream_nodes = txn.upstream.clone();
        if !upstream_nodes.contains(&me) {
            upstream_nodes.push(me);
        }
        Ok(UpstreamState {
            reads: txn
                .reads
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lower: txn
                .lower
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            buffered: buffered.into_iter().collect(),
            buffered_values,
            upstream_nodes,
            start_ts: txn.start_ts,
            doomed: txn.doomed.clone(),
            visited: txn.visited.clone(),
            age: txn.began.elapsed(),
        })
    }

    /// The value `tid` buffered here for `key` (`None` if it buffered none).
    pub fn read_buffered(&self, tid: &str, key: &str) -> Result<Option<Bytes>, TxnError> {
        let slot = self.slot(tid)?;
        let mut txn = slot.lock();
        txn.check_running()?;
        Ok(txn.writes.get(key).cloned())
    }

    /// Phase one of a commit coordinated elsewhere: the vote, with what
    /// `tid` buffered here except `exclude`. If those values add up to at
    /// most `ship_up_to` bytes they are returned in the vote (the
    /// coordinator writes them with its own batch, so the commit costs one
    /// storage round trip); otherwise they are persisted here at their
    /// version keys first. Also returns what the transaction read here. The
    /// transaction then waits here, prepared, for the decision.
    /// An unknown or doomed transaction votes no (this node lost its buffer,
    /// or one of its reads here could not be answered).
    pub async fn prepare(
        &self,
        tid: &str,
        request: PrepareRequest,
    ) -> Result<PreparedVote, TxnError> {
        let PrepareRequest {
            timestamp,
            exclude,
            ship_up_to,
            coordinator_values,
        } = request;
        self.clock.observe(timestamp);
        let slot = self.slot(tid)?;
        let reads_of =
            |txn: &super::transaction::Transaction| -> Vec<(String, crate::meta::Version)> {
                txn.reads
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
        let values_of = |txn: &super::transaction::Transaction, keys: &[String]| {
            keys.iter()
                .filter_map(|k| txn.writes.get(k).map(|v| (k.clone(), v.clone())))
                .collect::<Vec<(String, Bytes)>>()
        };
        let (keys, entries, reads, visited): (Vec<String>, Vec<crate::storage::Entry>, _, _) = {
            let mut txn = slot.lock();
            // The vote says where the transaction has been, this node included.
            txn.note_visits([(self.config.node_address.clone(), self.incarnation)]);
            match &txn.phase {
                // A repeated prepare gets the same vote.
                Phase::Prepared { keys, shipped, .. } => {
                    return Ok(PreparedVote {
                        keys: keys.clone(),
                        shipped: values_of(&txn, shipped),
                        reads: reads_of(&txn),
                        visited: txn.visited.clone(),
                    })
                }
                Phase::Running => {
                    if let Some(reason) = &txn.doomed {
                        return Err(TxnError::Failed {
                            tid: tid.to_string(),
                            reason: reason.clone(),
                        });
                    }
                }
                Phase::Committing => {
                    return Err(TxnError::Committing {
                        tid: tid.to_string(),
                    });
                }
                Phase::Failed(reason) => {
                    return Err(TxnError::Failed {
                        tid: tid.to_string(),
                        reason: reason.clone(),
                    })
                }
            }
            let mine: Vec<(String, Bytes)> = txn
                .writes
                .iter()
                .filter(|(k, _)| !exclude.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bytes: usize = mine.iter().map(|(k, v)| k.len() + v.len()).sum();
            if ship_up_to > 0 && bytes <= ship_up_to {
                let shipped: Vec<String> = mine.iter().map(|(k, _)| k.clone()).collect();
                txn.phase = Phase::Prepared {
                    at: Instant::now(),
                    keys: Vec::new(),
                    shipped,
                    coordinator_values,
                };
                debug!(tid = %tid, keys = mine.len(), bytes, "prepared; values go with the vote");
                return Ok(PreparedVote {
                    keys: Vec::new(),
                    shipped: mine,
                    reads: reads_of(&txn),
                    visited: txn.visited.clone(),
                });
            }
            txn.phase = Phase::Committing;
            let (keys, entries) = mine
                .into_iter()
                .map(|(k, v)| {
                    let entry = (data_key_for_tid(tid, &k), v.to_vec());
                    (k, entry)
                })
                .unzip();
            (keys, entries, reads_of(&txn), txn.visited.clone())
        };
        if !entries.is_empty() {
            if let Err(e) = self.storage.put_many(&entries).await {
                slot.lock().phase = Phase::Failed(e.to_string());
                return Err(TxnError::storage(tid, e));
            }
        }
        self.failpoint("prepare.after_data").await;
        slot.lock().phase = Phase::Prepared {
            at: Instant::now(),
            keys: keys.clone(),
            shipped: Vec::new(),
            coordinator_values,
        };
        debug!(tid = %tid, keys = keys.len(), "prepared");
        Ok(PreparedVote {
            keys,
            shipped: Vec::new(),
            reads,
            visited,
        })
    }

    /// Phase two: the coordinator's decision. A commit is installed (if
    /// gossip has not done so already); an abort drops the buffer and deletes
    /// whatever phase one persisted here. Idempotent. (The coordinator
    /// publishes the whole write set, this node's keys included.)
    pub async fn decide(&self, tid: &str, commit: Option<CommitMeta>) {
        match commit {
            Some(meta) => {
                self.learn_commits(std::slice::from_ref(&meta));
                self.finish(
                    tid,
                    Outcome::Committed {
                        timestamp: meta.timestamp,
                    },
                );
            }
            None => {
                let keys = self.prepared_keys(tid);
                self.finish(
                    tid,
                    Outcome::Aborted {
                        cause: AbortCause::ByCoordinator,
                    },
                );
                self.delete_data(tid, &keys).await;
            }
        }
    }

    /// The keys phase one persisted here for `tid` (none unless prepared;
    /// a prepare still writing is treated as having written its buffer).
    fn prepared_keys(&self, tid: &str) -> Vec<String> {
        let Some(slot) = self.txns.lock().get(tid).cloned() else {
            return Vec::new();
        };
        let txn = slot.lock();
        match &txn.phase {
            Phase::Prepared { keys, .. } => keys.clone(),
            Phase::Committing => txn.writes.keys().cloned().collect(),
            Phase::Running | Phase::Failed(_) => Vec::new(),
        }
    }

    async fn delete_data(&self, tid: &str, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let garbage: Vec<Vec<u8>> = keys.iter().map(|k| data_key_for_tid(tid, k)).collect();
        if let Err(e) = self.storage.delete_many(&garbage).await {
            warn!(tid = %tid, error = %e, "cannot delete aborted data; the orphan sweep will");
            self.pending_deletes.lock().extend(garbage);
        }
    }

    /// Installs commits made on other nodes (from gossip, a decision, or a
    /// commit record read from storage), and lets go of those this node
    /// took part in (prepared here, now durable: every source above learns
    /// a commit only after its record is). Idempotent; returns how many were new.
    pub fn learn_commits(&self, commits: &[CommitMeta]) -> usize {
        let mut new = 0;
        for meta in commits {
            self.clock.observe(meta.timestamp);
            if !meta.write_set.is_empty() && self.index.install(meta) {
                new += 1;
            }
            let slot = self.txns.lock().get(meta.tid.as_ref()).cloned();
            let contribution = slot.and_then(|slot| {
                let txn = slot.lock();
                match &txn.phase {
                    Phase::Prepared {
                        keys,
                        shipped,
                        coordinator_values,
                        ..
                    } => Some(
                        keys.iter()
                            .chain(shipped)
                            .filter_map(|k| txn.writes.get(k).map(|v| (k.clone(), v.clone())))
                            .chain(coordinator_values.iter().cloned())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            });
            if let Some(values) = contribution {
                // What the DAG wrote is what its next functions here will
                // most likely read: keep this node's part and the
                // coordinator's, at the committed version.
                let version = meta.version();
                for (key, value) in values {
                    self.cache.insert(
                        VersionedKey {
                            key: Arc::from(key.as_str()),
                            version: version.clone(),
                        },
                        Some(value),
                    );
                }
                self.finish(
                    &meta.tid,
                    Outcome::Committed {
                        timestamp: meta.timestamp,
                    },
                );
            }
        }
        new
    }

    /// Every commit this node's index holds with a timestamp above `since`
    /// (answers a peer's digest request).
    pub fn commits_since(&self, since: u64) -> Vec<CommitMeta> {
        self.index.commits_since(since)
    }

    /// Settles prepared transactions whose decision is overdue (the
    /// coordinator died or is partitioned): a commit record means committed;
    /// otherwise this node claims the decision key with an abort marker, so
    /// the coordinator can no longer commit, and aborts. Returns how many settled.
    pub async fn settle_prepared(&self, overdue_after: std::time::Duration) -> usize {
        // (tid, whether it persisted anything here)
        let overdue: Vec<(Arc<str>, bool)> = self
            .txns
            .lock()
            .iter()
            .filter_map(|(tid, slot)| match &slot.lock().phase {
                Phase::Prepared { at, keys, .. } if at.elapsed() > overdue_after => {
                    Some((Arc::clone(tid), !keys.is_empty()))
                }
                _ => None,
            })
            .collect();
        // In a fixed order: a simulation replays the same storage calls.
        let mut overdue = overdue;
        overdue.sort();
        let mut settled = 0;
        for (tid, persisted) in overdue {
            let decision = match self.read_decision(&tid).await {
                // A participant that persisted nothing has nothing to fence:
                // the commit can go on without it (a read-only DAG commits
                // with no record at all). It just lets go of the transaction.
                Ok(Decision::Undecided) if !persisted => {
                    self.txns.lock().remove(&tid);
                    info!(tid = %tid, "released a prepared transaction that wrote nothing here");
                    settled += 1;
                    continue;
                }
                Ok(Decision::Undecided) => self.claim_abort(&tid).await,
                other => other,
            };
            match decision {
                Ok(Decision::Committed(meta)) => {
                    info!(tid = %tid, "prepared transaction found committed in storage");
                    let timestamp = meta.timestamp;
                    self.learn_commits(&[meta]);
                    self.finish(&tid, Outcome::Committed { timestamp });
                }
                Ok(Decision::Aborted) => {
                    info!(tid = %tid, "prepared transaction aborted: no decision from its coordinator");
                    self.decide(&tid, None).await;
                }
                Ok(Decision::Undecided) => continue,
                Err(e) => {
                    warn!(tid = %tid, error = %e, "cannot settle a prepared transaction yet");
                    continue;
                }
            }
            settled += 1;
        }
        settled
    }
}
