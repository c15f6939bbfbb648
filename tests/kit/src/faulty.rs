//! A storage wrapper that fails chosen calls: for commit crash points and
//! storage-failure paths of the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aft::storage::{Entry, Storage, StorageError};
use async_trait::async_trait;

/// Which calls fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// `put_many` fails (before writing anything).
    pub put_many: AtomicBool,
    /// The write of a commit record (`aft/c/...`, not an abort marker)
    /// fails without writing.
    pub commit_record: AtomicBool,
    /// The write of a commit record lands, then reports failure (lost ack).
    pub commit_record_lost_ack: AtomicBool,
    /// Every call fails (storage down).
    pub everything: AtomicBool,
}

/// Wraps a backend; reports non-atomic batches so data and commit record
/// are written separately (the order the crash points need).
#[derive(Debug)]
pub struct FaultyStorage {
    pub inner: Arc<dyn Storage>,
    pub faults: Arc<Faults>,
}

fn injected(op: &'static str) -> StorageError {
    StorageError::Backend {
        op,
        reason: "injected fault".into(),
    }
}

impl FaultyStorage {
    fn down(&self, op: &'static str) -> Result<(), StorageError> {
        if self.faults.everything.load(Ordering::SeqCst) {
            return Err(injected(op));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.down("get")?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.down("put")?;
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.down("delete")?;
        self.inner.delete(key).await
    }
    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.down("get_many")?;
        self.inner.get_many(keys).await
    }
    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        self.down("put_many")?;
        if self.faults.put_many.load(Ordering::SeqCst) {
            return Err(injected("put_many"));
        }
        self.inner.put_many(entries).await
    }
    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.down("delete_many")?;
        self.inner.delete_many(keys).await
    }
    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.down("scan_prefix")?;
        self.inner.scan_prefix(prefix).await
    }
    async fn merge_lww(&self, key: &[u8], ts: u64, v: &[u8]) -> Result<(), StorageError> {
        self.down("merge_lww")?;
        self.inner.merge_lww(key, ts, v).await
    }
    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.down("put_if_absent")?;
        let is_commit_record = key.starts_with(b"aft/c/")
            && aft::txn::decode_decision(key, value).is_ok_and(|d| d.is_some());
        if is_commit_record {
            if self.faults.commit_record.load(Ordering::SeqCst) {
                return Err(injected("put_if_absent"));
            }
            if self.faults.commit_record_lost_ack.load(Ordering::SeqCst) {
                self.inner.put_if_absent(key, value).await?;
                return Err(injected("put_if_absent"));
            }
        }
        self.inner.put_if_absent(key, value).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.down("ping")?;
        self.inner.ping().await
    }
}
