//! The peer service: answers requests from other sidecars. One function per
//! message kind, each parse -> apply to the engine -> answer.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::codec::{
    call_from_proto, commit_from_proto, commit_to_proto, reply_to_proto, state_to_proto,
};
use super::membership::Membership;
use crate::proto::peer::{
    peer_envelope::Body, BufferedValue, DecideAck, Error as ErrorBody, ErrorCode, GossipCommits,
    HeartbeatAck, PrepareVote, ShippedValue,
};
use crate::txn::{Engine, PrepareRequest, TxnError};

/// Shared state of the service.
pub struct Service {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Cluster view.
    pub membership: Arc<Membership>,
    /// Called when a node joins or comes back (to exchange digests with it).
    pub on_rejoin: Box<dyn Fn(String) + Send + Sync>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Body {
    Body::Error(ErrorBody {
        code: code as i32,
        message: message.into(),
    })
}

fn txn_error(e: &TxnError) -> Body {
    let code = match e {
        TxnError::UnknownTransaction { .. } => ErrorCode::UnknownTransaction,
        TxnError::Ended { .. } | TxnError::Committing { .. } => ErrorCode::TransactionEnded,
        TxnError::ValueTooLarge { .. } => ErrorCode::InvalidArgument,
        TxnError::WriteSetTooLarge { .. }
        | TxnError::TooManyTransactions { .. }
        | TxnError::ReplyTooLarge { .. } => ErrorCode::ResourceExhausted,
        TxnError::Storage { .. } => ErrorCode::Storage,
        _ => ErrorCode::TransactionFailed,
    };
    error(code, e.to_string())
}

impl Service {
    /// Handles one request from `sender`; returns the response body.
    pub async fn handle(&self, sender: String, body: Body) -> Option<Body> {
        let newly_alive = self.membership.observe(&sender, None);
        if newly_alive {
            (self.on_rejoin)(sender.clone());
        }
        match body {
            Body::Heartbeat(hb) => {
                self.membership.observe(&sender, Some(hb.gc_watermark));
                self.membership.merge(&hb.members);
                if hb.leaving {
                    debug!(peer = %sender, "peer is leaving");
                    self.membership.mark_left(&sender);
                }
                let mut members = self.membership.alive();
                members.push(self.membership.me().to_string());
                Some(Body::HeartbeatAck(HeartbeatAck { members }))
            }
            Body::FetchTransaction(req) => Some(
                match self
                    .engine
                    .export_state(&req.tid, Some((sender.clone(), req.requester_incarnation)))
                {
                    Ok(state) => Body::TransactionState(state_to_proto(&req.tid, &state)),
                    Err(e) => txn_error(&e),
                },
            ),
            Body::ReadBuffered(req) => Some(match self.engine.read_buffered(&req.tid, &req.key) {
                Ok(value) => Body::BufferedValue(BufferedValue {
                    found: value.is_some(),
                    payload: value.map(|v| v.to_vec()).unwrap_or_default(),
                }),
                Err(e) => txn_error(&e),
            }),
            Body::Prepare(req) => Some(
                match self
                    .engine
                    .prepare(
                        &req.tid,
                        PrepareRequest {
                            timestamp: req.commit_timestamp,
                            exclude: req.exclude_keys,
                            ship_up_to: usize::try_from(req.ship_values_up_to)
                                .unwrap_or(usize::MAX),
                            coordinator_values: req
                                .coordinator_values
                                .into_iter()
                                .map(|v| (v.key, Bytes::from(v.payload)))
                                .collect(),
                        },
                    )
                    .await
                {
                    Ok(vote) => Body::PrepareVote(PrepareVote {
                        ok: true,
                        written_keys: vote.keys,
                        shipped: vote
                            .shipped
                            .into_iter()
                            .map(|(key, payload)| ShippedValue {
                                key,
                                payload: payload.to_vec(),
                            })
                            .collect(),
                        reason: String::new(),
                        reads: vote
                            .reads
                            .iter()
                            .map(|(k, v)| super::codec::key_version(k, v))
                            .collect(),
                        visited: super::codec::incarnations_to_proto(&vote.visited),
                    }),
                    Err(e) => {
                        warn!(tid = %req.tid, peer = %sender, error = %e, "voting no");
                        Body::PrepareVote(PrepareVote {
                            ok: false,
                            written_keys: Vec::new(),
                            reason: e.to_string(),
                            reads: Vec::new(),
                            shipped: Vec::new(),
                            visited: Vec::new(),
                        })
                    }
                },
            ),
            Body::Decide(req) => {
                let commit = if req.committed {
                    match req.commit.as_ref().and_then(commit_from_proto) {
                        Some(meta) => Some(meta),
                        None => {
                            return Some(error(
                                ErrorCode::Malformed,
                                "commit decision without a valid commit",
                            ))
                        }
                    }
                } else {
                    None
                };
                self.engine.decide(&req.tid, commit).await;
                Some(Body::DecideAck(DecideAck {}))
            }
            Body::GossipCommits(batch) => {
                let metas: Vec<_> = batch.commits.iter().filter_map(commit_from_proto).collect();
                if metas.len() != batch.commits.len() {
                    warn!(peer = %sender, "ignoring malformed commits in gossip");
                }
                self.engine.learn_commits(&metas);
                None
            }
            Body::DigestRequest(req) => Some(Body::GossipCommits(GossipCommits {
                commits: self
                    .engine
                    .commits_since(req.since_timestamp)
                    .iter()
                    .map(commit_to_proto)
                    .collect(),
            })),
            Body::ClientCall(message) => {
                let tid = message.tid.clone();
                Some(match call_from_proto(message) {
                    None => error(
                        ErrorCode::Malformed,
                        "a client call must name exactly one call",
                    ),
                    Some(call) => match self.engine.serve_call(&tid, call).await {
                        Ok(reply) => Body::ClientReply(reply_to_proto(&reply)),
                        Err(e) => txn_error(&e),
                    },
                })
            }
            other => {
                warn!(peer = %sender, "unexpected message kind {:?}", std::mem::discriminant(&other));
                Some(error(ErrorCode::Malformed, "unexpected message kind"))
            }
        }
    }
}
