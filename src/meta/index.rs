//! The committed-version index: per key, its committed versions in order;
//! per transaction, its write set. Plus local garbage collection.
//!
//! # Concurrency
//! One `parking_lot::RwLock` guards the whole index. Readers (read
//! selection, one per transactional read) hold the read lock for the few
//! comparisons the read rule makes; writers (install of a commit, a GC pass)
//! hold the write lock for work proportional to the commit's write set or
//! to the versions dropped. No I/O ever happens under the lock.
//!
//! # Garbage collection
//! Every install gets an increasing sequence number. A version stops being
//! the newest of its key at some install (`superseded_seq`; a version
//! installed below a newer one is superseded at its own install). A running
//! transaction only ever needs versions that were the newest of their key at
//! some point during its life, so a superseded version can be dropped once
//! every running transaction started at or after its `superseded_seq`.
//! The newest version of a key is never dropped.
//!
//! # Memory
//! About 150-200 bytes per key with one live version (measured with
//! `aft-bench memory`): each key's name is allocated once, as an `Arc<str>`
//! shared by the key table and its transaction's write set; a key's single
//! live version sits inline in its table slot (no allocation of its own);
//! a transaction's first writes are kept as positions in its write set.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};
use smallvec::SmallVec;

use super::Version;

/// A version of a key in the index.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// The version.
    pub version: Version,
    /// Install sequence at which this stopped being the newest (`u64::MAX` while newest).
    superseded_seq: u64,
}

/// What the index keeps about a committed transaction.
#[derive(Debug, Clone)]
pub struct CommittedTxn {
    /// Its commit timestamp.
    pub timestamp: u64,
    /// Every key it wrote (the same allocations as the key table's).
    pub write_set: Arc<[Arc<str>]>,
    /// Positions in `write_set` of the keys it wrote first (their base
    /// versions were saved).
    base_positions: Box<[u32]>,
    live_versions: usize,
    /// Newest commit timestamp among the versions that superseded its dropped ones.
    max_superseded_by: u64,
}

/// A commit to install: the metadata of its commit record.
///
/// One commit has three forms, each for one place: `CommitRecord`
/// (`proto/records.proto`) is what storage holds, with a format version and
/// an abort-marker variant; `CommittedTransaction` (`proto/peer.proto`) is
/// what gossip carries between nodes; `CommitMeta` is the engine's own,
/// checked form. Both wire forms become a `CommitMeta` only through
/// [`CommitMeta::checked`], so the rules live in one place.
#[derive(Debug, Clone)]
pub struct CommitMeta {
    /// Transaction id.
    pub tid: Arc<str>,
    /// Commit timestamp.
    pub timestamp: u64,
    /// Keys written.
    pub write_set: Arc<[String]>,
    /// Keys whose pre-commit plain value was saved as the base version.
    pub base_keys: Vec<String>,
}

impl CommitMeta {
    /// A commit from a record or a message, if it names a transaction and a
    /// timestamp (`None` otherwise: such a commit is malformed).
    pub fn checked(
        tid: &str,
        timestamp: u64,
        write_set: Vec<String>,
        base_keys: Vec<String>,
    ) -> Option<CommitMeta> {
        (!tid.is_empty() && timestamp != 0).then(|| CommitMeta {
            tid: Arc::from(tid),
            timestamp,
            write_set: write_set.into(),
            base_keys,
        })
    }
}

impl CommittedTxn {
    /// The keys it wrote first (their base versions were saved).
    pub fn base_keys(&self) -> impl Iterator<Item = &str> {
        self.base_positions
            .iter()
            .filter_map(|&p| self.write_set.get(p as usize))
            .map(|k| &**k)
    }
}

impl CommitMeta {
    /// The version every key of this commit gets.
    pub fn version(&self) -> Version {
        Version::new(self.timestamp, Arc::clone(&self.tid))
    }
}

/// A version dropped from the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The key.
    pub key: String,
    /// The version dropped.
    pub version: Version,
    /// Commit timestamp of the version that superseded it.
    pub superseded_by: u64,
}

/// What a GC pass removed from the index; the caller deletes the data.
#[derive(Debug, Default)]
pub struct GcOutcome {
    /// Versions dropped from the index.
    pub dropped: Vec<Dropped>,
    /// Transactions none of whose versions remain: their commit records can
    /// go (with the newest timestamp that superseded one of their versions).
    pub retired_txns: Vec<(Arc<str>, u64)>,
}

/// A key's versions, oldest first; the usual single one needs no allocation.
type Versions = SmallVec<[VersionEntry; 1]>;

#[derive(Default)]
struct Inner {
    keys: HashMap<Arc<str>, Versions>,
    txns: HashMap<Arc<str>, CommittedTxn>,
    seq: u64,
    /// Superseded versions in order of `superseded_seq` (never decreasing):
    /// (superseded_seq, key, version, commit timestamp of its superseder).
    superseded: VecDeque<(u64, Arc<str>, Version, u64)>,
    version_count: usize,
}

/// The committed-version index. Share it behind an `Arc`.
#[derive(Default)]
pub struct VersionIndex {
    inner: RwLock<Inner>,
}

/// A consistent read-only view of the index (holds the read lock: keep it short).
pub struct IndexView<'a> {
    inner: RwLockReadGuard<'a, Inner>,
}

impl IndexView<'_> {
    /// The versions of `key`, oldest first (empty if none is known).
    pub fn versions(&self, key: &str) -> &[VersionEntry] {
        self.inner
            .keys
            .get(key)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// The write set of a committed transaction (empty for the base version).
    pub fn write_set(&self, tid: &str) -> &[Arc<str>] {
        self.inner
            .txns
            .get(tid)
            .map(|t| &*t.write_set)
            .unwrap_or(&[])
    }

    /// What the index knows of a committed transaction.
    pub fn txn(&self, tid: &str) -> Option<&CommittedTxn> {
        self.inner.txns.get(tid)
    }
}

impl VersionIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// A read view.
    pub fn view(&self) -> IndexView<'_> {
        IndexView {
            inner: self.inner.read(),
        }
    }

    /// The current install sequence (a transaction starting now records it).
    pub fn current_seq(&self) -> u64 {
        self.inner.read().seq
    }

    /// Whether the index holds (some versions of) transaction `tid`.
    pub fn contains_txn(&self, tid: &str) -> bool {
        self.inner.read().txns.contains_key(tid)
    }

    /// Number of keys and of versions held (for metrics and GC tests).
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.read();
        (inner.keys.len(), inner.version_count)
    }

    /// Installs a committed transaction; returns whether it was new.
    /// Idempotent: installing a transaction the index holds is a no-op.
    pub fn install(&self, commit: &CommitMeta) -> bool {
        let mut inner = self.inner.write();
        if inner.txns.contains_key(&commit.tid) {
            return false;
        }
        inner.seq += 1;
        let seq = inner.seq;
        let version = commit.version();
        let Inner {
            keys,
            superseded,
            version_count,
            ..
        } = &mut *inner;
        let mut write_set: Vec<Arc<str>> = Vec::with_capacity(commit.write_set.len());
        let mut base_positions = Vec::new();
        for (position, key) in commit.write_set.iter().enumerate() {
            // One allocation per key name, shared by the table and write sets.
            let (key, versions) = match keys.get_key_value(key.as_str()) {
                Some((shared, _)) => {
                    let shared = Arc::clone(shared);
                    let versions = keys.get_mut(&shared);
                    (shared, versions)
                }
                None => {
                    let shared: Arc<str> = Arc::from(key.as_str());
                    keys.insert(Arc::clone(&shared), Versions::new());
                    let versions = keys.get_mut(&shared);
                    (shared, versions)
                }
            };
            write_set.push(Arc::clone(&key));
            let Some(versions) = versions else {
                continue;
            };
            let first_write = commit.base_keys.iter().any(|b| **b == *key);
            if first_write {
                base_positions.push(u32::try_from(position).unwrap_or(u32::MAX));
            }
            if versions.is_empty() && first_write {
                versions.push(VersionEntry {
                    version: Version::base(),
                    superseded_seq: u64::MAX,
                });
                *version_count += 1;
            }
            let pos = versions.partition_point(|e| e.version < version);
            if versions.get(pos).is_some_and(|e| e.version == version) {
                continue;
            }
            let newest = pos == versions.len();
            if newest {
                if let Some(prev) = versions.last_mut() {
                    prev.superseded_seq = seq;
                    superseded.push_back((
                        seq,
                        key.clone(),
                        prev.version.clone(),
                        version.timestamp,
                    ));
                }
            } else {
                let next_ts = versions
                    .get(pos)
                    .map_or(version.timestamp, |e| e.version.timestamp);
                superseded.push_back((seq, key.clone(), version.clone(), next_ts));
            }
            versions.insert(
                pos,
                VersionEntry {
                    version: version.clone(),
                    superseded_seq: if newest { u64::MAX } else { seq },
                },
            );
            *version_count += 1;
        }
        inner.txns.insert(
            Arc::clone(&commit.tid),
            CommittedTxn {
                timestamp: commit.timestamp,
                live_versions: write_set.len(),
                write_set: write_set.into(),
                base_positions: base_positions.into(),
                max_superseded_by: 0,
            },
        );
        true
    }

    /// Every transaction held with a commit timestamp above `since`, in
    /// version order.
    pub fn commits_since(&self, since: u64) -> Vec<CommitMeta> {
        let inner = self.inner.read();
        let mut commits: Vec<CommitMeta> = inner
            .txns
            .iter()
            .filter(|(_, t)| t.timestamp > since)
            .map(|(tid, t)| CommitMeta {
                tid: Arc::clone(tid),
                timestamp: t.timestamp,
                write_set: t.write_set.iter().map(|k| k.to_string()).collect(),
                base_keys: t.base_keys().map(str::to_string).collect(),
            })
            .collect();
        commits.sort_by_key(CommitMeta::version);
        commits
    }

    /// Drops every superseded version that no running transaction can need:
    /// those superseded at or before `min_running_start_seq` (the smallest
    /// start sequence of any transaction running here, or the current
    /// sequence when none runs) and, with `below` (a cluster), whose
    /// superseder committed before that timestamp (the cluster-wide
    /// watermark: no transaction anywhere can still need them).
    pub fn collect(&self, min_running_start_seq: u64, below: Option<u64>) -> GcOutcome {
        let mut inner = self.inner.write();
        let mut outcome = GcOutcome::default();
        while inner.superseded.front().is_some_and(|(seq, _, _, ts)| {
            *seq <= min_running_start_seq && below.is_none_or(|limit| *ts < limit)
        }) {
            let Some((_, key, version, superseded_by)) = inner.superseded.pop_front() else {
                break;
            };
            let Inner {
                keys,
                txns,
                version_count,
                ..
            } = &mut *inner;
            if let Some(versions) = keys.get_mut(&key) {
                if let Ok(pos) = versions.binary_search_by(|e| e.version.cmp(&version)) {
                    versions.remove(pos);
                    *version_count -= 1;
                    // Back inline once a single version is left.
                    versions.shrink_to_fit();
                }
            }
            if !version.is_base() {
                if let Some(txn) = txns.get_mut(&*version.tid) {
                    txn.live_versions = txn.live_versions.saturating_sub(1);
                    txn.max_superseded_by = txn.max_superseded_by.max(superseded_by);
                    if txn.live_versions == 0 {
                        let newest = txn.max_superseded_by;
                        txns.remove(&*version.tid);
                        outcome
                            .retired_txns
                            .push((Arc::clone(&version.tid), newest));
                    }
                }
            }
            outcome.dropped.push(Dropped {
                key: key.to_string(),
                version,
                superseded_by,
            });
        }
        outcome
    }

    /// The oldest superseder timestamp among the versions that transactions
    /// running here may need by this node's own rule: those superseded after
    /// `min_running_start_seq`. `None` if there are none.
    pub fn pinned_superseder(&self, min_running_start_seq: u64) -> Option<u64> {
        self.inner
            .read()
            .superseded
            .iter()
            .rev()
            .take_while(|(seq, _, _, _)| *seq > min_running_start_seq)
            .map(|(_, _, _, ts)| *ts)
            .min()
    }

    /// Number of superseded versions still held (GC backlog).
    pub fn superseded_len(&self) -> usize {
        self.inner.read().superseded.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(tid: &str, ts: u64, keys: &[&str]) -> CommitMeta {
        CommitMeta {
            tid: tid.into(),
            timestamp: ts,
            write_set: keys.iter().map(|k| k.to_string()).collect(),
            base_keys: Vec::new(),
        }
    }

    fn tids(index: &VersionIndex, key: &str) -> Vec<String> {
        index
            .view()
            .versions(key)
            .iter()
            .map(|e| e.version.tid.to_string())
            .collect()
    }

    #[test]
    fn versions_stay_ordered_even_when_installed_out_of_order() {
        let index = VersionIndex::new();
        assert!(index.install(&commit("b", 20, &["k"])));
        assert!(index.install(&commit("a", 10, &["k", "l"])));
        assert!(index.install(&commit("c", 30, &["k"])));
        assert!(
            !index.install(&commit("c", 30, &["k"])),
            "reinstall is a no-op"
        );
        assert_eq!(tids(&index, "k"), ["a", "b", "c"]);
        let view = index.view();
        let written: Vec<&str> = view.write_set("a").iter().map(|k| &**k).collect();
        assert_eq!(written, ["k", "l"]);
        drop(view);
        assert_eq!(index.size(), (2, 4));
    }

    #[test]
    fn gc_keeps_the_newest_and_what_running_transactions_may_need() {
        let index = VersionIndex::new();
        index.install(&commit("a", 10, &["k", "l"])); // seq 1
        let reader_start = index.current_seq(); // a reader starts at seq 1
        index.install(&commit("b", 20, &["k"])); // seq 2: a's k superseded
        index.install(&commit("c", 30, &["k"])); // seq 3: b's k superseded
        let out = index.collect(reader_start, None);
        assert!(
            out.dropped.is_empty(),
            "reader started before both supersedes"
        );
        assert_eq!(tids(&index, "k"), ["a", "b", "c"]);

        let out = index.collect(2, None);
        assert_eq!(
            out.dropped,
            vec![Dropped {
                key: "k".into(),
                version: Version::new(10, "a"),
                superseded_by: 20
            }]
        );
        assert!(out.retired_txns.is_empty(), "a still has l");
        assert_eq!(index.pinned_superseder(2), Some(30));
        let out = index.collect(index.current_seq(), None);
        assert_eq!(
            out.dropped,
            vec![Dropped {
                key: "k".into(),
                version: Version::new(20, "b"),
                superseded_by: 30
            }]
        );
        assert_eq!(index.pinned_superseder(index.current_seq()), None);
        assert_eq!(out.retired_txns, vec![(Arc::<str>::from("b"), 30)]);
        assert_eq!(tids(&index, "k"), ["c"]);
        assert_eq!(tids(&index, "l"), ["a"]);
    }

    #[test]
    fn a_cluster_watermark_holds_back_what_local_gc_would_drop() {
        let index = VersionIndex::new();
        index.install(&commit("a", 10, &["k"])); // seq 1
        index.install(&commit("b", 20, &["k"])); // seq 2: a superseded by 20
        index.install(&commit("c", 30, &["k"])); // seq 3: b superseded by 30
        let now = index.current_seq();
        assert!(
            index.collect(now, Some(20)).dropped.is_empty(),
            "20 is not below 20"
        );
        assert_eq!(index.collect(now, Some(25)).dropped.len(), 1);
        assert_eq!(tids(&index, "k"), ["b", "c"]);
        assert_eq!(index.collect(now, Some(31)).dropped.len(), 1);
        assert_eq!(tids(&index, "k"), ["c"]);
    }

    #[test]
    fn base_version_sits_below_the_first_commit() {
        let index = VersionIndex::new();
        let mut first = commit("a", 10, &["k"]);
        first.base_keys = vec!["k".into()];
        index.install(&first);
        assert_eq!(tids(&index, "k"), ["~base", "a"]);
        let out = index.collect(index.current_seq(), None);
        assert_eq!(
            out.dropped,
            vec![Dropped {
                key: "k".into(),
                version: Version::base(),
                superseded_by: 10
            }]
        );
        assert!(out.retired_txns.is_empty());
    }
}
