//! The Anna KVS backend (`anna://routing-host[:port]`), on top of the
//! `anna-client` crate. The layouts and their costs are documented on
//! [`AnnaStorage`].

use std::collections::{BTreeMap, BTreeSet};

use anna_client::{AnnaClient, ClientConfig, Envelope, LwwValue, Value};
use async_trait::async_trait;

use super::{Entry, Storage, StorageError, StorageOptions};

/// Anna keys starting with this are the backend's own (escaped keys and
/// the key directory); user keys starting with it are escaped.
pub(crate) const RESERVED_PREFIX: &str = "~aft~";
/// Prefix of escaped (non-UTF-8 or reserved) keys.
const ESCAPED_PREFIX: &str = "~aft~x/";
/// Prefix of the key directory's SET lattices.
const DIRECTORY_PREFIX: &str = "~aft~d/";
/// The key `ping` reads (it never exists).
const PING_KEY: &str = "~aft~ping";
/// Number of directory shards. Fixed: changing it orphans the directory of
/// an existing deployment.
pub(crate) const DIRECTORY_SHARDS: u64 = 64;
/// Keys read per call when a scan checks its candidates.
const SCAN_VERIFY_CHUNK: usize = 10_000;

/// The Anna KVS backend (`anna://routing-host[:port]`), on top of the
/// `anna-client` crate.
///
/// Anna offers LWW and SET lattices, GET and PUT — no delete, no scan, no
/// conditional write. This backend maps the [`Storage`](super::Storage)
/// contract onto that.
///
/// # Keys
///
/// Anna keys are protobuf `string`s (UTF-8); storage keys are bytes. A key
/// that is valid UTF-8 and does not start with `"~aft~"` is used
/// as is (so Cloudburst reads the plain keys we publish under their own
/// names); any other key becomes `"~aft~x/" + lowercase hex(key)`. The
/// key directory lives under `"~aft~d/"`. The mapping is injective.
///
/// # Values
///
/// - `put`/`put_many` store an LWW lattice with **timestamp 0** whose value
///   is the anna-client envelope ([`anna_client::Envelope`]) of the user
///   value (`AE 5C 11` + bytes), so a 0-byte value is not mistaken for a
///   missing key. All puts carry the same timestamp, so Anna's "equal
///   timestamps: the later arrival wins" gives plain overwrite semantics,
///   in arrival order, like Redis `SET`.
/// - `delete` stores the envelope's tombstone (`AE 5C 10`), also at
///   timestamp 0; a later put revives the key.
/// - `merge_lww` stores the caller's serialized `LWWValue` **as is**
///   (no envelope), at its own timestamp, so Cloudburst clients read it
///   directly. It reads the key first to keep the contract's "equal
///   timestamp: keep the stored value" (Anna would let the later arrival
///   win). Any timestamp above 0 beats a value written by `put`.
/// - `get` returns the user value of an enveloped value, `None` for a
///   tombstone or a missing key, and the re-serialized `LWWValue` for any
///   other LWW value (written by `merge_lww` or by Cloudburst).
///
/// # Key directory (for `scan_prefix`)
///
/// A two-phase set sharded over 64 pairs of Anna SET
/// lattices, `~aft~d/NNN/a` (added) and `~aft~d/NNN/r` (removed), with
/// `NNN = fnv1a(key) % 64` in three decimal digits. An element is the
/// storage key followed by an 8-byte big-endian generation (a client
/// timestamp, unique per put call), so a key deleted and written again
/// gets a fresh element that the removed-set does not cancel.
///
/// - `put_many` sends the values and the shards' new elements in one
///   multi-key request (one round trip per KVS thread).
/// - `delete_many` writes the tombstones while reading the affected
///   added-sets, then adds to the removed-sets the elements of the deleted
///   keys that are older than the delete (two round trips).
/// - `scan_prefix` reads all 128 directory sets (one round trip), keeps the
///   live elements whose key has the prefix, then reads those keys (one
///   more round trip per 10,000) and drops any that are missing or
///   tombstoned, so a stale directory entry never shows.
///
/// Costs: each put adds one element per key; sets never shrink (Anna has
/// no removal), so the directory grows with every put and every delete —
/// fine for write-once keys (versions, commit records), not for keys
/// rewritten forever. A delete reads the added-sets of its keys' shards
/// (1/64 of the directory each). A scan transfers the whole directory and
/// the values of every candidate key.
///
/// # Limits (documented deviations)
///
/// - Keys written only by `merge_lww` (and keys Cloudburst writes itself)
///   are not in the directory, so `scan_prefix` does not list them.
/// - A `put` or `delete` of a key last written by `merge_lww` with a
///   timestamp above 0 is silently lost (LWW keeps the higher timestamp).
/// - A `merge_lww` whose inner value is empty reads back as missing (Anna
///   reports empty LWW values as `KEY_DNE`); one whose value starts with
///   the envelope magic `AE 5C` reads back as an enveloped value.
/// - Two `merge_lww` of one key with the same timestamp racing each other
///   are ordered by arrival.
/// - A `put` racing a `delete` of the same key can leave the key live but
///   unlisted by `scan_prefix`.
/// - With Anna replication above 1, two clients putting one key at once
///   through different replicas can leave the replicas disagreeing (equal
///   timestamps merge by arrival, which differs per replica) until the
///   next write of that key.
/// - A `put` that fails may have written its value but not its directory
///   element (or the reverse); retrying it repairs both.
#[derive(Debug, Clone)]
pub struct AnnaStorage {
    client: AnnaClient,
    url: String,
    options: StorageOptions,
}

impl AnnaStorage {
    /// Connects to the routing node `routing` (`host` or `host:port`,
    /// default port 6450). The response IP is the local address of the
    /// route to it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unreachable`] when the client cannot be set up.
    pub async fn connect(routing: &str, options: StorageOptions) -> Result<Self, StorageError> {
        Self::with_client_config(ClientConfig::new(routing), options).await
    }

    /// Connects with an explicit client configuration; its timeouts are
    /// replaced by the storage options' (`call_timeout` per call, half of
    /// it per attempt).
    ///
    /// # Errors
    ///
    /// [`StorageError::Unreachable`] when the client cannot be set up.
    pub async fn with_client_config(
        mut config: ClientConfig,
        options: StorageOptions,
    ) -> Result<Self, StorageError> {
        let url = format!(
            "anna://{}",
            config
                .routing
                .first()
                .map(|r| r.trim_start_matches("tcp://"))
                .unwrap_or_default()
        );
        config.operation_timeout = options.call_timeout;
        config.request_timeout = options.call_timeout / 2;
        let client = AnnaClient::connect(config)
            .await
            .map_err(|e| StorageError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(AnnaStorage {
            client,
            url,
            options,
        })
    }

    /// The underlying Anna client.
    pub fn client(&self) -> &AnnaClient {
        &self.client
    }

    fn error(&self, op: &'static str, e: anna_client::Error) -> StorageError {
        match e {
            anna_client::Error::Timeout { .. } => StorageError::Timeout {
                op,
                timeout: self.options.call_timeout,
            },
            other => StorageError::backend(op, other),
        }
    }

    /// Writes tombstones for `keys` and retires their directory elements.
    async fn delete_keys(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        // Elements added before this point may be retired; later ones
        // belong to puts racing this delete and stay.
        let generation = self.client.next_timestamp();
        let tombstones: Vec<(String, Value)> = keys
            .iter()
            .map(|k| {
                (
                    anna_key(k),
                    Value::Lww(LwwValue::new(0, Envelope::Tombstone.encode())),
                )
            })
            .collect();
        let doomed: BTreeSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let shards: BTreeSet<u64> = keys.iter().map(|k| shard_of(k)).collect();
        let added_keys: Vec<String> = shards.iter().map(|&s| directory_key(s, 'a')).collect();
        let (written, added) = tokio::join!(
            self.client.put_values(tombstones),
            self.client.get_set_many(&added_keys)
        );
        written.map_err(|e| self.error("delete", e))?;
        let added = added.map_err(|e| self.error("delete", e))?;
        let mut removals: Vec<(String, Value)> = Vec::new();
        for (shard, set) in shards.iter().zip(added) {
            let retired: BTreeSet<Vec<u8>> = set
                .unwrap_or_default()
                .into_iter()
                .filter(|element| {
                    split_element(element)
                        .is_some_and(|(key, g)| g < generation && doomed.contains(key))
                })
                .collect();
            if !retired.is_empty() {
                removals.push((directory_key(*shard, 'r'), Value::Set(retired)));
            }
        }
        if !removals.is_empty() {
            self.client
                .put_values(removals)
                .await
                .map_err(|e| self.error("delete", e))?;
        }
        Ok(())
    }
}

/// The Anna key of a storage key (see the module docs).
pub(crate) fn anna_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.starts_with(RESERVED_PREFIX) => s.to_owned(),
        _ => {
            let mut out = String::with_capacity(ESCAPED_PREFIX.len() + 2 * key.len());
            out.push_str(ESCAPED_PREFIX);
            for b in key {
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
            out
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The directory shard of a storage key.
fn shard_of(key: &[u8]) -> u64 {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % DIRECTORY_SHARDS
}

/// The Anna key of a directory set: `kind` is `'a'` (added) or `'r'`
/// (removed).
fn directory_key(shard: u64, kind: char) -> String {
    format!("{DIRECTORY_PREFIX}{shard:03}/{kind}")
}

/// A directory element: the key, then the generation in 8 big-endian bytes.
fn element(key: &[u8], generation: u64) -> Vec<u8> {
    let mut e = Vec::with_capacity(key.len() + 8);
    e.extend_from_slice(key);
    e.extend_from_slice(&generation.to_be_bytes());
    e
}

/// Splits a directory element into key and generation.
fn split_element(element: &[u8]) -> Option<(&[u8], u64)> {
    let cut = element.len().checked_sub(8)?;
    let (key, generation) = element.split_at(cut);
    let generation: [u8; 8] = generation.try_into().ok()?;
    Some((key, u64::from_be_bytes(generation)))
}

/// What a stored Anna value means to a storage reader.
fn decode_value(value: Option<Value>) -> Result<Option<Vec<u8>>, String> {
    match value {
        None => Ok(None),
        Some(Value::Lww(lww)) => match Envelope::decode(&lww.value) {
            Ok(envelope) => Ok(envelope.into_value()),
            // Not ours: a raw LWWValue (merge_lww or Cloudburst).
            Err(anna_client::EnvelopeError::NotEnveloped) => Ok(Some(lww.encode())),
            Err(e) => Err(e.to_string()),
        },
        Some(other) => Err(format!(
            "holds a {:?} lattice, not LWW",
            other.lattice_type()
        )),
    }
}

#[async_trait]
impl Storage for AnnaStorage {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_many(&[key.to_vec()]).await?.pop().flatten())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.put_many(&[(key.to_vec(), value.to_vec())]).await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.delete_keys(&[key.to_vec()]).await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let anna_keys: Vec<String> = keys.iter().map(|k| anna_key(k)).collect();
        let values = self
            .client
            .get_values(&anna_keys)
            .await
            .map_err(|e| self.error("get", e))?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| {
                decode_value(v).map_err(|reason| StorageError::Backend {
                    op: "get",
                    reason: format!("key {:?}: {reason}", String::from_utf8_lossy(k)),
                })
            })
            .collect()
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        for (_, v) in entries {
            self.options.check_value_size(v.len())?;
        }
        let generation = self.client.next_timestamp();
        let mut directory: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut values: Vec<(String, Value)> = Vec::with_capacity(entries.len() + 8);
        for (k, v) in entries {
            values.push((
                anna_key(k),
                Value::Lww(LwwValue::new(0, Envelope::encode_value_ref(Some(v)))),
            ));
            directory
                .entry(shard_of(k))
                .or_default()
                .insert(element(k, generation));
        }
        values.extend(
            directory
                .into_iter()
                .map(|(shard, elements)| (directory_key(shard, 'a'), Value::Set(elements))),
        );
        self.client
            .put_values(values)
            .await
            .map_err(|e| self.error("put", e))
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.delete_keys(keys).await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let sets: Vec<String> = (0..DIRECTORY_SHARDS)
            .flat_map(|s| [directory_key(s, 'a'), directory_key(s, 'r')])
            .collect();
        let sets = self
            .client
            .get_set_many(&sets)
            .await
            .map_err(|e| self.error("scan_prefix", e))?;
        let mut candidates: BTreeSet<Vec<u8>> = BTreeSet::new();
        for pair in sets.chunks(2) {
            let (Some(added), removed) = (pair[0].as_ref(), pair.get(1).and_then(Option::as_ref))
            else {
                continue;
            };
            for e in added {
                if removed.is_some_and(|r| r.contains(e)) {
                    continue;
                }
                if let Some((key, _)) = split_element(e) {
                    if key.starts_with(prefix) {
                        candidates.insert(key.to_vec());
                    }
                }
            }
        }
        // The directory may list keys whose delete or put did not finish:
        // keep only keys that hold a value.
        let candidates: Vec<Vec<u8>> = candidates.into_iter().collect();
        let mut live = Vec::with_capacity(candidates.len());
        for chunk in candidates.chunks(SCAN_VERIFY_CHUNK) {
            let values = self.get_many(chunk).await?;
            live.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k.clone()),
            );
        }
        Ok(live)
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.options.check_value_size(lww_value.len())?;
        let value = LwwValue::decode(lww_value).map_err(|e| StorageError::Backend {
            op: "merge_lww",
            reason: format!("payload is not an LWWValue: {e}"),
        })?;
        if value.timestamp != timestamp {
            return Err(StorageError::Backend {
                op: "merge_lww",
                reason: format!(
                    "timestamp {timestamp} differs from the payload's {}",
                    value.timestamp
                ),
            });
        }
        let anna_key = anna_key(key);
        // Anna lets an equal timestamp's later arrival win; the contract
        // keeps the stored value. Our own enveloped values (timestamp 0)
        // are not LWWValues to the contract and are always replaced.
        let stored = self
            .client
            .get_value(&anna_key)
            .await
            .map_err(|e| self.error("merge_lww", e))?;
        if let Some(Value::Lww(current)) = &stored {
            if !Envelope::is_enveloped(&current.value) && current.timestamp >= timestamp {
                return Ok(());
            }
        }
        self.client
            .put_value(&anna_key, Value::Lww(value))
            .await
            .map_err(|e| self.error("merge_lww", e))
    }

    /// Anna has no conditional write: this reads, then writes if absent.
    /// The engine knows ([`Storage::conditional_writes`]) and keeps such
    /// writes apart in time instead (see `--write-horizon-ms`).
    /// Two racing callers can both "win"; the sidecar only uses it to decide
    /// multi-node commits, whose coordinator also reads the key back.
    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        if self.get(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, value).await?;
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.client
            .get_value(PING_KEY)
            .await
            .map(|_| ())
            .map_err(|e| self.error("ping", e))
    }

    fn conditional_writes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mapping_is_injective_and_readable() {
        assert_eq!(anna_key(b"funcs:f"), "funcs:f");
        assert_eq!(anna_key(b"\xff\x00"), "~aft~x/ff00");
        assert_eq!(anna_key(b"~aft~d/000/a"), "~aft~x/7e6166747e642f3030302f61");
        assert_ne!(anna_key(b"~aft~x/ff00"), anna_key(b"\xff\x00"));
    }

    #[test]
    fn elements_round_trip() {
        let e = element(b"k\x00", 42);
        assert_eq!(split_element(&e), Some((&b"k\x00"[..], 42)));
        assert_eq!(split_element(b"short"), None);
        assert!(shard_of(b"anything") < DIRECTORY_SHARDS);
    }

    #[test]
    fn values_decode() {
        let env = Value::Lww(LwwValue::new(0, Envelope::Value(Vec::new()).encode()));
        assert_eq!(decode_value(Some(env)), Ok(Some(Vec::new())));
        let tomb = Value::Lww(LwwValue::new(0, Envelope::Tombstone.encode()));
        assert_eq!(decode_value(Some(tomb)), Ok(None));
        let raw = LwwValue::new(5, b"x".to_vec());
        assert_eq!(
            decode_value(Some(Value::Lww(raw.clone()))),
            Ok(Some(raw.encode()))
        );
        assert!(decode_value(Some(Value::set([b"a".to_vec()]))).is_err());
    }
}
