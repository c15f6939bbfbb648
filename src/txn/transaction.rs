//! One running transaction's state on this node.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use bytes::Bytes;

use super::TxnError;
use crate::meta::Version;

/// Where a running transaction is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reads and writes are accepted.
    Running,
    /// Commit has begun; reads and writes are refused.
    Committing,
    /// Failed (upstream unreachable, storage error, ...); it can only abort.
    Failed(String),
    /// A participant of a multi-node commit: it voted yes (at `at`), its
    /// buffered writes persisted here or handed to the coordinator, and it
    /// waits for the coordinator's decision.
    Prepared {
        /// When it was prepared.
        at: Instant,
        /// The keys it persisted here.
        keys: Vec<String>,
        /// The keys whose values it returned in its vote instead (the
        /// coordinator writes them; nothing of them is stored here).
        shipped: Vec<String>,
        /// The coordinator's writes, cached here once the commit is known.
        coordinator_values: Vec<(String, Bytes)>,
    },
}

/// A transaction's state: its read set, lower bounds and write buffer.
///
/// Guarded by its own mutex (held for in-memory work only, never across I/O).
#[derive(Debug)]
pub struct Transaction {
    /// Transaction id.
    pub id: Arc<str>,
    /// Index install sequence when it started (or continued) here: bounds
    /// what this node's GC may drop.
    pub start_seq: u64,
    /// Wall-clock time (microseconds) it started on its first node: bounds
    /// what any node's GC may drop while it runs (see `gc.rs`).
    pub start_ts: u64,
    /// Phase.
    pub phase: Phase,
    /// Why a read or write of this transaction could not be answered
    /// truthfully, if one could not: it keeps serving reads and writes, but
    /// it can only abort (its commit answers ABORTED everywhere).
    pub doomed: Option<String>,
    /// Buffered writes: key -> serialized `LWWValue` as the client sent it.
    pub writes: BTreeMap<String, Bytes>,
    /// Bytes buffered in `writes`.
    pub write_bytes: usize,
    /// Read set: key -> version read.
    pub reads: BTreeMap<String, Version>,
    /// Lower bounds: key -> newest version of it written by a transaction read from.
    pub lower: BTreeMap<String, Version>,
    /// Plain-key values read for keys with no committed version (repeatable reads).
    pub plain_values: BTreeMap<String, Option<Bytes>>,
    /// Nodes upstream in the DAG that hold buffered writes of this transaction.
    pub upstream: Vec<String>,
    /// Keys buffered on upstream nodes, by node.
    pub upstream_writes: BTreeMap<String, String>,
    /// Values of keys in `upstream_writes` that came with the upstream
    /// state (read here without asking their node).
    pub upstream_values: BTreeMap<String, Bytes>,
    /// Every (node, incarnation) the transaction is known to have been on.
    pub visited: Vec<(String, u64)>,
    /// When it started on its first node, on this node's monotonic clock:
    /// never later than the truth (a continue counts the whole round trip
    /// of its fetch as transit), so "began before this node's incarnation"
    /// errs towards yes. Free of wall-clock skew between nodes.
    pub began: Instant,
    /// Last client activity (for the lease).
    pub last_active: Instant,
}

impl Transaction {
    /// A new running transaction.
    pub fn new(id: Arc<str>, start_seq: u64, start_ts: u64) -> Self {
        Transaction {
            id,
            start_seq,
            start_ts,
            phase: Phase::Running,
            doomed: None,
            writes: BTreeMap::new(),
            write_bytes: 0,
            reads: BTreeMap::new(),
            lower: BTreeMap::new(),
            plain_values: BTreeMap::new(),
            upstream: Vec::new(),
            upstream_writes: BTreeMap::new(),
            upstream_values: BTreeMap::new(),
            visited: Vec::new(),
            began: Instant::now(),
            last_active: Instant::now(),
        }
    }

    /// Fails unless reads and writes are allowed; refreshes the lease.
    pub fn check_running(&mut self) -> Result<(), TxnError> {
        match &self.phase {
            Phase::Running => {
                self.last_active = Instant::now();
                Ok(())
            }
            Phase::Committing | Phase::Prepared { .. } => Err(TxnError::Committing {
                tid: self.id.to_string(),
            }),
            Phase::Failed(reason) => Err(TxnError::Failed {
                tid: self.id.to_string(),
                reason: reason.clone(),
            }),
        }
    }

    /// Buffers writes, enforcing the per-transaction byte limit (all or nothing).
    pub fn buffer(&mut self, writes: Vec<(String, Bytes)>, limit: usize) -> Result<(), TxnError> {
        let mut size = self.write_bytes;
        for (key, value) in &writes {
            let old = self.writes.get(key).map_or(0, |v| v.len() + key.len());
            size = size - old + value.len() + key.len();
        }
        if size > limit {
            return Err(TxnError::WriteSetTooLarge {
                tid: self.id.to_string(),
                size,
                limit,
            });
        }
        for (key, value) in writes {
            if let Some(old) = self.writes.insert(key.clone(), value.clone()) {
                self.write_bytes -= old.len() + key.len();
            }
            self.write_bytes += value.len() + key.len();
        }
        Ok(())
    }

    /// Adds (node, incarnation) pairs to where the transaction has been.
    pub fn note_visits(&mut self, visits: impl IntoIterator<Item = (String, u64)>) {
        for visit in visits {
            if !self.visited.contains(&visit) {
                self.visited.push(visit);
            }
        }
    }

    /// Dooms the transaction (the first reason is kept): see [`Transaction::doomed`].
    pub fn doom(&mut self, reason: impl Into<String>) {
        if self.doomed.is_none() {
            self.doomed = Some(reason.into());
        }
    }

    /// Merges the state of another upstream branch of the DAG (fan-in):
    /// its buffered keys (this node's own writes win), its reads and lower
    /// bounds where this node has none (the newer bound wins), its upstream
    /// nodes, the older start time, and a failure of that branch. Returns
    /// the keys the two branches read at different versions (the caller
    /// dooms the transaction if there are any).
    pub fn merge_upstream(&mut self, state: super::UpstreamState, upstream: &str) -> Vec<String> {
        self.start_ts = self.start_ts.min(state.start_ts);
        if let Some(reason) = state.doomed {
            self.doom(reason);
        }
        self.note_visits(state.visited);
        let mut values: BTreeMap<String, Bytes> = state.buffered_values.into_iter().collect();
        for (key, node) in state.buffered {
            if self.writes.contains_key(&key) || self.upstream_writes.contains_key(&key) {
                continue;
            }
            if let Some(value) = values.remove(&key) {
                self.upstream_values.insert(key.clone(), value);
            }
            self.upstream_writes.insert(key, node);
        }
        let conflicts = super::read_rule::merge_reads(&mut self.reads, state.reads);
        for (key, version) in state.lower {
            match self.lower.get_mut(&key) {
                Some(bound) if *bound >= version => {}
                Some(bound) => *bound = version,
                None => {
                    self.lower.insert(key, version);
                }
            }
        }
        for node in state
            .upstream_nodes
            .into_iter()
            .chain([upstream.to_string()])
        {
            if !self.upstream.contains(&node) {
                self.upstream.push(node);
            }
        }
        self.last_active = Instant::now();
        conflicts
    }
}
