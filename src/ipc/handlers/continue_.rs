//! `continue`: make a transaction known on this node for a downstream DAG
//! function. Reply: one empty frame, always (the executor waits for it
//! with no timeout). If the upstream node cannot supply the transaction,
//! it is registered here as failed: its reads and writes fail and its
//! commit answers ABORTED.

use tracing::{info_span, warn, Instrument};

use super::Context;
use crate::ipc::request::valid_tid;

pub(super) async fn handle(ctx: &Context, tid: String, upstream: String) -> Vec<u8> {
    if !valid_tid(&tid) {
        ctx.metrics.reject("bad_transaction_id");
        return Vec::new();
    }
    let span = info_span!("continue", tid = %tid, upstream = %upstream);
    if let Err(e) = ctx
        .engine
        .continue_from(&tid, &upstream)
        .instrument(span)
        .await
    {
        warn!(tid = %tid, upstream = %upstream, error = %e, "continue failed; transaction marked failed");
    }
    Vec::new()
}
