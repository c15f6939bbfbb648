//! Versions: the total order of committed writes.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The transaction id under which base versions are stored (`aft/d/~base/<key>`).
pub const BASE_TID: &str = "~base";

/// A committed version of a key: `(commit timestamp, transaction id)`.
///
/// Totally ordered by timestamp, then transaction id. Every key a
/// transaction writes gets the same version. [`Version::base`] is the
/// oldest version of every key: the value the key had in the shared store
/// before the sidecar committed anything to it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Commit timestamp in microseconds (0 for the base version).
    pub timestamp: u64,
    /// Writer transaction id ([`BASE_TID`] for the base version).
    pub tid: Arc<str>,
}

impl Version {
    /// A version written by `tid` at `timestamp`.
    pub fn new(timestamp: u64, tid: impl Into<Arc<str>>) -> Self {
        Version {
            timestamp,
            tid: tid.into(),
        }
    }

    /// The base version: older than every committed version.
    pub fn base() -> Self {
        Version {
            timestamp: 0,
            tid: Arc::from(BASE_TID),
        }
    }

    /// Whether this is the base version.
    pub fn is_base(&self) -> bool {
        self.timestamp == 0 && &*self.tid == BASE_TID
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.tid.cmp(&other.tid))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.tid, self.timestamp)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_by_timestamp_then_tid() {
        assert!(Version::new(1, "b") < Version::new(2, "a"));
        assert!(Version::new(2, "a") < Version::new(2, "b"));
        assert!(Version::base() < Version::new(1, "\0"));
        assert!(Version::base().is_base());
        assert!(!Version::new(0, "x").is_base());
    }
}
