//! The IPC front on the tokio runtime: one listener per endpoint, one task
//! per executor connection (ZMTP, `zmtp.rs`), replies over `reply.rs`.
//!
//! For each request the connection task decodes it, checks its reply
//! address, then polls the endpoint's handler future *once, inline*: most
//! requests (start, abort, transactional put, reads answered from the
//! buffer or the cache, continue on the same node) finish without waiting
//! on anything, and their reply is queued at once, from the same task. A
//! handler that must wait (storage, peers, commit) continues as a task of
//! its own, so a slow storage call delays only its own request, and its
//! reply is queued from wherever it finishes. No thread sits between the
//! socket and the engine.

use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::address::AddressPolicy;
use super::handlers::{self, refusal, Context};
use super::reply::{PendingReplies, Reply, ReplyLinks};
use super::request::{decode, Endpoint};
use super::zmtp::{self, Frame, FrameReader, SocketType};

/// How long an executor's connection may take to finish the ZMTP handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection task shares.
pub(super) struct Front {
    pub policy: AddressPolicy,
    pub pending: Arc<PendingReplies>,
    pub ctx: Arc<Context>,
    pub links: Arc<ReplyLinks>,
    /// Largest request frame accepted (a bigger one closes its connection).
    pub max_request_bytes: usize,
    /// Cancelled at shutdown: stop accepting connections and requests.
    pub stop: CancellationToken,
}

impl Front {
    /// Accepts executors on one endpoint until stopped.
    pub async fn serve_endpoint(self: Arc<Self>, endpoint: Endpoint, listener: UnixListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(Arc::clone(&self).serve_connection(endpoint, stream));
                }
                Err(e) => {
                    warn!(endpoint = endpoint.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Serves one executor's connection to one endpoint.
    async fn serve_connection(self: Arc<Self>, endpoint: Endpoint, mut stream: UnixStream) {
        let metrics = &self.ctx.metrics;
        let leftover = match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            zmtp::handshake(&mut stream, SocketType::Pull, true),
        )
        .await
        {
            Ok(Ok(leftover)) => leftover,
            Ok(Err(e)) => {
                metrics.reject("handshake");
                warn!(endpoint = endpoint.name(), error = %e, "refusing a connection that does not speak ZMTP as a PUSH socket");
                return;
            }
            Err(_) => {
                metrics.reject("handshake");
                debug!(
                    endpoint = endpoint.name(),
                    "connection closed: no handshake in time"
                );
                return;
            }
        };
        let (read, mut write) = stream.into_split();
        let mut frames = FrameReader::new(read, leftover, self.max_request_bytes);
        // Parts of a multi-part message (requests are single frames).
        let mut parts = 0usize;
        loop {
            let frame = tokio::select! {
                _ = self.stop.cancelled() => return,
                frame = frames.next() => frame,
            };
            match frame {
                None => return,
                Some(Err(e)) => {
                    metrics.reject("malformed");
                    warn!(endpoint = endpoint.name(), error = %e, "closing a connection that sent an unusable frame");
                    return;
                }
                Some(Ok(Frame::Command { name, data })) => {
                    if name == "PING" && write.write_all(&zmtp::pong(&data)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Frame::Message { body, more })) => {
                    if more || parts > 0 {
                        parts = if more { parts + 1 } else { 0 };
                        if !more {
                            metrics.reject("malformed");
                            warn!(endpoint = endpoint.name(), "dropping a multi-part request");
                        }
                        continue;
                    }
                    self.dispatch(endpoint, body);
                }
            }
        }
    }

    fn dispatch(&self, endpoint: Endpoint, frame: Bytes) {
        let metrics = &self.ctx.metrics;
        let request = match decode(endpoint, &frame) {
            Ok(request) => request,
            Err(e) => {
                metrics.reject("malformed");
                warn!(endpoint = endpoint.name(), error = %e, bytes = frame.len(), "dropping undecodable request");
                return;
            }
        };
        let reply_to = match self.policy.resolve(request.reply_address()) {
            Ok(address) => address,
            Err(e) => {
                metrics.reject("bad_reply_address");
                warn!(endpoint = endpoint.name(), error = %e, "dropping request with an unusable reply address");
                return;
            }
        };
        // Only reads and writes are refused under load: start, commit, abort
        // and continue must always get their real answer (executors wait
        // for them with no timeout, and a refused commit must not be reported
        // aborted while it could still commit).
        let slot = match self.pending.enter(&reply_to) {
            Some(slot) => Some(slot),
            None => match refusal(
                &self.ctx,
                &request,
                "too many requests pending for this client",
            ) {
                Some(frame) => {
                    metrics.reject("too_many_pending");
                    self.links.send(Reply {
                        frame,
                        address: reply_to,
                        slot: None,
                    });
                    return;
                }
                None => None,
            },
        };
        let mut response = Box::pin(handlers::respond(Arc::clone(&self.ctx), endpoint, request));
        let mut cx = std::task::Context::from_waker(Waker::noop());
        match response.as_mut().poll(&mut cx) {
            Poll::Ready(frame) => self.links.send(Reply {
                address: reply_to,
                frame,
                slot,
            }),
            Poll::Pending => {
                // Continue as a task of its own; the runtime polls it at
                // once, with a real waker, so no wake-up is lost.
                let links = Arc::clone(&self.links);
                tokio::spawn(async move {
                    let frame = response.await;
                    links.send(Reply {
                        address: reply_to,
                        frame,
                        slot,
                    });
                });
            }
        }
    }
}
