//! The peer transport: length-delimited frames over TCP, on the tokio
//! runtime.
//!
//! Each sidecar listens on `<bind address>:<peer port>` for requests from
//! peers and keeps one outbound connection per peer for its own requests
//! (opened on first use, reopened after it breaks). Every frame is a 4-byte
//! big-endian length followed by one `PeerEnvelope` (sealed when a cluster
//! key is set). A request carries a correlation id that its response
//! echoes, so replies never cross; correlation id 0 means "no response
//! expected" (gossip).
//!
//! Everything runs as tasks on the runtime that also runs the engine: a
//! request is written by a per-peer writer task, read by the peer's
//! connection task, handled there, and its response is read by this node's
//! connection task, which completes the caller's future. No dedicated I/O
//! thread and no library I/O thread sit in between, so a peer round trip
//! costs two thread wake-ups at most (one per side) rather than ten.
//!
//! Hostile input: a frame longer than `max_message_bytes` closes its
//! connection; a frame that does not open (sealed mode), does not decode,
//! or names another protocol version gets an error answer (`MALFORMED`,
//! `VERSION_MISMATCH`) and is otherwise ignored. Sends never block: a peer
//! whose queue is full loses messages (its requests time out), and every
//! other peer is served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::codec::envelope;
use super::seal::PeerKey;
use super::PeerError;
use crate::metrics::Metrics;
use crate::proto::peer::{
    peer_envelope::Body, Error as PeerErrorBody, ErrorCode, PeerEnvelope, PROTOCOL_VERSION,
};

/// Frames queued for one peer connection at most (messages beyond are dropped).
const QUEUE_FRAMES: usize = 8_192;
/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's address (identifies it to peers).
    pub node_address: String,
    /// Address to listen on (ip:port).
    pub bind: String,
    /// Peer port of other nodes (used for bare-IP node addresses).
    pub peer_port: u16,
    /// Largest message accepted.
    pub max_message_bytes: usize,
    /// Encryption and authentication (see `seal.rs`); `None` = plaintext,
    /// which must be chosen explicitly.
    pub key: Option<PeerKey>,
}

/// A boxed, sendable future.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Handles an inbound request from the named sender; returns the response
/// body (`None`: no response).
pub type Handler = Arc<dyn Fn(String, Body) -> BoxFuture<Option<Body>> + Send + Sync>;

type Pending = Mutex<HashMap<u64, oneshot::Sender<Body>>>;

/// A handle to the transport; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    config: TransportConfig,
    handler: Handler,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
    pending: Pending,
    next_id: AtomicU64,
    /// The writer queue of each peer's outbound connection.
    links: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
    stopped: AtomicBool,
    shutdown: CancellationToken,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// `host:port` for a node named by a bare IP (v4 or v6), a host name, or
/// `host:port`.
pub fn address_of(node: &str, peer_port: u16) -> String {
    match node.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{peer_port}"),
        Ok(ip) => format!("{ip}:{peer_port}"),
        Err(_) if node.contains(':') => node.to_string(),
        Err(_) => format!("{node}:{peer_port}"),
    }
}

impl Transport {
    /// Binds the listening socket (an error if the address is taken) and
    /// starts accepting peers on `runtime`.
    pub fn start(
        config: TransportConfig,
        handler: Handler,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<Transport, PeerError> {
        let std_listener = std::net::TcpListener::bind(&config.bind).map_err(|e| {
            PeerError::Transport(format!("cannot bind peer endpoint `{}`: {e}", config.bind))
        })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| PeerError::Transport(format!("peer endpoint: {e}")))?;
        let listener = {
            let _runtime = runtime.enter();
            TcpListener::from_std(std_listener)
                .map_err(|e| PeerError::Transport(format!("peer endpoint: {e}")))?
        };
        let inner = Arc::new(Inner {
            config,
            handler,
            metrics,
            runtime: runtime.clone(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            links: Mutex::default(),
            stopped: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            listener: Mutex::new(None),
        });
        let accept = runtime.spawn(accept_peers(Arc::clone(&inner), listener));
        *inner.listener.lock() = Some(accept);
        Ok(Transport { inner })
    }

    /// This node's address.
    pub fn node_address(&self) -> &str {
        &self.inner.config.node_address
    }

    /// Sends a request to `node` and waits up to `timeout` for its response.
    pub async fn request(
        &self,
        node: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Body, PeerError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        if let Err(e) = self.inner.send(node, id, body) {
            self.inner.pending.lock().remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Body::Error(err))) => Err(PeerError::Remote {
                peer: node.to_string(),
                code: ErrorCode::try_from(err.code).unwrap_or(ErrorCode::ErrorUnspecified),
                message: err.message,
            }),
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(PeerError::Stopped),
            Err(_) => {
                self.inner.pending.lock().remove(&id);
                Err(PeerError::Timeout {
                    peer: node.to_string(),
                    timeout,
                })
            }
        }
    }

    /// Sends a one-way message (no response expected).
    pub fn notify(&self, node: &str, body: Body) -> Result<(), PeerError> {
        self.inner.send(node, 0, body)
    }

    /// Stops listening and drops every connection (pending requests fail
    /// with `Stopped`). Idempotent.
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.cancel();
        if let Some(accept) = self.inner.listener.lock().take() {
            accept.abort();
        }
        self.inner.links.lock().clear();
        self.inner.pending.lock().clear();
    }
}

impl Inner {
    fn seal(&self, frame: Vec<u8>) -> Bytes {
        Bytes::from(match &self.config.key {
            Some(key) => key.seal(&frame),
            None => frame,
        })
    }

    /// Queues one envelope for `node`, opening its connection if needed.
    fn send(self: &Arc<Self>, node: &str, correlation: u64, body: Body) -> Result<(), PeerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(PeerError::Stopped);
        }
        let frame = self.seal(envelope(correlation, &self.config.node_address, body));
        let mut links = self.links.lock();
        let queue = links.entry(node.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
            self.runtime
                .spawn(run_link(Arc::clone(self), node.to_string(), rx));
            tx
        });
        match queue.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(PeerError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                links.remove(node);
                Err(PeerError::Stopped)
            }
        }
    }

    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(self.config.max_message_bytes)
            .new_codec()
    }

    /// Opens a frame from the wire: `None` if it is not sealed with the cluster key.
    fn open(&self, frame: &[u8]) -> Option<Vec<u8>> {
        match &self.config.key {
            Some(key) => key.open(frame),
            None => Some(frame.to_vec()),
        }
    }

    fn count_in(&self, bytes: usize) {
        self.metrics.peer_messages_received.inc();
        self.metrics.peer_bytes_received.inc_by(bytes as u64);
    }

    fn count_out(&self, bytes: usize) {
        self.metrics.peer_messages_sent.inc();
        self.metrics.peer_bytes_sent.inc_by(bytes as u64);
    }

    fn error_frame(&self, correlation: u64, code: ErrorCode, message: &str) -> Bytes {
        self.seal(envelope(
            correlation,
            &self.config.node_address,
            Body::Error(PeerErrorBody {
                code: code as i32,
                message: message.to_string(),
            }),
        ))
    }
}

/// The outbound connection to one peer: writes what is queued for it,
/// reconnecting as needed, and hands the responses read back to their
/// callers. Frames queued while the peer cannot be reached are dropped
/// (their callers time out).
async fn run_link(inner: Arc<Inner>, node: String, mut queue: mpsc::Receiver<Bytes>) {
    let address = address_of(&node, inner.config.peer_port);
    let shutdown = inner.shutdown.clone();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            frame = queue.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(peer = %node, error = %e, "cannot connect to peer; message dropped");
                continue;
            }
            Err(_) => {
                debug!(peer = %node, "connecting to peer timed out; message dropped");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut sink = FramedWrite::new(write, inner.codec());
        let closed = CancellationToken::new();
        let responses = tokio::spawn(read_responses(
            Arc::clone(&inner),
            node.clone(),
            FramedRead::new(read, inner.codec()),
            closed.clone(),
        ));
        let mut next = Some(first);
        let broken = loop {
            let Some(frame) = next.take() else {
                break false;
            };
            inner.count_out(frame.len());
            if sink.feed(frame).await.is_err() {
                break true;
            }
            // Batch whatever else is queued into one flush.
            while let Ok(frame) = queue.try_recv() {
                inner.count_out(frame.len());
                if sink.feed(frame).await.is_err() {
                    break;
                }
            }
            if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                break true;
            }
            next = tokio::select! {
                _ = shutdown.cancelled() => None,
                frame = queue.recv() => frame,
                _ = closed.cancelled() => {
                    // The peer closed the connection: reconnect on the next frame.
                    break true;
                }
            };
            if next.is_none() {
                break false;
            }
        };
        responses.abort();
        if !broken {
            return;
        }
        debug!(peer = %node, "peer connection broken; reconnecting on the next message");
    }
}

/// Reads responses on an outbound connection and completes their callers.
async fn read_responses(
    inner: Arc<Inner>,
    node: String,
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    closed: CancellationToken,
) {
    // Tells the writer when the connection is gone, however this ends.
    let _closed = closed.drop_guard();
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                debug!(peer = %node, error = %e, "peer connection closed");
                return;
            }
        };
        inner.count_in(frame.len());
        let Some(plain) = inner.open(&frame) else {
            warn!(peer = %node, "dropping a response not sealed with the cluster key");
            continue;
        };
        let Ok(message) = PeerEnvelope::decode(plain.as_slice()) else {
            warn!(peer = %node, "undecodable response from peer");
            continue;
        };
        let Some(body) = message.body else { continue };
        // Responses to unknown (timed-out) requests are dropped.
        if let Some(waiter) = inner.pending.lock().remove(&message.correlation_id) {
            let _ = waiter.send(body);
        }
    }
}

/// Accepts connections from peers until the transport stops.
async fn accept_peers(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                debug!(from = %from, "peer connected");
                tokio::spawn(serve_connection(Arc::clone(&inner), stream));
            }
            Err(e) => {
                warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the requests arriving on one inbound connection: each is handled
/// in its own task (a slow prepare does not hold up a heartbeat), and the
/// responses go back over the same connection.
async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, inner.codec());
    let (responses, mut outbox) = mpsc::channel::<Bytes>(QUEUE_FRAMES);
    let writer = {
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let mut sink = FramedWrite::new(write, inner.codec());
            while let Some(frame) = outbox.recv().await {
                inner.count_out(frame.len());
                if sink.feed(frame).await.is_err() {
                    return;
                }
                while let Ok(frame) = outbox.try_recv() {
                    inner.count_out(frame.len());
                    if sink.feed(frame).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                    return;
                }
            }
        })
    };
    let shutdown = inner.shutdown.clone();
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            frame = frames.next() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // Too long, or the connection failed: drop the connection.
                warn!(error = %e, "closing a peer connection that sent an unusable frame");
                break;
            }
            None => break,
        };
        inner.count_in(frame.len());
        let Some(plain) = inner.open(&frame) else {
            warn!("dropping a peer message not sealed with the cluster key");
            continue;
        };
        let message = match PeerEnvelope::decode(plain.as_slice()) {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "undecodable peer message");
                let _ = responses.try_send(inner.error_frame(
                    0,
                    ErrorCode::Malformed,
                    &format!("undecodable message: {e}"),
                ));
                continue;
            }
        };
        if message.protocol_version != PROTOCOL_VERSION {
            let _ = responses.try_send(inner.error_frame(
                message.correlation_id,
                ErrorCode::VersionMismatch,
                &format!(
                    "this node speaks peer protocol {PROTOCOL_VERSION}, not {}",
                    message.protocol_version
                ),
            ));
            continue;
        }
        let Some(body) = message.body else {
            let _ = responses.try_send(inner.error_frame(
                message.correlation_id,
                ErrorCode::Malformed,
                "empty message",
            ));
            continue;
        };
        let (inner, responses) = (Arc::clone(&inner), responses.clone());
        let correlation = message.correlation_id;
        let sender = message.sender;
        tokio::spawn(async move {
            let response = (inner.handler)(sender, body).await;
            if let (Some(body), true) = (response, correlation != 0) {
                let frame = inner.seal(envelope(correlation, &inner.config.node_address, body));
                if responses.try_send(frame).is_err() {
                    debug!("peer response dropped (connection gone or queue full)");
                }
            }
        });
    }
    drop(responses);
    // Let queued responses drain; the writer ends when every sender is gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

#[cfg(test)]
mod tests {
    use super::address_of;

    #[test]
    fn node_names_become_socket_addresses() {
        assert_eq!(address_of("10.0.0.5", 7150), "10.0.0.5:7150");
        assert_eq!(address_of("fd00::5", 7150), "[fd00::5]:7150");
        assert_eq!(address_of("node-a", 7150), "node-a:7150");
        assert_eq!(address_of("127.0.0.1:9000", 7150), "127.0.0.1:9000");
    }
}
