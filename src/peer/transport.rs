//! The peer transport: ZeroMQ over TCP, one I/O thread.
//!
//! Each sidecar binds one ROUTER socket on `<bind address>:<peer port>` for
//! requests from peers, and keeps one DEALER socket per peer for its own
//! requests. Every frame is one `PeerEnvelope`. A request carries a
//! correlation id that its response echoes, so replies never cross;
//! correlation id 0 means "no response expected" (gossip).
//!
//! All sockets live on the I/O thread. Other threads hand it commands over
//! a bounded channel and wake it through an inproc socket (guarded by a
//! mutex, which is the memory barrier libzmq requires when a socket is
//! used from more than one thread). Inbound requests are handed to a
//! handler on the tokio runtime; callers wait for responses with a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::codec::envelope;
use super::seal::PeerKey;
use super::PeerError;
use crate::proto::peer::{
    peer_envelope::Body, Error as PeerErrorBody, ErrorCode, PeerEnvelope, PROTOCOL_VERSION,
};

/// Commands queued for the I/O thread at most (back-pressure beyond).
const COMMAND_QUEUE: usize = 65_536;
/// Poll timeout of the I/O thread (it is woken early by commands).
const POLL_MS: i64 = 100;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's address (identifies it to peers).
    pub node_address: String,
    /// Address to bind the ROUTER socket on (ip:port).
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

enum Command {
    Send { node: String, frame: Vec<u8> },
    Respond { identity: Vec<u8>, frame: Vec<u8> },
    Stop,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Body>>>>;

/// A handle to the transport; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    node_address: String,
    key: Option<PeerKey>,
    commands: Sender<Command>,
    wake: Arc<Mutex<zmq::Socket>>,
    pending: Pending,
    next_id: AtomicU64,
    stopped: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// `tcp://host:port` for a node named by a bare IP (v4 or v6), a host
/// name, or `host:port`.
pub fn endpoint_of(node: &str, peer_port: u16) -> String {
    match node.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("tcp://[{ip}]:{peer_port}"),
        Ok(ip) => format!("tcp://{ip}:{peer_port}"),
        Err(_) if node.contains(':') => format!("tcp://{node}"),
        Err(_) => format!("tcp://{node}:{peer_port}"),
    }
}

impl Transport {
    /// Binds the ROUTER socket and starts the I/O thread.
    pub fn start(
        config: TransportConfig,
        handler: Handler,
        runtime: tokio::runtime::Handle,
    ) -> Result<Transport, PeerError> {
        let context = zmq::Context::new();
        let zerr = |what: &str| {
            let what = what.to_string();
            move |e: zmq::Error| PeerError::Transport(format!("{what}: {e}"))
        };
        let router = context.socket(zmq::ROUTER).map_err(zerr("router"))?;
        router.set_linger(0).map_err(zerr("router"))?;
        router
            .set_maxmsgsize(i64::try_from(config.max_message_bytes).unwrap_or(i64::MAX))
            .map_err(zerr("router"))?;
        router.set_router_mandatory(false).map_err(zerr("router"))?;
        let bind = format!("tcp://{}", config.bind);
        router.bind(&bind).map_err(|e| {
            PeerError::Transport(format!("cannot bind peer endpoint `{bind}`: {e}"))
        })?;
        let wake_address = format!("inproc://aft-peer-wake-{}", config.node_address);
        let wake_pull = context.socket(zmq::PULL).map_err(zerr("wake"))?;
        wake_pull.bind(&wake_address).map_err(zerr("wake"))?;
        let wake_push = context.socket(zmq::PUSH).map_err(zerr("wake"))?;
        wake_push.connect(&wake_address).map_err(zerr("wake"))?;
        let wake_push = Arc::new(Mutex::new(wake_push));
        let (commands, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let pending: Pending = Arc::default();
        let inner = Arc::new(Inner {
            node_address: config.node_address.clone(),
            key: config.key.clone(),
            commands: commands.clone(),
            wake: Arc::clone(&wake_push),
            pending: Arc::clone(&pending),
            next_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let io = IoThread {
            context,
            router,
            wake: wake_pull,
            waker: wake_push,
            dealers: HashMap::new(),
            rx,
            commands,
            pending,
            handler,
            runtime,
            config,
        };
        let thread = std::thread::Builder::new()
            .name("aft-peer-io".into())
            .spawn(move || io.run())
            .map_err(|e| PeerError::Transport(format!("cannot spawn the peer I/O thread: {e}")))?;
        *inner.thread.lock() = Some(thread);
        Ok(Transport { inner })
    }

    /// This node's address.
    pub fn node_address(&self) -> &str {
        &self.inner.node_address
    }

    fn submit(&self, command: Command) -> Result<(), PeerError> {
        match self.inner.commands.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PeerError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(PeerError::Stopped),
        }
        let _ = self.inner.wake.lock().send(&[][..], zmq::DONTWAIT);
        Ok(())
    }

    fn seal(&self, frame: Vec<u8>) -> Vec<u8> {
        match &self.inner.key {
            Some(key) => key.seal(&frame),
            None => frame,
        }
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
        let frame = self.seal(envelope(id, &self.inner.node_address, body));
        if let Err(e) = self.submit(Command::Send {
            node: node.to_string(),
            frame,
        }) {
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
        let frame = self.seal(envelope(0, &self.inner.node_address, body));
        self.submit(Command::Send {
            node: node.to_string(),
            frame,
        })
    }

    /// Stops the I/O thread (pending requests fail with `Stopped`).
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.submit(Command::Stop);
        if let Some(thread) = self.inner.thread.lock().take() {
            let _ = thread.join();
        }
        self.inner.pending.lock().clear();
    }
}

struct IoThread {
    context: zmq::Context,
    router: zmq::Socket,
    wake: zmq::Socket,
    waker: Arc<Mutex<zmq::Socket>>,
    dealers: HashMap<String, zmq::Socket>,
    rx: Receiver<Command>,
    commands: Sender<Command>,
    pending: Pending,
    handler: Handler,
    runtime: tokio::runtime::Handle,
    config: TransportConfig,
}

impl IoThread {
    fn run(mut self) {
        loop {
            // Commands first (they may add dealers).
            while let Ok(command) = self.rx.try_recv() {
                match command {
                    Command::Stop => return,
                    Command::Send { node, frame } => self.send_to(&node, &frame),
                    Command::Respond { identity, frame } => {
                        if let Err(e) = self.router.send_multipart([identity, frame], zmq::DONTWAIT)
                        {
                            debug!(error = %e, "peer response dropped");
                        }
                    }
                }
            }
            let nodes: Vec<String> = self.dealers.keys().cloned().collect();
            let readable: Vec<bool> = {
                let mut items = vec![
                    self.router.as_poll_item(zmq::POLLIN),
                    self.wake.as_poll_item(zmq::POLLIN),
                ];
                items.extend(
                    nodes
                        .iter()
                        .filter_map(|n| self.dealers.get(n))
                        .map(|d| d.as_poll_item(zmq::POLLIN)),
                );
                if zmq::poll(&mut items, POLL_MS).is_err() {
                    continue;
                }
                items.iter().map(|i| i.is_readable()).collect()
            };
            if readable[1] {
                while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
            }
            if readable[0] {
                self.drain_router();
            }
            for (node, ready) in nodes.iter().zip(&readable[2..]) {
                if *ready {
                    self.drain_dealer(node);
                }
            }
        }
    }

    fn send_to(&mut self, node: &str, frame: &[u8]) {
        if !self.dealers.contains_key(node) {
            match self.connect(node) {
                Ok(dealer) => {
                    self.dealers.insert(node.to_string(), dealer);
                }
                Err(e) => {
                    warn!(peer = %node, error = %e, "cannot connect to peer");
                    return;
                }
            }
        }
        if let Some(dealer) = self.dealers.get(node) {
            if let Err(e) = dealer.send(frame, zmq::DONTWAIT) {
                debug!(peer = %node, error = %e, "peer message dropped (queue full)");
            }
        }
    }

    fn connect(&self, node: &str) -> Result<zmq::Socket, zmq::Error> {
        let dealer = self.context.socket(zmq::DEALER)?;
        dealer.set_linger(0)?;
        dealer.set_sndhwm(10_000)?;
        dealer.set_maxmsgsize(i64::try_from(self.config.max_message_bytes).unwrap_or(i64::MAX))?;
        dealer.connect(&endpoint_of(node, self.config.peer_port))?;
        Ok(dealer)
    }

    fn drain_router(&mut self) {
        loop {
            let parts = match self.router.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => parts,
                Err(_) => return,
            };
            let [identity, frame] =
                <[Vec<u8>; 2]>::try_from(parts).unwrap_or_else(|_| [Vec::new(), Vec::new()]);
            if identity.is_empty() {
                continue;
            }
            let frame = match &self.config.key {
                Some(key) => match key.open(&frame) {
                    Some(plain) => plain,
                    None => {
                        warn!("dropping a peer message not sealed with the cluster key");
                        continue;
                    }
                },
                None => frame,
            };
            let message = match PeerEnvelope::decode(frame.as_slice()) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "undecodable peer message");
                    self.reply_error(
                        identity,
                        0,
                        ErrorCode::Malformed,
                        &format!("undecodable message: {e}"),
                    );
                    continue;
                }
            };
            if message.protocol_version != PROTOCOL_VERSION {
                self.reply_error(
                    identity,
                    message.correlation_id,
                    ErrorCode::VersionMismatch,
                    &format!(
                        "this node speaks peer protocol {PROTOCOL_VERSION}, not {}",
                        message.protocol_version
                    ),
                );
                continue;
            }
            let Some(body) = message.body else {
                self.reply_error(
                    identity,
                    message.correlation_id,
                    ErrorCode::Malformed,
                    "empty message",
                );
                continue;
            };
            let handler = Arc::clone(&self.handler);
            let commands = self.commands.clone();
            let node = self.config.node_address.clone();
            let correlation = message.correlation_id;
            let sender = message.sender;
            let waker = Arc::clone(&self.waker);
            let key = self.config.key.clone();
            self.runtime.spawn(async move {
                let response = handler(sender, body).await;
                if let (Some(body), true) = (response, correlation != 0) {
                    let frame = envelope(correlation, &node, body);
                    let frame = match &key {
                        Some(key) => key.seal(&frame),
                        None => frame,
                    };
                    if commands
                        .try_send(Command::Respond { identity, frame })
                        .is_ok()
                    {
                        let _ = waker.lock().send(&[][..], zmq::DONTWAIT);
                    }
                }
            });
        }
    }

    fn reply_error(&self, identity: Vec<u8>, correlation: u64, code: ErrorCode, message: &str) {
        let frame = envelope(
            correlation,
            &self.config.node_address,
            Body::Error(PeerErrorBody {
                code: code as i32,
                message: message.to_string(),
            }),
        );
        let frame = match &self.config.key {
            Some(key) => key.seal(&frame),
            None => frame,
        };
        let _ = self.router.send_multipart([identity, frame], zmq::DONTWAIT);
    }

    fn drain_dealer(&mut self, node: &str) {
        let Some(dealer) = self.dealers.get(node) else {
            return;
        };
        while let Ok(frame) = dealer.recv_bytes(zmq::DONTWAIT) {
            let frame = match &self.config.key {
                Some(key) => match key.open(&frame) {
                    Some(plain) => plain,
                    None => {
                        warn!(peer = %node, "dropping a response not sealed with the cluster key");
                        continue;
                    }
                },
                None => frame,
            };
            let Ok(message) = PeerEnvelope::decode(frame.as_slice()) else {
                warn!(peer = %node, "undecodable response from peer");
                continue;
            };
            let Some(body) = message.body else { continue };
            // Responses to unknown (timed-out) requests are dropped.
            if let Some(waiter) = self.pending.lock().remove(&message.correlation_id) {
                let _ = waiter.send(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

    #[test]
    fn node_names_become_tcp_endpoints() {
        assert_eq!(endpoint_of("10.0.0.5", 7150), "tcp://10.0.0.5:7150");
        assert_eq!(endpoint_of("fd00::5", 7150), "tcp://[fd00::5]:7150");
        assert_eq!(endpoint_of("node-a", 7150), "tcp://node-a:7150");
        assert_eq!(endpoint_of("127.0.0.1:9000", 7150), "tcp://127.0.0.1:9000");
    }
}
