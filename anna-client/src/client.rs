//! The client: key-address resolution, request/response matching,
//! retries, and the typed operations built on them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prost::Message;
use tokio::time::timeout_at;

use crate::config::{split_host_port, ClientConfig};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::proto::{self, AnnaError, LatticeType, RequestType};
use crate::transport::{Incoming, Transport};
use crate::value::{LwwValue, Value};

/// An async client for Anna KVS.
///
/// A cheap handle: clones share one pair of response sockets (one stable
/// response address per client, as Anna keeps a socket per address it
/// answers forever), one address cache and one pair of socket threads.
/// The threads stop when the last handle is dropped.
///
/// Every call resolves its keys' KVS threads through a routing node (one
/// key per `KeyAddressRequest`; answers are cached), sends one
/// `KeyRequest` per KVS thread, and collects `KeyResponse`s until every key
/// is answered. It retries, with exponential backoff and jitter, keys
/// answered `WRONG_THREAD` (after dropping their cached addresses),
/// `NO_SERVERS` or server `TIMEOUT`, and keys with no answer within
/// [`ClientConfig::request_timeout`]; it gives up after
/// [`ClientConfig::max_attempts`] rounds or
/// [`ClientConfig::operation_timeout`], whichever comes first.
///
/// A multi-key call that fails may have applied some of its puts.
///
/// # Example
///
/// ```no_run
/// use anna_client::{AnnaClient, ClientConfig};
///
/// # async fn demo() -> anna_client::Result<()> {
/// let client = AnnaClient::connect(ClientConfig::new("anna-routing")).await?;
/// client.put("greeting", b"hello").await?;
/// assert_eq!(client.get("greeting").await?, Some(b"hello".to_vec()));
/// client.delete("greeting").await?;
/// assert_eq!(client.get("greeting").await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AnnaClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    transport: Transport,
    cache: AddressCache,
    id_prefix: String,
    next_id: AtomicU64,
    clock: AtomicU64,
}

/// Cached KVS-thread addresses by key.
///
/// Address lists are interned: a cluster has few distinct replica sets, so
/// a million cached keys share a handful of lists. The mutex guards the
/// maps; it is held only for one lookup, insert or removal, never across
/// an `.await`.
#[derive(Debug)]
struct AddressCache {
    capacity: usize,
    maps: Mutex<CacheMaps>,
}

#[derive(Debug, Default)]
struct CacheMaps {
    by_key: HashMap<String, Arc<[String]>>,
    interned: HashSet<Arc<[String]>>,
}

impl AddressCache {
    fn get(&self, key: &str) -> Option<Arc<[String]>> {
        self.maps.lock().by_key.get(key).cloned()
    }

    fn len_of(&self, key: &str) -> u32 {
        self.maps
            .lock()
            .by_key
            .get(key)
            .map_or(0, |a| u32::try_from(a.len()).unwrap_or(u32::MAX))
    }

    fn insert(&self, key: &str, addresses: Vec<String>) {
        let mut maps = self.maps.lock();
        if maps.by_key.len() >= self.capacity && !maps.by_key.contains_key(key) {
            // Evict an arbitrary entry; a miss only costs one lookup.
            if let Some(victim) = maps.by_key.keys().next().cloned() {
                maps.by_key.remove(&victim);
            }
        }
        if maps.interned.len() >= INTERNED_LISTS_MAX {
            maps.interned.clear();
        }
        let list: Arc<[String]> = match maps.interned.get(addresses.as_slice()) {
            Some(l) => Arc::clone(l),
            None => {
                let l: Arc<[String]> = addresses.into();
                maps.interned.insert(Arc::clone(&l));
                l
            }
        };
        maps.by_key.insert(key.to_owned(), list);
    }

    fn invalidate(&self, key: &str) {
        self.maps.lock().by_key.remove(key);
    }
}

/// Bound on distinct interned address lists (far above any real cluster's
/// number of replica sets).
const INTERNED_LISTS_MAX: usize = 4096;

/// Why a key is still unanswered after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Timeout,
    NoServers,
    Anna(AnnaError),
}

/// What a put sends for one key: the lattice type and encoded payload.
type PutPayload = (LatticeType, Vec<u8>);

/// One key of an operation.
struct Item {
    key: String,
    /// For puts: the value's lattice type and encoded payload.
    put: Option<PutPayload>,
    done: bool,
    result: Option<Value>,
    attempts: u32,
    last: Retry,
}

impl AnnaClient {
    /// Binds the response sockets, starts the socket threads and returns
    /// a client. Nothing is sent to Anna until the first call.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unusable configuration or response IP,
    /// [`Error::Transport`] when a socket cannot be bound.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let response_ip = match config.response_ip {
            Some(ip) => ip,
            None => detect_response_ip(&config.routing[0]).await?,
        };
        let bind_ip = config.bind_ip.unwrap_or(response_ip);
        let transport = Transport::start(
            bind_ip,
            response_ip,
            config.address_response_port,
            config.kvs_response_port,
        )?;
        Ok(AnnaClient {
            inner: Arc::new(Inner {
                cache: AddressCache {
                    capacity: config.address_cache_capacity.max(1),
                    maps: Mutex::new(CacheMaps::default()),
                },
                config,
                transport,
                id_prefix: format!("{:08x}", fastrand::u32(..)),
                next_id: AtomicU64::new(0),
                clock: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The `tcp://ip:port` routing nodes answer address requests to.
    pub fn address_response_address(&self) -> &str {
        &self.inner.transport.address_response_address
    }

    /// The `tcp://ip:port` KVS threads answer key requests to.
    pub fn kvs_response_address(&self) -> &str {
        &self.inner.transport.kvs_response_address
    }

    /// A fresh LWW timestamp: microseconds since the Unix epoch, strictly
    /// increasing per client (so a client's later write wins over its
    /// earlier ones even within one microsecond). Writers on other
    /// machines are ordered by their clocks.
    pub fn next_timestamp(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut last = self.inner.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.inner.clock.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Drops the cached KVS addresses of `key` (the next call resolves it
    /// again).
    pub fn invalidate_cached_addresses(&self, key: &str) {
        self.inner.cache.invalidate(key);
    }

    /// The KVS addresses cached for `key`, if any.
    pub fn cached_addresses(&self, key: &str) -> Option<Vec<String>> {
        self.inner.cache.get(key).map(|a| a.to_vec())
    }

    // ---------------------------------------------------------------
    // Lattice-level operations.
    // ---------------------------------------------------------------

    /// Reads the values of `keys`, answered in the order asked; `None` for
    /// a key Anna does not have (`KEY_DNE`; Anna also reports an empty LWW
    /// value so).
    ///
    /// ```no_run
    /// # async fn demo(client: anna_client::AnnaClient) -> anna_client::Result<()> {
    /// use anna_client::Value;
    /// let values = client.get_values(&["a", "b"]).await?;
    /// if let Some(Value::Lww(v)) = &values[0] {
    ///     println!("a = {:?} at {}", v.value, v.timestamp);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Any per-key failure fails the whole call (see [`Error`]).
    pub async fn get_values<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        // Ask each distinct key once.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut items = Vec::new();
        let slots: Vec<usize> = keys
            .iter()
            .map(|k| {
                let k = k.as_ref();
                *index.entry(k).or_insert_with(|| {
                    items.push(k.to_owned());
                    items.len() - 1
                })
            })
            .collect();
        let results = self
            .execute(
                RequestType::Get,
                items.into_iter().map(|k| (k, None)).collect(),
            )
            .await?;
        Ok(slots.into_iter().map(|i| results[i].clone()).collect())
    }

    /// Reads one key's value; `None` when Anna does not have it.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.get_values(&[key]).await?.pop().flatten())
    }

    /// Writes (merges) values. A key given twice is merged client-side
    /// first (LWW: the higher timestamp, the later one on a tie; SET:
    /// union). Returns once Anna acknowledged every key.
    ///
    /// ```no_run
    /// # async fn demo(client: anna_client::AnnaClient) -> anna_client::Result<()> {
    /// use anna_client::{LwwValue, Value};
    /// let ts = client.next_timestamp();
    /// client.put_values(vec![
    ///     ("a".to_string(), Value::Lww(LwwValue::new(ts, b"1".to_vec()))),
    ///     ("members".to_string(), Value::set([b"x".to_vec()])),
    /// ]).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LatticeMismatch`] when Anna holds another lattice type for
    /// a key (Anna drops such a put and acknowledges it with lattice type
    /// `NONE`); others as in [`Error`]. Some keys may have been written.
    pub async fn put_values(&self, entries: Vec<(String, Value)>) -> Result<()> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<(String, Value)> = Vec::new();
        for (key, value) in entries {
            match index.get(&key) {
                Some(&i) => merged[i].1.merge(&key, value)?,
                None => {
                    index.insert(key.clone(), merged.len());
                    merged.push((key, value));
                }
            }
        }
        let items = merged
            .into_iter()
            .map(|(k, v)| (k, Some((v.lattice_type(), v.encode_payload()))))
            .collect();
        self.execute(RequestType::Put, items).await.map(|_| ())
    }

    /// Writes (merges) one value.
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn put_value(&self, key: &str, value: Value) -> Result<()> {
        self.put_values(vec![(key.to_owned(), value)]).await
    }

    // ---------------------------------------------------------------
    // Raw LWW (no envelope): what Cloudburst reads and writes.
    // ---------------------------------------------------------------

    /// Reads raw LWW values (no envelope), e.g. values Cloudburst wrote.
    ///
    /// # Errors
    ///
    /// [`Error::LatticeMismatch`] when a key holds another lattice type.
    pub async fn get_lww_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<LwwValue>>> {
        let values = self.get_values(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| match v {
                None => Ok(None),
                Some(Value::Lww(l)) => Ok(Some(l)),
                Some(other) => Err(Error::LatticeMismatch {
                    key: k.as_ref().to_owned(),
                    expected: LatticeType::Lww,
                    actual: other.lattice_type(),
                }),
            })
            .collect()
    }

    /// Reads one raw LWW value (no envelope).
    ///
    /// ```no_run
    /// # async fn demo(client: anna_client::AnnaClient) -> anna_client::Result<()> {
    /// if let Some(v) = client.get_lww("funcs:index-allfuncs").await? {
    ///     println!("written at {}", v.timestamp);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::get_lww_many`].
    pub async fn get_lww(&self, key: &str) -> Result<Option<LwwValue>> {
        Ok(self.get_lww_many(&[key]).await?.pop().flatten())
    }

    /// Merges a raw LWW value (no envelope): it replaces the stored one
    /// unless that has a higher timestamp (equal: the later arrival wins).
    /// An empty `value` reads back as missing.
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn put_lww(&self, key: &str, value: LwwValue) -> Result<()> {
        self.put_value(key, Value::Lww(value)).await
    }

    // ---------------------------------------------------------------
    // Enveloped values (see the `envelope` module).
    // ---------------------------------------------------------------

    /// Reads values written by [`AnnaClient::put`]; `None` for a missing or
    /// deleted key. A 0-byte value reads back as `Some(vec![])`.
    ///
    /// # Errors
    ///
    /// [`Error::Envelope`] for an LWW value not written through the
    /// envelope; [`Error::LatticeMismatch`] for a non-LWW key.
    pub async fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let values = self.get_lww_many(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| match v {
                None => Ok(None),
                Some(l) => Envelope::decode(&l.value)
                    .map(Envelope::into_value)
                    .map_err(|e| Error::Envelope {
                        key: k.as_ref().to_owned(),
                        reason: e.to_string(),
                    }),
            })
            .collect()
    }

    /// Reads one value written by [`AnnaClient::put`].
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::get_many`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    /// Writes values in the envelope, as LWW with
    /// [`AnnaClient::next_timestamp`] (entries later in the slice are
    /// newer).
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn put_many<K: AsRef<str>, V: AsRef<[u8]>>(&self, entries: &[(K, V)]) -> Result<()> {
        let entries = entries
            .iter()
            .map(|(k, v)| {
                (
                    k.as_ref().to_owned(),
                    Value::Lww(LwwValue::new(
                        self.next_timestamp(),
                        Envelope::encode_value_ref(Some(v.as_ref())),
                    )),
                )
            })
            .collect();
        self.put_values(entries).await
    }

    /// Writes one value in the envelope (LWW, timestamp
    /// [`AnnaClient::next_timestamp`]).
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.put_many(&[(key, value)]).await
    }

    /// Deletes keys by writing tombstones (Anna has no delete): LWW
    /// writes of the envelope's tombstone with a fresh timestamp. A later
    /// write with a newer timestamp revives the key.
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        let entries = keys
            .iter()
            .map(|k| {
                (
                    k.as_ref().to_owned(),
                    Value::Lww(LwwValue::new(
                        self.next_timestamp(),
                        Envelope::Tombstone.encode(),
                    )),
                )
            })
            .collect();
        self.put_values(entries).await
    }

    /// Deletes one key (writes a tombstone).
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_many(&[key]).await
    }

    // ---------------------------------------------------------------
    // SET lattices.
    // ---------------------------------------------------------------

    /// Reads SET lattices; `None` for a missing key.
    ///
    /// # Errors
    ///
    /// [`Error::LatticeMismatch`] when a key holds another lattice type.
    pub async fn get_set_many<K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<BTreeSet<Vec<u8>>>>> {
        let values = self.get_values(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| match v {
                None => Ok(None),
                Some(Value::Set(s)) => Ok(Some(s)),
                Some(other) => Err(Error::LatticeMismatch {
                    key: k.as_ref().to_owned(),
                    expected: LatticeType::Set,
                    actual: other.lattice_type(),
                }),
            })
            .collect()
    }

    /// Reads one SET lattice; `None` for a missing key.
    ///
    /// ```no_run
    /// # async fn demo(client: anna_client::AnnaClient) -> anna_client::Result<()> {
    /// client.add_to_set("tags", [b"red".to_vec(), b"blue".to_vec()]).await?;
    /// let tags = client.get_set("tags").await?.unwrap_or_default();
    /// assert!(tags.contains(&b"red".to_vec()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::get_set_many`].
    pub async fn get_set(&self, key: &str) -> Result<Option<BTreeSet<Vec<u8>>>> {
        Ok(self.get_set_many(&[key]).await?.pop().flatten())
    }

    /// Adds elements to a SET lattice (merge is union; nothing is ever
    /// removed from an Anna set).
    ///
    /// # Errors
    ///
    /// As [`AnnaClient::put_values`].
    pub async fn add_to_set<I: IntoIterator<Item = Vec<u8>>>(
        &self,
        key: &str,
        elements: I,
    ) -> Result<()> {
        self.put_value(key, Value::set(elements)).await
    }

    // ---------------------------------------------------------------
    // The engine.
    // ---------------------------------------------------------------

    /// Runs one GET or PUT over distinct keys until every key is answered
    /// or the retries run out. Returns one result per item (always `None`
    /// for puts).
    async fn execute(
        &self,
        kind: RequestType,
        items: Vec<(String, Option<PutPayload>)>,
    ) -> Result<Vec<Option<Value>>> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.operation_timeout;
        let mut items: Vec<Item> = items
            .into_iter()
            .map(|(key, put)| Item {
                key,
                put,
                done: false,
                result: None,
                attempts: 0,
                last: Retry::Timeout,
            })
            .collect();
        let mut round = 0u32;
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|&i| !items[i].done).collect();
            let Some(&first) = pending.first() else {
                break;
            };
            if round >= config.max_attempts || Instant::now() >= deadline {
                return Err(give_up(&items[first], started.elapsed()));
            }
            if round > 0 {
                let pause = self.backoff(round);
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
            }
            round += 1;
            for &i in &pending {
                items[i].attempts += 1;
            }

            // 1. Where does each key live?
            let addresses = self.resolve(&mut items, &pending, deadline).await?;
            let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, address) in addresses {
                groups.entry(address).or_default().push(i);
            }
            if groups.is_empty() {
                continue;
            }
            // 2. Ask each KVS thread for its keys, collect the answers.
            self.exchange(kind, &mut items, groups, deadline).await?;
        }
        Ok(items.into_iter().map(|i| i.result).collect())
    }

    /// The retry delay before round `round` (1-based): exponential with
    /// "equal jitter" (half fixed, half random).
    fn backoff(&self, round: u32) -> Duration {
        let config = &self.inner.config;
        let exp = config
            .backoff_initial
            .saturating_mul(1u32 << round.saturating_sub(1).min(16))
            .min(config.backoff_max);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }

    fn next_request_id(&self) -> String {
        format!(
            "{}-{}",
            self.inner.id_prefix,
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Picks one KVS address per pending key: from the cache, or by asking
    /// a routing node (one key per request: Anna answers multi-key address
    /// requests wrongly). Keys that cannot be placed this round get their
    /// retry reason set and are left out.
    async fn resolve(
        &self,
        items: &mut [Item],
        pending: &[usize],
        deadline: Instant,
    ) -> Result<Vec<(usize, String)>> {
        let inner = &self.inner;
        let mut placed = Vec::with_capacity(pending.len());
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut registration = inner.transport.register();
        for &i in pending {
            if let Some(addresses) = inner.cache.get(&items[i].key) {
                if let Some(a) = pick(&addresses) {
                    placed.push((i, a.clone()));
                    continue;
                }
            }
            let id = self.next_request_id();
            registration.add(id.clone());
            let request = proto::KeyAddressRequest {
                response_address: inner.transport.address_response_address.clone(),
                keys: vec![items[i].key.clone()],
                request_id: id.clone(),
            };
            let routing = pick(&inner.config.routing).ok_or_else(|| Error::Config {
                reason: "no routing endpoint".into(),
            })?;
            inner.transport.send(routing, request.encode_to_vec())?;
            by_id.insert(id, i);
        }
        let wait_until = deadline.min(Instant::now() + inner.config.request_timeout);
        while !by_id.is_empty() {
            let response = match timeout_at(wait_until.into(), registration.recv()).await {
                Ok(Some(Incoming::Address(r))) => r,
                Ok(Some(Incoming::Kvs(_))) => continue,
                Ok(None) => return Err(Error::Closed),
                Err(_elapsed) => break,
            };
            let Some(i) = by_id.remove(&response.response_id) else {
                continue;
            };
            let item = &mut items[i];
            let ips = response
                .addresses
                .iter()
                .find(|a| a.key == item.key)
                .map(|a| a.ips.clone())
                .unwrap_or_default();
            match (response.error(), pick(&ips)) {
                (AnnaError::NoError, Some(a)) => {
                    placed.push((i, a.clone()));
                    inner.cache.insert(&item.key, ips.clone());
                }
                (AnnaError::NoError | AnnaError::NoServers, None)
                | (AnnaError::NoServers, Some(_)) => item.last = Retry::NoServers,
                (other, _) => item.last = Retry::Anna(other),
            }
        }
        for i in by_id.into_values() {
            items[i].last = Retry::Timeout;
        }
        Ok(placed)
    }

    /// Sends one `KeyRequest` per KVS address and collects `KeyResponse`s
    /// (several may share one id) until each key is answered or the
    /// attempt times out.
    async fn exchange(
        &self,
        kind: RequestType,
        items: &mut [Item],
        groups: HashMap<String, Vec<usize>>,
        deadline: Instant,
    ) -> Result<()> {
        let inner = &self.inner;
        let mut registration = inner.transport.register();
        // request id -> (key -> item index) still unanswered.
        let mut outstanding: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (address, indices) in groups {
            let id = self.next_request_id();
            let tuples = indices
                .iter()
                .map(|&i| {
                    let item = &items[i];
                    let (lattice, payload) =
                        item.put.clone().unwrap_or((LatticeType::None, Vec::new()));
                    proto::KeyTuple {
                        key: item.key.clone(),
                        lattice_type: lattice as i32,
                        payload,
                        address_cache_size: inner.cache.len_of(&item.key),
                        ..Default::default()
                    }
                })
                .collect();
            let request = proto::KeyRequest {
                r#type: kind as i32,
                tuples,
                response_address: inner.transport.kvs_response_address.clone(),
                request_id: id.clone(),
            };
            registration.add(id.clone());
            inner.transport.send(&address, request.encode_to_vec())?;
            outstanding.insert(
                id,
                indices.iter().map(|&i| (items[i].key.clone(), i)).collect(),
            );
        }
        let wait_until = deadline.min(Instant::now() + inner.config.request_timeout);
        while !outstanding.is_empty() {
            let response = match timeout_at(wait_until.into(), registration.recv()).await {
                Ok(Some(Incoming::Kvs(r))) => r,
                Ok(Some(Incoming::Address(_))) => continue,
                Ok(None) => return Err(Error::Closed),
                Err(_elapsed) => break,
            };
            let Some(waiting) = outstanding.get_mut(&response.response_id) else {
                continue;
            };
            let response_error = response.error();
            if response.tuples.is_empty() && response_error != AnnaError::NoError {
                // A response-level error with no tuples covers the whole
                // request.
                for (_, i) in waiting.drain() {
                    items[i].last = retry_reason(response_error);
                    if !is_retryable(response_error) {
                        return Err(Error::Server {
                            key: items[i].key.clone(),
                            error: response_error,
                        });
                    }
                }
            }
            for tuple in response.tuples {
                // A key we are not (or no longer) waiting for: a duplicate.
                if let Some(i) = waiting.remove(&tuple.key) {
                    self.handle_tuple(kind, &mut items[i], tuple)?;
                }
            }
            if waiting.is_empty() {
                outstanding.remove(&response.response_id);
            }
        }
        for (_, waiting) in outstanding {
            for (key, i) in waiting {
                // The node may be gone: look the key up again next round.
                inner.cache.invalidate(&key);
                items[i].last = Retry::Timeout;
            }
        }
        Ok(())
    }

    /// Applies one answered tuple to its item.
    fn handle_tuple(
        &self,
        kind: RequestType,
        item: &mut Item,
        tuple: proto::KeyTuple,
    ) -> Result<()> {
        if tuple.invalidate {
            self.inner.cache.invalidate(&item.key);
        }
        match tuple.error() {
            AnnaError::NoError => match kind {
                RequestType::Put => {
                    let expected = item.put.as_ref().map_or(LatticeType::None, |p| p.0);
                    let actual = tuple.lattice_type();
                    if actual != expected {
                        return Err(Error::LatticeMismatch {
                            key: item.key.clone(),
                            expected,
                            actual,
                        });
                    }
                    item.done = true;
                }
                _ => {
                    item.result = match tuple.lattice_type() {
                        LatticeType::None => None,
                        lattice => Some(Value::decode_payload(&item.key, lattice, &tuple.payload)?),
                    };
                    item.done = true;
                }
            },
            AnnaError::KeyDne if kind != RequestType::Put => {
                item.result = None;
                item.done = true;
            }
            AnnaError::WrongThread => {
                self.inner.cache.invalidate(&item.key);
                item.last = Retry::Anna(AnnaError::WrongThread);
            }
            error if is_retryable(error) => item.last = retry_reason(error),
            AnnaError::Lattice => {
                return Err(Error::LatticeMismatch {
                    key: item.key.clone(),
                    expected: item.put.as_ref().map_or(LatticeType::None, |p| p.0),
                    actual: tuple.lattice_type(),
                })
            }
            error => {
                return Err(Error::Server {
                    key: item.key.clone(),
                    error,
                })
            }
        }
        Ok(())
    }
}

fn is_retryable(error: AnnaError) -> bool {
    matches!(
        error,
        AnnaError::WrongThread | AnnaError::NoServers | AnnaError::Timeout
    )
}

fn retry_reason(error: AnnaError) -> Retry {
    match error {
        AnnaError::NoServers => Retry::NoServers,
        other => Retry::Anna(other),
    }
}

fn give_up(item: &Item, elapsed: Duration) -> Error {
    match item.last {
        Retry::Timeout => Error::Timeout {
            key: item.key.clone(),
            elapsed,
            attempts: item.attempts,
        },
        Retry::NoServers => Error::NoServers {
            key: item.key.clone(),
            attempts: item.attempts,
        },
        Retry::Anna(last) => Error::RetriesExhausted {
            key: item.key.clone(),
            last,
            attempts: item.attempts,
        },
    }
}

/// One element picked at random (spreads load over replicas and routing
/// threads).
fn pick<T>(choices: &[T]) -> Option<&T> {
    if choices.is_empty() {
        None
    } else {
        choices.get(fastrand::usize(..choices.len()))
    }
}

/// The local IP of the route towards `endpoint` (`tcp://host:port`), found
/// by connecting a UDP socket (which sends nothing).
async fn detect_response_ip(endpoint: &str) -> Result<IpAddr> {
    let host_port = endpoint.strip_prefix("tcp://").unwrap_or(endpoint);
    let (host, port) = split_host_port(host_port);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = port.unwrap_or(crate::config::ROUTING_BASE_PORT);
    let fail = |reason: String| Error::Config {
        reason: format!("cannot find the local IP towards {endpoint}: {reason} (set response_ip)"),
    };
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let bind: std::net::SocketAddr = if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| fail(e.to_string()))?;
    socket
        .connect(target)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let ip = socket.local_addr().map_err(|e| fail(e.to_string()))?.ip();
    if ip.is_unspecified() {
        return Err(fail("no route".into()));
    }
    Ok(ip)
}
