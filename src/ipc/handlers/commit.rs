//! `commit`: commit a transaction. Reply: `TransactionTag{id, COMMITTED}`
//! only once the commit record is durable; `ABORTED` when it did not and
//! never will commit (unknown, failed, aborted, or a failure before the
//! commit point); `RUNNING` when storage failed at the commit point and the
//! outcome is not known yet (the sidecar settles it; a retried commit
//! answers COMMITTED or ABORTED then). Cloudburst's executor raises on
//! anything but COMMITTED.

use tracing::{info_span, warn, Instrument};

use super::{tag, Context};
use crate::ipc::request::valid_tid;
use crate::proto::aft::TransactionStatus;
use crate::txn::Outcome;

pub(super) async fn handle(ctx: &Context, tid: String, addresses: Vec<String>) -> Vec<u8> {
    let node = &ctx.engine.config().node_address;
    if !valid_tid(&tid) {
        ctx.metrics.reject("bad_transaction_id");
        return tag(&tid, TransactionStatus::Aborted, node);
    }
    let span = info_span!("commit_request", tid = %tid, nodes = addresses.len());
    match ctx
        .engine
        .commit_with(&tid, &addresses)
        .instrument(span)
        .await
    {
        Ok(Outcome::Committed { .. }) => tag(&tid, TransactionStatus::Committed, node),
        Ok(Outcome::Aborted { cause }) => {
            warn!(tid = %tid, %cause, "commit answered ABORTED");
            tag(&tid, TransactionStatus::Aborted, node)
        }
        Ok(Outcome::Unknown { reason }) => {
            warn!(tid = %tid, %reason, "commit outcome unknown; answered RUNNING");
            tag(&tid, TransactionStatus::Running, node)
        }
        Err(e) => {
            warn!(tid = %tid, error = %e, "commit failed");
            tag(&tid, TransactionStatus::Aborted, node)
        }
    }
}
