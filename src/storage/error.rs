//! Typed storage errors.

use std::time::Duration;

/// What went wrong in a storage call. Every variant names the operation or
/// URL involved so an operator can tell which backend and which call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL could not be parsed or names an unknown scheme.
    #[error("invalid storage URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials removed).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The backend could not be reached or opened.
    #[error("cannot reach storage at `{url}`: {reason}")]
    Unreachable {
        /// The URL as given (credentials removed).
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// A call did not finish within the configured timeout.
    #[error("storage call `{op}` timed out after {timeout:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The backend reported an error (connection lost, server error, I/O).
    #[error("storage call `{op}` failed: {reason}")]
    Backend {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// A value is larger than the configured maximum.
    #[error("value of {size} bytes exceeds the storage limit of {limit} bytes")]
    ValueTooLarge {
        /// The size of the refused value.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl StorageError {
    /// Builds a [`StorageError::Backend`] from any displayable error.
    pub fn backend(op: &'static str, err: impl std::fmt::Display) -> Self {
        StorageError::Backend {
            op,
            reason: err.to_string(),
        }
    }
}
