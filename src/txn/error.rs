//! Typed transaction errors.

use std::time::Duration;

use crate::storage::StorageError;

/// Why a transactional call failed. Each variant names the transaction (and
/// key, where there is one) so a log line says what went wrong where.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// No transaction with this id is known here (never started, or expired
    /// and forgotten, or the sidecar restarted).
    #[error("unknown transaction `{tid}`")]
    UnknownTransaction {
        /// The transaction id.
        tid: String,
    },
    /// The transaction already committed or aborted.
    #[error("transaction `{tid}` has already ended ({outcome})")]
    Ended {
        /// The transaction id.
        tid: String,
        /// How it ended.
        outcome: &'static str,
    },
    /// The transaction failed earlier (e.g. its upstream node could not be
    /// reached, its lease expired); it can only abort.
    #[error("transaction `{tid}` has failed: {reason}")]
    Failed {
        /// The transaction id.
        tid: String,
        /// Why it failed.
        reason: String,
    },
    /// The transaction is committing; no more reads or writes.
    #[error("transaction `{tid}` is committing")]
    Committing {
        /// The transaction id.
        tid: String,
    },
    /// A value is larger than the configured limit.
    #[error("value of {size} bytes for key `{key}` exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The transaction's buffered writes would exceed the per-transaction limit.
    #[error("transaction `{tid}` would buffer {size} bytes, over the limit of {limit} bytes")]
    WriteSetTooLarge {
        /// The transaction id.
        tid: String,
        /// The size it would reach.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many transactions are open on this node.
    #[error("too many open transactions (limit {limit})")]
    TooManyTransactions {
        /// The limit.
        limit: usize,
    },
    /// No committed version of the key is consistent with what the
    /// transaction already read (a needed version is gone).
    #[error("transaction `{tid}`: no version of `{key}` is consistent with its earlier reads")]
    NoConsistentVersion {
        /// The transaction id.
        tid: String,
        /// The key.
        key: String,
    },
    /// A storage call failed.
    #[error("transaction `{tid}`: {source}")]
    Storage {
        /// The transaction id (empty for non-transactional calls).
        tid: String,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// A call to another sidecar failed.
    #[error("transaction `{tid}`: peer `{peer}`: {failure}")]
    Peer {
        /// The transaction id.
        tid: String,
        /// The peer's address.
        peer: String,
        /// What went wrong.
        failure: PeerFailure,
    },
    /// A reply would be larger than a peer message may be.
    #[error(
        "transaction `{tid}`: the reply would be {size} bytes, over the limit of {limit} bytes"
    )]
    ReplyTooLarge {
        /// The transaction id.
        tid: String,
        /// The reply's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A record read back from storage could not be decoded.
    #[error("corrupt record at `{key}`: {reason}")]
    CorruptRecord {
        /// The storage key (lossy UTF-8).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a call to another node failed, as the engine sees it (the peer
/// layer's own errors map onto these; `txn/` knows nothing of transports).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFailure {
    /// This node runs without the peer layer.
    #[error("the peer layer is off here")]
    Off,
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node is known to be down (missed heartbeats, or it left).
    #[error("the node is down")]
    Down,
    /// The node does not know the transaction (never started there,
    /// forgotten, or the node restarted).
    #[error("does not know the transaction")]
    UnknownTransaction,
    /// The node is no member of this cluster (never heard of): it is not
    /// called at all.
    #[error("is no node of this cluster")]
    NotMember,
    /// The transaction already ended (or is committing) on that node.
    #[error("the transaction has ended there: {0}")]
    Ended(String),
    /// That node refused the request as invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// That node reached a limit.
    #[error("over a limit: {0}")]
    Exhausted(String),
    /// The transaction failed on that node; it can only abort.
    #[error("the transaction failed there: {0}")]
    Failed(String),
    /// The node answered with an error.
    #[error("refused: {0}")]
    Refused(String),
    /// A participant voted not to commit.
    #[error("voted no: {0}")]
    VotedNo(String),
    /// The node no longer holds a value the transaction buffered there.
    #[error("no longer holds the value buffered for `{0}`")]
    ValueGone(String),
    /// The transport failed (overloaded, stopped, an unexpected answer).
    #[error("{0}")]
    Transport(String),
}

impl TxnError {
    /// Whether a read that failed with this error could not be answered
    /// truthfully (storage, peer, missing data, no consistent version): the
    /// transaction must then not commit, or it would commit on a guess.
    pub fn dooms_transaction(&self) -> bool {
        matches!(
            self,
            TxnError::Storage { .. }
                | TxnError::Peer { .. }
                | TxnError::CorruptRecord { .. }
                | TxnError::NoConsistentVersion { .. }
        )
    }

    /// Wraps a storage error with the transaction it happened in.
    pub fn storage(tid: &str, source: StorageError) -> Self {
        TxnError::Storage {
            tid: tid.to_string(),
            source,
        }
    }
}
