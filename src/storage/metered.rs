//! A [`Storage`] that counts what passes through it: calls (each one round
//! trip to the backend, or a pipelined batch) and bytes written and read,
//! into the node's metrics. It is how the benchmark reports storage cost per
//! committed DAG; it changes nothing else.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Entry, LwwMerge, Storage, StorageError};
use crate::metrics::Metrics;

/// Counts the calls and bytes of the store it wraps.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Storage>,
    metrics: Metrics,
}

impl Metered {
    /// Wraps `inner`; every call is counted in `metrics` (`aft_storage_*`).
    pub fn wrap(inner: Arc<dyn Storage>, metrics: Metrics) -> Arc<dyn Storage> {
        Arc::new(Metered { inner, metrics })
    }

    fn call(&self, written: usize) {
        self.metrics.storage_calls.inc();
        self.metrics.storage_bytes_written.inc_by(written as u64);
    }

    fn read(&self, bytes: usize) {
        self.metrics.storage_bytes_read.inc_by(bytes as u64);
    }
}

fn entry_bytes(entries: &[Entry]) -> usize {
    entries.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn key_bytes(keys: &[Vec<u8>]) -> usize {
    keys.iter().map(Vec::len).sum()
}

#[async_trait]
impl Storage for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(key.len());
        let value = self.inner.get(key).await?;
        self.read(value.as_ref().map_or(0, Vec::len));
        Ok(value)
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.call(key.len() + value.len());
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.call(key.len());
        self.inner.delete(key).await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.call(key_bytes(keys));
        let values = self.inner.get_many(keys).await?;
        self.read(values.iter().flatten().map(Vec::len).sum());
        Ok(values)
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        self.call(entry_bytes(entries));
        self.inner.put_many(entries).await
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.call(key_bytes(keys));
        self.inner.delete_many(keys).await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.call(prefix.len());
        let keys = self.inner.scan_prefix(prefix).await?;
        self.read(key_bytes(&keys));
        Ok(keys)
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.call(key.len() + lww_value.len());
        self.inner.merge_lww(key, timestamp, lww_value).await
    }

    async fn merge_lww_many(
        &self,
        entries: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        self.call(entries.iter().map(|(k, _, v)| k.len() + v.len()).sum());
        self.inner.merge_lww_many(entries).await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.call(key.len() + value.len());
        self.inner.put_if_absent(key, value).await
    }

    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        self.call(entry_bytes(entries));
        self.inner.put_many_if_absent(guard, entries).await
    }

    async fn put_many_if_absent_and_merge(
        &self,
        guard: &[u8],
        entries: &[Entry],
        merges: &[LwwMerge],
    ) -> Result<bool, StorageError> {
        self.call(
            entry_bytes(entries)
                + merges
                    .iter()
                    .map(|(k, _, v)| k.len() + v.len())
                    .sum::<usize>(),
        );
        self.inner
            .put_many_if_absent_and_merge(guard, entries, merges)
            .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }

    fn atomic_publication(&self) -> bool {
        self.inner.atomic_publication()
    }

    fn snapshot_reads(&self) -> bool {
        self.inner.snapshot_reads()
    }

    fn atomic_batches(&self) -> bool {
        self.inner.atomic_batches()
    }

    fn atomic_batch_fits(&self, items: usize, bytes: usize) -> bool {
        self.inner.atomic_batch_fits(items, bytes)
    }

    fn value_limit(&self) -> Option<usize> {
        self.inner.value_limit()
    }

    fn conditional_writes(&self) -> bool {
        self.inner.conditional_writes()
    }
}
