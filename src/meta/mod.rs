//! Committed-version metadata: versions, the index of committed versions,
//! the value cache, and commit timestamps.

mod cache;
mod clock;
mod index;
mod version;

pub use cache::{ValueCache, VersionedKey};
pub use clock::{now_micros, Clock, HybridClock, SystemClock};
pub use index::{
    CommitMeta, CommittedTxn, Dropped, GcOutcome, IndexView, VersionEntry, VersionIndex,
};
pub use version::{Version, BASE_TID};
