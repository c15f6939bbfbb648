//! The engine's [`Remote`] implemented over the peer transport.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::codec::{
    call_to_proto, commit_to_proto, incarnations_from_proto, reply_from_proto, state_from_proto,
    version_of,
};
use super::membership::Membership;
use super::transport::Transport;
use super::PeerError;
use crate::meta::CommitMeta;
use crate::proto::peer::{
    peer_envelope::Body, Decide, ErrorCode, FetchTransaction, Prepare, ReadBuffered, ShippedValue,
};
use crate::txn::{
    ClientCall, ClientReply, PeerFailure, PrepareRequest, PreparedVote, Remote, TxnError,
    UpstreamState,
};

/// Calls other sidecars on behalf of the engine.
pub struct PeerClient {
    /// The transport.
    pub transport: Transport,
    /// Cluster view (requests to nodes known to be down fail at once).
    pub membership: Arc<Membership>,
    /// Timeout of ordinary requests.
    pub timeout: Duration,
    /// Timeout of a prepare (the peer writes to storage).
    pub prepare_timeout: Duration,
    /// Timeout of a client's forwarded commit.
    pub client_commit_timeout: Duration,
}

fn peer_error(tid: &str, peer: &str, e: PeerError) -> TxnError {
    let failure = match e {
        PeerError::Timeout { timeout, .. } => PeerFailure::Timeout(timeout),
        PeerError::PeerDown { .. } => PeerFailure::Down,
        PeerError::Remote {
            code: ErrorCode::UnknownTransaction,
            ..
        } => PeerFailure::UnknownTransaction,
        PeerError::Remote {
            code: ErrorCode::TransactionEnded,
            message,
            ..
        } => PeerFailure::Ended(message),
        PeerError::Remote {
            code: ErrorCode::InvalidArgument,
            message,
            ..
        } => PeerFailure::Invalid(message),
        PeerError::Remote {
            code: ErrorCode::ResourceExhausted,
            message,
            ..
        } => PeerFailure::Exhausted(message),
        PeerError::Remote {
            code: ErrorCode::TransactionFailed,
            message,
            ..
        } => PeerFailure::Failed(message),
        PeerError::Remote { code, message, .. } => {
            PeerFailure::Refused(format!("{code:?}: {message}"))
        }
        other => PeerFailure::Transport(other.to_string()),
    };
    TxnError::Peer {
        tid: tid.to_string(),
        peer: peer.to_string(),
        failure,
    }
}

impl PeerClient {
    async fn call(
        &self,
        tid: &str,
        node: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Body, TxnError> {
        if self.membership.is_down(node) {
            return Err(peer_error(
                tid,
                node,
                PeerError::PeerDown {
                    peer: node.to_string(),
                },
            ));
        }
        self.transport
            .request(node, body, timeout)
            .await
            .map_err(|e| peer_error(tid, node, e))
    }

    fn unexpected(tid: &str, node: &str) -> TxnError {
        peer_error(
            tid,
            node,
            PeerError::Unexpected {
                peer: node.to_string(),
            },
        )
    }
}

#[async_trait]
impl Remote for PeerClient {
    async fn fetch_transaction(
        &self,
        node: &str,
        tid: &str,
        incarnation: u64,
    ) -> Result<UpstreamState, TxnError> {
        let body = Body::FetchTransaction(FetchTransaction {
            tid: tid.to_string(),
            requester_incarnation: incarnation,
        });
        match self.call(tid, node, body, self.timeout).await? {
            Body::TransactionState(state) => Ok(state_from_proto(&state)),
            _ => Err(Self::unexpected(tid, node)),
        }
    }

    async fn read_buffered(
        &self,
        node: &str,
        tid: &str,
        key: &str,
    ) -> Result<Option<Bytes>, TxnError> {
        let body = Body::ReadBuffered(ReadBuffered {
            tid: tid.to_string(),
            key: key.to_string(),
        });
        match self.call(tid, node, body, self.timeout).await? {
            Body::BufferedValue(v) => Ok(v.found.then(|| Bytes::from(v.payload))),
            _ => Err(Self::unexpected(tid, node)),
        }
    }

    async fn prepare(
        &self,
        node: &str,
        tid: &str,
        request: &PrepareRequest,
    ) -> Result<PreparedVote, TxnError> {
        let body = Body::Prepare(Prepare {
            tid: tid.to_string(),
            commit_timestamp: request.timestamp,
            exclude_keys: request.exclude.clone(),
            ship_values_up_to: request.ship_up_to as u64,
            coordinator_values: request
                .coordinator_values
                .iter()
                .map(|(key, payload)| ShippedValue {
                    key: key.clone(),
                    payload: payload.to_vec(),
                })
                .collect(),
        });
        match self.call(tid, node, body, self.prepare_timeout).await? {
            Body::PrepareVote(vote) if vote.ok => Ok(PreparedVote {
                reads: vote.reads.iter().map(version_of).collect(),
                visited: incarnations_from_proto(&vote.visited),
                keys: vote.written_keys,
                shipped: vote
                    .shipped
                    .into_iter()
                    .map(|v| (v.key, Bytes::from(v.payload)))
                    .collect(),
            }),
            Body::PrepareVote(vote) => Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: node.to_string(),
                failure: PeerFailure::VotedNo(vote.reason),
            }),
            _ => Err(Self::unexpected(tid, node)),
        }
    }

    async fn decide(
        &self,
        node: &str,
        tid: &str,
        commit: Option<&CommitMeta>,
    ) -> Result<(), TxnError> {
        let body = Body::Decide(Decide {
            tid: tid.to_string(),
            committed: commit.is_some(),
            commit: commit.map(commit_to_proto),
        });
        match self.call(tid, node, body, self.timeout).await? {
            Body::DecideAck(_) => Ok(()),
            _ => Err(Self::unexpected(tid, node)),
        }
    }

    async fn call_transaction(
        &self,
        node: &str,
        tid: &str,
        call: ClientCall,
    ) -> Result<ClientReply, TxnError> {
        // Only nodes of this cluster are called: an id naming any other
        // host must not make this node dial it.
        if !self.membership.is_member(node) {
            return Err(TxnError::Peer {
                tid: tid.to_string(),
                peer: node.to_string(),
                failure: PeerFailure::NotMember,
            });
        }
        let body = Body::ClientCall(call_to_proto(tid, &call));
        // The holder may read storage for a read or a write, and a commit
        // may take until the holder decides it.
        let timeout = match call {
            ClientCall::Commit => self.client_commit_timeout,
            _ => self.prepare_timeout,
        };
        // A long call (a commit waits up to the holder's decision time)
        // ends as soon as heartbeats declare the holder dead: the client
        // hears UNAVAILABLE then, not at the end of the timeout.
        let holder_dies = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.membership.is_down(node) {
                    break;
                }
            }
        };
        let answer = tokio::select! {
            answer = self.call(tid, node, body, timeout) => answer?,
            () = holder_dies => {
                return Err(TxnError::Peer {
                    tid: tid.to_string(),
                    peer: node.to_string(),
                    failure: PeerFailure::Down,
                })
            }
        };
        match answer {
            Body::ClientReply(reply) => {
                reply_from_proto(&call, reply).ok_or_else(|| Self::unexpected(tid, node))
            }
            _ => Err(Self::unexpected(tid, node)),
        }
    }
}
