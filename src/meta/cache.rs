//! The value cache: committed values by version, bounded in bytes.
//!
//! Versions are immutable, so an entry never goes stale and the cache never
//! needs invalidation; eviction (least recently used first) only costs a
//! storage read. One `parking_lot` mutex guards it, held for a hash lookup
//! and a list update per call, never across I/O. Deterministic: the same
//! calls in the same order give the same hits (a simulation relies on it).

use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::Version;

/// The identity of one committed value: a key at a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionedKey {
    /// The user key.
    pub key: Arc<str>,
    /// The version.
    pub version: Version,
}

/// What an entry costs beyond its key, version id and value: the LRU's
/// node and table slot, the key's and the value's own allocations (about
/// 190 bytes measured with `aft-bench memory`, where values are tiny).
const ENTRY_OVERHEAD: usize = 192;

/// The bytes an entry is charged: key, version id, value, and bookkeeping,
/// so that `--cache-bytes` bounds the memory the cache really takes, small
/// values included.
fn weight(key: &VersionedKey, value: &Option<Bytes>) -> u64 {
    (key.key.len() + key.version.tid.len() + ENTRY_OVERHEAD + value.as_ref().map_or(0, Bytes::len))
        as u64
}

struct Inner {
    entries: LruCache<VersionedKey, Option<Bytes>>,
    bytes: u64,
}

/// A byte-bounded cache of committed values (`None` = the version holds no value,
/// as a base version of a key that did not exist).
pub struct ValueCache {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCache")
            .field("bytes", &self.inner.lock().bytes)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl ValueCache {
    /// A cache holding at most about `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        ValueCache {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// The cached value of a version, if cached.
    pub fn get(&self, key: &VersionedKey) -> Option<Option<Bytes>> {
        self.inner.lock().entries.get(key).cloned()
    }

    /// Caches a value, evicting the least recently used entries beyond the
    /// byte bound (a value larger than the whole bound is not cached).
    pub fn insert(&self, key: VersionedKey, value: Option<Bytes>) {
        let charged = weight(&key, &value);
        if charged > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.entries.put(key.clone(), value) {
            inner.bytes -= weight(&key, &old);
        }
        inner.bytes += charged;
        while inner.bytes > self.max_bytes {
            let Some((evicted, old)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= weight(&evicted, &old);
        }
    }

    /// Removes a version (after GC dropped it: nobody will ask again).
    pub fn remove(&self, key: &VersionedKey) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.entries.pop(key) {
            inner.bytes -= weight(key, &old);
        }
    }

    /// Bytes held.
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> VersionedKey {
        VersionedKey {
            key: Arc::from(k),
            version: Version::new(1, "t"),
        }
    }

    #[test]
    fn stays_within_its_bytes_evicting_the_least_recently_used() {
        let each = (1 + 1 + ENTRY_OVERHEAD + 100) as u64;
        let cache = ValueCache::new(3 * each);
        for k in ["a", "b", "c"] {
            cache.insert(key(k), Some(Bytes::from(vec![0u8; 100])));
        }
        assert!(
            cache.get(&key("a")).is_some(),
            "touch a: b is now the oldest"
        );
        cache.insert(key("d"), Some(Bytes::from(vec![0u8; 100])));
        assert!(cache.get(&key("b")).is_none());
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("d")).is_some());
        assert!(cache.weighted_bytes() <= 3 * each);
        cache.remove(&key("a"));
        assert_eq!(cache.get(&key("a")), None);
        assert_eq!(cache.weighted_bytes(), 2 * each);
        cache.insert(key("huge"), Some(Bytes::from(vec![0u8; 10_000])));
        assert_eq!(cache.get(&key("huge")), None, "larger than the whole cache");
        assert_eq!(cache.get(&key("none")), None);
        cache.insert(key("absent"), None);
        assert_eq!(
            cache.get(&key("absent")),
            Some(None),
            "an absent base value is cached too"
        );
    }
}
