//! Pluggable key-value storage.
//!
//! The engine talks to storage only through [`Storage`]. Backends are chosen
//! by URL ([`open`]): `file://PATH` (embedded, the default), `redis://host:port`,
//! `redis+cluster://h1:p1,h2:p2`, `anna://host`, `dynamodb://TABLE` and
//! `s3://BUCKET` (cargo features `dynamodb` and `s3`, on by default), and
//! `memory://` (tests and benchmarks only). Every backend passes the same
//! conformance suite (`tests/storage_conformance.rs`).

mod anna;
#[cfg(any(feature = "dynamodb", feature = "s3"))]
pub mod aws;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod embedded;
mod error;
mod lww;
mod memory;
mod metered;
mod redis_cluster;
mod redis_common;
mod redis_single;
#[cfg(feature = "s3")]
mod s3;
mod url;

pub use anna::AnnaStorage;
#[cfg(feature = "dynamodb")]
pub use dynamodb::{DynamoStorage, VALUE_LIMIT as DYNAMODB_VALUE_LIMIT};
pub use embedded::EmbeddedStorage;
pub use error::StorageError;
pub use lww::lww_timestamp;
pub use memory::MemoryStorage;
pub use metered::Metered;
pub use redis_cluster::RedisClusterStorage;
pub use redis_single::RedisStorage;
#[cfg(feature = "s3")]
pub use s3::S3Storage;
pub use url::{
    create, open, redact, AwsLocation, StorageOptions, StorageUrl, DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_VALUE_BYTES,
};

use async_trait::async_trait;

/// A key-value entry.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A last-writer-wins merge: key, timestamp, serialized `LWWValue`.
pub type LwwMerge = (Vec<u8>, u64, Vec<u8>);

/// An async key-value store with batched operations and prefix scans.
///
/// Guarantees every backend gives:
/// - keys and values are arbitrary bytes, stored and returned byte for byte;
///   a 0-byte value is distinct from a missing key;
/// - `put_many` and `delete_many` are applied in one round trip where the
///   backend allows (pipelined); when one of them returns `Ok`, every entry
///   is durable as far as the backend's durability goes;
/// - `get_many` answers in the order of the keys asked;
/// - `scan_prefix` returns every key with the prefix that existed before the
///   scan started and was not deleted during it, sorted bytewise;
/// - no call waits forever: each has a timeout and fails with a typed error.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// A human-readable name of this store (its URL without credentials).
    fn describe(&self) -> String;

    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Writes one key.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// Deletes one key; deleting a missing key is not an error.
    async fn delete(&self, key: &[u8]) -> Result<(), StorageError>;

    /// Reads many keys in one round trip; answers in the order asked.
    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError>;

    /// Writes many entries in one round trip where possible.
    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Deletes many keys in one round trip where possible.
    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError>;

    /// Lists every key that starts with `prefix`, sorted bytewise.
    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError>;

    /// Last-writer-wins merge: stores `lww_value` (a serialized `LWWValue`
    /// whose timestamp is `timestamp`) at `key` unless the value already
    /// there is an `LWWValue` with a newer or equal timestamp. Atomic with
    /// respect to other `merge_lww` calls on the same key.
    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError>;

    /// [`Storage::merge_lww`] for many keys, in one round trip where the
    /// backend allows. Each merge is atomic on its own key.
    async fn merge_lww_many(
        &self,
        entries: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        for (key, timestamp, value) in entries {
            self.merge_lww(key, *timestamp, value).await?;
        }
        Ok(())
    }

    /// Writes `value` at `key` only if `key` does not exist; returns whether
    /// it wrote. Atomic against other writers of `key` on every backend
    /// except Anna (which has no conditional write; see `anna.rs`).
    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError>;

    /// Writes every entry of `entries` only if `guard` does not exist yet;
    /// returns whether it wrote. The guard key must be one of the entries
    /// (it is how a commit record and the data it names land together).
    ///
    /// Where [`Storage::atomic_batches`] holds, the check and the writes are
    /// one atomic step: either the guard existed and nothing was written, or
    /// everything was. Elsewhere (the default) the other entries are written
    /// first and the guard last with [`Storage::put_if_absent`], so `false`
    /// may leave the other entries written (the caller cleans them up).
    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        put_many_then_guard(self, guard, entries).await
    }

    /// [`Storage::put_many_if_absent`], then, only if it wrote, the LWW
    /// merges `merges` (as [`Storage::merge_lww_many`]). Where
    /// [`Storage::atomic_publication`] holds, the whole of it is one atomic
    /// step in one round trip (a commit's record, data and publication to
    /// plain keys land together or not at all); the default runs the two
    /// one after the other.
    async fn put_many_if_absent_and_merge(
        &self,
        guard: &[u8],
        entries: &[Entry],
        merges: &[LwwMerge],
    ) -> Result<bool, StorageError> {
        let wrote = self.put_many_if_absent(guard, entries).await?;
        if wrote && !merges.is_empty() {
            self.merge_lww_many(merges).await?;
        }
        Ok(wrote)
    }

    /// Checks that the backend answers (used at start-up and by health checks).
    async fn ping(&self) -> Result<(), StorageError>;

    /// Whether `get_many` reads all keys at one instant (a snapshot).
    /// Default: no.
    fn snapshot_reads(&self) -> bool {
        false
    }

    /// Whether `put_many` is all-or-nothing (then a commit writes its data
    /// and its commit record in one round trip). Default: no.
    fn atomic_batches(&self) -> bool {
        false
    }

    /// Whether [`Storage::put_many_if_absent_and_merge`] is one atomic step
    /// (then a commit publishes its values to their plain keys with its
    /// record, and needs no publication intent). Default: no.
    fn atomic_publication(&self) -> bool {
        false
    }

    /// Whether a guarded batch of `items` entries and merges holding `bytes`
    /// bytes of values is applied as one atomic step: [`Storage::atomic_batches`]
    /// within the backend's batch limits (DynamoDB's transactions take 100
    /// items and 4 MB). The engine asks before each commit and takes the
    /// non-atomic path (data first, record last) for a batch that does not
    /// fit. Default: [`Storage::atomic_batches`], whatever the size.
    fn atomic_batch_fits(&self, items: usize, bytes: usize) -> bool {
        let _ = (items, bytes);
        self.atomic_batches()
    }

    /// The largest value the backend itself can hold, when that is below
    /// what it was configured with (a DynamoDB item holds 400 KB); `None`:
    /// the configured limit applies. Values over it fail with
    /// [`StorageError::ValueTooLarge`].
    fn value_limit(&self) -> Option<usize> {
        None
    }

    /// Whether [`Storage::put_if_absent`] is atomic against every other
    /// writer of the key. Default: yes; Anna has no conditional write.
    fn conditional_writes(&self) -> bool {
        true
    }
}

/// The non-atomic guarded batch: every entry but the guard with
/// [`Storage::put_many`], then the guard with [`Storage::put_if_absent`]
/// (the default of [`Storage::put_many_if_absent`], and what backends whose
/// atomic batches are bounded do with a batch over the bound).
pub async fn put_many_then_guard<S: Storage + ?Sized>(
    storage: &S,
    guard: &[u8],
    entries: &[Entry],
) -> Result<bool, StorageError> {
    let Some((_, guard_value)) = entries.iter().find(|(k, _)| k.as_slice() == guard) else {
        return Err(StorageError::backend(
            "put_many_if_absent",
            "the guard key is not among the entries",
        ));
    };
    let others: Vec<Entry> = entries
        .iter()
        .filter(|(k, _)| k.as_slice() != guard)
        .cloned()
        .collect();
    storage.put_many(&others).await?;
    storage.put_if_absent(guard, guard_value).await
}
