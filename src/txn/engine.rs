//! The transaction engine: start, read, write, abort, continue. Commit lives
//! in `commit.rs`, garbage collection in `gc.rs`, recovery in `recovery.rs`.
//!
//! # Concurrency
//! - `txns` (a `parking_lot::Mutex` over the table of running transactions)
//!   is held only to look up, insert or remove an entry, and by the GC pass
//!   to read every running transaction's start sequence.
//! - Each transaction has its own mutex, held while its read set or buffer
//!   is examined or changed, never across an `.await`.
//! - The version index has its own read-write lock (see `meta::index`).
//!
//! Storage I/O happens with no lock held, so a slow storage call delays only
//! the request that made it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::keys::{commit_record_key, data_key, key_marker};
use super::outcome::{Outcome, OutcomeLog};
use super::read_rule::{record_read, select_version, Selection};
use super::recovery::{decode_decision, Decision};
use super::remote::Remote;
use super::transaction::{Phase, Transaction};
use super::{EngineConfig, TxnError};
use crate::meta::{HybridClock, ValueCache, Version, VersionIndex, VersionedKey};
use crate::metrics::{Metrics, ReadSource};
use crate::storage::Storage;

/// A running transaction's shared state.
pub(crate) type TxnSlot = Arc<Mutex<Transaction>>;

/// One key's answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadValue {
    /// The key.
    pub key: String,
    /// The serialized `LWWValue` stored for the key, `None` if it has no value.
    pub value: Option<Bytes>,
}

/// What a transaction start returns.
#[derive(Debug, Clone)]
pub struct Started {
    /// The new transaction id (a UUID v7: unique across nodes and restarts).
    pub tid: Arc<str>,
}

/// The read-atomic transaction engine of one node. Share it as `Arc<Engine>`.
pub struct Engine {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) index: VersionIndex,
    pub(crate) cache: ValueCache,
    pub(crate) clock: HybridClock,
    pub(crate) txns: Mutex<HashMap<Arc<str>, TxnSlot>>,
    pub(crate) outcomes: Mutex<OutcomeLog>,
    pub(crate) config: EngineConfig,
    pub(crate) metrics: Metrics,
    pub(crate) remote: std::sync::OnceLock<Arc<dyn Remote>>,
    /// Where commits made here are announced (the gossip task), if anywhere.
    pub(crate) commit_feed:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::meta::CommitMeta>>,
    /// Storage keys whose deletion failed; retried by the next GC pass.
    pub(crate) pending_deletes: Mutex<Vec<Vec<u8>>>,
    /// Multi-node: the cluster-wide GC watermark (see `gc.rs`). Unset on a
    /// single node, where dropped data is deleted at once.
    pub(crate) global_watermark: std::sync::OnceLock<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Multi-node: storage keys of dropped versions and retired commit
    /// records, waiting for the watermark to pass their superseder's
    /// timestamp: (superseder timestamp, key, is a commit record).
    pub(crate) deferred_deletes: Mutex<std::collections::VecDeque<(u64, Vec<u8>, bool)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.storage.describe())
            .field("node", &self.config.node_address)
            .finish_non_exhaustive()
    }
}

/// A planned read, decided under the transaction's lock, fetched after it.
enum Plan {
    Ready(Option<Bytes>, ReadSource),
    Fetch(Version),
    Plain,
    /// Buffered by this transaction on another node of its DAG.
    Upstream(String),
}

impl Engine {
    /// Connects the engine to other sidecars (once; later calls are ignored).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Announces every commit made here on `feed` (once; later calls are ignored).
    pub fn set_commit_feed(
        &self,
        feed: tokio::sync::mpsc::UnboundedSender<crate::meta::CommitMeta>,
    ) {
        let _ = self.commit_feed.set(feed);
    }

    /// Makes GC cluster-aware: dropped data is deleted only once `watermark()`
    /// (the smallest GC watermark of all live nodes) passes its superseder.
    pub fn set_global_watermark(&self, watermark: Arc<dyn Fn() -> u64 + Send + Sync>) {
        let _ = self.global_watermark.set(watermark);
    }

    /// This node's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The committed-version index (for inspection and tests).
    pub fn index(&self) -> &VersionIndex {
        &self.index
    }

    /// Number of transactions running on this node.
    pub fn open_transactions(&self) -> usize {
        self.txns.lock().len()
    }

    /// Starts a transaction.
    pub fn start(&self) -> Result<Started, TxnError> {
        let tid: Arc<str> = Arc::from(uuid::Uuid::now_v7().to_string());
        self.register(Transaction::new(Arc::clone(&tid), 0))?;
        self.metrics.txn_started.inc();
        debug!(tid = %tid, "transaction started");
        Ok(Started { tid })
    }

    /// Adds a transaction to the table, stamping its start sequence under
    /// the table lock (so a concurrent GC pass accounts for it).
    pub(crate) fn register(&self, mut txn: Transaction) -> Result<TxnSlot, TxnError> {
        let mut txns = self.txns.lock();
        if txns.len() >= self.config.max_open_txns {
            return Err(TxnError::TooManyTransactions {
                limit: self.config.max_open_txns,
            });
        }
        if txn.upstream.is_empty() {
            txn.start_seq = self.index.current_seq();
        }
        let id = Arc::clone(&txn.id);
        let slot = Arc::new(Mutex::new(txn));
        txns.insert(id, Arc::clone(&slot));
        self.metrics.txn_open.set(txns.len() as i64);
        Ok(slot)
    }

    /// The running transaction `tid`, or why there is none.
    pub(crate) fn slot(&self, tid: &str) -> Result<TxnSlot, TxnError> {
        if let Some(slot) = self.txns.lock().get(tid) {
            return Ok(Arc::clone(slot));
        }
        match self.outcomes.lock().get(tid) {
            Some(Outcome::Committed { .. }) => Err(TxnError::Ended {
                tid: tid.to_string(),
                outcome: "committed",
            }),
            Some(Outcome::Aborted { .. }) => Err(TxnError::Ended {
                tid: tid.to_string(),
                outcome: "aborted",
            }),
            None => Err(TxnError::UnknownTransaction {
                tid: tid.to_string(),
            }),
        }
    }

    /// Reads keys in transaction `tid` (read-atomic, read-your-writes,
    /// repeatable), or, with `tid = None`, reads the newest committed values
    /// read-atomically across the keys of this one request.
    pub async fn get(
        &self,
        tid: Option<&str>,
        keys: &[String],
    ) -> Result<Vec<ReadValue>, TxnError> {
        match tid {
            Some(tid) => {
                let slot = self.slot(tid)?;
                self.read_in(&slot, keys).await
            }
            None => {
                let scratch: TxnSlot = Arc::new(Mutex::new(Transaction::new(Arc::from(""), 0)));
                self.read_in(&scratch, keys).await
            }
        }
    }

    async fn read_in(&self, slot: &TxnSlot, keys: &[String]) -> Result<Vec<ReadValue>, TxnError> {
        let (tid, plans) = match self.plan_reads(slot, keys) {
            Err(TxnError::NoConsistentVersion { key, .. }) => {
                // The lower bound names a commit this node has not heard of
                // yet (gossip lag): learn it from its commit record, retry once.
                let bound = slot.lock().lower.get(&key).cloned();
                if let Some(version) = bound {
                    self.fetch_commit(&version).await?;
                }
                self.plan_reads(slot, keys)?
            }
            other => other?,
        };
        let mut results: Vec<Option<Option<Bytes>>> = Vec::with_capacity(keys.len());
        let mut misses: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut plain: Vec<usize> = Vec::new();
        for (i, (key, plan)) in keys.iter().zip(&plans).enumerate() {
            match plan {
                Plan::Ready(value, source) => {
                    self.metrics.read_from(source.clone());
                    results.push(Some(value.clone()));
                }
                Plan::Fetch(version) => {
                    let id = VersionedKey {
                        key: Arc::from(key.as_str()),
                        version: version.clone(),
                    };
                    if let Some(value) = self.cache.get(&id) {
                        self.metrics.read_from(ReadSource::Cache);
                        results.push(Some(value));
                    } else {
                        misses.push((i, data_key(version, key)));
                        results.push(None);
                    }
                }
                Plan::Plain => {
                    plain.push(i);
                    results.push(None);
                }
                Plan::Upstream(node) => {
                    let remote = self.remote.get().ok_or_else(|| TxnError::Peer {
                        tid: tid.clone(),
                        peer: node.clone(),
                        reason: "no peer layer configured".into(),
                    })?;
                    let value = remote.read_buffered(node, &tid, key).await?;
                    self.metrics.read_from(ReadSource::Buffer);
                    results.push(Some(value));
                }
            }
        }
        if !misses.is_empty() {
            let storage_keys: Vec<Vec<u8>> = misses.iter().map(|(_, k)| k.clone()).collect();
            let fetched = self
                .storage
                .get_many(&storage_keys)
                .await
                .map_err(|e| TxnError::storage(&tid, e))?;
            for ((i, _), value) in misses.iter().zip(fetched) {
                self.metrics.read_from(ReadSource::Storage);
                let key = &keys[*i];
                let Plan::Fetch(version) = &plans[*i] else {
                    continue;
                };
                let value = value.map(Bytes::from);
                if value.is_none() && !version.is_base() {
                    return Err(TxnError::CorruptRecord {
                        key: key.clone(),
                        reason: format!("data of committed version {version} is missing"),
                    });
                }
                self.cache.insert(
                    VersionedKey {
                        key: Arc::from(key.as_str()),
                        version: version.clone(),
                    },
                    value.clone(),
                );
                results[*i] = Some(value);
            }
        }
        if !plain.is_empty() {
            let plain_keys: Vec<String> = plain.iter().map(|i| keys[*i].clone()).collect();
            let (values, markers) = self
                .read_plain_with_markers(&plain_keys)
                .await
                .map_err(|e| TxnError::storage(&tid, e))?;
            for ((i, value), marker) in plain.iter().zip(values).zip(markers) {
                self.metrics.read_from(ReadSource::Storage);
                let value = self
                    .settle_plain_read(slot, &keys[*i], value.map(Bytes::from), marker)
                    .await?;
                results[*i] = Some(value);
            }
        }
        Ok(keys
            .iter()
            .zip(results)
            .map(|(key, value)| ReadValue {
                key: key.clone(),
                value: value.flatten(),
            })
            .collect())
    }

    /// Decides, under the transaction's lock, which version each key reads.
    fn plan_reads(&self, slot: &TxnSlot, keys: &[String]) -> Result<(String, Vec<Plan>), TxnError> {
        let mut txn = slot.lock();
        txn.check_running()?;
        let tid = txn.id.to_string();
        let view = self.index.view();
        let mut plans = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = txn.writes.get(key) {
                plans.push(Plan::Ready(Some(value.clone()), ReadSource::Buffer));
                continue;
            }
            if let Some(node) = txn.upstream_writes.get(key) {
                plans.push(Plan::Upstream(node.clone()));
                continue;
            }
            if let Some(version) = txn.reads.get(key) {
                let plan = match txn.plain_values.get(key) {
                    Some(value) => Plan::Ready(value.clone(), ReadSource::Cache),
                    None => Plan::Fetch(version.clone()),
                };
                plans.push(plan);
                continue;
            }
            let Transaction { reads, lower, .. } = &mut *txn;
            match select_version(&view, key, reads, lower) {
                Selection::Version(version) => {
                    record_read(&view, key, &version, reads, lower);
                    plans.push(Plan::Fetch(version));
                }
                Selection::Plain => {
                    record_read(&view, key, &Version::base(), reads, lower);
                    plans.push(Plan::Plain);
                }
                Selection::NoneAllowed => {
                    warn!(tid = %tid, key = %key, "no consistent version");
                    return Err(TxnError::NoConsistentVersion {
                        tid,
                        key: key.clone(),
                    });
                }
            }
        }
        Ok((tid, plans))
    }

    /// A plain-key value was read for a key with no committed version here.
    /// If some commit wrote the key (its marker exists: possibly on another
    /// node, not yet installed here, or just now), the plain key may already
    /// hold that commit's published value: read the saved base version
    /// instead, so the read stays the base that the read set recorded, and
    /// learn that commit for later reads.
    async fn settle_plain_read(
        &self,
        slot: &TxnSlot,
        key: &str,
        value: Option<Bytes>,
        marker: Option<Vec<u8>>,
    ) -> Result<Option<Bytes>, TxnError> {
        if let Some(writer) = marker.as_deref().and_then(|m| std::str::from_utf8(m).ok()) {
            if !self.index.contains_txn(writer) {
                let _ = self.fetch_commit(&Version::new(0, writer)).await;
            }
        }
        let has_versions = marker.is_some() || !self.index.view().versions(key).is_empty();
        let value = if has_versions {
            let tid = slot.lock().id.to_string();
            self.storage
                .get(&data_key(&Version::base(), key))
                .await
                .map_err(|e| TxnError::storage(&tid, e))?
                .map(Bytes::from)
        } else {
            value
        };
        slot.lock()
            .plain_values
            .entry(key.to_string())
            .or_insert(value.clone());
        Ok(value)
    }

    /// Reads the plain values of `keys` and their markers. The marker of a
    /// key is read no earlier than its plain value (one snapshot where the
    /// backend's multi-key reads are atomic, else plain first, markers
    /// second): a plain value that is a publication implies its marker is seen.
    pub(crate) async fn read_plain_with_markers(
        &self,
        keys: &[String],
    ) -> Result<(Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>), crate::storage::StorageError> {
        let plain_keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let marker_keys: Vec<Vec<u8>> = keys.iter().map(|k| key_marker(k)).collect();
        if self.storage.snapshot_reads() {
            let mut asked = plain_keys;
            asked.extend(marker_keys);
            let mut values = self.storage.get_many(&asked).await?;
            let markers = values.split_off(keys.len());
            Ok((values, markers))
        } else {
            let values = self.storage.get_many(&plain_keys).await?;
            let markers = self.storage.get_many(&marker_keys).await?;
            Ok((values, markers))
        }
    }

    /// Buffers writes of transaction `tid` (values are serialized `LWWValue`s).
    /// All or nothing: one oversized value refuses the whole request.
    pub fn put(&self, tid: &str, writes: Vec<(String, Bytes)>) -> Result<(), TxnError> {
        self.check_value_sizes(&writes)?;
        let slot = self.slot(tid)?;
        let mut txn = slot.lock();
        txn.check_running()?;
        txn.buffer(writes, self.config.max_txn_write_bytes)
    }

    pub(crate) fn check_value_sizes(&self, writes: &[(String, Bytes)]) -> Result<(), TxnError> {
        for (key, value) in writes {
            if value.len() > self.config.max_value_bytes {
                return Err(TxnError::ValueTooLarge {
                    key: key.clone(),
                    size: value.len(),
                    limit: self.config.max_value_bytes,
                });
            }
        }
        Ok(())
    }

    /// A non-transactional put: the writes commit atomically as one
    /// transaction of their own.
    pub async fn put_plain(&self, writes: Vec<(String, Bytes)>) -> Result<Outcome, TxnError> {
        self.check_value_sizes(&writes)?;
        let started = self.start()?;
        if let Err(e) = self.put(&started.tid, writes) {
            self.abort(&started.tid);
            return Err(e);
        }
        self.commit(&started.tid).await
    }

    /// Aborts `tid`. Idempotent: an unknown or already aborted transaction
    /// answers `Aborted`; a committed one answers its commit.
    pub fn abort(&self, tid: &str) -> Outcome {
        if let Some(outcome) = self.outcomes.lock().get(tid) {
            return outcome;
        }
        let slot = self.txns.lock().get(tid).cloned();
        let Some(slot) = slot else {
            return Outcome::Aborted {
                reason: "unknown transaction".into(),
            };
        };
        if slot.lock().phase == Phase::Committing {
            // A commit is under way; its outcome will be the answer.
            return Outcome::Aborted {
                reason: "commit in progress".into(),
            };
        }
        self.finish(
            tid,
            Outcome::Aborted {
                reason: "aborted by client".into(),
            },
        )
    }

    /// Marks a running transaction failed: its reads and writes now fail and
    /// its commit answers `Aborted` with `reason`.
    pub fn fail(&self, tid: &str, reason: &str) {
        if let Ok(slot) = self.slot(tid) {
            let mut txn = slot.lock();
            if txn.phase == Phase::Running {
                txn.phase = Phase::Failed(reason.to_string());
            }
        }
    }

    /// Removes a transaction from the table and records its outcome (the
    /// first outcome recorded wins). Returns the recorded outcome.
    pub(crate) fn finish(&self, tid: &str, outcome: Outcome) -> Outcome {
        let recorded = self.outcomes.lock().record(Arc::from(tid), outcome);
        let removed = {
            let mut txns = self.txns.lock();
            let removed = txns.remove(tid).is_some();
            self.metrics.txn_open.set(txns.len() as i64);
            removed
        };
        if removed {
            match &recorded {
                Outcome::Committed { .. } => self.metrics.txn_committed.inc(),
                Outcome::Aborted { reason } => {
                    debug!(tid = %tid, %reason, "transaction aborted");
                    self.metrics.txn_aborted.inc()
                }
            };
        }
        recorded
    }

    /// Makes transaction `tid` known here for a DAG function downstream of
    /// the node `upstream`. If `upstream` is this node, nothing is needed.
    /// Otherwise the transaction's state is fetched from the upstream
    /// sidecar: registered here if new, merged in if the transaction already
    /// runs here (fan-in: a function with several upstream branches). If
    /// that fails, the transaction is marked failed here so its later calls
    /// fail and its commit aborts.
    pub async fn continue_from(&self, tid: &str, upstream: &str) -> Result<(), TxnError> {
        if let Some(done) = self.continue_now(tid, upstream) {
            return done;
        }
        let local = self.txns.lock().get(tid).cloned();
        let fetched = match self.remote.get() {
            Some(remote) => remote.fetch_transaction(upstream, tid).await,
            None => Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: upstream.to_string(),
                reason: "the transaction started on another node and the peer layer is off".into(),
            }),
        };
        match (fetched, local) {
            (Ok(state), None) => {
                self.register(state.into_transaction(tid, upstream))?;
                Ok(())
            }
            (Ok(state), Some(slot)) => {
                slot.lock().merge_upstream(state, upstream);
                Ok(())
            }
            (Err(err), Some(slot)) => {
                let mut txn = slot.lock();
                if txn.phase == Phase::Running {
                    txn.phase = Phase::Failed(err.to_string());
                }
                Err(err)
            }
            (Err(err), None) => {
                self.register_failed(tid, &err);
                Err(err)
            }
        }
    }

    /// [`Engine::continue_from`] without waiting, when no other node is
    /// involved (the upstream is this node, or the transaction already ended);
    /// `None` when the upstream sidecar must be asked.
    fn continue_now(&self, tid: &str, upstream: &str) -> Option<Result<(), TxnError>> {
        if let Some(outcome) = self.outcomes.lock().get(tid) {
            return Some(Err(TxnError::Ended {
                tid: tid.to_string(),
                outcome: if outcome.is_committed() {
                    "committed"
                } else {
                    "aborted"
                },
            }));
        }
        if upstream != self.config.node_address && !upstream.is_empty() {
            return None;
        }
        if self.txns.lock().contains_key(tid) {
            return Some(Ok(()));
        }
        let err = TxnError::UnknownTransaction {
            tid: tid.to_string(),
        };
        self.register_failed(tid, &err);
        Some(Err(err))
    }

    /// Registers `tid` here as failed (its calls fail, its commit aborts).
    fn register_failed(&self, tid: &str, err: &TxnError) {
        let mut txn = Transaction::new(Arc::from(tid), 0);
        txn.phase = Phase::Failed(err.to_string());
        // A full table is fine to ignore: unknown transactions fail too.
        let _ = self.register(txn);
    }

    /// What storage says of `tid`'s outcome (its decision key).
    pub(crate) async fn read_decision(&self, tid: &str) -> Result<Decision, TxnError> {
        let key = commit_record_key(tid);
        let record = self
            .storage
            .get(&key)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        match record {
            None => Ok(Decision::Undecided),
            Some(bytes) => Ok(match decode_decision(&key, &bytes)? {
                Some(meta) => Decision::Committed(meta.timestamp),
                None => Decision::Aborted,
            }),
        }
    }
}
