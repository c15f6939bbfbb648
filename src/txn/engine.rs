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

use super::keys::{commit_record_key, data_key};
use super::outcome::{Outcome, OutcomeLog};
use super::read_rule::{record_read, select_version, Selection};
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
    pub(crate) remote: Option<Arc<dyn Remote>>,
    /// Storage keys whose deletion failed; retried by the next GC pass.
    pub(crate) pending_deletes: Mutex<Vec<Vec<u8>>>,
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
}

impl Engine {
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
        let (tid, plans) = self.plan_reads(slot, keys)?;
        let mut results: Vec<Option<Option<Bytes>>> = Vec::with_capacity(keys.len());
        let mut misses: Vec<(usize, Vec<u8>)> = Vec::new();
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
                    misses.push((i, key.as_bytes().to_vec()));
                    results.push(None);
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
                let value = match &plans[*i] {
                    Plan::Fetch(version) => {
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
                        value
                    }
                    _ => {
                        self.settle_plain_read(slot, key, value.map(Bytes::from))
                            .await?
                    }
                };
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

    /// A plain-key value was read for a key with no committed version. If a
    /// commit installed the key's first version meanwhile, the plain key may
    /// already hold that commit's published value: read the saved base
    /// version instead, so the read stays the base the read set recorded.
    async fn settle_plain_read(
        &self,
        slot: &TxnSlot,
        key: &str,
        value: Option<Bytes>,
    ) -> Result<Option<Bytes>, TxnError> {
        let has_versions = !self.index.view().versions(key).is_empty();
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
    /// the node `upstream`. A transaction already known here, or one whose
    /// upstream is this node, needs nothing. Otherwise its state is fetched
    /// from the upstream sidecar; if that fails, the transaction is
    /// registered as failed so its later calls fail and its commit aborts.
    pub async fn continue_from(&self, tid: &str, upstream: &str) -> Result<(), TxnError> {
        if self.txns.lock().contains_key(tid) {
            return Ok(());
        }
        if let Some(outcome) = self.outcomes.lock().get(tid) {
            return Err(TxnError::Ended {
                tid: tid.to_string(),
                outcome: if outcome.is_committed() {
                    "committed"
                } else {
                    "aborted"
                },
            });
        }
        let fetched = match &self.remote {
            Some(remote) if upstream != self.config.node_address => {
                remote.fetch_transaction(upstream, tid).await
            }
            _ => Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: upstream.to_string(),
                reason: "transaction is not known here and no peer can supply it".into(),
            }),
        };
        match fetched {
            Ok(state) => {
                self.register(state.into_transaction(tid, upstream))?;
                Ok(())
            }
            Err(err) => {
                let mut txn = Transaction::new(Arc::from(tid), 0);
                txn.phase = Phase::Failed(err.to_string());
                // Ignore a full table here: the transaction is failed anyway.
                let _ = self.register(txn);
                Err(err)
            }
        }
    }

    /// Whether a commit record for `tid` exists in storage.
    pub(crate) async fn commit_record_exists(&self, tid: &str) -> Result<Option<u64>, TxnError> {
        let record = self
            .storage
            .get(&commit_record_key(tid))
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        match record {
            None => Ok(None),
            Some(bytes) => super::recovery::decode_commit_record(&commit_record_key(tid), &bytes)
                .map(|meta| Some(meta.timestamp)),
        }
    }
}
