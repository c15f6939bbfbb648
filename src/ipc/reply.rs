//! Replies: per-client pending-reply accounting, the outbound PUSH sockets
//! (owned by the IPC thread), and the channel that brings replies of
//! requests finished on the async runtime back to that thread.
//!
//! Sockets are cached per address in an LRU of bounded size, so a churn of
//! executors cannot grow memory without limit. Sends never block: a client
//! that does not read its replies fills its socket's high-water mark and
//! further replies to it are dropped and counted, while everyone else is
//! served.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Per-socket queue bound (messages) before replies to that client are dropped.
const SEND_HIGH_WATER_MARK: i32 = 1000;
/// How long a closed socket may still flush queued replies.
const LINGER_MS: i32 = 500;

/// Counts replies owed to each client, to cap what one client can have in flight.
#[derive(Debug, Default)]
pub struct PendingReplies {
    counts: Mutex<HashMap<String, usize>>,
    limit: usize,
}

/// One pending reply; dropping it (after the reply is sent or abandoned) releases the slot.
#[derive(Debug)]
pub struct PendingSlot {
    owner: Arc<PendingReplies>,
    address: String,
}

impl PendingReplies {
    /// At most `limit` pending replies per client address.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(PendingReplies {
            counts: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// Replies owed in total.
    pub fn in_flight(&self) -> usize {
        self.counts.lock().values().sum()
    }

    /// Takes a slot for `address`, or `None` if the client is over its limit.
    pub fn enter(self: &Arc<Self>, address: &str) -> Option<PendingSlot> {
        let mut counts = self.counts.lock();
        let count = counts.entry(address.to_string()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PendingSlot {
            owner: Arc::clone(self),
            address: address.to_string(),
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock();
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// A reply to send: one frame to one (validated) address.
#[derive(Debug)]
pub struct Reply {
    /// Where to send (already checked by the address policy).
    pub address: String,
    /// The single frame.
    pub frame: Vec<u8>,
    /// The pending-reply slot this reply releases once sent.
    pub slot: Option<PendingSlot>,
}

/// A cheap, cloneable handle that hands a finished reply to the IPC thread.
#[derive(Clone)]
pub struct ReplySender {
    tx: Sender<Reply>,
    /// Wakes the IPC thread's poll. Guarded by a mutex: the socket is used
    /// from many runtime threads, one at a time (the barrier libzmq needs).
    wake: Arc<Mutex<zmq::Socket>>,
}

impl ReplySender {
    /// Queues a reply (never blocks) and wakes the IPC thread.
    pub fn send(&self, reply: Reply) {
        if self.tx.send(reply).is_err() {
            debug!("reply dropped: the IPC thread has stopped");
            return;
        }
        let _ = self.wake.lock().send(&[][..], zmq::DONTWAIT);
    }
}

/// The channel of replies finished elsewhere, and how to wake its reader.
pub fn reply_channel(wake: zmq::Socket) -> (ReplySender, Receiver<Reply>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        ReplySender {
            tx,
            wake: Arc::new(Mutex::new(wake)),
        },
        rx,
    )
}

/// The outbound PUSH sockets, one per reply address (LRU-bounded).
pub struct ReplySockets {
    context: zmq::Context,
    sockets: LruCache<String, zmq::Socket>,
    metrics: Metrics,
}

impl ReplySockets {
    /// At most `max_sockets` open sockets.
    pub fn new(context: zmq::Context, max_sockets: usize, metrics: Metrics) -> Self {
        let capacity = NonZeroUsize::new(max_sockets.max(1)).unwrap_or(NonZeroUsize::MIN);
        ReplySockets {
            context,
            sockets: LruCache::new(capacity),
            metrics,
        }
    }

    /// Sends one reply (connecting to its address first if needed); never blocks.
    pub fn send(&mut self, reply: Reply) {
        let Reply {
            address,
            frame,
            slot,
        } = reply;
        if !self.sockets.contains(&address) {
            match connect(&self.context, &address) {
                Ok(socket) => {
                    self.sockets.put(address.clone(), socket);
                }
                Err(e) => {
                    self.metrics.reject("reply_connect_failed");
                    warn!(address = %address, error = %e, "cannot connect to reply address");
                    return;
                }
            }
        }
        if let Some(socket) = self.sockets.get(&address) {
            if let Err(e) = socket.send(&frame, zmq::DONTWAIT) {
                self.metrics.reject("reply_dropped");
                debug!(address = %address, error = %e, "reply dropped (client not reading?)");
            }
        }
        // The reply is on its way (or dropped): the client's slot is free again.
        drop(slot);
    }
}

fn connect(context: &zmq::Context, address: &str) -> Result<zmq::Socket, zmq::Error> {
    let socket = context.socket(zmq::PUSH)?;
    socket.set_linger(LINGER_MS)?;
    socket.set_sndhwm(SEND_HIGH_WATER_MARK)?;
    socket.connect(address)?;
    Ok(socket)
}
