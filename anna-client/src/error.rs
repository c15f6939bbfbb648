//! Typed errors of the Anna client.

use std::time::Duration;

use crate::proto::{AnnaError, LatticeType};

/// Everything that can go wrong in an [`AnnaClient`](crate::AnnaClient)
/// call. Every per-key variant names the key, so a caller can tell which
/// one failed in a multi-key request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (no routing endpoint, bad IP, ...).
    #[error("invalid Anna client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A ZeroMQ socket could not be created, bound or connected.
    #[error("ZeroMQ transport error: {reason}")]
    Transport {
        /// The underlying error.
        reason: String,
    },
    /// The client's socket threads are gone (the client is shutting down).
    #[error("the Anna client is closed")]
    Closed,
    /// The request itself is invalid (e.g. one key given twice with
    /// different lattice types in one put).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// No answer for `key` arrived within the operation timeout, after
    /// `attempts` tries.
    #[error("Anna request for key `{key}` timed out after {elapsed:?} ({attempts} attempts)")]
    Timeout {
        /// The first key left unanswered.
        key: String,
        /// Time spent on the whole operation.
        elapsed: Duration,
        /// How many times the key was tried.
        attempts: u32,
    },
    /// Anna kept answering `NO_SERVERS` for `key` (no KVS node serves it
    /// yet) until the retries ran out.
    #[error("Anna has no servers for key `{key}` (gave up after {attempts} attempts)")]
    NoServers {
        /// The key that could not be placed.
        key: String,
        /// How many times the key was tried.
        attempts: u32,
    },
    /// Anna kept answering with a retryable error (e.g. `WRONG_THREAD`)
    /// for `key` until the retries ran out.
    #[error("Anna request for key `{key}` still failing with {last:?} after {attempts} attempts")]
    RetriesExhausted {
        /// The key that kept failing.
        key: String,
        /// The last error Anna reported for it.
        last: AnnaError,
        /// How many times the key was tried.
        attempts: u32,
    },
    /// The key holds another lattice type than the one asked for or
    /// written. Anna silently drops a put of the wrong lattice type and
    /// acknowledges it with lattice type `NONE`; that ack is reported here.
    #[error("lattice type mismatch for key `{key}`: expected {expected:?}, Anna has {actual:?}")]
    LatticeMismatch {
        /// The key.
        key: String,
        /// The lattice type of the request.
        expected: LatticeType,
        /// What Anna reported (`NONE` for a dropped put).
        actual: LatticeType,
    },
    /// Anna answered `key` with an error that is not retryable.
    #[error("Anna reported {error:?} for key `{key}`")]
    Server {
        /// The key.
        key: String,
        /// The error Anna reported.
        error: AnnaError,
    },
    /// A payload Anna returned could not be decoded as its lattice type.
    #[error("cannot decode the {lattice:?} payload of key `{key}`: {reason}")]
    Decode {
        /// The key.
        key: String,
        /// The lattice type the payload claims to be.
        lattice: LatticeType,
        /// The decoder's error.
        reason: String,
    },
    /// An LWW value does not carry this crate's value envelope (it was
    /// written by another client, or is corrupt). Read it with
    /// [`AnnaClient::get_lww`](crate::AnnaClient::get_lww) instead.
    #[error("value of key `{key}` is not in the anna-client envelope: {reason}")]
    Envelope {
        /// The key.
        key: String,
        /// Why the envelope was refused.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
