//! A protocol-faithful Anna for tests (feature `test-server`).
//!
//! [`TestServer`] runs routing threads and KVS threads, each an OS thread
//! with a PULL socket bound on `127.0.0.1` (free ports unless base ports
//! are configured), answering over PUSH sockets connected to the
//! requests' response addresses, exactly like Anna's nodes. It reproduces
//! what was measured against a real Anna build (docs/PROTOCOL.md section 6):
//!
//! - a `KeyAddressRequest` with several keys is answered wrongly: only the
//!   first key gets an entry (Anna's handler returns early); see
//!   [`Stats::multi_key_address_requests`];
//! - a KVS thread answers the keys it owns at once and the keys it does
//!   not own with `WRONG_THREAD` in a **second** `KeyResponse` with the
//!   same `response_id`, [`TestServerConfig::wrong_thread_delay`] (25 ms)
//!   later; a put to a wrong thread is **not** applied;
//! - an LWW value whose `value` is empty is reported as `KEY_DNE`;
//! - a put whose lattice type differs from the stored one is dropped but
//!   acknowledged with lattice type `NONE` (as is a put with no lattice
//!   type);
//! - LWW merge keeps the higher timestamp; on equal timestamps the later
//!   arrival wins;
//! - a tuple whose `address_cache_size` is non-zero and differs from the
//!   key's replica count comes back with `invalidate` set;
//! - one PUSH socket is kept per distinct response address, forever
//!   ([`Stats::response_addresses`] lists them);
//! - a malformed response address (which crashes a real Anna node) is
//!   counted in [`Stats::malformed_response_addresses`] and not answered.
//!
//! Faults can be injected per key (`WRONG_THREAD`, any error code such as
//! `KEY_DNE` or `NO_SERVERS`, `invalidate`, a delayed answer) and globally
//! (dropped KVS or routing responses, `NO_SERVERS` from routing, delays,
//! moving a key to another thread).
//!
//! The store is shared by all KVS threads; which thread may serve a key is
//! decided by a hash ring (`replication` consecutive threads from
//! `fnv1a(key) % kvs_threads`) or by [`TestServer::move_key`].
//!
//! # Example
//!
//! ```
//! use anna_client::test_server::TestServer;
//! use anna_client::AnnaClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start_default()?;
//! let client = AnnaClient::connect(server.client_config()).await?;
//! client.put("k", b"v").await?;
//! assert_eq!(client.get("k").await?, Some(b"v".to_vec()));
//! assert_eq!(server.stats().multi_key_address_requests, 0);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::proto::{self, key_address_response::KeyAddress, AnnaError, LatticeType, RequestType};
use crate::value::Value;

/// Shape of a [`TestServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestServerConfig {
    /// Number of KVS threads (one is right for a 2-core machine).
    pub kvs_threads: usize,
    /// Number of routing threads.
    pub routing_threads: usize,
    /// How many KVS threads own each key.
    pub replication: usize,
    /// Routing thread `t` binds `base + t`; `None`: free ports.
    pub routing_base_port: Option<u16>,
    /// KVS thread `t` binds `base + t`; `None`: free ports.
    pub kvs_base_port: Option<u16>,
    /// How long after the request a `WRONG_THREAD` answer comes.
    pub wrong_thread_delay: Duration,
}

impl Default for TestServerConfig {
    fn default() -> Self {
        TestServerConfig {
            kvs_threads: 1,
            routing_threads: 1,
            replication: 1,
            routing_base_port: None,
            kvs_base_port: None,
            wrong_thread_delay: Duration::from_millis(25),
        }
    }
}

impl TestServerConfig {
    /// The default shape with `kvs_threads` KVS threads.
    pub fn with_kvs_threads(kvs_threads: usize) -> Self {
        TestServerConfig {
            kvs_threads,
            ..Self::default()
        }
    }
}

/// Counters of what the server saw.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// `KeyAddressRequest`s received.
    pub address_requests: u64,
    /// Of those, the ones naming more than one key.
    pub multi_key_address_requests: u64,
    /// `KeyRequest`s received.
    pub key_requests: u64,
    /// Tuples of GET requests received.
    pub get_tuples: u64,
    /// Tuples of PUT requests received.
    pub put_tuples: u64,
    /// Tuples answered `WRONG_THREAD`.
    pub wrong_thread_answers: u64,
    /// Responses dropped by injection.
    pub dropped_responses: u64,
    /// Requests whose response address was not `tcp://ip:port`.
    pub malformed_response_addresses: u64,
    /// Every distinct response address answered to.
    pub response_addresses: BTreeSet<String>,
}

/// A fault for the next request tuple of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFault {
    WrongThread,
    Error(AnnaError),
    Invalidate,
    Delay(Duration),
}

#[derive(Debug, Default)]
struct Faults {
    /// While set, KVS requests are neither applied nor answered (a node
    /// that is down or cut off).
    outage: bool,
    per_key: HashMap<String, VecDeque<KeyFault>>,
    drop_kvs_responses: u64,
    drop_address_responses: u64,
    no_servers: u64,
    kvs_delay: Duration,
    routing_delay: Duration,
}

/// State shared by the server's threads and its handle. Each mutex is
/// held for one request's bookkeeping, never across a socket call.
#[derive(Debug)]
struct Shared {
    config: TestServerConfig,
    kvs_endpoints: Vec<String>,
    store: Mutex<HashMap<String, Value>>,
    owners: Mutex<HashMap<String, Vec<usize>>>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    stop: AtomicBool,
}

impl Shared {
    fn owners(&self, key: &str) -> Vec<usize> {
        if let Some(o) = self.owners.lock().get(key) {
            return o.clone();
        }
        let n = self.config.kvs_threads;
        if n == 0 {
            return Vec::new();
        }
        let start = usize::try_from(fnv1a(key.as_bytes()) % n as u64).unwrap_or(0);
        (0..self.config.replication.clamp(1, n))
            .map(|r| (start + r) % n)
            .collect()
    }

    fn take_key_fault(&self, key: &str) -> Option<KeyFault> {
        let mut faults = self.faults.lock();
        let queue = faults.per_key.get_mut(key)?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            faults.per_key.remove(key);
        }
        fault
    }

    fn take_drop(&self, kvs: bool) -> bool {
        let mut faults = self.faults.lock();
        let counter = if kvs {
            &mut faults.drop_kvs_responses
        } else {
            &mut faults.drop_address_responses
        };
        if *counter > 0 {
            *counter -= 1;
            drop(faults);
            self.stats.lock().dropped_responses += 1;
            true
        } else {
            false
        }
    }
}

/// A running test Anna. Stops (and joins its threads) when dropped.
#[derive(Debug)]
pub struct TestServer {
    shared: Arc<Shared>,
    routing_endpoints: Vec<String>,
    threads: Vec<JoinHandle<()>>,
}

fn transport_err(what: String) -> impl FnOnce(zmq::Error) -> Error {
    move |e| Error::Transport {
        reason: format!("{what}: {e}"),
    }
}

fn bind(ctx: &zmq::Context, port: Option<u16>) -> Result<(zmq::Socket, String)> {
    let socket = ctx
        .socket(zmq::PULL)
        .map_err(transport_err("create PULL".into()))?;
    socket
        .set_linger(0)
        .map_err(transport_err("set linger".into()))?;
    socket
        .set_rcvhwm(0)
        .map_err(transport_err("set rcvhwm".into()))?;
    let endpoint = match port {
        Some(p) => format!("tcp://127.0.0.1:{p}"),
        None => "tcp://127.0.0.1:*".to_owned(),
    };
    socket
        .bind(&endpoint)
        .map_err(transport_err(format!("bind {endpoint}")))?;
    let bound = socket
        .get_last_endpoint()
        .map_err(transport_err("read endpoint".into()))?
        .map_err(|_| Error::Transport {
            reason: "endpoint is not UTF-8".into(),
        })?;
    Ok((socket, bound))
}

fn port_at(base: Option<u16>, i: usize) -> Option<u16> {
    base.map(|b| b.saturating_add(u16::try_from(i).unwrap_or(u16::MAX)))
}

impl TestServer {
    /// Starts a server with one routing thread and one KVS thread on free
    /// ports.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when a socket cannot be bound.
    pub fn start_default() -> Result<Self> {
        Self::start(TestServerConfig::default())
    }

    /// Starts a server of the given shape.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when a socket cannot be bound.
    pub fn start(config: TestServerConfig) -> Result<Self> {
        let ctx = zmq::Context::new();
        let mut kvs_sockets = Vec::new();
        let mut kvs_endpoints = Vec::new();
        for t in 0..config.kvs_threads {
            let (s, e) = bind(&ctx, port_at(config.kvs_base_port, t))?;
            kvs_sockets.push(s);
            kvs_endpoints.push(e);
        }
        let mut routing_sockets = Vec::new();
        let mut routing_endpoints = Vec::new();
        for t in 0..config.routing_threads.max(1) {
            let (s, e) = bind(&ctx, port_at(config.routing_base_port, t))?;
            routing_sockets.push(s);
            routing_endpoints.push(e);
        }
        let shared = Arc::new(Shared {
            config,
            kvs_endpoints,
            store: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (t, socket) in kvs_sockets.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let ctx = ctx.clone();
            threads.push(spawn(format!("anna-test-kvs-{t}"), move || {
                run_node(&ctx, &socket, &shared, |frame, out| {
                    handle_key_request(&shared, t, frame, out);
                });
            })?);
        }
        for (t, socket) in routing_sockets.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let ctx = ctx.clone();
            threads.push(spawn(format!("anna-test-routing-{t}"), move || {
                run_node(&ctx, &socket, &shared, |frame, out| {
                    handle_address_request(&shared, frame, out);
                });
            })?);
        }
        Ok(TestServer {
            shared,
            routing_endpoints,
            threads,
        })
    }

    /// The routing endpoints, `tcp://127.0.0.1:port` each.
    pub fn routing_endpoints(&self) -> &[String] {
        &self.routing_endpoints
    }

    /// `127.0.0.1:port` of routing thread 0 (for `anna://` URLs).
    pub fn routing_host_port(&self) -> String {
        self.routing_endpoints[0]
            .trim_start_matches("tcp://")
            .to_owned()
    }

    /// The KVS thread endpoints (what routing answers).
    pub fn kvs_endpoints(&self) -> &[String] {
        &self.shared.kvs_endpoints
    }

    /// A client configuration for this server: all routing threads,
    /// response IP 127.0.0.1, short timeouts (250 ms per attempt, 3 s per
    /// call) and fast backoff (2 ms to 50 ms).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::with_routing_endpoints(self.routing_endpoints.clone())
            .with_response_ip(Ipv4Addr::LOCALHOST.into());
        c.request_timeout = Duration::from_millis(250);
        c.operation_timeout = Duration::from_secs(3);
        c.backoff_initial = Duration::from_millis(2);
        c.backoff_max = Duration::from_millis(50);
        c
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().clone()
    }

    /// What the store holds for `key` (whatever a GET would say,
    /// including an empty LWW value).
    pub fn stored(&self, key: &str) -> Option<Value> {
        self.shared.store.lock().get(key).cloned()
    }

    /// Stores a value directly, as if another client had put it.
    pub fn insert(&self, key: &str, value: Value) {
        self.shared.store.lock().insert(key.to_owned(), value);
    }

    /// Every key in the store.
    pub fn keys(&self) -> Vec<String> {
        self.shared.store.lock().keys().cloned().collect()
    }

    fn push_key_fault(&self, key: &str, fault: KeyFault, times: usize) {
        let mut faults = self.shared.faults.lock();
        let queue = faults.per_key.entry(key.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// The next `times` request tuples for `key` are answered
    /// `WRONG_THREAD` (late, not applied), as if the thread had lost it.
    pub fn inject_wrong_thread(&self, key: &str, times: usize) {
        self.push_key_fault(key, KeyFault::WrongThread, times);
    }

    /// The next `times` request tuples for `key` are answered with `error`
    /// (e.g. `KEY_DNE`, `NO_SERVERS`, `TIMEOUT`) and not applied.
    pub fn inject_key_error(&self, key: &str, error: AnnaError, times: usize) {
        self.push_key_fault(key, KeyFault::Error(error), times);
    }

    /// The next `times` answers for `key` carry `invalidate`.
    pub fn inject_invalidate(&self, key: &str, times: usize) {
        self.push_key_fault(key, KeyFault::Invalidate, times);
    }

    /// The next `times` answers for `key` come alone in a separate
    /// `KeyResponse`, `delay` late.
    pub fn inject_key_delay(&self, key: &str, delay: Duration, times: usize) {
        self.push_key_fault(key, KeyFault::Delay(delay), times);
    }

    /// Starts (`true`) or ends an outage: meanwhile KVS requests are
    /// ignored, neither applied nor answered, as by a node that is down.
    pub fn set_outage(&self, down: bool) {
        self.shared.faults.lock().outage = down;
    }

    /// Drops the next `n` KVS responses (requests are still applied).
    pub fn drop_kvs_responses(&self, n: u64) {
        self.shared.faults.lock().drop_kvs_responses += n;
    }

    /// Drops the next `n` routing responses.
    pub fn drop_address_responses(&self, n: u64) {
        self.shared.faults.lock().drop_address_responses += n;
    }

    /// The next `n` address requests are answered `NO_SERVERS`.
    pub fn inject_no_servers(&self, n: u64) {
        self.shared.faults.lock().no_servers += n;
    }

    /// Delays every KVS response by `delay`.
    pub fn set_kvs_delay(&self, delay: Duration) {
        self.shared.faults.lock().kvs_delay = delay;
    }

    /// Delays every routing response by `delay`.
    pub fn set_routing_delay(&self, delay: Duration) {
        self.shared.faults.lock().routing_delay = delay;
    }

    /// Makes KVS thread `thread` the only owner of `key` (clients with
    /// stale caches then get `WRONG_THREAD` from the old owner).
    pub fn move_key(&self, key: &str, thread: usize) {
        self.shared
            .owners
            .lock()
            .insert(key.to_owned(), vec![thread]);
    }

    /// The KVS threads that own `key`.
    pub fn owners(&self, key: &str) -> Vec<usize> {
        self.shared.owners(key)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| Error::Transport {
            reason: format!("spawn test server thread: {e}"),
        })
}

/// A response to send at a given time.
struct Scheduled {
    at: Instant,
    to: String,
    frame: Vec<u8>,
}

/// How often a node thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(10);

/// The loop of one node thread: receive frames, let `handle` schedule
/// responses, send them when due over cached PUSH sockets.
fn run_node(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    shared: &Shared,
    mut handle: impl FnMut(&[u8], &mut Vec<Scheduled>),
) {
    let mut pushers: HashMap<String, zmq::Socket> = HashMap::new();
    let mut queue: Vec<Scheduled> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let wait = queue
            .iter()
            .map(|s| s.at.saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .min(TICK);
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(10);
        if socket.poll(zmq::POLLIN, wait_ms).unwrap_or(0) > 0 {
            while let Ok(frame) = socket.recv_bytes(zmq::DONTWAIT) {
                handle(&frame, &mut queue);
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = queue.drain(..).partition(|s| s.at <= now);
        queue = later;
        for s in due {
            let pusher = match pushers.entry(s.to.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match ctx.socket(zmq::PUSH).and_then(|p| {
                        p.set_linger(0)?;
                        // Unbounded: never drop an answer (Anna blocks).
                        p.set_sndhwm(0)?;
                        p.connect(&s.to)?;
                        Ok(p)
                    }) {
                        Ok(p) => v.insert(p),
                        Err(_) => continue,
                    }
                }
            };
            let _ = pusher.send(s.frame, zmq::DONTWAIT);
        }
    }
}

/// Whether `address` is `tcp://<ip>:<port>` (anything else crashes Anna).
fn well_formed(address: &str) -> bool {
    address
        .strip_prefix("tcp://")
        .is_some_and(|rest| rest.parse::<SocketAddr>().is_ok())
}

fn handle_address_request(shared: &Shared, frame: &[u8], out: &mut Vec<Scheduled>) {
    let Ok(request) = proto::KeyAddressRequest::decode(frame) else {
        return;
    };
    {
        let mut stats = shared.stats.lock();
        stats.address_requests += 1;
        if request.keys.len() > 1 {
            stats.multi_key_address_requests += 1;
        }
        if !well_formed(&request.response_address) {
            stats.malformed_response_addresses += 1;
            return;
        }
        stats
            .response_addresses
            .insert(request.response_address.clone());
    }
    if shared.take_drop(false) {
        return;
    }
    let (no_servers, delay) = {
        let mut faults = shared.faults.lock();
        let injected = faults.no_servers > 0;
        if injected {
            faults.no_servers -= 1;
        }
        (injected, faults.routing_delay)
    };
    let mut response = proto::KeyAddressResponse {
        response_id: request.request_id.clone(),
        ..Default::default()
    };
    if no_servers || shared.config.kvs_threads == 0 {
        response.error = AnnaError::NoServers as i32;
        response.addresses = request
            .keys
            .iter()
            .map(|k| KeyAddress {
                key: k.clone(),
                ips: Vec::new(),
            })
            .collect();
    } else if let Some(first) = request.keys.first() {
        // Anna answers only the first key of a multi-key request (its
        // handler returns early for a key it must look up).
        response.addresses = vec![KeyAddress {
            key: first.clone(),
            ips: shared
                .owners(first)
                .into_iter()
                .filter_map(|t| shared.kvs_endpoints.get(t).cloned())
                .collect(),
        }];
    }
    out.push(Scheduled {
        at: Instant::now() + delay,
        to: request.response_address,
        frame: response.encode_to_vec(),
    });
}

fn handle_key_request(shared: &Shared, me: usize, frame: &[u8], out: &mut Vec<Scheduled>) {
    let Ok(request) = proto::KeyRequest::decode(frame) else {
        return;
    };
    let kind = request.r#type();
    {
        let mut stats = shared.stats.lock();
        stats.key_requests += 1;
        match kind {
            RequestType::Get => stats.get_tuples += request.tuples.len() as u64,
            RequestType::Put => stats.put_tuples += request.tuples.len() as u64,
            RequestType::RtUnspecified => {}
        }
        if !well_formed(&request.response_address) {
            stats.malformed_response_addresses += 1;
            return;
        }
        stats
            .response_addresses
            .insert(request.response_address.clone());
    }
    if kind == RequestType::RtUnspecified || shared.faults.lock().outage {
        return;
    }
    let mut now_tuples = Vec::new();
    let mut wrong_tuples = Vec::new();
    let mut delayed: Vec<(Duration, proto::KeyTuple)> = Vec::new();
    for tuple in request.tuples {
        let fault = shared.take_key_fault(&tuple.key);
        let owners = shared.owners(&tuple.key);
        if fault == Some(KeyFault::WrongThread) || !owners.contains(&me) {
            wrong_tuples.push(proto::KeyTuple {
                key: tuple.key,
                lattice_type: tuple.lattice_type,
                error: AnnaError::WrongThread as i32,
                ..Default::default()
            });
            continue;
        }
        if let Some(KeyFault::Error(error)) = fault {
            now_tuples.push(proto::KeyTuple {
                key: tuple.key,
                error: error as i32,
                ..Default::default()
            });
            continue;
        }
        let cache_size = tuple.address_cache_size as usize;
        let mut answer = match kind {
            RequestType::Put => apply_put(shared, tuple),
            _ => apply_get(shared, tuple),
        };
        if (cache_size > 0 && cache_size != owners.len()) || fault == Some(KeyFault::Invalidate) {
            answer.invalidate = true;
        }
        match fault {
            Some(KeyFault::Delay(d)) => delayed.push((d, answer)),
            _ => now_tuples.push(answer),
        }
    }
    shared.stats.lock().wrong_thread_answers += wrong_tuples.len() as u64;
    let base_delay = shared.faults.lock().kvs_delay;
    let now = Instant::now();
    let mut schedule = |delay: Duration, tuples: Vec<proto::KeyTuple>| {
        if tuples.is_empty() || shared.take_drop(true) {
            return;
        }
        let response = proto::KeyResponse {
            r#type: kind as i32,
            tuples,
            response_id: request.request_id.clone(),
            error: AnnaError::NoError as i32,
        };
        out.push(Scheduled {
            at: now + delay,
            to: request.response_address.clone(),
            frame: response.encode_to_vec(),
        });
    };
    schedule(base_delay, now_tuples);
    schedule(
        base_delay.max(shared.config.wrong_thread_delay),
        wrong_tuples,
    );
    for (d, t) in delayed {
        schedule(base_delay + d, vec![t]);
    }
}

fn apply_get(shared: &Shared, tuple: proto::KeyTuple) -> proto::KeyTuple {
    let store = shared.store.lock();
    match store.get(&tuple.key) {
        Some(Value::Lww(v)) if v.value.is_empty() => key_dne(tuple.key),
        Some(v) => proto::KeyTuple {
            lattice_type: v.lattice_type() as i32,
            payload: v.encode_payload(),
            key: tuple.key,
            ..Default::default()
        },
        None => key_dne(tuple.key),
    }
}

fn key_dne(key: String) -> proto::KeyTuple {
    proto::KeyTuple {
        key,
        error: AnnaError::KeyDne as i32,
        ..Default::default()
    }
}

fn apply_put(shared: &Shared, tuple: proto::KeyTuple) -> proto::KeyTuple {
    let lattice = tuple.lattice_type();
    // Dropped puts are acknowledged with lattice type NONE.
    let dropped = proto::KeyTuple {
        key: tuple.key.clone(),
        ..Default::default()
    };
    if lattice == LatticeType::None {
        return dropped;
    }
    let incoming = match Value::decode_payload(&tuple.key, lattice, &tuple.payload) {
        Ok(v) => v,
        Err(_) => {
            return proto::KeyTuple {
                key: tuple.key,
                error: AnnaError::Lattice as i32,
                ..Default::default()
            }
        }
    };
    let mut store = shared.store.lock();
    match store.get_mut(&tuple.key) {
        Some(existing) if existing.lattice_type() != lattice => return dropped,
        Some(existing) => match (existing, incoming) {
            // Equal timestamps: the later arrival (this one) wins.
            (Value::Lww(old), Value::Lww(new)) => {
                if new.timestamp >= old.timestamp {
                    *old = new;
                }
            }
            (Value::Set(old), Value::Set(new)) => old.extend(new),
            (old, new) => *old = new,
        },
        None => {
            store.insert(tuple.key.clone(), incoming);
        }
    }
    proto::KeyTuple {
        key: tuple.key,
        lattice_type: lattice as i32,
        ..Default::default()
    }
}

/// 64-bit FNV-1a, the ring hash of the test server.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
