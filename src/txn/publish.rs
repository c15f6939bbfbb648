//! Publication: every key of a committed write set reaches its plain key
//! (an LWW merge at the commit timestamp), whichever node buffered it, so
//! readers outside the sidecar (Cloudburst's user client) see the commit.
//!
//! The coordinator publishes right after acknowledging the commit: the
//! values it buffered itself from memory, the participants' from their data
//! keys. A commit's data batch carries a publication intent (`aft/p/<tid>`),
//! deleted once everything is published; if the coordinator dies first, the
//! publication sweep of any live node finds the intent and finishes the job
//! from the commit record and the data keys. Publication is never a source
//! of truth for transactions, and it is idempotent (LWW merges).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tracing::{debug, info, warn};

use super::commit::marker_entries;
use super::engine::Engine;
use super::keys::{data_key_for_tid, intent_key, tid_of_intent_key, INTENT_PREFIX};
use super::record::Decision;
use crate::meta::CommitMeta;
use crate::proto::anna::LwwValue;
use crate::storage::{LwwMerge, Storage, StorageError};

/// A committed transaction whose write set must reach its plain keys.
pub(crate) struct Publication {
    /// The commit.
    pub meta: CommitMeta,
    /// Values already at hand (the coordinator's own buffer); the rest are
    /// read from their data keys.
    pub known: BTreeMap<String, Bytes>,
    /// Whether the key markers are already in storage.
    pub markers_written: bool,
}

impl Engine {
    /// Publishes in the background (failures are counted and left to the sweep).
    pub(crate) fn spawn_publication(&self, mut publication: Publication) {
        if self.config.regression == Some(super::Regression::UnpublishedParticipantWrites) {
            let known = publication.known.keys().cloned().collect::<Vec<_>>();
            publication.meta.write_set = known.into();
        }
        let storage = Arc::clone(&self.storage);
        let metrics = self.metrics.clone();
        self.spawn_tied(async move {
            if let Err(e) = publish(storage.as_ref(), &publication).await {
                metrics.publish_failures.inc();
                warn!(tid = %publication.meta.tid, error = %e,
                    "publishing committed values to their plain keys failed; the sweep will finish it");
            }
        });
    }

    /// One pass of the publication sweep: finishes every publication intent
    /// older than the sweep interval. A committed transaction's values are
    /// published; an intent whose transaction aborted is dropped; one whose
    /// coordinator gave up before its commit point (no decision long after
    /// the intent was written) is fenced with an abort marker, then dropped.
    /// Returns how many publications it finished.
    pub async fn sweep_publications(&self) -> usize {
        if self.config.regression == Some(super::Regression::UnpublishedParticipantWrites) {
            return 0;
        }
        let keys = match self.storage.scan_prefix(INTENT_PREFIX).await {
            Ok(keys) if keys.is_empty() => return 0,
            Ok(keys) => keys,
            Err(e) => {
                warn!(error = %e, "publication sweep could not scan storage");
                return 0;
            }
        };
        let intents = match self.storage.get_many(&keys).await {
            Ok(intents) => intents,
            Err(e) => {
                warn!(error = %e, "publication sweep could not read intents");
                return 0;
            }
        };
        // How long this node has seen each intent, by its own clock (the
        // intent's own time comes from its coordinator's wall clock, which
        // may be off).
        let now = tokio::time::Instant::now();
        let ages: Vec<(&str, Duration)> = {
            let mut seen = self.intents_seen.lock();
            let present: Vec<&str> = keys
                .iter()
                .zip(&intents)
                .filter(|(_, intent)| intent.is_some())
                .filter_map(|(key, _)| tid_of_intent_key(key))
                .collect();
            seen.retain(|tid, _| present.contains(&tid.as_str()));
            present
                .into_iter()
                .map(|tid| {
                    let first = *seen.entry(tid.to_string()).or_insert(now);
                    (tid, now.duration_since(first))
                })
                .collect()
        };
        let grace = self.config.publish_sweep_interval;
        let abandoned_after = self.fence_delay();
        let due: Vec<(&str, Duration)> =
            ages.into_iter().filter(|(_, age)| *age >= grace).collect();
        if due.is_empty() {
            return 0;
        }
        let tids: Vec<&str> = due.iter().map(|(tid, _)| *tid).collect();
        let decisions = match self.read_decisions(&tids).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "publication sweep could not read commit records");
                return 0;
            }
        };
        let mut finished = 0;
        for ((tid, age), decision) in due.into_iter().zip(decisions) {
            let decision = match decision {
                Decision::Undecided if age > abandoned_after => match self.claim_abort(tid).await {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(tid = %tid, error = %e, "cannot fence an abandoned commit");
                        continue;
                    }
                },
                other => other,
            };
            let done = match decision {
                Decision::Committed(meta) => {
                    let publication = Publication {
                        meta,
                        known: BTreeMap::new(),
                        markers_written: false,
                    };
                    match publish(self.storage.as_ref(), &publication).await {
                        Ok(keys) => {
                            info!(tid = %tid, keys, "published a commit its coordinator did not");
                            self.metrics.publications_swept.inc();
                            finished += 1;
                            true
                        }
                        Err(e) => {
                            warn!(tid = %tid, error = %e, "publication sweep could not publish");
                            false
                        }
                    }
                }
                Decision::Aborted => self.storage.delete(&intent_key(tid)).await.is_ok(),
                // Maybe still committing (young, or the record is in flight).
                Decision::Undecided => false,
            };
            if done {
                debug!(tid = %tid, "publication intent settled");
            }
        }
        finished
    }
}

/// The LWW merges that publish `values` (key, the `LWWValue` its writer
/// sent) to their plain keys at the commit `timestamp`. A value that is not
/// an `LWWValue` is skipped (puts refuse those).
pub(crate) fn plain_merges<'a>(
    timestamp: u64,
    values: impl IntoIterator<Item = (&'a str, &'a Bytes)>,
) -> Vec<LwwMerge> {
    values
        .into_iter()
        .filter_map(|(key, payload)| {
            let lww = LwwValue::decode(payload.as_ref()).ok()?;
            let restamped = LwwValue {
                timestamp,
                value: lww.value,
            }
            .encode_to_vec();
            Some((key.as_bytes().to_vec(), timestamp, restamped))
        })
        .collect()
}

/// Publishes `publication`: reads the values not at hand from their data
/// keys (a missing one was superseded and collected: a newer commit
/// publishes that key), writes the key markers if needed, merges every value
/// into its plain key at the commit timestamp, then drops the intent.
/// Returns how many keys it published.
pub(crate) async fn publish(
    storage: &dyn Storage,
    publication: &Publication,
) -> Result<usize, StorageError> {
    let meta = &publication.meta;
    let missing: Vec<&String> = meta
        .write_set
        .iter()
        .filter(|k| !publication.known.contains_key(*k))
        .collect();
    let mut values: Vec<(&str, Bytes)> = publication
        .known
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    if !missing.is_empty() {
        let data_keys: Vec<Vec<u8>> = missing
            .iter()
            .map(|k| data_key_for_tid(&meta.tid, k))
            .collect();
        let fetched = storage.get_many(&data_keys).await?;
        for (key, value) in missing.into_iter().zip(fetched) {
            if let Some(value) = value {
                values.push((key.as_str(), Bytes::from(value)));
            }
        }
    }
    if !publication.markers_written {
        storage.put_many(&marker_entries(meta)).await?;
    }
    let merges = plain_merges(meta.timestamp, values.iter().map(|(k, v)| (*k, v)));
    storage.merge_lww_many(&merges).await?;
    storage.delete(&intent_key(&meta.tid)).await?;
    Ok(merges.len())
}
