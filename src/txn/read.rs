//! The read path: which version each key of a read request gets (the read
//! rule, under the transaction's lock), then fetching the values (cache,
//! storage, or the upstream node that buffers them) with no lock held.
//!
//! A key this node knows no committed version of is first looked up in
//! storage: its key marker (`aft/k/<key>`, written before any commit of the
//! key is acknowledged) names a committed writer, which is learned from its
//! commit record before the read rule runs. So a read that starts after a
//! commit of a new key was acknowledged anywhere finds that commit, even
//! before gossip brings it (unless read atomicity forbids it).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::engine::{Engine, ReadValue, TxnSlot};
use super::keys::{data_key, decode_base, key_marker};
use super::read_rule::{record_read, select_version, Selection};
use super::transaction::Transaction;
use super::{PeerFailure, TxnError};
use crate::meta::{Version, VersionedKey};
use crate::metrics::ReadSource;
use crate::storage::StorageError;

/// How one key of a read request is answered, decided under the
/// transaction's lock and carried out after it.
enum ReadPlan {
    /// Known already (own buffered write, or a repeated read).
    Ready(Option<Bytes>, ReadSource),
    /// A committed version: from the cache or storage.
    Fetch(Version),
    /// The base version, as the plain key shows it (or its saved copy).
    Plain,
    /// Buffered by this transaction on another node of its DAG.
    Upstream(String),
}

/// A plain key's value and marker, read together.
type PlainRead = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Engine {
    /// Reads `keys` in the transaction of `slot`: read-atomic, read-your-writes
    /// (also of writes buffered upstream), repeatable. Answers in key order.
    pub(crate) async fn read_in(
        &self,
        slot: &TxnSlot,
        keys: &[String],
    ) -> Result<Vec<ReadValue>, TxnError> {
        let tid = slot.lock().id.to_string();
        let mut prefetched = self.learn_unknown_keys(slot, &tid, keys).await?;
        let started = tokio::time::Instant::now();
        let plans = match self.plan_reads(slot, keys) {
            Err(TxnError::NoConsistentVersion { key, .. }) => {
                // A version the rule needs is one this node has not heard of
                // (gossip lag). If the lower bound names it, learn that
                // commit from its record; otherwise (an older version that a
                // newer, excluded one hides) learn every commit in storage.
                let bound = slot.lock().lower.get(&key).cloned();
                if let Some(version) = bound {
                    self.fetch_commit(&version).await?;
                }
                match self.plan_reads(slot, keys) {
                    Err(TxnError::NoConsistentVersion { .. }) => {
                        self.catch_up_from_storage(started).await?;
                        self.plan_reads(slot, keys)?
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        let mut results: Vec<Option<Bytes>> = vec![None; keys.len()];
        let mut misses: Vec<(usize, Version)> = Vec::new();
        let mut plain: Vec<usize> = Vec::new();
        for (i, (key, plan)) in keys.iter().zip(plans).enumerate() {
            match plan {
                ReadPlan::Ready(value, source) => {
                    self.metrics.read_from(source);
                    results[i] = value;
                }
                ReadPlan::Fetch(version) => {
                    let id = VersionedKey {
                        key: Arc::from(key.as_str()),
                        version: version.clone(),
                    };
                    match self.cache.get(&id) {
                        Some(value) => {
                            self.metrics.read_from(ReadSource::Cache);
                            results[i] = value;
                        }
                        None => misses.push((i, version)),
                    }
                }
                ReadPlan::Plain => plain.push(i),
                ReadPlan::Upstream(node) => {
                    results[i] = Some(self.read_upstream(&tid, &node, key).await?);
                    self.metrics.read_from(ReadSource::Buffer);
                }
            }
        }
        if !misses.is_empty() {
            self.fetch_versions(&tid, keys, &misses, &mut results)
                .await?;
        }
        if !plain.is_empty() {
            let missing: Vec<String> = plain
                .iter()
                .map(|i| keys[*i].clone())
                .filter(|k| !prefetched.contains_key(k))
                .collect();
            if !missing.is_empty() {
                let (values, markers) = self
                    .read_plain_with_markers(&missing)
                    .await
                    .map_err(|e| TxnError::storage(&tid, e))?;
                for ((key, value), marker) in missing.into_iter().zip(values).zip(markers) {
                    prefetched.insert(key, (value, marker));
                }
            }
            for i in plain {
                self.metrics.read_from(ReadSource::Storage);
                let key = &keys[i];
                let (value, marker) = prefetched.remove(key).unwrap_or((None, None));
                results[i] = self
                    .settle_plain_read(slot, &tid, key, value.map(Bytes::from), marker)
                    .await?;
            }
        }
        Ok(keys
            .iter()
            .zip(results)
            .map(|(key, value)| ReadValue {
                key: key.clone(),
                value,
            })
            .collect())
    }

    /// Learns every commit record in storage, unless a scan that began
    /// after `since` already did (concurrent readers share one scan).
    async fn catch_up_from_storage(&self, since: tokio::time::Instant) -> Result<(), TxnError> {
        let mut last = self.last_catch_up.lock().await;
        if last.is_some_and(|at| at >= since) {
            return Ok(());
        }
        let began = tokio::time::Instant::now();
        let learned = self.learn_from_storage().await?;
        *last = Some(began);
        debug!(
            learned,
            "a read caught up from the commit records in storage"
        );
        Ok(())
    }

    /// For the keys of a request this node knows no committed version of,
    /// reads their plain values and markers, and learns the commits the
    /// markers name. Returns what it read, by key, for the plain reads that
    /// may follow.
    async fn learn_unknown_keys(
        &self,
        slot: &TxnSlot,
        tid: &str,
        keys: &[String],
    ) -> Result<BTreeMap<String, PlainRead>, TxnError> {
        let unknown: Vec<String> = {
            let txn = slot.lock();
            let view = self.index.view();
            keys.iter()
                .filter(|k| {
                    !txn.writes.contains_key(*k)
                        && !txn.upstream_writes.contains_key(*k)
                        && !txn.reads.contains_key(*k)
                        && view.versions(k).is_empty()
                })
                .cloned()
                .collect()
        };
        if unknown.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (values, markers) = self
            .read_plain_with_markers(&unknown)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        let writers: Vec<&str> = markers
            .iter()
            .flatten()
            .filter_map(|m| std::str::from_utf8(m).ok())
            .collect();
        if !writers.is_empty() {
            self.learn_from_records(&writers).await?;
        }
        Ok(unknown
            .into_iter()
            .zip(values.into_iter().zip(markers))
            .collect())
    }

    /// Decides, under the transaction's lock, which version each key reads.
    fn plan_reads(&self, slot: &TxnSlot, keys: &[String]) -> Result<Vec<ReadPlan>, TxnError> {
        let mut txn = slot.lock();
        txn.check_running()?;
        let view = self.index.view();
        let mut plans = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = txn.writes.get(key) {
                plans.push(ReadPlan::Ready(Some(value.clone()), ReadSource::Buffer));
                continue;
            }
            if let Some(node) = txn.upstream_writes.get(key) {
                plans.push(match txn.upstream_values.get(key) {
                    Some(value) => ReadPlan::Ready(Some(value.clone()), ReadSource::Buffer),
                    None => ReadPlan::Upstream(node.clone()),
                });
                continue;
            }
            if let Some(version) = txn.reads.get(key) {
                plans.push(match txn.plain_values.get(key) {
                    Some(value) => ReadPlan::Ready(value.clone(), ReadSource::Cache),
                    // Read upstream as the base: read the base here the same way.
                    None if version.is_base() => ReadPlan::Plain,
                    None => ReadPlan::Fetch(version.clone()),
                });
                continue;
            }
            let Transaction { reads, lower, .. } = &mut *txn;
            match select_version(&view, key, reads, lower) {
                Selection::Version(version) => {
                    record_read(&view, key, &version, reads, lower);
                    plans.push(ReadPlan::Fetch(version));
                }
                Selection::Plain => {
                    record_read(&view, key, &Version::base(), reads, lower);
                    plans.push(ReadPlan::Plain);
                }
                Selection::NoneAllowed => {
                    warn!(tid = %txn.id, key = %key, "no consistent version");
                    return Err(TxnError::NoConsistentVersion {
                        tid: txn.id.to_string(),
                        key: key.clone(),
                    });
                }
            }
        }
        Ok(plans)
    }

    /// Reads the value `tid` buffered for `key` on `node` (upstream in its DAG).
    async fn read_upstream(&self, tid: &str, node: &str, key: &str) -> Result<Bytes, TxnError> {
        let remote = self.remote.get().ok_or_else(|| TxnError::Peer {
            tid: tid.to_string(),
            peer: node.to_string(),
            failure: PeerFailure::Off,
        })?;
        remote
            .read_buffered(node, tid, key)
            .await?
            .ok_or_else(|| TxnError::Peer {
                tid: tid.to_string(),
                peer: node.to_string(),
                failure: PeerFailure::ValueGone(key.to_string()),
            })
    }

    /// Fetches committed versions missing from the cache, in one round trip.
    async fn fetch_versions(
        &self,
        tid: &str,
        keys: &[String],
        misses: &[(usize, Version)],
        results: &mut [Option<Bytes>],
    ) -> Result<(), TxnError> {
        let storage_keys: Vec<Vec<u8>> = misses
            .iter()
            .map(|(i, version)| data_key(version, &keys[*i]))
            .collect();
        let fetched = self
            .storage
            .get_many(&storage_keys)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        for ((i, version), stored) in misses.iter().zip(fetched) {
            self.metrics.read_from(ReadSource::Storage);
            let key = &keys[*i];
            let value = stored_version_value(key, version, stored)?;
            self.cache.insert(
                VersionedKey {
                    key: Arc::from(key.as_str()),
                    version: version.clone(),
                },
                value.clone(),
            );
            results[*i] = value;
        }
        Ok(())
    }

    /// A plain-key value was read for a key with no committed version here.
    /// If some commit wrote the key (its marker exists, or this node learned
    /// a version since), the plain key may already hold a published value:
    /// the base is then the copy saved by the key's first commit. The first
    /// base value observed is kept (repeatable reads).
    async fn settle_plain_read(
        &self,
        slot: &TxnSlot,
        tid: &str,
        key: &str,
        value: Option<Bytes>,
        marker: Option<Vec<u8>>,
    ) -> Result<Option<Bytes>, TxnError> {
        let has_versions = marker.is_some() || !self.index.view().versions(key).is_empty();
        let value = if has_versions {
            let stored = self
                .storage
                .get(&data_key(&Version::base(), key))
                .await
                .map_err(|e| TxnError::storage(tid, e))?;
            stored_version_value(key, &Version::base(), stored)?
        } else {
            value
        };
        Ok(slot
            .lock()
            .plain_values
            .entry(key.to_string())
            .or_insert(value)
            .clone())
    }

    /// Reads the plain values of `keys` and their markers. The marker of a
    /// key is read no earlier than its plain value (one snapshot where the
    /// backend's multi-key reads are atomic, else plain first, markers
    /// second): a plain value that is a publication implies its marker is seen.
    pub(crate) async fn read_plain_with_markers(
        &self,
        keys: &[String],
    ) -> Result<(Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>), StorageError> {
        let plain_keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let marker_keys: Vec<Vec<u8>> = keys.iter().map(|k| key_marker(k)).collect();
        if self.storage.snapshot_reads() {
            let mut asked = plain_keys;
            asked.extend(marker_keys);
            let mut values = self.storage.get_many(&asked).await?;
            let markers = values.split_off(keys.len());
            Ok((values, markers))
        } else {
            let values = self.storage.get_many(&plain_keys).await?;
            let markers = self.storage.get_many(&marker_keys).await?;
            Ok((values, markers))
        }
    }
}

/// The value of `key` at `version` as storage returned it: data of a
/// committed version must exist (a missing one was collected while this
/// transaction needed it), and a saved base is decoded (present or absent).
fn stored_version_value(
    key: &str,
    version: &Version,
    stored: Option<Vec<u8>>,
) -> Result<Option<Bytes>, TxnError> {
    let corrupt = |reason: String| TxnError::CorruptRecord {
        key: key.to_string(),
        reason,
    };
    let Some(stored) = stored else {
        return Err(corrupt(format!(
            "data of committed version {version} is missing (collected)"
        )));
    };
    if version.is_base() {
        return decode_base(&stored)
            .map(|v| v.map(Bytes::from))
            .ok_or_else(|| corrupt("unreadable saved base value".into()));
    }
    Ok(Some(Bytes::from(stored)))
}
