//! The storage key schema (documented in `docs/ARCHITECTURE.md` and
//! `proto/records.proto`).
//!
//! - `aft/c/<tid>`: the commit record of `<tid>` (the commit point), or an
//!   abort marker;
//! - `aft/d/<tid>/<key>`: the value `<tid>` wrote to `<key>`;
//! - `aft/d/~base/<key>`: the plain value `<key>` had before its first commit
//!   ([`encode_base`]: present or absent);
//! - `aft/k/<key>`: a marker naming a committed writer of `<key>` (written
//!   before the commit is acknowledged): "this key has versions";
//! - `aft/p/<tid>`: a publication intent: `<tid>` may have committed values
//!   not yet published to their plain keys;
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
/// Prefix of the publication intents.
pub const INTENT_PREFIX: &[u8] = b"aft/p/";

/// `aft/p/<tid>`: the publication intent of `tid`.
pub fn intent_key(tid: &str) -> Vec<u8> {
    [INTENT_PREFIX, tid.as_bytes()].concat()
}

/// The transaction id of a publication intent key (`None` if it is not one).
pub fn tid_of_intent_key(storage_key: &[u8]) -> Option<&str> {
    std::str::from_utf8(storage_key.strip_prefix(INTENT_PREFIX)?).ok()
}

/// A saved base version as stored: one tag byte (0 = the key had no plain
/// value, 1 = it had), then the value. A missing base key therefore always
/// means "collected", never "the key had no value".
pub fn encode_base(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(1);
            out.extend_from_slice(v);
            out
        }
    }
}

/// Decodes [`encode_base`]: `Some(value)` for a well-formed entry.
pub fn decode_base(stored: &[u8]) -> Option<Option<Vec<u8>>> {
    match stored.split_first()? {
        (0, []) => Some(None),
        (1, rest) => Some(Some(rest.to_vec())),
        _ => None,
    }
}

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

/// Whether `tid` is a well-formed transaction id: 1 to 128 characters from
/// `[A-Za-z0-9._:-]` (this keeps it safe inside storage keys).
pub fn valid_tid(tid: &str) -> bool {
    (1..=128).contains(&tid.len())
        && tid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
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
        assert_eq!(tid_of_intent_key(&intent_key("t1")), Some("t1"));
    }

    #[test]
    fn base_values_tell_absent_from_empty() {
        assert_eq!(decode_base(&encode_base(None)), Some(None));
        assert_eq!(decode_base(&encode_base(Some(b""))), Some(Some(Vec::new())));
        assert_eq!(
            decode_base(&encode_base(Some(b"v"))),
            Some(Some(b"v".to_vec()))
        );
        assert_eq!(decode_base(b""), None);
        assert_eq!(decode_base(&[0, 1]), None);
        assert_eq!(decode_base(&[9]), None);
    }
}
