//! The read-atomic read rule (docs/ARCHITECTURE.md, "Read rule").
//!
//! For a read of `key` by a transaction whose read set is `reads` and whose
//! lower bounds are `lower`, choose the newest committed version `v` of
//! `key` such that
//! - (lower bound) `v` is not older than any version of `key` written by a
//!   transaction the reader already read from (`lower[key]`), and
//! - (upper bound) for every key `l` that `v`'s transaction also wrote and
//!   that the reader already read, the reader's read of `l` is not older
//!   than `v`.
//!
//! Own buffered writes and repeated reads are handled by the caller before
//! this rule runs. Branches of a DAG that run side by side on different
//! nodes each follow the rule on their own; where they meet (a function
//! that continues from several, and the commit) [`find_fracture`] checks
//! their reads together. The scan walks versions from the newest down and stops
//! at the lower bound (found by binary search), so a read costs O(log n)
//! plus the versions it must skip, each checked in O(write set).

use std::collections::BTreeMap;

use crate::meta::{IndexView, Version};

/// The outcome of the read rule for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Read this committed version.
    Version(Version),
    /// The key has no committed version: read its plain value (the base).
    Plain,
    /// Versions exist but none satisfies both bounds (a needed version was
    /// collected, or the reader's lower bound names a version not installed).
    NoneAllowed,
}

/// Applies the read rule. `reads`: key -> version read; `lower`: key -> the
/// newest version of that key written by a transaction already read from.
pub fn select_version(
    index: &IndexView<'_>,
    key: &str,
    reads: &BTreeMap<String, Version>,
    lower: &BTreeMap<String, Version>,
) -> Selection {
    let versions = index.versions(key);
    let floor = lower.get(key);
    if versions.is_empty() {
        return match floor {
            Some(bound) if !bound.is_base() => Selection::NoneAllowed,
            _ => Selection::Plain,
        };
    }
    let start = floor.map_or(0, |bound| versions.partition_point(|e| e.version < *bound));
    for entry in versions[start..].iter().rev() {
        let candidate = &entry.version;
        let fractures = !candidate.is_base()
            && index.write_set(&candidate.tid).iter().any(|other| {
                **other != *key && reads.get(&**other).is_some_and(|read| read < candidate)
            });
        if !fractures {
            return Selection::Version(candidate.clone());
        }
    }
    Selection::NoneAllowed
}

/// Records a read of `version` of `key` in the read set and raises the lower
/// bounds of every key `version`'s transaction also wrote.
pub fn record_read(
    index: &IndexView<'_>,
    key: &str,
    version: &Version,
    reads: &mut BTreeMap<String, Version>,
    lower: &mut BTreeMap<String, Version>,
) {
    reads.insert(key.to_string(), version.clone());
    if version.is_base() {
        return;
    }
    for other in index.write_set(&version.tid) {
        match lower.get_mut(&**other) {
            Some(bound) if *bound >= *version => {}
            Some(bound) => *bound = version.clone(),
            None => {
                lower.insert(other.to_string(), version.clone());
            }
        }
    }
}

/// A pair of reads that is not read-atomic: `older` was read at a version
/// older than `newer`'s, whose transaction also wrote `older`'s key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fracture {
    /// The key read too old.
    pub key: String,
    /// The version of it that was read.
    pub read: Version,
    /// The newer version read of another key, whose transaction wrote `key` too.
    pub newer: Version,
}

/// Checks a whole read set at once (the reads of several branches of a
/// DAG): for every version read, every other key its transaction wrote that
/// was also read must have been read at that version or newer. The index
/// must know the write set of every version read (callers learn the
/// missing ones first). Returns the first violation found.
pub fn find_fracture(index: &IndexView<'_>, reads: &BTreeMap<String, Version>) -> Option<Fracture> {
    for (read_key, version) in reads {
        if version.is_base() {
            continue;
        }
        for other in index.write_set(&version.tid) {
            if **other == **read_key {
                continue;
            }
            if let Some(read) = reads.get(&**other) {
                if read < version {
                    return Some(Fracture {
                        key: other.to_string(),
                        read: read.clone(),
                        newer: version.clone(),
                    });
                }
            }
        }
    }
    None
}

/// Merges `incoming` reads into `reads`: returns the keys read at two
/// different versions (the DAG's branches saw different versions of them).
pub fn merge_reads(
    reads: &mut BTreeMap<String, Version>,
    incoming: impl IntoIterator<Item = (String, Version)>,
) -> Vec<String> {
    let mut conflicts = Vec::new();
    for (key, version) in incoming {
        match reads.get(&key) {
            Some(existing) if *existing != version => conflicts.push(key),
            Some(_) => {}
            None => {
                reads.insert(key, version);
            }
        }
    }
    conflicts.sort();
    conflicts
}
