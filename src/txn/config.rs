//! Engine configuration.

use std::time::Duration;

use crate::storage::DEFAULT_MAX_VALUE_BYTES;

/// Limits and intervals of the transaction engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's address as peers and executors know it (a bare IP).
    pub node_address: String,
    /// Largest value (serialized `LWWValue`) one put may carry.
    pub max_value_bytes: usize,
    /// Largest total of buffered values in one transaction.
    pub max_txn_write_bytes: usize,
    /// Most transactions open on this node at once.
    pub max_open_txns: usize,
    /// A transaction with no activity for this long is aborted.
    pub lease: Duration,
    /// Bytes the value cache may hold.
    pub cache_bytes: u64,
    /// How often GC and the lease reaper run.
    pub gc_interval: Duration,
    /// How often storage is swept for orphaned data (aborted or crashed commits).
    pub orphan_sweep_interval: Duration,
    /// Data of a transaction with no commit record is an orphan once the
    /// transaction is older than this (it can no longer be committing).
    pub orphan_grace: Duration,
    /// How many finished transactions' outcomes are remembered for retries
    /// (about 150 bytes each). A retry of an older transaction is answered
    /// from its commit record while the record exists.
    pub outcome_retention: usize,
    /// A participant prepared this long without hearing the coordinator's
    /// decision settles it from storage (committed if the commit record
    /// exists, otherwise it claims the decision with an abort marker).
    pub decision_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_address: "127.0.0.1".into(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_txn_write_bytes: 64 * 1024 * 1024,
            max_open_txns: 100_000,
            lease: Duration::from_secs(60),
            cache_bytes: 256 * 1024 * 1024,
            gc_interval: Duration::from_secs(1),
            orphan_sweep_interval: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(120),
            outcome_retention: 100_000,
            decision_timeout: Duration::from_secs(10),
        }
    }
}
