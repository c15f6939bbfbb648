//! The embedded on-disk backend (`file://PATH`), built on `redb`.
//!
//! One redb database file (`PATH/aft.redb`), one table of byte keys to byte
//! values. Writes are **group-committed**: one writer thread takes every
//! write call queued behind the one in progress, applies them in order in
//! one redb write transaction, and commits it with `Durability::Immediate`
//! (one fsync for the group) before any of them returns. Each call is still
//! all-or-nothing, and an acknowledged write survives a crash of the process
//! or the machine; concurrent commits share the fsync instead of queueing
//! behind each other's. Reads run on tokio's blocking pool in read
//! transactions (snapshots), so they never stall the async runtime.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::lww::lww_should_replace;
use super::{Entry, LwwMerge, Storage, StorageError, StorageOptions};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const FILE_NAME: &str = "aft.redb";

/// Most write calls folded into one group commit.
const GROUP_MAX_CALLS: usize = 256;
/// Most bytes folded into one group commit (a single bigger call goes alone).
const GROUP_MAX_BYTES: usize = 32 << 20;

/// A write call's change to the table.
type Edit =
    Box<dyn FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<(), redb::StorageError> + Send>;

/// One write call: its edit of the table, its size, and where to answer.
struct WriteCall {
    op: &'static str,
    bytes: usize,
    edit: Edit,
    done: tokio::sync::oneshot::Sender<Result<(), StorageError>>,
}

/// The embedded store. Cheap to clone; all clones share one database and
/// one writer thread. When the last clone is dropped the writer finishes
/// what is queued and stops, and the database file is closed (unlocked).
#[derive(Clone)]
pub struct EmbeddedStorage {
    db: Arc<Database>,
    writer: Arc<Writer>,
    path: String,
    options: StorageOptions,
}

/// The queue to the writer thread, and the thread (joined on drop).
struct Writer {
    queue: Option<crossbeam_channel::Sender<WriteCall>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedStorage {
    /// Opens (creating if needed) the store in directory `dir`.
    ///
    /// Fails with [`StorageError::Unreachable`] naming the directory when it
    /// cannot be created or the database is locked by another process.
    pub fn open(dir: &Path, options: StorageOptions) -> Result<Self, StorageError> {
        let url = format!("file://{}", dir.display());
        let unreachable = |reason: String| StorageError::Unreachable {
            url: url.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| unreachable(e.to_string()))?;
        let db = Database::create(dir.join(FILE_NAME)).map_err(|e| unreachable(e.to_string()))?;
        let txn = db.begin_write().map_err(|e| unreachable(e.to_string()))?;
        txn.open_table(TABLE)
            .map_err(|e| unreachable(e.to_string()))?;
        txn.commit().map_err(|e| unreachable(e.to_string()))?;
        let db = Arc::new(db);
        let (writes, queue) = crossbeam_channel::unbounded();
        let writer_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("aft-embedded-writer".into())
            .spawn(move || group_commit_loop(&writer_db, &queue))
            .map_err(|e| unreachable(format!("cannot start the writer thread: {e}")))?;
        Ok(EmbeddedStorage {
            db,
            writer: Arc::new(Writer {
                queue: Some(writes),
                thread: Some(thread),
            }),
            path: url,
            options,
        })
    }

    /// The call timeout stretched by `bytes` written: an fsync of many
    /// megabytes on a busy disk is slow, not stuck (about 4 MiB per call timeout).
    fn timeout_for(&self, bytes: usize) -> std::time::Duration {
        let factor = 1 + u32::try_from(bytes / (4 << 20)).unwrap_or(u32::MAX);
        self.options.call_timeout.saturating_mul(factor)
    }

    /// Runs a blocking database closure on the blocking pool, with the call
    /// timeout stretched by `bytes` (see [`Self::timeout_for`]).
    async fn run_sized<T, F>(&self, op: &'static str, bytes: usize, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        let timeout = self.timeout_for(bytes);
        let db = Arc::clone(&self.db);
        let task = tokio::task::spawn_blocking(move || f(&db));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(StorageError::backend(op, join)),
            Err(_) => Err(StorageError::Timeout { op, timeout }),
        }
    }

    /// Runs a blocking database closure on the blocking pool, with the call timeout.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        self.run_sized(op, 0, f).await
    }

    /// Applies `edit` (writing about `bytes`) durably, all or nothing, in
    /// the next group commit. The timeout grows with `bytes` (see `run_sized`).
    async fn write<F>(&self, op: &'static str, bytes: usize, edit: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<(), redb::StorageError>
            + Send
            + 'static,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        let call = WriteCall {
            op,
            bytes,
            edit: Box::new(edit),
            done,
        };
        let sent = match &self.writer.queue {
            Some(queue) => queue.send(call).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StorageError::backend(op, "the writer thread has stopped"));
        }
        let timeout = self.timeout_for(bytes);
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StorageError::backend(
                op,
                "the writer thread dropped the call",
            )),
            Err(_) => Err(StorageError::Timeout { op, timeout }),
        }
    }

    /// Reads inside one read transaction.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T, redb::StorageError>
            + Send
            + 'static,
    {
        self.run(op, move |db| {
            let txn = db.begin_read().map_err(|e| StorageError::backend(op, e))?;
            let table = txn
                .open_table(TABLE)
                .map_err(|e| StorageError::backend(op, e))?;
            f(&table).map_err(|e| StorageError::backend(op, e))
        })
        .await
    }
}

#[async_trait]
impl Storage for EmbeddedStorage {
    fn describe(&self) -> String {
        self.path.clone()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key.to_vec();
        self.read("get", move |t| {
            Ok(t.get(key.as_slice())?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.options.check_value_size(value.len())?;
        let (key, value) = (key.to_vec(), value.to_vec());
        self.write("put", value.len(), move |t| {
            t.insert(key.as_slice(), value.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let key = key.to_vec();
        self.write("delete", 0, move |t| {
            t.remove(key.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let keys = keys.to_vec();
        self.read("get_many", move |t| {
            keys.iter()
                .map(|k| Ok(t.get(k.as_slice())?.map(|v| v.value().to_vec())))
                .collect()
        })
        .await
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        for (_, value) in entries {
            self.options.check_value_size(value.len())?;
        }
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let entries = entries.to_vec();
        self.write("put_many", bytes, move |t| {
            for (k, v) in &entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let keys = keys.to_vec();
        self.write("delete_many", 0, move |t| {
            for k in &keys {
                t.remove(k.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let prefix = prefix.to_vec();
        self.read("scan_prefix", move |t| {
            let mut keys = Vec::new();
            for item in t.range(prefix.as_slice()..)? {
                let (key, _) = item?;
                let key = key.value();
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key.to_vec());
            }
            Ok(keys)
        })
        .await
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.options.check_value_size(lww_value.len())?;
        let (key, value) = (key.to_vec(), lww_value.to_vec());
        // One write transaction: redb serializes writers, so the
        // read-compare-write is atomic against other merges.
        self.write("merge_lww", value.len(), move |t| {
            let replace = {
                let current = t.get(key.as_slice())?;
                lww_should_replace(current.as_ref().map(|v| v.value()), timestamp)
            };
            if replace {
                t.insert(key.as_slice(), value.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.options.check_value_size(value.len())?;
        let (key, value) = (key.to_vec(), value.to_vec());
        let wrote = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&wrote);
        // One write transaction: redb serializes writers, so check-and-set is atomic.
        self.write("put_if_absent", value.len(), move |t| {
            let absent = t.get(key.as_slice())?.is_none();
            if absent {
                t.insert(key.as_slice(), value.as_slice())?;
            }
            flag.store(absent, std::sync::atomic::Ordering::Release);
            Ok(())
        })
        .await?;
        Ok(wrote.load(std::sync::atomic::Ordering::Acquire))
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
        let bytes = self.options.check_guarded_batch(guard, entries, merges)?;
        let (guard, entries, merges) = (guard.to_vec(), entries.to_vec(), merges.to_vec());
        let wrote = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&wrote);
        // One write transaction: the guard check, the inserts and the merges
        // are atomic together.
        self.write("put_many_if_absent_and_merge", bytes, move |t| {
            let absent = t.get(guard.as_slice())?.is_none();
            if absent {
                for (k, v) in &entries {
                    t.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, timestamp, v) in &merges {
                    let replace = {
                        let current = t.get(k.as_slice())?;
                        lww_should_replace(current.as_ref().map(|v| v.value()), *timestamp)
                    };
                    if replace {
                        t.insert(k.as_slice(), v.as_slice())?;
                    }
                }
            }
            flag.store(absent, std::sync::atomic::Ordering::Release);
            Ok(())
        })
        .await?;
        Ok(wrote.load(std::sync::atomic::Ordering::Acquire))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.read("ping", |_| Ok(())).await
    }

    /// One redb write transaction per batch: all or nothing.
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

/// The writer thread: takes the next call and every call queued behind it
/// (bounded), applies them in order in one write transaction, commits once,
/// and answers each. If the group fails (an I/O error), every call in it
/// fails and nothing of the group is written.
fn group_commit_loop(db: &Database, queue: &crossbeam_channel::Receiver<WriteCall>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].bytes;
        while group.len() < GROUP_MAX_CALLS && bytes < GROUP_MAX_BYTES {
            match queue.try_recv() {
                Ok(call) => {
                    bytes += call.bytes;
                    group.push(call);
                }
                Err(_) => break,
            }
        }
        let op = group[0].op;
        let (edits, answers): (Vec<_>, Vec<_>) =
            group.into_iter().map(|c| ((c.op, c.edit), c.done)).unzip();
        let result = (|| -> Result<(), StorageError> {
            let txn = db.begin_write().map_err(|e| StorageError::backend(op, e))?;
            {
                let mut table = txn
                    .open_table(TABLE)
                    .map_err(|e| StorageError::backend(op, e))?;
                for (call_op, edit) in edits {
                    edit(&mut table).map_err(|e| StorageError::backend(call_op, e))?;
                }
            }
            txn.commit().map_err(|e| StorageError::backend(op, e))
        })();
        for answer in answers {
            let reply = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::backend(op, e)),
            };
            let _ = answer.send(reply);
        }
    }
}
