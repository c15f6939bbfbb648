//! The single-server Redis backend (`redis://host:port`).
//!
//! One multiplexed connection managed by redis' `ConnectionManager`, which
//! reconnects on its own after the server restarts: calls made while the
//! server is down fail with a typed error, later calls succeed again. Batches
//! go in one pipelined round trip (MGET / MSET / DEL in chunks).

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::redis_common::{
    scan_pattern, with_timeout, KeyOps, CHUNK, MERGE_LWW_SCRIPT,
    PUT_MANY_IF_ABSENT_AND_MERGE_SCRIPT,
};
use super::url::redact;
use super::{Entry, LwwMerge, Storage, StorageError, StorageOptions};

/// A Redis server as storage. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisStorage {
    conn: ConnectionManager,
    url: String,
    options: StorageOptions,
    merge_script: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisStorage {
    /// Connects to the server at `url`.
    ///
    /// Fails with [`StorageError::Unreachable`] naming the URL if no
    /// connection can be made within the connect timeout.
    pub async fn connect(url: &str, options: StorageOptions) -> Result<Self, StorageError> {
        let shown = redact(url);
        let unreachable = |reason: String| StorageError::Unreachable {
            url: shown.clone(),
            reason,
        };
        // TCP_NODELAY: requests are small and latency-bound (no Nagle delay).
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| unreachable(e.to_string()))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| unreachable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.call_timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            options.connect_timeout * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        Ok(RedisStorage {
            conn,
            url: shown,
            options,
            merge_script: Script::new(MERGE_LWW_SCRIPT),
        })
    }
}

impl RedisStorage {
    fn ops(&self) -> KeyOps<'_, ConnectionManager> {
        KeyOps {
            conn: &self.conn,
            options: &self.options,
            merge_script: &self.merge_script,
        }
    }
}

#[async_trait]
impl Storage for RedisStorage {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.ops().get(key).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.ops().put(key, value).await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.ops().delete(key).await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // MULTI/EXEC: one snapshot even when the keys span several MGETs.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in keys.chunks(CHUNK) {
            pipe.cmd("MGET").arg(chunk);
        }
        let mut conn = self.conn.clone();
        let chunks: Vec<Vec<Option<Vec<u8>>>> = with_timeout(
            "get_many",
            self.options.call_timeout,
            pipe.query_async(&mut conn),
        )
        .await?;
        Ok(chunks.into_iter().flatten().collect())
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        for (_, value) in entries {
            self.options.check_value_size(value.len())?;
        }
        // MULTI/EXEC: the whole batch is applied at once or not at all.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in entries.chunks(CHUNK) {
            pipe.cmd("MSET").arg(chunk).ignore();
        }
        let mut conn = self.conn.clone();
        with_timeout(
            "put_many",
            self.options.call_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(CHUNK) {
            pipe.cmd("DEL").arg(chunk).ignore();
        }
        let mut conn = self.conn.clone();
        with_timeout(
            "delete_many",
            self.options.call_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut conn = self.conn.clone();
        let pattern = scan_pattern(prefix);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = with_timeout(
                "scan_prefix",
                self.options.call_timeout,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once; the trait promises a sorted set.
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.ops().merge_lww(key, timestamp, lww_value).await
    }

    /// `put_many` runs in MULTI/EXEC: all or nothing.
    fn snapshot_reads(&self) -> bool {
        true
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    async fn merge_lww_many(
        &self,
        entries: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, timestamp, value) in entries {
            self.options.check_value_size(value.len())?;
            pipe.cmd("EVAL")
                .arg(MERGE_LWW_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(*timestamp)
                .arg(value)
                .ignore();
        }
        let mut conn = self.conn.clone();
        with_timeout(
            "merge_lww_many",
            self.options.call_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.ops().put_if_absent(key, value).await
    }

    /// One `EVAL`: the guard check and every write are one atomic step.
    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        self.put_many_if_absent_and_merge(guard, entries, &[]).await
    }

    /// One `EVAL`: the guard check, every write and every merge are one
    /// atomic step.
    async fn put_many_if_absent_and_merge(
        &self,
        guard: &[u8],
        entries: &[Entry],
        merges: &[LwwMerge],
    ) -> Result<bool, StorageError> {
        self.options.check_guarded_batch(guard, entries, merges)?;
        let Some(guard_entry) = entries.iter().find(|(k, _)| k.as_slice() == guard) else {
            return Err(StorageError::backend(
                "put_many_if_absent",
                "the guard key is not among the entries",
            ));
        };
        let ordered: Vec<&Entry> = std::iter::once(guard_entry)
            .chain(entries.iter().filter(|(k, _)| k.as_slice() != guard))
            .collect();
        let mut eval = redis::cmd("EVAL");
        eval.arg(PUT_MANY_IF_ABSENT_AND_MERGE_SCRIPT)
            .arg(ordered.len() + merges.len());
        for (key, _) in &ordered {
            eval.arg(key);
        }
        for (key, _, _) in merges {
            eval.arg(key);
        }
        eval.arg(ordered.len());
        for (_, value) in &ordered {
            eval.arg(value);
        }
        for (_, timestamp, value) in merges {
            eval.arg(*timestamp).arg(value);
        }
        let mut conn = self.conn.clone();
        let wrote: i64 = with_timeout(
            "put_many_if_absent_and_merge",
            self.options.call_timeout,
            eval.query_async(&mut conn),
        )
        .await?;
        Ok(wrote == 1)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.ops().ping().await
    }

    fn atomic_publication(&self) -> bool {
        true
    }
}
