//! Recovery: rebuild the committed-version index from the commit records in
//! storage. Data without a commit record is never installed (never visible)
//! and is collected by the orphan sweep.

use std::sync::Arc;

use prost::Message;
use tracing::{info, warn};

use super::commit::COMMIT_RECORD_FORMAT;
use super::engine::Engine;
use super::keys::COMMIT_PREFIX;
use super::TxnError;
use crate::meta::CommitMeta;
use crate::proto::records::CommitRecord;

/// Commit records read per storage round trip during recovery.
const RECOVERY_BATCH: usize = 1000;

/// What the decision key `aft/c/{tid}` of a transaction says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Committed at this timestamp.
    Committed(u64),
    /// An abort marker: it will never commit.
    Aborted,
    /// Nothing yet.
    Undecided,
}

/// Decodes a decision record: `Ok(None)` for an abort marker.
pub fn decode_decision(key: &[u8], bytes: &[u8]) -> Result<Option<CommitMeta>, TxnError> {
    let record = CommitRecord::decode(bytes).map_err(|e| TxnError::CorruptRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })?;
    if record.aborted {
        return Ok(None);
    }
    decode_commit_record(key, bytes).map(Some)
}

/// Decodes a commit record read from storage.
pub fn decode_commit_record(key: &[u8], bytes: &[u8]) -> Result<CommitMeta, TxnError> {
    let corrupt = |reason: String| TxnError::CorruptRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let record = CommitRecord::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    if record.format_version != COMMIT_RECORD_FORMAT {
        return Err(corrupt(format!(
            "unknown commit record format {}",
            record.format_version
        )));
    }
    if record.aborted {
        return Err(corrupt("an abort marker, not a commit record".into()));
    }
    if record.tid.is_empty() || record.timestamp == 0 {
        return Err(corrupt("commit record without id or timestamp".into()));
    }
    Ok(CommitMeta {
        tid: Arc::from(record.tid.as_str()),
        timestamp: record.timestamp,
        write_set: record.write_set.into(),
        base_keys: record.base_keys,
    })
}

impl Engine {
    /// Every commit record in storage (abort markers and unreadable records skipped).
    async fn load_commits(&self) -> Result<Vec<CommitMeta>, TxnError> {
        let keys = self
            .storage
            .scan_prefix(COMMIT_PREFIX)
            .await
            .map_err(|e| TxnError::storage("", e))?;
        let mut commits = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(RECOVERY_BATCH) {
            let values = self
                .storage
                .get_many(chunk)
                .await
                .map_err(|e| TxnError::storage("", e))?;
            for (key, value) in chunk.iter().zip(values) {
                let Some(value) = value else { continue };
                match decode_decision(key, &value) {
                    Ok(Some(meta)) => commits.push(meta),
                    Ok(None) => {} // an abort marker
                    Err(e) => warn!(error = %e, "skipping unreadable commit record"),
                }
            }
        }
        commits.sort_by_key(|c| c.version());
        Ok(commits)
    }

    /// Rebuilds the index from every commit record in storage, then runs a
    /// GC pass (nothing runs yet, so every superseded version goes).
    /// Returns how many commits were installed.
    pub(crate) async fn recover(&self) -> Result<usize, TxnError> {
        let commits = self.load_commits().await?;
        let installed = self.learn_commits(&commits);
        info!(
            commits = installed,
            "recovered the committed-version index from storage"
        );
        self.collect_garbage().await;
        Ok(installed)
    }

    /// Installs commits found in storage that this node has not heard of
    /// (the anti-entropy backstop of multi-node deployments). Returns how many.
    pub async fn learn_from_storage(&self) -> Result<usize, TxnError> {
        let commits = self.load_commits().await?;
        Ok(self.learn_commits(&commits))
    }
}
