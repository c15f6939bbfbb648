//! One handler per endpoint: each takes a decoded request, applies it to
//! the engine and builds the reply frame, in exactly the shape a Cloudburst
//! executor expects (docs/PROTOCOL.md).

mod abort;
mod commit;
mod continue_;
mod get;
mod put;
mod start;

use std::sync::Arc;
use std::time::Instant;

use prost::Message;

use super::request::{Endpoint, Request, TxnRef};
use crate::metrics::{EndpointLabels, Metrics};
use crate::proto::aft::{TransactionStatus, TransactionTag};
use crate::txn::Engine;
use prometheus_client::metrics::histogram::Histogram;

/// What every handler needs.
pub struct Context {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Metrics.
    pub metrics: Metrics,
    /// Each endpoint's latency histogram, resolved once (in `Endpoint::ALL` order).
    latency: Vec<Histogram>,
}

impl Context {
    /// A context for handlers.
    pub fn new(engine: Arc<Engine>, metrics: Metrics) -> Self {
        let latency = Endpoint::ALL
            .iter()
            .map(|e| {
                metrics
                    .request_seconds
                    .get_or_create(&EndpointLabels {
                        endpoint: e.name().to_string(),
                    })
                    .clone()
            })
            .collect();
        Context {
            engine,
            metrics,
            latency,
        }
    }
}

/// Handles one request and returns its reply frame (recording the
/// endpoint's latency). The connection task polls this once inline and
/// spawns it as a task of its own only if it has to wait.
pub async fn respond(ctx: Arc<Context>, endpoint: Endpoint, request: Request) -> Vec<u8> {
    let started = Instant::now();
    let frame = match request {
        Request::Get {
            request_id,
            tid,
            keys,
            ..
        } => get::handle(&ctx, request_id, tid, keys).await,
        Request::Put {
            request_id,
            tid,
            tuples,
            ..
        } => put::handle(&ctx, request_id, tid, tuples).await,
        Request::Start { .. } => start::handle(&ctx),
        Request::Commit { tid, addresses, .. } => commit::handle(&ctx, tid, addresses).await,
        Request::Abort { tid, .. } => abort::handle(&ctx, tid),
        Request::Continue { tid, upstream, .. } => continue_::handle(&ctx, tid, upstream).await,
    };
    let index = Endpoint::ALL
        .iter()
        .position(|e| *e == endpoint)
        .unwrap_or(0);
    if let Some(histogram) = ctx.latency.get(index) {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    frame
}

/// The reply to a read or write refused before reaching its handler (the
/// client is over its pending-reply limit): an error in the endpoint's reply
/// shape. Other endpoints are never refused. A refused read or write of a
/// transaction dooms it (its commit answers ABORTED): the executor sees the
/// refusal only as "no value", and must not commit on it.
pub fn refusal(ctx: &Context, request: &Request, reason: &str) -> Option<Vec<u8>> {
    if let Request::Get {
        tid: TxnRef::Txn(tid),
        ..
    }
    | Request::Put {
        tid: TxnRef::Txn(tid),
        ..
    } = request
    {
        ctx.engine.doom(tid, reason);
    }
    match request {
        Request::Get {
            request_id, keys, ..
        } => Some(get::error_response(
            request_id,
            keys.iter().cloned(),
            crate::proto::anna::AnnaError::Timeout,
            reason,
        )),
        Request::Put {
            request_id, tuples, ..
        } => Some(put::error_response(
            request_id,
            tuples.iter().map(|t| t.key.clone()),
            crate::proto::anna::AnnaError::Timeout,
            reason,
        )),
        _ => None,
    }
}

/// A serialized `TransactionTag`.
pub(crate) fn tag(id: &str, status: TransactionStatus, address: &str) -> Vec<u8> {
    TransactionTag {
        id: id.to_string(),
        status: status as i32,
        address: address.to_string(),
    }
    .encode_to_vec()
}

/// A `KeyResponse` of `kind` where every key carries `code`, with `reason`
/// as text in each tuple's payload (Cloudburst's client ignores it; ours
/// shows it). Read errors say lattice `NONE`, write errors `LWW`.
pub(crate) fn key_error_response(
    kind: crate::proto::anna::RequestType,
    request_id: &str,
    keys: impl IntoIterator<Item = String>,
    code: crate::proto::anna::AnnaError,
    reason: &str,
) -> Vec<u8> {
    use crate::proto::anna::{KeyResponse, KeyTuple, LatticeType, RequestType};
    let lattice = match kind {
        RequestType::Put => LatticeType::Lww,
        _ => LatticeType::None,
    };
    KeyResponse {
        r#type: kind as i32,
        tuples: keys
            .into_iter()
            .map(|key| KeyTuple {
                key,
                lattice_type: lattice as i32,
                error: code as i32,
                payload: reason.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
        response_id: request_id.to_string(),
        error: code as i32,
    }
    .encode_to_vec()
}
