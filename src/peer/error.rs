//! Typed peer errors.

use std::time::Duration;

use crate::proto::peer::ErrorCode;

/// Why a call to another sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The transport could not be set up or used.
    #[error("peer transport: {0}")]
    Transport(String),
    /// No response within the timeout.
    #[error("peer `{peer}` did not answer within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The peer is known to be down (missed heartbeats, or it left).
    #[error("peer `{peer}` is down")]
    PeerDown {
        /// The peer.
        peer: String,
    },
    /// The peer answered with an error.
    #[error("peer `{peer}` refused ({code:?}): {message}")]
    Remote {
        /// The peer.
        peer: String,
        /// Its error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The peer answered with a message of the wrong kind.
    #[error("peer `{peer}` answered with an unexpected message")]
    Unexpected {
        /// The peer.
        peer: String,
    },
    /// Too many messages are queued for the transport.
    #[error("peer transport overloaded")]
    Overloaded,
    /// The transport has stopped.
    #[error("peer transport stopped")]
    Stopped,
}
