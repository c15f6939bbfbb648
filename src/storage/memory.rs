//! An in-memory backend (`memory://`): for tests and benchmarks of the
//! engine alone. Not durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::lww::lww_should_replace;
use super::{Entry, LwwMerge, Storage, StorageError, StorageOptions};

/// A `BTreeMap` behind a mutex (held for in-memory work only). Clones share the map.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    map: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
    options: StorageOptions,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl MemoryStorage {
    /// An empty store with the given limits.
    pub fn new(options: StorageOptions) -> Self {
        MemoryStorage {
            map: Arc::default(),
            options,
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map.lock().get(key).cloned())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.options.check_value_size(value.len())?;
        self.map.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.map.lock().remove(key);
        Ok(())
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let map = self.map.lock();
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        for (_, value) in entries {
            self.options.check_value_size(value.len())?;
        }
        let mut map = self.map.lock();
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut map = self.map.lock();
        for k in keys {
            map.remove(k);
        }
        Ok(())
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let map = self.map.lock();
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.options.check_value_size(lww_value.len())?;
        let mut map = self.map.lock();
        if lww_should_replace(map.get(key).map(Vec::as_slice), timestamp) {
            map.insert(key.to_vec(), lww_value.to_vec());
        }
        Ok(())
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.options.check_value_size(value.len())?;
        let mut map = self.map.lock();
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_vec(), value.to_vec());
        Ok(true)
    }

    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        self.put_many_if_absent_and_merge(guard, entries, &[]).await
    }

    async fn put_many_if_absent_and_merge(
        &self,
        guard: &[u8],
        entries: &[Entry],
        merges: &[LwwMerge],
    ) -> Result<bool, StorageError> {
        self.options.check_guarded_batch(guard, entries, merges)?;
        let mut map = self.map.lock();
        if map.contains_key(guard) {
            return Ok(false);
        }
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        for (k, timestamp, v) in merges {
            if lww_should_replace(map.get(k).map(Vec::as_slice), *timestamp) {
                map.insert(k.clone(), v.clone());
            }
        }
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn snapshot_reads(&self) -> bool {
        true
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    fn atomic_publication(&self) -> bool {
        true
    }
}
