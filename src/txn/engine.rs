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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::outcome::{AbortCause, Outcome, OutcomeLog};
use super::remote::Remote;
use super::transaction::{Phase, Transaction};
use super::{EngineConfig, PeerFailure, TxnError};
use crate::meta::{HybridClock, ValueCache, VersionIndex};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// The cluster-wide GC watermark, as the peer layer computes it: `None`
/// while it is not known yet (a node that just started has not heard from
/// every peer), else a commit timestamp below which no transaction on any
/// live node can need a superseded version.
pub type WatermarkFn = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

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
    /// This engine, for tasks it starts that outlive the call that started them.
    pub(crate) me: std::sync::Weak<Engine>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) index: VersionIndex,
    pub(crate) cache: ValueCache,
    pub(crate) clock: HybridClock,
    pub(crate) txns: Mutex<BTreeMap<Arc<str>, TxnSlot>>,
    pub(crate) outcomes: Mutex<OutcomeLog>,
    pub(crate) config: EngineConfig,
    pub(crate) metrics: Metrics,
    pub(crate) remote: std::sync::OnceLock<Arc<dyn Remote>>,
    /// Where commits made here are announced (the gossip task), if anywhere.
    pub(crate) commit_feed:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::meta::CommitMeta>>,
    /// Storage keys whose deletion failed; retried by the next GC pass.
    pub(crate) pending_deletes: Mutex<Vec<Vec<u8>>>,
    /// In a cluster: the cluster-wide GC watermark (see `gc.rs`). While it
    /// is unset or unknown, a clustered node drops and deletes nothing.
    pub(crate) global_watermark: std::sync::OnceLock<WatermarkFn>,
    /// Orphan sweep state: transactions whose data had no commit record,
    /// with when this node first found them so.
    pub(crate) suspected_orphans: Mutex<std::collections::BTreeMap<String, tokio::time::Instant>>,
    /// Abort markers seen in storage (or claimed here), with when this node
    /// first noted each; the orphan sweep deletes them once old.
    pub(crate) abort_markers: Mutex<std::collections::BTreeMap<String, tokio::time::Instant>>,
    /// Commit records of retired transactions (no version left), with when
    /// they retired: deleted once older than the retention.
    pub(crate) retiring: Mutex<std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)>>,
    /// Saved base values the orphan sweep found unneeded, with when it
    /// first did.
    pub(crate) bases_seen: Mutex<std::collections::BTreeMap<String, tokio::time::Instant>>,
    /// Publication intents seen by the sweep, with when this node first saw
    /// each (its own monotonic clock: wall clocks of other nodes may be off).
    pub(crate) intents_seen: Mutex<std::collections::BTreeMap<String, tokio::time::Instant>>,
    /// Tasks the engine spawned on its own (publications): they stop when
    /// the engine is dropped, as they would with the process.
    pub(crate) spawned: Mutex<tokio::task::JoinSet<()>>,
    /// This engine's incarnation: random, new each time a node starts, so a
    /// transaction can tell a restarted node from the one it was on.
    pub(crate) incarnation: u64,
    /// When this incarnation began (before recovery): a transaction that
    /// began earlier may have run here in the previous one.
    pub(crate) incarnation_began: tokio::time::Instant,
    /// When the liveness ticker last ran (see [`Engine::notice_stall`]);
    /// `None` while no ticker runs (background tasks not started).
    pub(crate) last_beat: Mutex<Option<tokio::time::Instant>>,
    /// Transactions whose commit outcome is being settled (see
    /// `commit.rs`): an abort of one answers `Unknown`, not `Aborted`.
    pub(crate) settling: Mutex<std::collections::BTreeSet<Arc<str>>>,
    /// When a read last began a catch-up scan of the commit records (held
    /// across that scan, so concurrent readers wait for one scan).
    pub(crate) last_catch_up: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.storage.describe())
            .field("node", &self.config.node_address)
            .finish_non_exhaustive()
    }
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

    /// Gives a clustered engine its cluster-wide GC watermark (once; later
    /// calls are ignored). A superseded version is dropped and its data
    /// deleted only once `watermark()` passes the commit that superseded it.
    pub fn set_global_watermark(&self, watermark: WatermarkFn) {
        let _ = self.global_watermark.set(watermark);
    }

    /// Stops here for good if the failpoints say this node dies at `name`.
    pub(crate) async fn failpoint(&self, name: &'static str) {
        if self.config.failpoints.hit(name) {
            std::future::pending::<()>().await;
        }
    }

    /// Notes that the node is running (the liveness ticker calls this often).
    pub(crate) fn beat(&self) {
        let first = self.last_beat.lock().is_none();
        if first {
            *self.last_beat.lock() = Some(tokio::time::Instant::now());
        } else {
            // After a pause, whichever runs first (this ticker or a request)
            // notices it.
            self.notice_stall();
        }
    }

    /// Dooms `txn` (see [`Transaction::doomed`]) and fences it in storage
    /// in the background, so that it cannot commit even if this node then
    /// crashes and forgets.
    pub(crate) fn doom_txn(&self, txn: &mut Transaction, reason: impl Into<String>) {
        if txn.doomed.is_some() {
            return;
        }
        txn.doom(reason);
        self.metrics.txn_doomed.inc();
        self.fence_later(&txn.id);
    }

    /// Claims `tid`'s decision key with an abort marker in the background
    /// (a few tries): a transaction that can only abort stays aborted if
    /// this node crashes. Not on stores without conditional writes, where a
    /// marker could race a commit record still landing.
    pub(crate) fn fence_later(&self, tid: &str) {
        if !self.storage.conditional_writes() {
            return;
        }
        let me = self.me.clone();
        let tid = tid.to_string();
        self.spawn_tied(async move {
            let mut pause = std::time::Duration::from_millis(50);
            for _ in 0..5 {
                let Some(engine) = me.upgrade() else {
                    return;
                };
                if engine.claim_abort(&tid).await.is_ok() {
                    return;
                }
                drop(engine);
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
        });
    }

    /// Test hook for simulations that pause a node by holding its I/O (a
    /// real pause freezes the liveness ticker too): the node last ran at `at`.
    #[doc(hidden)]
    pub fn paused_since(&self, at: tokio::time::Instant) {
        let mut last = self.last_beat.lock();
        if last.is_some() {
            *last = Some(at);
        }
    }

    /// Called on every request: if the node did not run for more than half
    /// the client timeout (the process was paused, or starved), requests
    /// that queued up meanwhile may have timed out at their executors, which
    /// then took "no value". Every transaction running here is doomed.
    pub(crate) fn notice_stall(&self) {
        let now = tokio::time::Instant::now();
        let stalled = {
            let mut last = self.last_beat.lock();
            let Some(previous) = *last else {
                return;
            };
            *last = Some(now);
            now.duration_since(previous)
        };
        if stalled <= self.config.client_timeout / 2 {
            return;
        }
        let reason = format!(
            "this node stalled for {stalled:?}: requests of the transaction may have timed out at its executors"
        );
        // In id order: the fences it starts go to storage in a fixed order.
        let mut running: Vec<(Arc<str>, TxnSlot)> = self
            .txns
            .lock()
            .iter()
            .map(|(tid, slot)| (Arc::clone(tid), Arc::clone(slot)))
            .collect();
        running.sort_by(|a, b| a.0.cmp(&b.0));
        let running: Vec<TxnSlot> = running.into_iter().map(|(_, slot)| slot).collect();
        let mut doomed = 0;
        for slot in running {
            let mut txn = slot.lock();
            if txn.phase == Phase::Running && txn.doomed.is_none() {
                self.doom_txn(&mut txn, reason.clone());
                doomed += 1;
            }
        }
        if doomed > 0 {
            warn!(
                ?stalled,
                doomed, "the node stalled; its running transactions can only abort"
            );
        }
    }

    /// Stops every task this engine started on its own (publications,
    /// commits being settled), as a process exit would. For embedders that
    /// tear an engine down without dropping every handle to it.
    pub fn stop_tasks(&self) {
        self.spawned.lock().abort_all();
    }

    /// Runs `task` in the background, tied to this engine's life.
    pub(crate) fn spawn_tied(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut spawned = self.spawned.lock();
        while spawned.try_join_next().is_some() {}
        spawned.spawn(task);
    }

    /// This node's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This node's wall clock, in microseconds (what fronts stamp on the
    /// `LWWValue`s they build for clients that send bare bytes).
    pub fn wall_micros(&self) -> u64 {
        self.clock.wall_micros()
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
        let tid: Arc<str> = Arc::from(self.clock.new_tid());
        let start_ts = self.clock.wall_micros();
        self.register(Transaction::new(Arc::clone(&tid), 0, start_ts))?;
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
        txn.start_seq = self.index.current_seq();
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
            Some(Outcome::Unknown { .. }) => Err(TxnError::Ended {
                tid: tid.to_string(),
                outcome: "being settled",
            }),
            None => Err(TxnError::UnknownTransaction {
                tid: tid.to_string(),
            }),
        }
    }

    /// [`Engine::slot`] for an executor's read or write. A transaction this
    /// node does not know is recorded as failed (until its lease runs out):
    /// if this node restarted and lost its state, a later `continue` must
    /// not bring the transaction back here as if nothing had been lost.
    fn slot_for_executor(&self, tid: &str) -> Result<TxnSlot, TxnError> {
        let slot = self.slot(tid);
        if let Err(e @ TxnError::UnknownTransaction { .. }) = &slot {
            self.register_failed(tid, e);
            self.fence_later(tid);
        }
        slot
    }

    /// Reads keys in transaction `tid` (read-atomic, read-your-writes,
    /// repeatable), or, with `tid = None`, reads the newest committed values
    /// read-atomically across the keys of this one request.
    pub async fn get(
        &self,
        tid: Option<&str>,
        keys: &[String],
    ) -> Result<Vec<ReadValue>, TxnError> {
        self.notice_stall();
        match tid {
            Some(tid) => {
                let slot = self.slot_for_executor(tid)?;
                let started = tokio::time::Instant::now();
                let read = self.read_in(&slot, keys).await;
                let took = started.elapsed();
                if took > self.config.client_timeout / 2 {
                    // The executor may have given up on this answer.
                    self.doom_txn(
                        &mut slot.lock(),
                        format!("a read took {took:?}: its executor may have timed out and seen nothing"),
                    );
                }
                if let Err(e) = &read {
                    let regressed =
                        self.config.regression == Some(super::Regression::FailedReadsCommit);
                    if e.dooms_transaction() && !regressed {
                        warn!(tid = %tid, error = %e, "read failed; the transaction can only abort");
                        self.doom_txn(&mut slot.lock(), e.to_string());
                    }
                }
                read
            }
            None => {
                let start_ts = self.clock.wall_micros();
                let scratch: TxnSlot =
                    Arc::new(Mutex::new(Transaction::new(Arc::from(""), 0, start_ts)));
                self.read_in(&scratch, keys).await
            }
        }
    }

    /// Buffers writes of transaction `tid` (values are serialized `LWWValue`s).
    /// All or nothing: one oversized value refuses the whole request, and
    /// dooms the transaction (a commit without that write would be half of it).
    pub fn put(&self, tid: &str, writes: Vec<(String, Bytes)>) -> Result<(), TxnError> {
        self.notice_stall();
        let slot = self.slot_for_executor(tid)?;
        let mut txn = slot.lock();
        txn.check_running()?;
        let buffered = self
            .check_value_sizes(&writes)
            .and_then(|()| txn.buffer(writes, self.config.max_txn_write_bytes));
        if let Err(e) = &buffered {
            self.doom_txn(&mut txn, e.to_string());
        }
        buffered
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
    pub async fn put_outside_transaction(
        &self,
        writes: Vec<(String, Bytes)>,
    ) -> Result<Outcome, TxnError> {
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
        if self.settling.lock().contains(tid) {
            return Outcome::Unknown {
                reason: "its commit is being settled".into(),
            };
        }
        let slot = self.txns.lock().get(tid).cloned();
        let Some(slot) = slot else {
            return Outcome::Aborted {
                cause: AbortCause::UnknownTransaction,
            };
        };
        if slot.lock().phase == Phase::Committing {
            // A commit is under way; its outcome will be the answer.
            return Outcome::Aborted {
                cause: AbortCause::CommitInProgress,
            };
        }
        self.finish(
            tid,
            Outcome::Aborted {
                cause: AbortCause::Requested,
            },
        )
    }

    /// Dooms a running transaction because one of its requests could not be
    /// answered or applied (`reason` says why): it keeps serving reads and
    /// writes, but its commit answers `Aborted` on every node of its DAG.
    pub fn doom(&self, tid: &str, reason: &str) {
        if let Ok(slot) = self.slot(tid) {
            let mut txn = slot.lock();
            if txn.phase == Phase::Running {
                self.doom_txn(&mut txn, reason);
            }
        }
    }

    /// Removes a transaction from the table and records its outcome (the
    /// first outcome recorded wins). Returns the recorded outcome.
    pub(crate) fn finish(&self, tid: &str, outcome: Outcome) -> Outcome {
        let recorded = self.outcomes.lock().record(Arc::from(tid), outcome);
        if !matches!(recorded, Outcome::Unknown { .. }) {
            self.settling.lock().remove(tid);
        }
        let removed = {
            let mut txns = self.txns.lock();
            let removed = txns.remove(tid).is_some();
            self.metrics.txn_open.set(txns.len() as i64);
            removed
        };
        if removed {
            match &recorded {
                Outcome::Committed { .. } => self.metrics.txn_committed.inc(),
                Outcome::Aborted { cause } => {
                    debug!(tid = %tid, %cause, "transaction aborted");
                    self.metrics.txn_aborted.inc()
                }
                Outcome::Unknown { reason } => {
                    warn!(tid = %tid, %reason, "commit outcome unknown; settling it");
                    self.settling.lock().insert(Arc::from(tid));
                    0
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
        self.notice_stall();
        if let Some(done) = self.continue_now(tid, upstream) {
            return done;
        }
        let local = self.txns.lock().get(tid).cloned();
        let asked = tokio::time::Instant::now();
        let fetched = match self.remote.get() {
            Some(remote) => {
                remote
                    .fetch_transaction(upstream, tid, self.incarnation)
                    .await
            }
            None => Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: upstream.to_string(),
                failure: PeerFailure::Off,
            }),
        };
        match (fetched, local) {
            (Ok(state), None) => {
                let start_seq = self.index.current_seq();
                let fetch = asked.elapsed();
                let older_than_me = state.age + fetch >= self.incarnation_began.elapsed();
                let mut txn = state.into_transaction(tid, upstream, start_seq, fetch);
                self.check_visits(&mut txn);
                self.check_unfenced_past(&mut txn, older_than_me);
                self.register(txn)?;
                Ok(())
            }
            (Ok(state), Some(slot)) => {
                let conflicts = slot.lock().merge_upstream(state, upstream);
                self.check_visits(&mut slot.lock());
                let verdict = if conflicts.is_empty() {
                    let reads = slot.lock().reads.clone();
                    self.check_reads_together(&reads).await
                } else {
                    Err(format!(
                        "branches of the DAG read {} at different versions",
                        conflicts.join(", ")
                    ))
                };
                if let Err(reason) = verdict {
                    warn!(tid = %tid, %reason, "fan-in found the DAG's reads inconsistent; it can only abort");
                    self.doom_txn(&mut slot.lock(), reason);
                }
                Ok(())
            }
            (Err(err), Some(slot)) => {
                let failed_now = {
                    let mut txn = slot.lock();
                    let running = txn.phase == Phase::Running;
                    if running {
                        txn.phase = Phase::Failed(err.to_string());
                    }
                    running
                };
                if failed_now {
                    self.fence_before_answering(tid).await;
                }
                self.failpoint("continue.failed").await;
                Err(err)
            }
            (Err(err), None) => {
                self.register_failed(tid, &err);
                self.fence_before_answering(tid).await;
                self.failpoint("continue.failed").await;
                Err(err)
            }
        }
    }

    /// Fences `tid` (a transaction whose continue failed here) in storage
    /// before the continue is answered, on stores with conditional writes:
    /// the upstream node never learned the transaction came here, so if
    /// this node crashes after answering, nothing else would remember that
    /// the DAG's function here ran on a failed transaction (its reads
    /// answered nothing, which its executor took for "no value"). If storage
    /// cannot take the fence now, it is retried in the background.
    ///
    /// Stores without conditional writes get no fence (a marker there could
    /// overwrite a commit record still landing); a restarted node refuses
    /// transactions older than itself instead ([`Engine::check_unfenced_past`]).
    async fn fence_before_answering(&self, tid: &str) {
        if !self.storage.conditional_writes() {
            return;
        }
        if let Err(e) = self.claim_abort(tid).await {
            warn!(tid = %tid, error = %e, "cannot fence a failed continue yet; retrying in the background");
            self.fence_later(tid);
        }
    }

    /// On stores without conditional writes, dooms a transaction that
    /// `began_before_me` (this node's incarnation): it may have met a failed
    /// continue here in the previous incarnation, which no fence records
    /// there (see [`Engine::fence_before_answering`]), and its function's
    /// reads here then answered nothing. DAGs in flight across a restart of
    /// one of their nodes abort when they reach it again.
    fn check_unfenced_past(&self, txn: &mut Transaction, began_before_me: bool) {
        if began_before_me && !self.storage.conditional_writes() && txn.doomed.is_none() {
            warn!(tid = %txn.id, "the transaction began before this node restarted, and this store keeps no fence of what it met here then; it can only abort");
            self.doom_txn(
                txn,
                "it began before this node restarted: what it met here then is unknown",
            );
        }
    }

    /// Dooms a transaction that was on this node in an earlier incarnation:
    /// the node restarted since, and whatever the transaction did here then
    /// (a branch's reads and writes) is lost.
    fn check_visits(&self, txn: &mut Transaction) {
        let me = &self.config.node_address;
        let earlier = txn
            .visited
            .iter()
            .any(|(node, incarnation)| node == me && *incarnation != self.incarnation);
        if earlier && txn.doomed.is_none() {
            warn!(tid = %txn.id, "the transaction was here before this node restarted; it can only abort");
            self.doom_txn(
                txn,
                "it was on this node before the node restarted; what it did here is lost",
            );
        }
    }

    /// Checks that `reads` (gathered from several branches of a DAG) are
    /// read-atomic together; `Err` says why not. Versions this node does not
    /// know are learned from their commit records first; one that cannot be
    /// learned fails the check (the DAG could not be shown consistent).
    pub(crate) async fn check_reads_together(
        &self,
        reads: &BTreeMap<String, crate::meta::Version>,
    ) -> Result<(), String> {
        let mut unknown: Vec<&str> = reads
            .values()
            .filter(|v| !v.is_base() && !self.index.contains_txn(&v.tid))
            .map(|v| &*v.tid)
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            self.learn_from_records(&unknown)
                .await
                .map_err(|e| format!("cannot check the DAG's reads together: {e}"))?;
        }
        let view = self.index.view();
        if let Some(v) = reads
            .values()
            .find(|v| !v.is_base() && view.txn(&v.tid).is_none())
        {
            return Err(format!(
                "cannot check the DAG's reads together: version {v} is no longer known"
            ));
        }
        match super::read_rule::find_fracture(&view, reads) {
            None => Ok(()),
            Some(f) => Err(format!(
                "the DAG's branches read {} at {} but also a version {} that supersedes it",
                f.key, f.read, f.newer
            )),
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
        self.fence_later(tid);
        Some(Err(err))
    }

    /// Registers `tid` here as failed (its calls fail, its commit aborts);
    /// the caller fences it in storage.
    fn register_failed(&self, tid: &str, err: &TxnError) {
        let mut txn = Transaction::new(Arc::from(tid), 0, self.clock.wall_micros());
        txn.phase = Phase::Failed(err.to_string());
        // A full table is fine to ignore: unknown transactions fail too.
        let _ = self.register(txn);
    }
}
