//! The commit record: the one place its format, its abort-marker variant and
//! the reading of a transaction's decision from storage live.
//!
//! `aft/c/<tid>` holds either a commit record (the commit point: the
//! transaction is committed iff it exists) or an abort marker (it will never
//! commit). Whoever writes the key first decides: the coordinator's record is
//! written only if the key is free, and so is every abort marker.

use prost::Message;
use tracing::warn;

use super::engine::Engine;
use super::keys::commit_record_key;
use super::TxnError;
use crate::meta::{CommitMeta, Version};
use crate::proto::records::{CommitRecord, PublicationIntent};

/// Current format of commit records and publication intents.
pub const COMMIT_RECORD_FORMAT: u32 = 1;

/// What the decision key `aft/c/{tid}` of a transaction says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Committed, with this metadata.
    Committed(CommitMeta),
    /// An abort marker: it will never commit.
    Aborted,
    /// Nothing yet (or the record was collected after all its versions were
    /// superseded everywhere).
    Undecided,
}

impl PartialEq for CommitMeta {
    fn eq(&self, other: &Self) -> bool {
        self.tid == other.tid
            && self.timestamp == other.timestamp
            && self.write_set == other.write_set
            && self.base_keys == other.base_keys
    }
}

impl Eq for CommitMeta {}

/// The bytes of the commit record of `meta`, written by `coordinator`.
pub fn encode_commit(meta: &CommitMeta, coordinator: &str) -> Vec<u8> {
    CommitRecord {
        format_version: COMMIT_RECORD_FORMAT,
        tid: meta.tid.to_string(),
        timestamp: meta.timestamp,
        write_set: meta.write_set.to_vec(),
        coordinator: coordinator.to_string(),
        base_keys: meta.base_keys.clone(),
        aborted: false,
    }
    .encode_to_vec()
}

/// The bytes of an abort marker for `tid`, written by `node`.
pub fn encode_abort_marker(tid: &str, node: &str) -> Vec<u8> {
    CommitRecord {
        format_version: COMMIT_RECORD_FORMAT,
        tid: tid.to_string(),
        coordinator: node.to_string(),
        aborted: true,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Decodes what a decision key holds: `Ok(None)` for an abort marker.
pub fn decode_decision(key: &[u8], bytes: &[u8]) -> Result<Option<CommitMeta>, TxnError> {
    let record = CommitRecord::decode(bytes).map_err(|e| corrupt(key, e.to_string()))?;
    if record.aborted {
        return Ok(None);
    }
    decode_commit_record(key, bytes).map(Some)
}

/// Decodes a commit record (an abort marker is an error here).
pub fn decode_commit_record(key: &[u8], bytes: &[u8]) -> Result<CommitMeta, TxnError> {
    let record = CommitRecord::decode(bytes).map_err(|e| corrupt(key, e.to_string()))?;
    if record.format_version != COMMIT_RECORD_FORMAT {
        return Err(corrupt(
            key,
            format!("unknown commit record format {}", record.format_version),
        ));
    }
    if record.aborted {
        return Err(corrupt(key, "an abort marker, not a commit record".into()));
    }
    CommitMeta::checked(
        &record.tid,
        record.timestamp,
        record.write_set,
        record.base_keys,
    )
    .ok_or_else(|| corrupt(key, "commit record without id or timestamp".into()))
}

/// The bytes of a publication intent.
pub fn encode_intent(coordinator: &str, written_at: u64) -> Vec<u8> {
    PublicationIntent {
        format_version: COMMIT_RECORD_FORMAT,
        coordinator: coordinator.to_string(),
        written_at,
    }
    .encode_to_vec()
}

/// Decodes a publication intent; `None` if it is unreadable.
pub fn decode_intent(bytes: &[u8]) -> Option<PublicationIntent> {
    PublicationIntent::decode(bytes).ok()
}

fn corrupt(key: &[u8], reason: String) -> TxnError {
    TxnError::CorruptRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

fn decision_of(key: &[u8], stored: Option<Vec<u8>>) -> Result<Decision, TxnError> {
    match stored {
        None => Ok(Decision::Undecided),
        Some(bytes) => Ok(match decode_decision(key, &bytes)? {
            Some(meta) => Decision::Committed(meta),
            None => Decision::Aborted,
        }),
    }
}

impl Engine {
    /// What storage says of `tid`'s outcome (its decision key).
    pub(crate) async fn read_decision(&self, tid: &str) -> Result<Decision, TxnError> {
        let key = commit_record_key(tid);
        let stored = self
            .storage
            .get(&key)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        let decision = decision_of(&key, stored)?;
        if decision == Decision::Aborted {
            self.note_abort_markers(vec![tid.to_string()]);
        }
        Ok(decision)
    }

    /// The decisions of many transactions in one storage round trip.
    pub(crate) async fn read_decisions(&self, tids: &[&str]) -> Result<Vec<Decision>, TxnError> {
        let keys: Vec<Vec<u8>> = tids.iter().map(|t| commit_record_key(t)).collect();
        let stored = self
            .storage
            .get_many(&keys)
            .await
            .map_err(|e| TxnError::storage("", e))?;
        keys.iter()
            .zip(stored)
            .map(|(key, value)| decision_of(key, value))
            .collect()
    }

    /// Settles `tid` as aborted unless it already committed: claims its
    /// decision key with an abort marker (only if the key is free). Returns
    /// the decision that holds afterwards (never `Undecided`).
    pub(crate) async fn claim_abort(&self, tid: &str) -> Result<Decision, TxnError> {
        // Noted before the write: it may land even if the call fails. The
        // orphan sweep deletes it once old (nothing else would on a node
        // without peers, whose storage is never scanned), if it is one.
        self.note_abort_markers(vec![tid.to_string()]);
        let marker = encode_abort_marker(tid, &self.config.node_address);
        let claimed = self
            .storage
            .put_if_absent(&commit_record_key(tid), &marker)
            .await
            .map_err(|e| TxnError::storage(tid, e))?;
        if claimed {
            return Ok(Decision::Aborted);
        }
        match self.read_decision(tid).await? {
            // The key was taken, then emptied (collected): nothing commits now.
            Decision::Undecided => Ok(Decision::Aborted),
            decided => Ok(decided),
        }
    }

    /// Learns the commits of `tids` from their records in storage (those
    /// this node does not know yet). Returns how many were new.
    pub(crate) async fn learn_from_records(&self, tids: &[&str]) -> Result<usize, TxnError> {
        let unknown: Vec<&str> = tids
            .iter()
            .copied()
            .filter(|t| !self.index.contains_txn(t))
            .collect();
        if unknown.is_empty() {
            return Ok(0);
        }
        let mut learned = Vec::new();
        for decision in self.read_decisions(&unknown).await? {
            if let Decision::Committed(meta) = decision {
                learned.push(meta);
            }
        }
        Ok(self.learn_commits(&learned))
    }

    /// Reads the commit record of `version`'s transaction from storage and
    /// installs it: a reader here needs a version gossip has not brought yet.
    pub(crate) async fn fetch_commit(&self, version: &Version) -> Result<bool, TxnError> {
        match self.learn_from_records(&[&version.tid]).await {
            Ok(n) => Ok(n > 0),
            Err(e) => {
                warn!(tid = %version.tid, error = %e, "cannot read a commit record");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_markers_round_trip() {
        let meta = CommitMeta {
            tid: "t1".into(),
            timestamp: 9,
            write_set: vec!["a".to_string(), "b".to_string()].into(),
            base_keys: vec!["a".into()],
        };
        let bytes = encode_commit(&meta, "10.0.0.1");
        assert_eq!(decode_decision(b"k", &bytes).unwrap(), Some(meta.clone()));
        assert_eq!(decode_commit_record(b"k", &bytes).unwrap(), meta);
        let marker = encode_abort_marker("t1", "10.0.0.2");
        assert_eq!(decode_decision(b"k", &marker).unwrap(), None);
        assert!(decode_commit_record(b"k", &marker).is_err());
        assert!(decode_decision(b"k", b"\xff\xff").is_err());
        let intent = decode_intent(&encode_intent("10.0.0.1", 77)).unwrap();
        assert_eq!(
            (intent.coordinator.as_str(), intent.written_at),
            ("10.0.0.1", 77)
        );
    }
}
