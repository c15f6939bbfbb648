//! The IPC thread: owns the six PULL sockets and every outbound PUSH socket.
//!
//! For each request it decodes, checks the reply address, then runs the
//! endpoint's handler future *once, inline*: most requests (start, abort,
//! transactional put, reads answered from the buffer or the cache,
//! continue on the same node) finish without waiting on anything, and their
//! reply goes out from this thread at once — no thread hop. A handler that
//! must wait (storage, peers, commit) is moved to the tokio runtime and its
//! reply comes back over a channel that wakes this thread. So a slow storage
//! call delays only its own request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::warn;

use super::address::AddressPolicy;
use super::handlers::{self, refusal, Context};
use super::reply::{PendingReplies, Reply, ReplySockets};
use super::request::{decode, Endpoint};

/// How long one poll waits before re-checking the stop flag.
const POLL_MS: i64 = 100;
/// Messages taken from one socket per poll round (fairness across endpoints).
const BURST: usize = 64;

pub(super) struct Front {
    pub sockets: Vec<(Endpoint, zmq::Socket)>,
    pub wake: zmq::Socket,
    pub replies: Receiver<Reply>,
    pub reply_sockets: ReplySockets,
    pub policy: AddressPolicy,
    pub pending: Arc<PendingReplies>,
    pub ctx: Arc<Context>,
    pub runtime: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
    /// Set by shutdown before `stop`: how long to wait for in-flight replies.
    pub grace_ms: Arc<AtomicU64>,
}

impl Front {
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.serve_once(true);
        }
        // Stop accepting; finish what is in flight (up to the grace period).
        let deadline =
            Instant::now() + Duration::from_millis(self.grace_ms.load(Ordering::Acquire));
        while self.pending.in_flight() > 0 && Instant::now() < deadline {
            self.serve_once(false);
        }
        self.flush_replies();
    }

    /// One round: take what is already queued (replies finished elsewhere,
    /// then, if `accept`, requests) without a system call to poll; only when
    /// nothing was waiting, block in `zmq::poll` until something arrives.
    fn serve_once(&mut self, accept: bool) {
        let mut busy = self.flush_replies();
        if accept {
            busy |= self.drain_requests();
        }
        if busy {
            return;
        }
        let mut items: Vec<zmq::PollItem<'_>> = vec![self.wake.as_poll_item(zmq::POLLIN)];
        if accept {
            items.extend(
                self.sockets
                    .iter()
                    .map(|(_, s)| s.as_poll_item(zmq::POLLIN)),
            );
        }
        let timeout = if accept { POLL_MS } else { 5 };
        if let Err(e) = zmq::poll(&mut items, timeout) {
            warn!(error = %e, "poll failed");
        }
    }

    /// Takes up to `BURST` requests from each endpoint; returns whether any came.
    fn drain_requests(&mut self) -> bool {
        let mut any = false;
        for index in 0..self.sockets.len() {
            for _ in 0..BURST {
                let (endpoint, socket) = &self.sockets[index];
                let endpoint = *endpoint;
                match socket.recv_bytes(zmq::DONTWAIT) {
                    Ok(frame) => {
                        any = true;
                        self.dispatch(endpoint, &frame);
                    }
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => {
                        warn!(endpoint = endpoint.name(), error = %e, "receive failed");
                        break;
                    }
                }
            }
        }
        any
    }

    /// Sends every reply finished elsewhere; returns whether there was any.
    fn flush_replies(&mut self) -> bool {
        while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
        let mut any = false;
        while let Ok(reply) = self.replies.try_recv() {
            any = true;
            self.reply_sockets.send(reply);
        }
        any
    }

    fn dispatch(&mut self, endpoint: Endpoint, frame: &[u8]) {
        let metrics = &self.ctx.metrics;
        let request = match decode(endpoint, frame) {
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
                    self.reply_sockets.send(Reply {
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
        let polled = {
            // Tokio resources polled here must find the runtime.
            let _runtime = self.runtime.enter();
            let mut cx = std::task::Context::from_waker(Waker::noop());
            response.as_mut().poll(&mut cx)
        };
        match polled {
            Poll::Ready(frame) => self.reply_sockets.send(Reply {
                address: reply_to,
                frame,
                slot,
            }),
            Poll::Pending => {
                // Continue on the runtime; it polls the task at once, with a
                // real waker, so no wake-up is lost.
                let replies = self.ctx.replies.clone();
                self.runtime.spawn(async move {
                    let frame = response.await;
                    replies.send(Reply {
                        address: reply_to,
                        frame,
                        slot,
                    });
                });
            }
        }
    }
}
