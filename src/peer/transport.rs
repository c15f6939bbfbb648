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
//! Everything runs as tasks on the runtime that also runs the engine. The
//! task that sends a request writes it to the socket itself (see
//! [`FrameSink`]); the peer's connection task reads it and handles it in
//! place when the handler finishes without waiting (a fetch, a buffered
//! read, a heartbeat), or hands it to a task of its own when it waits (a
//! prepare that writes to storage), and the answer is written by whichever
//! task produced it. This node's connection task reads the answer and
//! completes the caller's future. A round trip thus wakes one task on each
//! side beyond the caller, with no writer task in between.
//!
//! Hostile input: a frame longer than `max_message_bytes` closes its
//! connection (and costs nothing first: buffers grow with bytes received,
//! not with the length a frame announces); a frame that does not open (sealed mode), does not decode,
//! or names another protocol version gets an error answer (`MALFORMED`,
//! `VERSION_MISMATCH`) and is otherwise ignored. Sends never block: a peer
//! whose backlog is full refuses messages (`Overloaded`), and every other
//! peer is served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::task::Poll;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use prost::Message;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::codec::envelope;
use super::framing::{frame, FrameDecoder, FrameSink, SendRefused};
use super::seal::PeerKey;
use super::PeerError;
use crate::metrics::Metrics;
use crate::proto::peer::{
    peer_envelope::Body, Error as PeerErrorBody, ErrorCode, PeerEnvelope, PROTOCOL_VERSION,
};

/// Bytes that may wait for one peer connection (sends beyond are refused).
const BACKLOG_BYTES: usize = 256 * 1024 * 1024;
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
    /// Each peer's outbound connection.
    links: Mutex<HashMap<String, Arc<Link>>>,
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

/// One peer's outbound connection: frames sent before it is open wait
/// here, in order, and are written when it opens.
#[derive(Default)]
struct Link {
    state: Mutex<LinkState>,
    /// Wakes the link's task when frames wait for a connection.
    waiting_frames: Notify,
}

#[derive(Default)]
struct LinkState {
    /// The open connection, if any.
    sink: Option<Arc<FrameSink>>,
    /// Frames waiting for a connection.
    waiting: Vec<Bytes>,
    waiting_bytes: usize,
}

impl Link {
    fn send(&self, frame: Bytes) -> Result<(), PeerError> {
        let mut state = self.state.lock();
        if let Some(sink) = &state.sink {
            match sink.send(frame.clone()) {
                Ok(()) => return Ok(()),
                Err(SendRefused::Full) => return Err(PeerError::Overloaded),
                // Broken: wait for the next connection, which the link's task opens.
                Err(SendRefused::Closed) => state.sink = None,
            }
        }
        if state.waiting_bytes + frame.len() > BACKLOG_BYTES {
            return Err(PeerError::Overloaded);
        }
        state.waiting_bytes += frame.len();
        state.waiting.push(frame);
        drop(state);
        self.waiting_frames.notify_one();
        Ok(())
    }

    /// Hands the frames waiting so far to `sink` and makes it the link's
    /// connection (under the lock, so no frame overtakes them).
    fn open(&self, sink: &Arc<FrameSink>) {
        let mut state = self.state.lock();
        sink.preload(state.waiting.drain(..));
        state.waiting_bytes = 0;
        state.sink = Some(Arc::clone(sink));
    }

    /// Forgets the connection and drops what waits for it (the callers time out).
    fn close(&self) -> usize {
        let mut state = self.state.lock();
        state.sink = None;
        state.waiting_bytes = 0;
        std::mem::take(&mut state.waiting).len()
    }

    fn has_waiting(&self) -> bool {
        !self.state.lock().waiting.is_empty()
    }
}

impl Inner {
    /// One envelope, sealed and framed for the wire.
    fn wire(&self, correlation: u64, body: Body) -> Bytes {
        let payload = envelope(correlation, &self.config.node_address, body);
        match &self.config.key {
            Some(key) => frame(&key.seal(&payload)),
            None => frame(&payload),
        }
    }

    /// Sends one envelope to `node`, opening its connection if needed.
    fn send(self: &Arc<Self>, node: &str, correlation: u64, body: Body) -> Result<(), PeerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(PeerError::Stopped);
        }
        let frame = self.wire(correlation, body);
        let link = {
            let mut links = self.links.lock();
            let link = links.entry(node.to_string()).or_insert_with(|| {
                let link = Arc::new(Link::default());
                self.runtime.spawn(run_link(
                    Arc::clone(self),
                    node.to_string(),
                    Arc::clone(&link),
                ));
                link
            });
            Arc::clone(link)
        };
        let length = frame.len();
        link.send(frame)?;
        self.count_out(length);
        Ok(())
    }

    fn decoder(&self) -> FrameDecoder {
        FrameDecoder::new(self.config.max_message_bytes)
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

    /// Answers on an inbound connection (dropped if the connection is gone
    /// or its backlog is full; the asking peer times out).
    fn answer(&self, sink: &FrameSink, correlation: u64, body: Body) {
        let frame = self.wire(correlation, body);
        let length = frame.len();
        match sink.send(frame) {
            Ok(()) => self.count_out(length),
            Err(refused) => debug!(?refused, "peer response dropped"),
        }
    }

    fn answer_error(&self, sink: &FrameSink, correlation: u64, code: ErrorCode, message: &str) {
        let body = Body::Error(PeerErrorBody {
            code: code as i32,
            message: message.to_string(),
        });
        self.answer(sink, correlation, body);
    }
}

/// Keeps one peer's outbound connection: opens it when frames wait,
/// writes what senders could not, hands the responses read back to their
/// callers, and reopens it after it breaks. Frames waiting while the peer
/// cannot be reached are dropped (their callers time out).
async fn run_link(inner: Arc<Inner>, node: String, link: Arc<Link>) {
    let address = address_of(&node, inner.config.peer_port);
    let shutdown = inner.shutdown.clone();
    loop {
        while !link.has_waiting() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = link.waiting_frames.notified() => {}
            }
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let dropped = link.close();
                debug!(peer = %node, error = %e, dropped, "cannot connect to peer; messages dropped");
                continue;
            }
            Err(_) => {
                let dropped = link.close();
                debug!(peer = %node, dropped, "connecting to peer timed out; messages dropped");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let sink = Arc::new(FrameSink::new(write, BACKLOG_BYTES));
        let closed = shutdown.child_token();
        let responses = tokio::spawn(read_responses(
            Arc::clone(&inner),
            node.clone(),
            FramedRead::new(read, inner.decoder()),
            closed.clone(),
        ));
        link.open(&sink);
        if let Err(e) = sink.flush_until_closed(&closed).await {
            debug!(peer = %node, error = %e, "writing to peer failed");
        }
        responses.abort();
        link.close();
        if shutdown.is_cancelled() {
            return;
        }
        debug!(peer = %node, "peer connection closed; reopening on the next message");
    }
}

/// Reads responses on an outbound connection and completes their callers.
async fn read_responses(
    inner: Arc<Inner>,
    node: String,
    mut frames: FramedRead<OwnedReadHalf, FrameDecoder>,
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

/// Serves the requests arriving on one inbound connection. A request whose
/// handler finishes without waiting is answered in place; one that waits
/// (a prepare writing to storage) goes on in its own task, so it does not
/// hold up the requests behind it. Answers go back over the same
/// connection.
async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, inner.decoder());
    let sink = Arc::new(FrameSink::new(write, BACKLOG_BYTES));
    let closed = inner.shutdown.child_token();
    let flusher = {
        let (sink, closed) = (Arc::clone(&sink), closed.clone());
        tokio::spawn(async move {
            if let Err(e) = sink.flush_until_closed(&closed).await {
                debug!(error = %e, "writing to a peer failed");
            }
            closed.cancel();
        })
    };
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
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
                let reason = format!("undecodable message: {e}");
                inner.answer_error(&sink, 0, ErrorCode::Malformed, &reason);
                continue;
            }
        };
        let correlation = message.correlation_id;
        if message.protocol_version != PROTOCOL_VERSION {
            let reason = format!(
                "this node speaks peer protocol {PROTOCOL_VERSION}, not {}",
                message.protocol_version
            );
            inner.answer_error(&sink, correlation, ErrorCode::VersionMismatch, &reason);
            continue;
        }
        let Some(body) = message.body else {
            inner.answer_error(&sink, correlation, ErrorCode::Malformed, "empty message");
            continue;
        };
        let mut handling = (inner.handler)(message.sender, body);
        // One poll here: most requests finish in it, without a task of their own.
        let first = std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await;
        let answer = move |inner: &Inner, sink: &FrameSink, response: Option<Body>| {
            if let (Some(body), true) = (response, correlation != 0) {
                inner.answer(sink, correlation, body);
            }
        };
        match first {
            Poll::Ready(response) => answer(&inner, &sink, response),
            Poll::Pending => {
                let (inner, sink) = (Arc::clone(&inner), Arc::clone(&sink));
                tokio::spawn(async move {
                    let response = handling.await;
                    answer(&inner, &sink, response);
                });
            }
        }
    }
    closed.cancel();
    let _ = flusher.await;
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
