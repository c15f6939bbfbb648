//! `put`: buffer writes in a transaction, or commit them as a one-request
//! transaction when the request is plain.
//!
//! Every tuple must be an LWW lattice whose payload is a valid `LWWValue`
//! within the size limit; otherwise nothing of the request is applied and
//! every tuple answers an error (`LATTICE` for invalid or oversized values,
//! `KEY_DNE` for transaction problems, `TIMEOUT` for storage failures), with
//! the reason as text in its payload. Success is one `KeyResponse` with one
//! `NO_ERROR` tuple per key.

use bytes::Bytes;
use prost::Message;
use tracing::{debug_span, warn, Instrument};

use super::get::error_code;
use super::Context;
use crate::ipc::request::TxnRef;
use crate::proto::anna::{AnnaError, KeyResponse, KeyTuple, LatticeType, LwwValue, RequestType};
use crate::txn::{Outcome, TxnError};

pub(super) async fn handle(
    ctx: &Context,
    request_id: String,
    tid: TxnRef,
    tuples: Vec<KeyTuple>,
) -> Vec<u8> {
    let keys = || tuples.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
    let tid = match tid {
        TxnRef::Plain => None,
        TxnRef::Txn(tid) => Some(tid),
        TxnRef::Malformed(bad) => {
            ctx.metrics.reject("bad_transaction_id");
            return error_response(
                &request_id,
                keys(),
                AnnaError::KeyDne,
                &format!("malformed transaction id `{bad}`"),
            );
        }
    };
    let writes = match validate(&tuples, ctx.engine.config().max_value_bytes) {
        Ok(writes) => writes,
        Err(reason) => {
            ctx.metrics.reject("bad_value");
            warn!(tid = tid.as_deref().unwrap_or(""), %reason, "put refused");
            if let Some(tid) = &tid {
                // Committing without this write would commit half the DAG.
                ctx.engine.doom(tid, &reason);
            }
            return error_response(&request_id, keys(), AnnaError::Lattice, &reason);
        }
    };
    let span = debug_span!(
        "put",
        tid = tid.as_deref().unwrap_or(""),
        keys = tuples.len()
    );
    let result = match &tid {
        Some(tid) => ctx.engine.put(tid, writes),
        None => match ctx
            .engine
            .put_outside_transaction(writes)
            .instrument(span)
            .await
        {
            Ok(Outcome::Committed { .. }) => Ok(()),
            Ok(Outcome::Aborted { cause }) => Err(TxnError::Failed {
                tid: String::new(),
                reason: cause.to_string(),
            }),
            Ok(Outcome::Unknown { reason }) => Err(TxnError::Failed {
                tid: String::new(),
                reason,
            }),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => KeyResponse {
            r#type: RequestType::Put as i32,
            tuples: tuples
                .into_iter()
                .map(|t| KeyTuple {
                    key: t.key,
                    lattice_type: LatticeType::Lww as i32,
                    error: AnnaError::NoError as i32,
                    ..Default::default()
                })
                .collect(),
            response_id: request_id,
            error: AnnaError::NoError as i32,
        }
        .encode_to_vec(),
        Err(e) => {
            warn!(tid = tid.as_deref().unwrap_or(""), error = %e, "put failed");
            let code = match e {
                TxnError::ValueTooLarge { .. } | TxnError::WriteSetTooLarge { .. } => {
                    AnnaError::Lattice
                }
                TxnError::Failed { .. } if tid.is_none() => AnnaError::Timeout,
                ref other => error_code(other),
            };
            error_response(&request_id, keys(), code, &e.to_string())
        }
    }
}

/// Checks every tuple; returns `(key, LWWValue bytes)` pairs or why not.
fn validate(tuples: &[KeyTuple], max_value_bytes: usize) -> Result<Vec<(String, Bytes)>, String> {
    if tuples.is_empty() {
        return Err("put without keys".into());
    }
    tuples
        .iter()
        .map(|t| {
            if t.lattice_type != LatticeType::Lww as i32 {
                return Err(format!(
                    "key `{}`: lattice type {} is not supported (only LWW)",
                    t.key, t.lattice_type
                ));
            }
            if t.payload.len() > max_value_bytes {
                return Err(format!(
                    "key `{}`: value of {} bytes exceeds the limit of {} bytes",
                    t.key,
                    t.payload.len(),
                    max_value_bytes
                ));
            }
            if LwwValue::decode(t.payload.as_slice()).is_err() {
                return Err(format!("key `{}`: payload is not a valid LWWValue", t.key));
            }
            Ok((t.key.clone(), Bytes::copy_from_slice(&t.payload)))
        })
        .collect()
}

/// This endpoint's error reply: every key carries `code` and `reason`.
pub(crate) fn error_response(
    request_id: &str,
    keys: impl IntoIterator<Item = String>,
    code: AnnaError,
    reason: &str,
) -> Vec<u8> {
    super::key_error_response(RequestType::Put, request_id, keys, code, reason)
}
