//! The value cache: committed values by version, bounded in bytes.
//!
//! Versions are immutable, so an entry never goes stale and the cache never
//! needs invalidation; eviction (TinyLFU, by `moka`) only costs a storage read.

use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;

use super::Version;

/// The identity of one committed value: a key at a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionedKey {
    /// The user key.
    pub key: Arc<str>,
    /// The version.
    pub version: Version,
}

/// A byte-bounded cache of committed values (`None` = the version holds no value,
/// as a base version of a key that did not exist).
#[derive(Clone)]
pub struct ValueCache {
    cache: Cache<VersionedKey, Option<Bytes>>,
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCache")
            .field("weighted_bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl ValueCache {
    /// A cache holding at most about `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &VersionedKey, v: &Option<Bytes>| {
                let size =
                    k.key.len() + k.version.tid.len() + 64 + v.as_ref().map_or(0, Bytes::len);
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .build();
        ValueCache { cache }
    }

    /// The cached value of a version, if cached.
    pub fn get(&self, key: &VersionedKey) -> Option<Option<Bytes>> {
        self.cache.get(key)
    }

    /// Caches a value.
    pub fn insert(&self, key: VersionedKey, value: Option<Bytes>) {
        self.cache.insert(key, value);
    }

    /// Removes a version (after GC dropped it: nobody will ask again).
    pub fn remove(&self, key: &VersionedKey) {
        self.cache.invalidate(key);
    }

    /// Approximate bytes held.
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}
