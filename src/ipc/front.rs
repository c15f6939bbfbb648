//! The receive thread: owns the six PULL sockets, decodes each request,
//! checks its reply address, and hands it to the tokio runtime.
//!
//! It never waits on storage or peers: every request becomes a task, so a
//! slow storage call delays only its own request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::address::AddressPolicy;
use super::handlers::{self, refusal, Context};
use super::reply::{PendingReplies, Reply};
use super::request::{decode, Endpoint};

/// How long one poll waits before re-checking the stop flag.
const POLL_MS: i64 = 100;
/// Messages taken from one socket per poll round (fairness across endpoints).
const BURST: usize = 64;

pub(super) struct Front {
    pub sockets: Vec<(Endpoint, zmq::Socket)>,
    pub policy: AddressPolicy,
    pub pending: Arc<PendingReplies>,
    pub ctx: Arc<Context>,
    pub runtime: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
}

impl Front {
    pub fn run(self) {
        while !self.stop.load(Ordering::Acquire) {
            let mut items: Vec<zmq::PollItem<'_>> = self
                .sockets
                .iter()
                .map(|(_, s)| s.as_poll_item(zmq::POLLIN))
                .collect();
            if let Err(e) = zmq::poll(&mut items, POLL_MS) {
                warn!(error = %e, "poll failed");
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            drop(items);
            for ((endpoint, socket), ready) in self.sockets.iter().zip(ready) {
                if !ready {
                    continue;
                }
                for _ in 0..BURST {
                    match socket.recv_bytes(zmq::DONTWAIT) {
                        Ok(frame) => self.dispatch(*endpoint, &frame),
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => {
                            warn!(endpoint = endpoint.name(), error = %e, "receive failed");
                            break;
                        }
                    }
                }
            }
        }
    }

    fn dispatch(&self, endpoint: Endpoint, frame: &[u8]) {
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
            None => match refusal(&request, "too many requests pending for this client") {
                Some(frame) => {
                    metrics.reject("too_many_pending");
                    self.ctx.replies.send(Reply {
                        frame,
                        address: reply_to,
                        slot: None,
                    });
                    return;
                }
                None => None,
            },
        };
        let ctx = Arc::clone(&self.ctx);
        self.runtime
            .spawn(handlers::handle(ctx, endpoint, request, reply_to, slot));
    }
}
