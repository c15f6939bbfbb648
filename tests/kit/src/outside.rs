//! Reading the store as an outside reader does: Cloudburst's user client
//! reads results and state straight from the store's plain keys (an LWW
//! lattice per key), never through a sidecar.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::history::writer_of;
use aft::proto::anna::LwwValue;
use aft::storage::{open, Storage, StorageOptions};
use prost::Message;

/// A connection to the shared store, with its own runtime.
pub struct OutsideReader {
    runtime: tokio::runtime::Runtime,
    storage: Arc<dyn Storage>,
}

impl OutsideReader {
    /// Opens the store at `url` (the same URL the sidecars use).
    pub fn open(url: &str) -> OutsideReader {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let storage = runtime
            .block_on(open(url, StorageOptions::default()))
            .expect("outside reader cannot open the store");
        OutsideReader { runtime, storage }
    }

    /// The raw bytes at a storage key (`None` if absent or unreachable).
    pub fn raw(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.runtime.block_on(self.storage.get(key)).ok().flatten()
    }

    /// Every storage key with `prefix` (empty if unreachable).
    pub fn keys(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.runtime
            .block_on(self.storage.scan_prefix(prefix))
            .unwrap_or_default()
    }

    /// The plain key's LWW value: (timestamp, value).
    pub fn plain(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        let bytes = self.raw(key.as_bytes())?;
        let lww = LwwValue::decode(bytes.as_slice()).ok()?;
        Some((lww.timestamp, lww.value))
    }

    /// The transaction named by the value at the plain key (history workloads).
    pub fn plain_writer(&self, key: &str) -> Option<String> {
        self.plain(key).and_then(|(_, v)| writer_of(&v))
    }

    /// Polls until every key's plain writer is `writer`, for at most `bound`.
    /// Returns how long it took, or the writers seen at the deadline.
    pub fn await_published(
        &self,
        keys: &[&str],
        writer: &str,
        bound: Duration,
    ) -> Result<Duration, Vec<Option<String>>> {
        let started = Instant::now();
        loop {
            let seen: Vec<Option<String>> = keys.iter().map(|k| self.plain_writer(k)).collect();
            if seen.iter().all(|w| w.as_deref() == Some(writer)) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > bound {
                return Err(seen);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
