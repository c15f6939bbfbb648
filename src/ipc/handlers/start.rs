//! `start`: begin a transaction. Reply: `TransactionTag{id, RUNNING, node}`;
//! if no transaction can be started (too many open), `{"", ABORTED, node}`.

use tracing::warn;

use super::{tag, Context};
use crate::proto::aft::TransactionStatus;

pub(super) fn handle(ctx: &Context) -> Vec<u8> {
    let node = &ctx.engine.config().node_address;
    match ctx.engine.start() {
        Ok(started) => tag(&started.tid, TransactionStatus::Running, node),
        Err(e) => {
            warn!(error = %e, "cannot start a transaction");
            tag("", TransactionStatus::Aborted, node)
        }
    }
}
