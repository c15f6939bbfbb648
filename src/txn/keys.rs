//! The storage key schema (documented in `docs/STORAGE.md` and `proto/records.proto`).
//!
//! - `aft/c/<tid>`: the commit record of `<tid>` (the commit point);
//! - `aft/d/<tid>/<key>`: the value `<tid>` wrote to `<key>`;
//! - `aft/d/~base/<key>`: the plain value `<key>` had before its first commit;
//! - `aft/k/<key>`: a marker naming a transaction that wrote `<key>` (written
//!   with the commit's data, before publication): "this key has versions";
//! - `<key>`: the plain key, where the newest committed value is published.
//!
//! Transaction ids never contain `/` (they are checked at the IPC edge), so
//! the first `/` after `aft/d/` ends the transaction id.

use crate::meta::Version;

/// Prefix of every commit record key.
pub const COMMIT_PREFIX: &[u8] = b"aft/c/";
/// Prefix of every data version key.
pub const DATA_PREFIX: &[u8] = b"aft/d/";

/// Prefix of the per-key markers.
pub const MARKER_PREFIX: &[u8] = b"aft/k/";

/// `aft/k/<key>`: names a committed (or committing) writer of `key`.
pub fn key_marker(key: &str) -> Vec<u8> {
    [MARKER_PREFIX, key.as_bytes()].concat()
}

/// `aft/c/<tid>`.
pub fn commit_record_key(tid: &str) -> Vec<u8> {
    [COMMIT_PREFIX, tid.as_bytes()].concat()
}

/// `aft/d/<tid>/<key>`, the storage key of `key` at `version`.
pub fn data_key(version: &Version, key: &str) -> Vec<u8> {
    data_key_for_tid(&version.tid, key)
}

/// `aft/d/<tid>/<key>`.
pub fn data_key_for_tid(tid: &str, key: &str) -> Vec<u8> {
    [DATA_PREFIX, tid.as_bytes(), b"/", key.as_bytes()].concat()
}

/// The transaction id of a data key (`None` if it is not one).
pub fn tid_of_data_key(storage_key: &[u8]) -> Option<&str> {
    let rest = storage_key.strip_prefix(DATA_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'/')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The transaction id of a commit record key (`None` if it is not one).
pub fn tid_of_commit_key(storage_key: &[u8]) -> Option<&str> {
    std::str::from_utf8(storage_key.strip_prefix(COMMIT_PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let v = Version::new(5, "t1");
        assert_eq!(data_key(&v, "a/b"), b"aft/d/t1/a/b".to_vec());
        assert_eq!(tid_of_data_key(b"aft/d/t1/a/b"), Some("t1"));
        assert_eq!(tid_of_data_key(b"aft/d/t1"), None);
        assert_eq!(tid_of_data_key(b"other"), None);
        assert_eq!(commit_record_key("t1"), b"aft/c/t1".to_vec());
        assert_eq!(tid_of_commit_key(b"aft/c/t1"), Some("t1"));
        assert_eq!(data_key(&Version::base(), "k"), b"aft/d/~base/k".to_vec());
    }
}
