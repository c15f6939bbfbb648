//! Recovery: rebuild the committed-version index from the commit records in
//! storage. Data without a commit record is never installed (never visible)
//! and is collected by the orphan sweep; unfinished publications are
//! finished by the publication sweep, which starts with the background tasks.

use tracing::{info, warn};

use super::engine::Engine;
use super::keys::{tid_of_commit_key, COMMIT_PREFIX};
use super::record::decode_decision;
use super::TxnError;
use crate::meta::CommitMeta;

/// Commit records read per storage round trip during recovery.
const RECOVERY_BATCH: usize = 1000;

impl Engine {
    /// Every commit record in storage (unreadable records skipped). Abort
    /// markers are noted for the orphan sweep.
    async fn load_commits(&self) -> Result<Vec<CommitMeta>, TxnError> {
        let keys = self
            .storage
            .scan_prefix(COMMIT_PREFIX)
            .await
            .map_err(|e| TxnError::storage("", e))?;
        let mut commits = Vec::with_capacity(keys.len());
        let mut abort_markers = Vec::new();
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
                    Ok(None) => abort_markers.extend(tid_of_commit_key(key).map(str::to_string)),
                    Err(e) => warn!(error = %e, "skipping unreadable commit record"),
                }
            }
        }
        self.note_abort_markers(abort_markers);
        commits.sort_by_key(|c| c.version());
        Ok(commits)
    }

    /// Rebuilds the index from every commit record in storage, then runs a
    /// GC pass. On a single node nothing runs yet, so every superseded
    /// version goes; a clustered node drops nothing before it knows the
    /// cluster-wide watermark (DAGs on other nodes may still need them).
    /// Returns how many commits were installed.
    pub(crate) async fn recover(&self) -> Result<usize, TxnError> {
        let commits = self.load_commits().await?;
        let installed = self.learn_commits(&commits);
        info!(
            commits = installed,
            "recovered the committed-version index from storage"
        );
        if self.config.regression == Some(super::Regression::RestartCollectsAlone) {
            self.collect_alone().await;
        } else {
            self.collect_garbage().await;
        }
        Ok(installed)
    }

    /// Installs commits found in storage that this node has not heard of
    /// (the anti-entropy backstop of multi-node deployments). Returns how many.
    pub async fn learn_from_storage(&self) -> Result<usize, TxnError> {
        let commits = self.load_commits().await?;
        Ok(self.learn_commits(&commits))
    }
}
