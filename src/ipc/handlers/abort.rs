//! `abort`: abort a transaction. Idempotent. Reply: `TransactionTag{id,
//! ABORTED}`, `COMMITTED` if the transaction had already committed, or
//! `RUNNING` while a commit of it whose outcome storage left unknown is
//! being settled.

use super::{tag, Context};
use crate::ipc::request::valid_tid;
use crate::proto::aft::TransactionStatus;
use crate::txn::Outcome;

pub(super) fn handle(ctx: &Context, tid: String) -> Vec<u8> {
    let node = &ctx.engine.config().node_address;
    if !valid_tid(&tid) {
        ctx.metrics.reject("bad_transaction_id");
        return tag(&tid, TransactionStatus::Aborted, node);
    }
    match ctx.engine.abort(&tid) {
        Outcome::Committed { .. } => tag(&tid, TransactionStatus::Committed, node),
        Outcome::Aborted { .. } => tag(&tid, TransactionStatus::Aborted, node),
        Outcome::Unknown { .. } => tag(&tid, TransactionStatus::Running, node),
    }
}
