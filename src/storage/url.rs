//! Storage URLs and the backend factory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{EmbeddedStorage, RedisClusterStorage, RedisStorage, Storage, StorageError};

/// Default largest value a backend accepts (16 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Default timeout of one storage call: well under the executor client's
/// 5 s get/put timeout, so a reply still reaches a waiting client.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Tunables shared by all backends.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Largest value accepted by `put`/`put_many`/`merge_lww`.
    pub max_value_bytes: usize,
    /// Timeout of one call (one round trip, or one batch).
    pub call_timeout: Duration,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl StorageOptions {
    /// Fails with [`StorageError::ValueTooLarge`] if `size` exceeds the limit.
    pub fn check_value_size(&self, size: usize) -> Result<(), StorageError> {
        if size > self.max_value_bytes {
            return Err(StorageError::ValueTooLarge {
                size,
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a guarded batch before it is sent: every value (entries and
    /// merges) within the size limit, and the guard among the entries.
    /// Returns the bytes of the values.
    pub fn check_guarded_batch(
        &self,
        guard: &[u8],
        entries: &[super::Entry],
        merges: &[super::LwwMerge],
    ) -> Result<usize, StorageError> {
        let mut bytes = 0;
        for size in entries
            .iter()
            .map(|(_, v)| v.len())
            .chain(merges.iter().map(|(_, _, v)| v.len()))
        {
            self.check_value_size(size)?;
            bytes += size;
        }
        if !entries.iter().any(|(k, _)| k.as_slice() == guard) {
            return Err(StorageError::backend(
                "put_many_if_absent",
                "the guard key is not among the entries",
            ));
        }
        Ok(bytes)
    }
}

/// A parsed storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// `file://PATH`: the embedded on-disk store in directory `PATH`.
    Embedded(PathBuf),
    /// `redis://[user:pass@]host:port[/db]`: one Redis server.
    Redis(String),
    /// `redis+cluster://h1:p1,h2:p2`: a Redis Cluster, given by seed nodes
    /// (each a `redis://` URL after parsing).
    RedisCluster(Vec<String>),
    /// `memory://`: in-process, not durable (tests and benchmarks).
    Memory,
    // --- Anna backend (owned by the anna-client work) ---
    /// `anna://routing-host[:port]`: Anna KVS through its routing node
    /// (port 6450 by default); holds `routing-host[:port]`.
    Anna(String),
}

impl StorageUrl {
    /// Parses a storage URL. Errors name the URL (without credentials).
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl {
            url: redact(url),
            reason: reason.to_string(),
        };
        if url == "memory://" {
            return Ok(StorageUrl::Memory);
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a directory path"));
            }
            return Ok(StorageUrl::Embedded(PathBuf::from(path)));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            if url
                .trim_start_matches("rediss://")
                .trim_start_matches("redis://")
                .is_empty()
            {
                return Err(invalid("redis:// needs host:port"));
            }
            return Ok(StorageUrl::Redis(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let seeds: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}"))
                .collect();
            if seeds.is_empty() {
                return Err(invalid("redis+cluster:// needs at least one host:port"));
            }
            return Ok(StorageUrl::RedisCluster(seeds));
        }
        // --- Anna backend (owned by the anna-client work) ---
        if let Some(host) = url.strip_prefix("anna://") {
            let host = host.trim_end_matches('/');
            if host.is_empty() || host.contains(['/', '@', ',', '?']) {
                return Err(invalid("anna:// needs routing-host[:port]"));
            }
            return Ok(StorageUrl::Anna(host.to_string()));
        }
        Err(invalid(
            "unknown scheme (expected file://, redis://, redis+cluster://, memory://, anna://)",
        ))
    }
}

/// Removes the password from a URL so it can be logged or shown in errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((_, hosts)) => format!("{scheme}://***@{hosts}"),
        None => url.to_string(),
    }
}

/// Opens the backend a URL names and checks that it answers.
///
/// Fails with one clear error naming the URL when the URL is invalid or the
/// store cannot be reached within the connect timeout.
pub async fn open(url: &str, options: StorageOptions) -> Result<Arc<dyn Storage>, StorageError> {
    let storage: Arc<dyn Storage> = match StorageUrl::parse(url)? {
        StorageUrl::Embedded(path) => Arc::new(EmbeddedStorage::open(&path, options)?),
        StorageUrl::Memory => Arc::new(super::MemoryStorage::new(options)),
        StorageUrl::Redis(url) => Arc::new(RedisStorage::connect(&url, options).await?),
        StorageUrl::RedisCluster(seeds) => {
            Arc::new(RedisClusterStorage::connect(&seeds, options).await?)
        }
        StorageUrl::Anna(host) => Arc::new(super::AnnaStorage::connect(&host, options).await?),
    };
    storage
        .ping()
        .await
        .map_err(|e| StorageError::Unreachable {
            url: redact(url),
            reason: e.to_string(),
        })?;
    Ok(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            StorageUrl::parse("file:///var/lib/aft").ok(),
            Some(StorageUrl::Embedded(PathBuf::from("/var/lib/aft")))
        );
        assert_eq!(
            StorageUrl::parse("redis://127.0.0.1:6379").ok(),
            Some(StorageUrl::Redis("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            StorageUrl::parse("redis+cluster://a:1, b:2").ok(),
            Some(StorageUrl::RedisCluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
    }

    #[test]
    fn refuses_bad_urls_naming_them_without_secrets() {
        for bad in ["", "file://", "http://x", "redis+cluster://", "redis://"] {
            assert!(StorageUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let err = StorageUrl::parse("ftp://user:secret@host")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://***@host"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
