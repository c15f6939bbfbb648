//! Values that name their writer: what tests, the benchmark and the demo
//! write, so that any reader, inside or outside the sidecar, can tell which
//! transaction wrote the value it got (the history checker needs exactly
//! that). A value is a Cloudburst `LWWValue` (timestamp 1) whose bytes are
//! `aft-history|<writer>|<key>|` plus padding.

use aft::client::{lww_inner, lww_payload};
use aft::history::{tag_value, writer_of};

/// The serialized `LWWValue` that transaction `writer` writes to `key`,
/// padded with `padding` bytes.
pub fn tagged_padded(writer: &str, key: &str, padding: usize) -> Vec<u8> {
    lww_payload(1, &tag_value(writer, key, padding))
}

/// The tag naming `writer` and `key`, padded to `bytes` in all (never
/// shorter than the tag itself): the raw value, for stores read directly.
pub fn tag_of_size(writer: &str, key: &str, bytes: usize) -> Vec<u8> {
    let header = tag_value(writer, key, 0).len();
    tag_value(writer, key, bytes.saturating_sub(header))
}

/// [`tag_of_size`] as a serialized `LWWValue` (what executors write).
pub fn tagged_of_size(writer: &str, key: &str, bytes: usize) -> Vec<u8> {
    lww_payload(1, &tag_of_size(writer, key, bytes))
}

/// [`tagged_padded`] with 16 bytes of padding.
pub fn tagged(writer: &str, key: &str) -> Vec<u8> {
    tagged_padded(writer, key, 16)
}

/// The writer a read payload names: `None` for no value, or for a value
/// that is not a tagged `LWWValue`.
pub fn writer_of_payload<P: AsRef<[u8]>>(payload: Option<P>) -> Option<String> {
    writer_of(&lww_inner(payload?.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_value_names_its_writer_and_nothing_else_does() {
        let value = tagged_padded("txn-1", "k", 100);
        assert_eq!(writer_of_payload(Some(&value)), Some("txn-1".into()));
        assert_eq!(writer_of_payload(None::<Vec<u8>>), None);
        assert_eq!(writer_of_payload(Some(b"not an lww value".to_vec())), None);
        assert_eq!(writer_of_payload(Some(lww_payload(1, b"plain"))), None);
        assert_eq!(tag_of_size("t1", "k:1", 4096).len(), 4096);
        assert_eq!(writer_of(&tag_of_size("t1", "k:1", 1)), Some("t1".into()));
        let sized = tagged_of_size("t1", "k", 100);
        assert_eq!(writer_of_payload(Some(&sized)), Some("t1".into()));
    }
}
