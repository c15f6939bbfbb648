//! Reading the timestamp of a serialized `LWWValue` (for [`super::Storage::merge_lww`]).

use prost::Message;

use crate::proto::anna::LwwValue;

/// The timestamp of a serialized `LWWValue`, or `None` if the bytes are not one.
pub fn lww_timestamp(bytes: &[u8]) -> Option<u64> {
    LwwValue::decode(bytes).ok().map(|v| v.timestamp)
}

/// Whether `incoming_ts` should replace what is stored (`current`): yes when
/// nothing is stored, when the stored bytes are not an `LWWValue`, or when the
/// stored timestamp is older.
pub(crate) fn lww_should_replace(current: Option<&[u8]>, incoming_ts: u64) -> bool {
    match current.and_then(lww_timestamp) {
        Some(stored) => stored < incoming_ts,
        None => true,
    }
}
