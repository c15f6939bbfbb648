//! Prometheus metrics of one sidecar (`/metrics`).
//!
//! Every metric is a cheap atomic; handles are cloned into whoever updates
//! them. [`Metrics::encode`] renders the text exposition format.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Where a read was served from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReadSource {
    /// The transaction's own buffered write (or an upstream node's buffer).
    Buffer,
    /// The value cache.
    Cache,
    /// The storage engine (a versioned value, or a plain key).
    Storage,
}

/// Label set for reads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    /// Where the read was served from.
    pub source: ReadSource,
}

/// Label set for per-endpoint request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `get`, `put`, `start`, `commit`, `abort`, `continue`.
    pub endpoint: String,
}

/// Label set for rejected input.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// What was wrong (e.g. `malformed`, `bad_address`, `unknown_txn`).
    pub reason: String,
}

/// All metrics of one sidecar.
#[derive(Clone)]
pub struct Metrics {
    /// Transactions started.
    pub txn_started: Counter,
    /// Transactions committed.
    pub txn_committed: Counter,
    /// Transactions aborted (by the client, by failure, or by lease expiry).
    pub txn_aborted: Counter,
    /// Transactions currently open.
    pub txn_open: Gauge,
    /// Reads by source.
    pub reads: Family<ReadLabels, Counter>,
    /// Request latency by endpoint, seconds.
    pub request_seconds: Family<EndpointLabels, Histogram>,
    /// Commit latency (storage writes included), seconds.
    pub commit_seconds: Histogram,
    /// Requests rejected as bad input, by reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Bytes held by the value cache.
    pub cache_bytes: Gauge,
    /// Versions held by the committed-version index.
    pub index_versions: Gauge,
    /// Versions dropped by garbage collection.
    pub gc_dropped_versions: Counter,
    /// Storage keys deleted by garbage collection (versions, records, orphans).
    pub gc_deleted_keys: Counter,
    /// Failed publications of committed values to plain keys.
    pub publish_failures: Counter,
    /// Transactions doomed by a read or write that could not be answered
    /// truthfully (their commits answer ABORTED).
    pub txn_doomed: Counter,
    /// Publications finished by the sweep (their coordinator did not).
    pub publications_swept: Counter,
    /// Calls to the storage backend (each one round trip, or one pipelined batch).
    pub storage_calls: Counter,
    /// Bytes of keys and values sent to the storage backend.
    pub storage_bytes_written: Counter,
    /// Bytes of values and keys received from the storage backend.
    pub storage_bytes_read: Counter,
    /// Peer messages sent (requests, responses, gossip, heartbeats).
    pub peer_messages_sent: Counter,
    /// Peer messages received.
    pub peer_messages_received: Counter,
    /// Bytes of peer messages sent (frames as on the wire, without the length prefix).
    pub peer_bytes_sent: Counter,
    /// Bytes of peer messages received.
    pub peer_bytes_received: Counter,
    registry: std::sync::Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `aft_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aft");
        let latency = || Histogram::new(exponential_buckets(0.000_005, 2.0, 22));
        let txn_started = Counter::default();
        let txn_committed = Counter::default();
        let txn_aborted = Counter::default();
        let txn_open = Gauge::default();
        let reads = Family::<ReadLabels, Counter>::default();
        let request_seconds =
            Family::<EndpointLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let commit_seconds = latency();
        let rejected = Family::<RejectLabels, Counter>::default();
        let cache_bytes = Gauge::default();
        let index_versions = Gauge::default();
        let gc_dropped_versions = Counter::default();
        let gc_deleted_keys = Counter::default();
        let publish_failures = Counter::default();
        let txn_doomed = Counter::default();
        let publications_swept = Counter::default();
        let storage_calls = Counter::default();
        let storage_bytes_written = Counter::default();
        let storage_bytes_read = Counter::default();
        let peer_messages_sent = Counter::default();
        let peer_messages_received = Counter::default();
        let peer_bytes_sent = Counter::default();
        let peer_bytes_received = Counter::default();
        for (name, help, counter) in [
            (
                "storage_calls",
                "Calls to the storage backend",
                &storage_calls,
            ),
            (
                "storage_bytes_written",
                "Bytes sent to the storage backend",
                &storage_bytes_written,
            ),
            (
                "storage_bytes_read",
                "Bytes received from the storage backend",
                &storage_bytes_read,
            ),
            (
                "peer_messages_sent",
                "Peer messages sent",
                &peer_messages_sent,
            ),
            (
                "peer_messages_received",
                "Peer messages received",
                &peer_messages_received,
            ),
            (
                "peer_bytes_sent",
                "Bytes of peer messages sent",
                &peer_bytes_sent,
            ),
            (
                "peer_bytes_received",
                "Bytes of peer messages received",
                &peer_bytes_received,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register("txn_started", "Transactions started", txn_started.clone());
        registry.register(
            "txn_committed",
            "Transactions committed",
            txn_committed.clone(),
        );
        registry.register("txn_aborted", "Transactions aborted", txn_aborted.clone());
        registry.register("txn_open", "Transactions open now", txn_open.clone());
        registry.register("reads", "Reads by source", reads.clone());
        registry.register(
            "request_seconds",
            "IPC request latency by endpoint",
            request_seconds.clone(),
        );
        registry.register("commit_seconds", "Commit latency", commit_seconds.clone());
        registry.register(
            "rejected_requests",
            "Requests rejected as bad input",
            rejected.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the value cache",
            cache_bytes.clone(),
        );
        registry.register(
            "index_versions",
            "Versions in the index",
            index_versions.clone(),
        );
        registry.register(
            "gc_dropped_versions",
            "Versions dropped by garbage collection",
            gc_dropped_versions.clone(),
        );
        registry.register(
            "gc_deleted_keys",
            "Storage keys deleted by garbage collection",
            gc_deleted_keys.clone(),
        );
        registry.register(
            "publish_failures",
            "Failed publications of committed values to plain keys",
            publish_failures.clone(),
        );
        registry.register(
            "txn_doomed",
            "Transactions doomed by a read or write that could not be answered",
            txn_doomed.clone(),
        );
        registry.register(
            "publications_swept",
            "Publications to plain keys finished by the sweep, not the coordinator",
            publications_swept.clone(),
        );
        Metrics {
            txn_started,
            txn_committed,
            txn_aborted,
            txn_open,
            reads,
            request_seconds,
            commit_seconds,
            rejected,
            cache_bytes,
            index_versions,
            gc_dropped_versions,
            gc_deleted_keys,
            publish_failures,
            txn_doomed,
            publications_swept,
            storage_calls,
            storage_bytes_written,
            storage_bytes_read,
            peer_messages_sent,
            peer_messages_received,
            peer_bytes_sent,
            peer_bytes_received,
            registry: std::sync::Arc::new(registry),
        }
    }

    /// Counts one read from `source`.
    pub fn read_from(&self, source: ReadSource) {
        self.reads.get_or_create(&ReadLabels { source }).inc();
    }

    /// Counts one rejected request.
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
