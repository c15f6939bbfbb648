//! `get`: read keys, transactionally or plain.
//!
//! Reply: exactly one `KeyResponse`. A found key is `{key, LWW, payload}`
//! (the `LWWValue` its writer sent, byte for byte); a missing key is
//! `{key, NONE, KEY_DNE}`. If the read fails (unknown or failed transaction,
//! storage down), every key carries the error (`KEY_DNE` for transaction
//! problems, the only "no value" Cloudburst's client understands; `TIMEOUT`
//! for storage or peer failures), the response's `error` says the same, and
//! each tuple's payload holds the reason as text.

use prost::Message;
use tracing::{debug_span, warn, Instrument};

use super::Context;
use crate::ipc::request::TxnRef;
use crate::proto::anna::{AnnaError, KeyResponse, KeyTuple, LatticeType, RequestType};
use crate::txn::TxnError;

pub(super) async fn handle(
    ctx: &Context,
    request_id: String,
    tid: TxnRef,
    keys: Vec<String>,
) -> Vec<u8> {
    let tid = match tid {
        TxnRef::Plain => None,
        TxnRef::Txn(tid) => Some(tid),
        TxnRef::Malformed(bad) => {
            ctx.metrics.reject("bad_transaction_id");
            return error_response(
                &request_id,
                keys,
                AnnaError::KeyDne,
                &format!("malformed transaction id `{bad}`"),
            );
        }
    };
    let span = debug_span!("get", tid = tid.as_deref().unwrap_or(""), keys = keys.len());
    match ctx.engine.get(tid.as_deref(), &keys).instrument(span).await {
        Ok(values) => {
            let tuples = values
                .into_iter()
                .map(|v| match v.value {
                    Some(payload) => KeyTuple {
                        key: v.key,
                        lattice_type: LatticeType::Lww as i32,
                        payload: payload.to_vec(),
                        ..Default::default()
                    },
                    None => KeyTuple {
                        key: v.key,
                        lattice_type: LatticeType::None as i32,
                        error: AnnaError::KeyDne as i32,
                        ..Default::default()
                    },
                })
                .collect();
            KeyResponse {
                r#type: RequestType::Get as i32,
                tuples,
                response_id: request_id,
                error: AnnaError::NoError as i32,
            }
            .encode_to_vec()
        }
        Err(e) => {
            warn!(tid = tid.as_deref().unwrap_or(""), error = %e, "get failed");
            error_response(&request_id, keys, error_code(&e), &e.to_string())
        }
    }
}

/// The Anna error code a failed read reports.
pub(super) fn error_code(e: &TxnError) -> AnnaError {
    match e {
        TxnError::Storage { .. } | TxnError::Peer { .. } | TxnError::CorruptRecord { .. } => {
            AnnaError::Timeout
        }
        _ => AnnaError::KeyDne,
    }
}

/// This endpoint's error reply: every key carries `code` and `reason`.
pub(crate) fn error_response(
    request_id: &str,
    keys: impl IntoIterator<Item = String>,
    code: AnnaError,
    reason: &str,
) -> Vec<u8> {
    super::key_error_response(RequestType::Get, request_id, keys, code, reason)
}
