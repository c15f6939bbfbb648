//! Read-atomic transactions: the engine, the read rule, the commit protocol,
//! garbage collection and recovery.
//!
//! Nothing here knows about ZeroMQ or peers: other sidecars are reached only
//! through the [`Remote`] trait.

mod background;
mod client_call;
mod commit;
mod config;
mod engine;
mod error;
mod gc;
pub mod keys;
mod outcome;
mod participant;
mod publish;
mod read;
pub mod read_rule;
mod record;
mod recovery;
mod remote;
mod transaction;

pub use background::BackgroundTasks;
pub use config::{EngineConfig, Regression};
pub use engine::{Engine, ReadValue, Started, WatermarkFn};
pub use error::{PeerFailure, TxnError};
pub use outcome::{AbortCause, Outcome, OutcomeLog};
pub use record::{
    decode_commit_record, decode_decision, decode_intent, Decision, COMMIT_RECORD_FORMAT,
};
pub use remote::{
    ClientCall, ClientEnd, ClientReply, PrepareRequest, PreparedVote, Remote, UpstreamState,
};
pub use transaction::{Phase, Transaction};

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::meta::{HybridClock, ValueCache, VersionIndex};
use crate::metrics::Metrics;
use crate::storage::Storage;

impl Engine {
    /// Opens the engine over `storage`: rebuilds the committed-version index
    /// from the commit records there and collects what recovery finds
    /// superseded. Background work (GC, lease reaper, orphan sweep) starts
    /// with [`Engine::spawn_background`].
    pub async fn open(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
        metrics: Metrics,
        remote: Option<Arc<dyn Remote>>,
    ) -> Result<Arc<Engine>, TxnError> {
        let incarnation = config.clock.entropy() as u64;
        let engine = Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            incarnation,
            incarnation_began: tokio::time::Instant::now(),
            storage,
            index: VersionIndex::new(),
            cache: ValueCache::new(config.cache_bytes),
            clock: HybridClock::with_source(std::sync::Arc::clone(&config.clock)),
            txns: Mutex::new(BTreeMap::new()),
            outcomes: Mutex::new(OutcomeLog::new(config.outcome_retention)),
            config,
            metrics,
            remote: std::sync::OnceLock::new(),
            commit_feed: std::sync::OnceLock::new(),
            pending_deletes: Mutex::new(Vec::new()),
            global_watermark: std::sync::OnceLock::new(),
            suspected_orphans: Mutex::new(Default::default()),
            spawned: Mutex::new(tokio::task::JoinSet::new()),
            last_catch_up: tokio::sync::Mutex::new(None),
            settling: Mutex::new(Default::default()),
            last_beat: Mutex::new(None),
            abort_markers: Mutex::new(Default::default()),
            intents_seen: Mutex::new(Default::default()),
            bases_seen: Mutex::new(Default::default()),
            retiring: Mutex::new(Default::default()),
        });
        if let Some(remote) = remote {
            engine.set_remote(remote);
        }
        engine.recover().await?;
        Ok(engine)
    }
}
