//! Helpers for driving the engine in tests: LWW payloads that name their
//! writer, and recording a history for the checker.

use std::sync::Arc;

use aft::history::Op;
use aft::txn::Engine;
use bytes::Bytes;

use crate::tagged::{tagged, writer_of_payload};

/// A serialized `LWWValue` whose value names `writer` and `key`.
pub fn payload(writer: &str, key: &str) -> Bytes {
    Bytes::from(tagged(writer, key))
}

/// Reads `key` in `tid` and returns the history op.
pub async fn read_op(engine: &Arc<Engine>, tid: &str, key: &str) -> Op {
    let values = engine
        .get(Some(tid), &[key.to_string()])
        .await
        .expect("read failed");
    Op::Read {
        key: key.to_string(),
        writer: writer_of_payload(values[0].value.as_ref()),
        returned_at: 0,
    }
}

/// Writes `key` in `tid` (a value naming `tid`) and returns the history op.
pub fn write_op(engine: &Arc<Engine>, tid: &str, key: &str) -> Op {
    engine
        .put(tid, vec![(key.to_string(), payload(tid, key))])
        .expect("write failed");
    Op::Write {
        key: key.to_string(),
    }
}
