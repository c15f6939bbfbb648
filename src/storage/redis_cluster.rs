//! The Redis Cluster backend (`redis+cluster://h1:p1,h2:p2`).
//!
//! Uses the `redis` crate's async cluster connection: single-key commands go
//! to the slot's master; MGET / MSET / DEL over many keys are split by slot
//! by the client and sent to each master. Slot moves and failovers are
//! followed by the client (MOVED/ASK, topology refresh). Prefix scans run
//! SCAN on every master (found with CLUSTER SLOTS) and merge the results.

use std::collections::BTreeSet;

use async_trait::async_trait;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Script, Value};

use super::redis_common::{scan_pattern, with_timeout, KeyOps, CHUNK, MERGE_LWW_SCRIPT};
use super::url::redact;
use super::{Entry, Storage, StorageError, StorageOptions};

/// A Redis Cluster as storage. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisClusterStorage {
    conn: ClusterConnection,
    url: String,
    options: StorageOptions,
    merge_script: Script,
}

impl std::fmt::Debug for RedisClusterStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterStorage")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisClusterStorage {
    /// Connects to the cluster through the given seed node URLs.
    ///
    /// Fails with [`StorageError::Unreachable`] naming the seeds if no seed
    /// answers within the connect timeout.
    pub async fn connect(seeds: &[String], options: StorageOptions) -> Result<Self, StorageError> {
        let shown = seeds
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(",");
        let unreachable = |reason: String| StorageError::Unreachable {
            url: shown.clone(),
            reason,
        };
        let client = ClusterClient::builder(seeds.to_vec())
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.call_timeout)
            .retries(2)
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(options.connect_timeout * 2, client.get_async_connection())
            .await
            .map_err(|_| unreachable("connection timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(RedisClusterStorage {
            conn,
            url: shown,
            options,
            merge_script: Script::new(MERGE_LWW_SCRIPT),
        })
    }

    /// The `(host, port)` of every master, from CLUSTER SLOTS.
    async fn masters(&self) -> Result<BTreeSet<(String, u16)>, StorageError> {
        let mut conn = self.conn.clone();
        let slots: Value = with_timeout(
            "scan_prefix",
            self.options.call_timeout,
            conn.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ),
        )
        .await?;
        let mut masters = BTreeSet::new();
        let Value::Array(ranges) = slots else {
            return Err(StorageError::backend(
                "scan_prefix",
                "unexpected CLUSTER SLOTS reply",
            ));
        };
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            if let Ok(port) = u16::try_from(*port) {
                masters.insert((host, port));
            }
        }
        Ok(masters)
    }
}

impl RedisClusterStorage {
    fn ops(&self) -> KeyOps<'_, ClusterConnection> {
        KeyOps {
            conn: &self.conn,
            options: &self.options,
            merge_script: &self.merge_script,
        }
    }
}

#[async_trait]
impl Storage for RedisClusterStorage {
    fn describe(&self) -> String {
        format!("redis+cluster://{}", self.url)
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
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let mut conn = self.conn.clone();
            let part: Vec<Option<Vec<u8>>> = with_timeout(
                "get_many",
                self.options.call_timeout,
                redis::cmd("MGET").arg(chunk).query_async(&mut conn),
            )
            .await?;
            values.extend(part);
        }
        Ok(values)
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        for (_, value) in entries {
            self.options.check_value_size(value.len())?;
        }
        for chunk in entries.chunks(CHUNK) {
            let mut conn = self.conn.clone();
            with_timeout(
                "put_many",
                self.options.call_timeout,
                redis::cmd("MSET").arg(chunk).query_async::<()>(&mut conn),
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        for chunk in keys.chunks(CHUNK) {
            let mut conn = self.conn.clone();
            with_timeout(
                "delete_many",
                self.options.call_timeout,
                redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn),
            )
            .await?;
        }
        Ok(())
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let pattern = scan_pattern(prefix);
        let mut keys = BTreeSet::new();
        for (host, port) in self.masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut conn = self.conn.clone();
                let reply: Value = with_timeout(
                    "scan_prefix",
                    self.options.call_timeout,
                    conn.route_command(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        }),
                    ),
                )
                .await?;
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                    .map_err(|e| StorageError::backend("scan_prefix", e))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys.into_iter().collect())
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.ops().merge_lww(key, timestamp, lww_value).await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.ops().put_if_absent(key, value).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.ops().ping().await
    }
}
