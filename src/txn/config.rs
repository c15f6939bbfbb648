//! Engine configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::failpoint::{EnvFailpoints, Failpoints};
use crate::meta::{Clock, SystemClock};
use crate::storage::{DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_VALUE_BYTES};

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
    /// How long the commit record of a transaction none of whose versions
    /// remain is kept before GC deletes it: retried commits of it answer
    /// COMMITTED meanwhile (later, ABORTED: nothing of it is visible).
    pub retired_record_retention: Duration,
    /// A participant prepared this long without hearing the coordinator's
    /// decision settles it from storage (committed if the commit record
    /// exists, otherwise it claims the decision with an abort marker). A
    /// coordinator writes its commit record only while its commit is younger
    /// than this minus `storage_timeout`, so the two never race.
    pub decision_timeout: Duration,
    /// Timeout of one storage call (bounds waits the engine makes on storage).
    pub storage_timeout: Duration,
    /// A participant whose buffered writes for a commit add up to at most
    /// this many bytes returns them in its vote, and the coordinator writes
    /// them with its own batch (one storage round trip per commit, none on
    /// the participant); larger ones it persists itself. 0 = always persist
    /// on the participant.
    pub ship_values_up_to: usize,
    /// How long executors wait for a get or put before they give up and
    /// take "no value" (Cloudburst's client: 5 s). A read answered later
    /// than half of this, or a node that stalled for half of it, dooms the
    /// transactions concerned: their executors may have seen nothing.
    pub client_timeout: Duration,
    /// On a store without conditional writes (Anna): how long after it was
    /// sent a write may still be applied. A write that timed out is assumed
    /// applied within this, or never; the engine waits it out before it
    /// decides a commit whose record write failed, and coordinators stop
    /// writing records this long before participants may fence them.
    pub write_horizon: Duration,
    /// How often storage is swept for publication intents older than this
    /// interval (committed values a dead coordinator did not publish).
    pub publish_sweep_interval: Duration,
    /// Whether this node is one of several (peers configured). A clustered
    /// node drops superseded versions only below the cluster-wide watermark,
    /// and never before it knows that watermark (e.g. right after a restart).
    pub clustered: bool,
    /// The engine's wall clock and source of random ids (a simulation
    /// injects its own).
    pub clock: Arc<dyn Clock>,
    /// Where the engine may be told to die at a named step (crash tests).
    pub failpoints: Arc<dyn Failpoints>,
    /// Test only: puts back one of the bugs the project fixed, so a test can
    /// prove it would catch it. Always `None` in a deployment.
    #[doc(hidden)]
    pub regression: Option<Regression>,
}

/// Bugs the multi-node tests found and the engine fixed, which a test can
/// put back (see [`EngineConfig::regression`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regression {
    /// Only the coordinator's own values reach their plain keys; nothing
    /// finishes a publication after a crash.
    UnpublishedParticipantWrites,
    /// Recovery collects as if the node were alone, before it knows the
    /// cluster watermark.
    RestartCollectsAlone,
    /// A read that fails leaves its transaction free to commit.
    FailedReadsCommit,
    /// A coordinator writes its commit record however long its commit has
    /// taken (racing participants' abort markers where writes are not
    /// conditional).
    CoordinatorIgnoresDeadline,
}

impl EngineConfig {
    /// The write horizon used unless one is configured: three storage call
    /// timeouts (a write that timed out is taken to land within that, or never).
    pub fn write_horizon_for(storage_timeout: Duration) -> Duration {
        storage_timeout * 3
    }
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
            retired_record_retention: Duration::from_secs(600),
            storage_timeout: DEFAULT_CALL_TIMEOUT,
            client_timeout: Duration::from_secs(5),
            ship_values_up_to: 1024 * 1024,
            write_horizon: EngineConfig::write_horizon_for(DEFAULT_CALL_TIMEOUT),
            publish_sweep_interval: Duration::from_secs(5),
            clustered: false,
            clock: Arc::new(SystemClock),
            failpoints: Arc::new(EnvFailpoints),
            regression: None,
        }
    }
}
