//! The engine's view of other sidecars: a small trait the peer layer
//! implements, so nothing under `txn/` depends on the transport and tests
//! can drive the engine with an in-process fake.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::transaction::Transaction;
use super::TxnError;
use crate::meta::{CommitMeta, Version};

/// What an upstream node knows of a transaction (its DAG functions so far).
#[derive(Debug, Clone, Default)]
pub struct UpstreamState {
    /// Read set: key -> version read.
    pub reads: Vec<(String, Version)>,
    /// Lower bounds: key -> newest version written by a transaction read from.
    pub lower: Vec<(String, Version)>,
    /// Keys buffered upstream, with the node that buffers each.
    pub buffered: Vec<(String, String)>,
    /// Values of some keys of `buffered` (read without asking their node).
    pub buffered_values: Vec<(String, Bytes)>,
    /// Every node upstream that holds buffered writes (commit participants).
    pub upstream_nodes: Vec<String>,
    /// When the transaction started on its first node (wall clock, microseconds).
    pub start_ts: u64,
    /// Why the transaction is doomed, if a read or write upstream failed.
    pub doomed: Option<String>,
    /// Every (node, incarnation) the transaction is known to have been on.
    pub visited: Vec<(String, u64)>,
    /// How long ago it started on its first node, as the sender estimates
    /// it (never less than the truth, transit aside).
    pub age: Duration,
}

impl UpstreamState {
    /// A local transaction continuing this state; `upstream` is the node it
    /// came from, `start_seq` this node's current install sequence, `fetch`
    /// how long fetching the state took (counted as transit, so the age
    /// errs upward).
    pub(crate) fn into_transaction(
        self,
        tid: &str,
        upstream: &str,
        start_seq: u64,
        fetch: Duration,
    ) -> Transaction {
        let mut txn = Transaction::new(Arc::from(tid), start_seq, self.start_ts);
        let now = tokio::time::Instant::now();
        // Only an age beyond this machine's uptime fails to subtract; the
        // engine judges "older than this node" from the durations anyway.
        txn.began = now.checked_sub(self.age + fetch).unwrap_or(now);
        txn.doomed = self.doomed;
        txn.visited = self.visited;
        txn.reads = self.reads.into_iter().collect();
        txn.lower = self.lower.into_iter().collect();
        txn.upstream_writes = self.buffered.into_iter().collect();
        txn.upstream_values = self
            .buffered_values
            .into_iter()
            .filter(|(key, _)| txn.upstream_writes.contains_key(key))
            .collect();
        txn.upstream = self.upstream_nodes;
        if !txn.upstream.iter().any(|n| n == upstream) {
            txn.upstream.push(upstream.to_string());
        }
        txn
    }
}

/// Phase one as a coordinator asks it of one participant.
#[derive(Debug, Clone, Default)]
pub struct PrepareRequest {
    /// The commit's timestamp.
    pub timestamp: u64,
    /// Keys the participant must neither persist nor ship: the DAG's latest
    /// write of them is on another node.
    pub exclude: Vec<String>,
    /// The participant returns its values in the vote instead of persisting
    /// them if they add up to at most this many bytes (0: always persist).
    pub ship_up_to: usize,
    /// The coordinator's own writes, which the participant caches at the
    /// commit's version once it learns the commit (empty: none sent).
    pub coordinator_values: Vec<(String, Bytes)>,
}

/// A participant's vote for a commit: what it persisted and what the
/// transaction read there.
#[derive(Debug, Clone, Default)]
pub struct PreparedVote {
    /// The keys it persisted (durable when the vote arrives).
    pub keys: Vec<String>,
    /// The writes it returned instead of persisting (the coordinator
    /// writes them with its own batch); disjoint from `keys`.
    pub shipped: Vec<(String, Bytes)>,
    /// Its read set: key -> version read.
    pub reads: Vec<(String, Version)>,
    /// Every (node, incarnation) the transaction is known on the voter to
    /// have been on, the voter itself included.
    pub visited: Vec<(String, u64)>,
}

/// A call of a transaction's client, run on the node that holds the
/// transaction (the gRPC front forwards calls for transactions that another
/// node started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCall {
    /// Read these keys.
    Read(Vec<String>),
    /// Buffer these writes (key, serialized `LWWValue`).
    Write(Vec<(String, Bytes)>),
    /// Commit.
    Commit,
    /// Abort.
    Abort,
}

/// How a transaction ended, as a client call reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEnd {
    /// Committed.
    Committed,
    /// Aborted: nothing of it is visible.
    Aborted,
    /// Not known yet (storage failed at the commit point); retry the commit.
    Unknown,
}

/// What a [`ClientCall`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    /// The values read, in the order asked (`None`: the key has no value).
    Values(Vec<Option<Bytes>>),
    /// The writes are buffered.
    Written,
    /// The transaction ended so.
    Ended(ClientEnd),
}

/// Calls to other sidecars that the engine needs. Every call has a timeout
/// and fails with [`TxnError::Peer`] naming the peer.
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// Fetches transaction `tid`'s state from `node`, on behalf of this
    /// node in its incarnation `incarnation` (which `node` remembers).
    async fn fetch_transaction(
        &self,
        node: &str,
        tid: &str,
        incarnation: u64,
    ) -> Result<UpstreamState, TxnError>;

    /// Reads the value `tid` buffered for `key` on `node`.
    async fn read_buffered(
        &self,
        node: &str,
        tid: &str,
        key: &str,
    ) -> Result<Option<Bytes>, TxnError>;

    /// Phase one of the commit on `node`: its vote, with the values `tid`
    /// buffered there except for `request.exclude`, either persisted there
    /// (their keys; `Ok` means durable) or, if they add up to at most
    /// `request.ship_up_to` bytes, returned for the coordinator to write.
    /// Also returns what the transaction read there.
    async fn prepare(
        &self,
        node: &str,
        tid: &str,
        request: &PrepareRequest,
    ) -> Result<PreparedVote, TxnError>;

    /// Tells `node` how `tid` ended: `Some(commit)` = committed (with the
    /// whole transaction's metadata), `None` = aborted.
    async fn decide(
        &self,
        node: &str,
        tid: &str,
        commit: Option<&CommitMeta>,
    ) -> Result<(), TxnError>;

    /// Runs a client's `call` of transaction `tid` on `node`, which holds it.
    /// A remote that cannot forward calls answers that the peer layer is off.
    async fn call_transaction(
        &self,
        node: &str,
        tid: &str,
        call: ClientCall,
    ) -> Result<ClientReply, TxnError> {
        let _ = call;
        Err(TxnError::Peer {
            tid: tid.to_string(),
            peer: node.to_string(),
            failure: super::PeerFailure::Off,
        })
    }
}
