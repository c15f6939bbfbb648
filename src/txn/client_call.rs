//! The calls of a transaction's client (read, write, commit, abort), served
//! on the node that holds the transaction. A front that may receive a call
//! on any node (the gRPC front, behind a load balancer) runs it with
//! [`Engine::call_at`]: here if the transaction lives here, otherwise on its
//! node through the peer layer, which answers with [`Engine::serve_call`].

use super::engine::Engine;

/// The most bytes of values one client read may return: below the peer
/// layer's frame limit (64 MiB), so a forwarded reply always fits.
pub const CLIENT_REPLY_LIMIT: usize = 48 << 20;
use super::outcome::{AbortCause, Outcome};
use super::remote::{ClientCall, ClientEnd, ClientReply};
use super::{PeerFailure, TxnError};

impl Engine {
    /// Runs `call` of transaction `tid` on this node.
    ///
    /// A call of a transaction nobody knows fails with `UnknownTransaction`
    /// and leaves nothing behind (a client's calls always reach the node
    /// that holds the transaction, so there is nothing to fence here, and a
    /// flood of made-up ids costs no table entries). An abort that arrives
    /// while the commit runs fails with `Committing` (the commit's outcome
    /// stands), and a commit being settled answers `Unknown`.
    pub async fn serve_call(&self, tid: &str, call: ClientCall) -> Result<ClientReply, TxnError> {
        let outcome = match call {
            ClientCall::Read(keys) => {
                self.slot(tid)?;
                let values = self.get(Some(tid), &keys).await?;
                let size: usize = values
                    .iter()
                    .map(|v| v.key.len() + v.value.as_ref().map_or(0, |b| b.len()))
                    .sum();
                if size > CLIENT_REPLY_LIMIT {
                    return Err(TxnError::ReplyTooLarge {
                        tid: tid.to_string(),
                        size,
                        limit: CLIENT_REPLY_LIMIT,
                    });
                }
                return Ok(ClientReply::Values(
                    values.into_iter().map(|v| v.value).collect(),
                ));
            }
            ClientCall::Write(writes) => {
                self.slot(tid)?;
                self.put(tid, writes)?;
                return Ok(ClientReply::Written);
            }
            ClientCall::Commit if self.settling.lock().contains(tid) => {
                return Ok(ClientReply::Ended(ClientEnd::Unknown));
            }
            ClientCall::Commit => self.commit(tid).await?,
            ClientCall::Abort => self.abort(tid),
        };
        let end = match outcome {
            Outcome::Committed { .. } => ClientEnd::Committed,
            Outcome::Aborted {
                cause: AbortCause::UnknownTransaction,
            } => {
                return Err(TxnError::UnknownTransaction {
                    tid: tid.to_string(),
                })
            }
            Outcome::Aborted {
                cause: AbortCause::CommitInProgress,
            } => {
                return Err(TxnError::Committing {
                    tid: tid.to_string(),
                })
            }
            Outcome::Aborted { .. } => ClientEnd::Aborted,
            Outcome::Unknown { .. } => ClientEnd::Unknown,
        };
        Ok(ClientReply::Ended(end))
    }

    /// Runs `call` of transaction `tid` on `node`, the node that holds it:
    /// here if `node` is this node, otherwise through the peer layer.
    pub async fn call_at(
        &self,
        node: &str,
        tid: &str,
        call: ClientCall,
    ) -> Result<ClientReply, TxnError> {
        if node == self.config.node_address {
            return self.serve_call(tid, call).await;
        }
        match self.remote.get() {
            Some(remote) => remote.call_transaction(node, tid, call).await,
            None => Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: node.to_string(),
                failure: PeerFailure::Off,
            }),
        }
    }
}
