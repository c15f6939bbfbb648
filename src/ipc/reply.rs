//! The reply thread: owns every outbound PUSH socket.
//!
//! Handlers hand finished replies over a `crossbeam-channel`; this thread
//! connects (once per address) and sends. Sockets are cached per address in
//! an LRU of bounded size, so a churn of executors cannot grow memory without
//! limit. Sends never block: a client that does not read its replies fills
//! its socket's high-water mark and further replies to it are dropped and
//! counted, while everyone else is served.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::IpcError;
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

enum Message {
    Send(Reply),
    Stop,
}

/// A cheap, cloneable handle for queueing replies.
#[derive(Clone)]
pub struct ReplySender {
    tx: Sender<Message>,
}

impl ReplySender {
    /// Queues a reply (never blocks).
    pub fn send(&self, reply: Reply) {
        if self.tx.send(Message::Send(reply)).is_err() {
            debug!("reply dropped: the reply thread has stopped");
        }
    }

    /// Asks the reply thread to flush what is queued and stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
    }
}

/// Starts the reply thread.
pub fn spawn_reply_thread(
    context: zmq::Context,
    max_sockets: usize,
    metrics: Metrics,
) -> Result<(ReplySender, JoinHandle<()>), IpcError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let capacity = NonZeroUsize::new(max_sockets.max(1)).unwrap_or(NonZeroUsize::MIN);
    let handle = std::thread::Builder::new()
        .name("aft-ipc-reply".into())
        .spawn(move || run(context, rx, capacity, metrics))
        .map_err(|source| IpcError::Thread {
            name: "reply",
            source,
        })?;
    Ok((ReplySender { tx }, handle))
}

fn run(context: zmq::Context, rx: Receiver<Message>, capacity: NonZeroUsize, metrics: Metrics) {
    let mut sockets: LruCache<String, zmq::Socket> = LruCache::new(capacity);
    while let Ok(message) = rx.recv() {
        let Reply {
            address,
            frame,
            slot,
        } = match message {
            Message::Send(reply) => reply,
            Message::Stop => break,
        };
        if !sockets.contains(&address) {
            match connect(&context, &address) {
                Ok(socket) => {
                    sockets.put(address.clone(), socket);
                }
                Err(e) => {
                    metrics.reject("reply_connect_failed");
                    warn!(address = %address, error = %e, "cannot connect to reply address");
                    continue;
                }
            }
        }
        if let Some(socket) = sockets.get(&address) {
            if let Err(e) = socket.send(&frame, zmq::DONTWAIT) {
                metrics.reject("reply_dropped");
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
