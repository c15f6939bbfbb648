//! Replies: per-client pending-reply accounting, and the outbound ZMTP PUSH
//! connections replies travel over.
//!
//! One connection per reply address, opened on first use by its own task
//! (which batches whatever is queued into one write) and kept in an LRU of
//! bounded size, so a churn of executors cannot grow memory without limit.
//! Sends never block: a client that does not read its replies fills its
//! connection's queue and further replies to it are dropped and counted,
//! while everyone else is served.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedWrite;
use tracing::{debug, warn};

use super::zmtp::{self, FrameCodec, SocketType};
use crate::metrics::Metrics;

/// Per-connection queue bound (messages) before replies to that client are dropped.
const SEND_HIGH_WATER_MARK: usize = 1000;
/// How long a reply address may stay unreachable (the client binds it
/// late, or went away) before queued replies to it are dropped.
const CONNECT_PATIENCE: Duration = Duration::from_secs(1);
/// Pause between connection attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// How long the ZMTP handshake with a client may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
        if let Some(count) = counts.get_mut(address) {
            if *count >= self.limit {
                return None;
            }
            *count += 1;
        } else {
            counts.insert(address.to_string(), 1);
        }
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
    /// The pending-reply slot this reply releases once queued.
    pub slot: Option<PendingSlot>,
}

/// The outbound connections, one per reply address (LRU-bounded).
pub struct ReplyLinks {
    links: Mutex<LruCache<String, mpsc::Sender<Bytes>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    metrics: Metrics,
}

impl ReplyLinks {
    /// At most `max_links` open connections.
    pub fn new(max_links: usize, metrics: Metrics) -> Arc<Self> {
        let capacity = NonZeroUsize::new(max_links.max(1)).unwrap_or(NonZeroUsize::MIN);
        Arc::new(ReplyLinks {
            links: Mutex::new(LruCache::new(capacity)),
            tasks: Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// Queues one reply (connecting to its address first if needed); never
    /// blocks. Must be called on the runtime.
    pub fn send(&self, reply: Reply) {
        let Reply {
            address,
            frame,
            slot,
        } = reply;
        let queue = {
            let mut links = self.links.lock();
            match links.get(&address) {
                Some(queue) if !queue.is_closed() => queue.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(SEND_HIGH_WATER_MARK);
                    let task = tokio::spawn(run_link(address.clone(), rx, self.metrics.clone()));
                    let mut tasks = self.tasks.lock();
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task);
                    // Evicting the least recently used link drops its queue's
                    // sender: it writes what it holds, then closes.
                    links.put(address.clone(), tx.clone());
                    tx
                }
            }
        };
        if let Err(e) = queue.try_send(Bytes::from(frame)) {
            self.metrics.reject("reply_dropped");
            debug!(address = %address, error = %e, "reply dropped (client not reading?)");
        }
        // The reply is on its way (or dropped): the client's slot is free again.
        drop(slot);
    }

    /// Closes every connection once what it holds is written; returns the
    /// tasks doing that (to wait for them).
    pub fn close_all(&self) -> Vec<JoinHandle<()>> {
        self.links.lock().clear();
        std::mem::take(&mut *self.tasks.lock())
    }
}

/// A bidirectional byte stream (a Unix or TCP connection).
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Connects to a reply address (`ipc://PATH` or `tcp://HOST:PORT`).
async fn connect(address: &str) -> std::io::Result<Box<dyn Duplex>> {
    if let Some(path) = address.strip_prefix("ipc://") {
        return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
    }
    if let Some(hostport) = address.strip_prefix("tcp://") {
        let stream = tokio::net::TcpStream::connect(hostport).await?;
        stream.set_nodelay(true)?;
        return Ok(Box::new(stream));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "unsupported transport",
    ))
}

/// Connects and shakes hands as a PUSH socket, retrying while the address
/// is not yet reachable (within [`CONNECT_PATIENCE`]).
async fn open(address: &str) -> Result<Box<dyn Duplex>, String> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut stream = loop {
        match connect(address).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(CONNECT_RETRY).await,
        }
    };
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        zmtp::handshake(&mut stream, SocketType::Push, false),
    )
    .await
    {
        Ok(Ok(_)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// One reply connection: writes what is queued for the address, batching
/// whatever is waiting into one write, until the queue closes (eviction or
/// shutdown). The connection is opened on the first reply and reopened when
/// it breaks: a client that closed its socket and bound the address again
/// (a restarted executor) gets the replies sent after that, as a libzmq
/// PUSH socket would reconnect. A batch that cannot be delivered after one
/// reconnection is dropped and counted.
async fn run_link(address: String, mut queue: mpsc::Receiver<Bytes>, metrics: Metrics) {
    type Sink = FramedWrite<WriteHalf<Box<dyn Duplex>>, FrameCodec>;
    let mut connection: Option<(Sink, ReadHalf<Box<dyn Duplex>>)> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut attempts = 0;
    loop {
        if batch.is_empty() {
            let next = match connection.as_mut() {
                Some((_, incoming)) => tokio::select! {
                    frame = queue.recv() => frame,
                    () = closed(incoming) => {
                        // The client went away: reconnect on the next reply.
                        connection = None;
                        continue;
                    }
                },
                None => queue.recv().await,
            };
            let Some(frame) = next else {
                return;
            };
            batch.push(frame);
            while let Ok(frame) = queue.try_recv() {
                batch.push(frame);
            }
        }
        if connection.is_none() {
            match open(&address).await {
                Ok(stream) => {
                    let (incoming, outgoing) = tokio::io::split(stream);
                    connection = Some((
                        FramedWrite::new(outgoing, FrameCodec::new(usize::MAX)),
                        incoming,
                    ));
                }
                Err(e) => {
                    metrics.reject("reply_connect_failed");
                    warn!(address = %address, error = %e, "cannot connect to reply address");
                    for _ in batch.drain(..) {
                        metrics.reject("reply_dropped");
                    }
                    attempts = 0;
                    continue;
                }
            }
        }
        let Some((sink, _)) = connection.as_mut() else {
            continue;
        };
        let mut written = Ok(());
        for frame in batch.iter().cloned() {
            written = sink.feed(frame).await;
            if written.is_err() {
                break;
            }
        }
        if written.is_ok() {
            written = SinkExt::<Bytes>::flush(sink).await;
        }
        match written {
            Ok(()) => {
                batch.clear();
                attempts = 0;
            }
            Err(e) => {
                debug!(address = %address, error = %e, "reply connection broke; reconnecting");
                connection = None;
                attempts += 1;
                if attempts > 1 {
                    for _ in batch.drain(..) {
                        metrics.reject("reply_dropped");
                    }
                    attempts = 0;
                }
            }
        }
    }
}

/// Resolves when the peer closes the connection (or it fails). Whatever the
/// peer sends on it (heartbeat commands, at most) is ignored.
async fn closed(incoming: &mut ReadHalf<Box<dyn Duplex>>) {
    let mut scratch = [0u8; 256];
    loop {
        match incoming.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
