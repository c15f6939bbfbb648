//! The ZeroMQ side of the client: two OS threads that own every socket.
//!
//! libzmq sockets are not thread-safe, so none of them is touched from
//! async code:
//!
//! - the **sender thread** owns one PUSH socket per destination (routing
//!   endpoints and KVS threads, connected lazily, kept for the client's
//!   life) and sends the frames queued on a `std::sync::mpsc` channel;
//! - the **receiver thread** owns the two bound PULL sockets (key-address
//!   responses and KVS responses), decodes what arrives and hands each
//!   response to the waiter registered under its `response_id` in
//!   [`Pending`]. A response whose id nobody waits for (unknown, or its
//!   waiter timed out and went away) is dropped with a debug log.
//!
//! When the last client handle is dropped the outgoing channel closes; the
//! sender thread then tells the receiver thread to stop over an `inproc`
//! socket pair, and both exit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::config::tcp_address;
use crate::error::{Error, Result};
use crate::proto;

/// A decoded response from Anna.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// From a routing node.
    Address(proto::KeyAddressResponse),
    /// From a KVS thread.
    Kvs(proto::KeyResponse),
}

/// A frame to send to `to`.
struct Outgoing {
    to: String,
    frame: Vec<u8>,
}

/// Waiters by request id.
///
/// Guarded by a `parking_lot` mutex held only to insert, remove or look
/// up one entry (never across an `.await` or a socket call), by async
/// callers and by the receiver thread.
#[derive(Default)]
pub(crate) struct Pending {
    waiters: Mutex<HashMap<String, UnboundedSender<Incoming>>>,
}

impl Pending {
    fn dispatch(&self, id: &str, msg: Incoming) {
        let waiter = self.waiters.lock().get(id).cloned();
        match waiter {
            Some(tx) => {
                // The waiter may have just gone away: then the response is
                // as late as one to an unknown id.
                let _ = tx.send(msg);
            }
            None => tracing::debug!(
                response_id = id,
                "ignoring Anna response to unknown request id"
            ),
        }
    }
}

/// A set of request ids registered to one channel; dropping it
/// unregisters them, so later responses to these ids are ignored.
pub(crate) struct Registration {
    pending: Arc<Pending>,
    tx: UnboundedSender<Incoming>,
    rx: UnboundedReceiver<Incoming>,
    ids: Vec<String>,
}

impl Registration {
    /// Registers `id`: responses carrying it arrive on [`Self::recv`].
    pub(crate) fn add(&mut self, id: String) {
        self.pending
            .waiters
            .lock()
            .insert(id.clone(), self.tx.clone());
        self.ids.push(id);
    }

    /// The next response to any registered id.
    pub(crate) async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiters = self.pending.waiters.lock();
        for id in &self.ids {
            waiters.remove(id);
        }
    }
}

/// Handle on the socket threads.
pub(crate) struct Transport {
    outgoing: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
    /// `tcp://ip:port` of the key-address response socket.
    pub(crate) address_response_address: String,
    /// `tcp://ip:port` of the KVS response socket.
    pub(crate) kvs_response_address: String,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("address_response_address", &self.address_response_address)
            .field("kvs_response_address", &self.kvs_response_address)
            .finish_non_exhaustive()
    }
}

fn zmq_err(what: &str) -> impl Fn(zmq::Error) -> Error + '_ {
    move |e| Error::Transport {
        reason: format!("{what}: {e}"),
    }
}

/// Binds a PULL socket on `ip:port` (0 = any free port) and returns it with
/// the port it got.
fn bind_pull(ctx: &zmq::Context, ip: IpAddr, port: u16) -> Result<(zmq::Socket, u16)> {
    let socket = ctx
        .socket(zmq::PULL)
        .map_err(zmq_err("create PULL socket"))?;
    socket.set_linger(0).map_err(zmq_err("set linger"))?;
    if ip.is_ipv6() {
        socket.set_ipv6(true).map_err(zmq_err("enable IPv6"))?;
    }
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let endpoint = if port == 0 {
        format!("tcp://{host}:*")
    } else {
        format!("tcp://{host}:{port}")
    };
    socket.bind(&endpoint).map_err(|e| Error::Transport {
        reason: format!("bind {endpoint}: {e}"),
    })?;
    let last = socket
        .get_last_endpoint()
        .map_err(zmq_err("read bound endpoint"))?
        .map_err(|_| Error::Transport {
            reason: "bound endpoint is not UTF-8".into(),
        })?;
    let bound_port = last
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| Error::Transport {
            reason: format!("cannot read the port of bound endpoint `{last}`"),
        })?;
    Ok((socket, bound_port))
}

impl Transport {
    /// Binds the response sockets and starts the two socket threads.
    pub(crate) fn start(
        bind_ip: IpAddr,
        response_ip: IpAddr,
        address_port: u16,
        kvs_port: u16,
    ) -> Result<Transport> {
        let ctx = zmq::Context::new();
        let (address_pull, address_port) = bind_pull(&ctx, bind_ip, address_port)?;
        let (kvs_pull, kvs_port) = bind_pull(&ctx, bind_ip, kvs_port)?;

        // The stop signal: sender thread -> receiver thread.
        let stop_endpoint = format!(
            "inproc://anna-client-stop-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let stop_pull = ctx
            .socket(zmq::PULL)
            .map_err(zmq_err("create stop socket"))?;
        stop_pull
            .bind(&stop_endpoint)
            .map_err(zmq_err("bind stop socket"))?;
        let stop_push = ctx
            .socket(zmq::PUSH)
            .map_err(zmq_err("create stop socket"))?;
        stop_push
            .connect(&stop_endpoint)
            .map_err(zmq_err("connect stop socket"))?;

        let pending = Arc::new(Pending::default());
        let (tx, rx) = mpsc::channel::<Outgoing>();

        let receiver_pending = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("anna-client-recv".into())
            .spawn(move || receive_loop(address_pull, kvs_pull, stop_pull, &receiver_pending))
            .map_err(|e| Error::Transport {
                reason: format!("spawn receiver thread: {e}"),
            })?;
        let sender_ctx = ctx.clone();
        std::thread::Builder::new()
            .name("anna-client-send".into())
            .spawn(move || send_loop(&sender_ctx, &rx, &stop_push))
            .map_err(|e| Error::Transport {
                reason: format!("spawn sender thread: {e}"),
            })?;

        Ok(Transport {
            outgoing: tx,
            pending,
            address_response_address: tcp_address(response_ip, address_port),
            kvs_response_address: tcp_address(response_ip, kvs_port),
        })
    }

    /// A new, empty set of request ids to wait on.
    pub(crate) fn register(&self) -> Registration {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Registration {
            pending: Arc::clone(&self.pending),
            tx,
            rx,
            ids: Vec::new(),
        }
    }

    /// Queues `frame` for `to`; never blocks.
    pub(crate) fn send(&self, to: &str, frame: Vec<u8>) -> Result<()> {
        self.outgoing
            .send(Outgoing {
                to: to.to_owned(),
                frame,
            })
            .map_err(|_| Error::Closed)
    }
}

/// Queue bound of each socket, in messages. libzmq's default (1000) is
/// far too low for one multi-key call, which sends one address request
/// per key at once: with non-blocking sends the excess would be dropped
/// and only recovered by timeouts.
const HIGH_WATER_MARK: i32 = 1_000_000;

/// Most distinct destinations kept connected; past it the cache is reset
/// (Anna clusters have far fewer threads than this).
const MAX_PUSH_SOCKETS: usize = 4096;

fn send_loop(ctx: &zmq::Context, rx: &mpsc::Receiver<Outgoing>, stop: &zmq::Socket) {
    let mut sockets: HashMap<String, zmq::Socket> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        if !sockets.contains_key(&msg.to) {
            if sockets.len() >= MAX_PUSH_SOCKETS {
                sockets.clear();
            }
            match connect_push(ctx, &msg.to) {
                Ok(s) => {
                    sockets.insert(msg.to.clone(), s);
                }
                Err(e) => {
                    tracing::warn!(to = %msg.to, error = %e, "cannot connect to Anna; dropping request");
                    continue;
                }
            }
        }
        if let Some(socket) = sockets.get(&msg.to) {
            if let Err(e) = socket.send(msg.frame, zmq::DONTWAIT) {
                // EAGAIN: the peer's queue is full; the caller times out
                // and retries.
                tracing::warn!(to = %msg.to, error = %e, "cannot send to Anna; dropping request");
            }
        }
    }
    if let Err(e) = stop.send(&b""[..], 0) {
        tracing::warn!(error = %e, "cannot stop the Anna receiver thread");
    }
}

fn connect_push(ctx: &zmq::Context, to: &str) -> zmq::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::PUSH)?;
    socket.set_linger(0)?;
    socket.set_sndhwm(HIGH_WATER_MARK)?;
    if to.contains('[') {
        socket.set_ipv6(true)?;
    }
    socket.connect(to)?;
    Ok(socket)
}

fn receive_loop(address: zmq::Socket, kvs: zmq::Socket, stop: zmq::Socket, pending: &Pending) {
    loop {
        let mut items = [
            address.as_poll_item(zmq::POLLIN),
            kvs.as_poll_item(zmq::POLLIN),
            stop.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, -1) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "Anna receiver poll failed; stopping");
                return;
            }
        }
        let (address_ready, kvs_ready, stop_ready) = (
            items[0].is_readable(),
            items[1].is_readable(),
            items[2].is_readable(),
        );
        if stop_ready {
            return;
        }
        if address_ready {
            drain(&address, |frame| {
                match proto::KeyAddressResponse::decode(frame) {
                    Ok(r) => {
                        let id = r.response_id.clone();
                        pending.dispatch(&id, Incoming::Address(r));
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable KeyAddressResponse"),
                }
            });
        }
        if kvs_ready {
            drain(&kvs, |frame| match proto::KeyResponse::decode(frame) {
                Ok(r) => {
                    let id = r.response_id.clone();
                    pending.dispatch(&id, Incoming::Kvs(r));
                }
                Err(e) => tracing::warn!(error = %e, "undecodable KeyResponse"),
            });
        }
    }
}

/// Receives every frame queued on `socket` without blocking.
fn drain(socket: &zmq::Socket, mut handle: impl FnMut(&[u8])) {
    loop {
        match socket.recv_bytes(zmq::DONTWAIT) {
            Ok(frame) => handle(&frame),
            Err(zmq::Error::EAGAIN) => return,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "Anna receive failed");
                return;
            }
        }
    }
}
