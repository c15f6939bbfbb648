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
    /// `dynamodb://TABLE?region=R[&endpoint=URL]`: an AWS DynamoDB table.
    DynamoDb {
        /// The table.
        table: String,
        /// Region and endpoint.
        location: AwsLocation,
    },
    /// `s3://BUCKET[/PREFIX]?region=R[&endpoint=URL]`: objects in an S3
    /// bucket, under `PREFIX/` if given.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside the bucket (empty, or ending in `/`).
        prefix: String,
        /// Region and endpoint.
        location: AwsLocation,
    },
}

/// Where an AWS backend lives. Credentials are never part of it: they come
/// from the standard AWS chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsLocation {
    /// The region (`None`: from the AWS chain, e.g. `AWS_REGION`).
    pub region: Option<String>,
    /// An endpoint other than AWS's own (a local emulator, a VPC endpoint).
    pub endpoint: Option<String>,
}

/// Splits `NAME[/PATH]?region=R&endpoint=URL` (the part after the scheme)
/// into the name, the path and the location; refuses credentials and
/// unknown parameters.
fn parse_aws(rest: &str, what: &str) -> Result<(String, String, AwsLocation), String> {
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    if target.contains('@') {
        return Err(
            "credentials never go in the URL: they come from the AWS chain (environment, profile, web identity, instance metadata)"
                .into(),
        );
    }
    let (name, path) = target.split_once('/').unwrap_or((target, ""));
    if name.is_empty() {
        return Err(format!("needs a {what} name"));
    }
    let mut location = AwsLocation::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("parameter `{key}` is not UTF-8"))?
            .into_owned();
        if value.is_empty() {
            return Err(format!("parameter `{key}` has no value"));
        }
        match key {
            "region" => location.region = Some(value),
            "endpoint" => location.endpoint = Some(value),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (expected region, endpoint)"
                ))
            }
        }
    }
    Ok((
        name.to_string(),
        path.trim_matches('/').to_string(),
        location,
    ))
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
        if let Some(rest) = url.strip_prefix("dynamodb://") {
            let (table, path, location) = parse_aws(rest, "table").map_err(|e| invalid(&e))?;
            if !path.is_empty() {
                return Err(invalid("dynamodb:// takes a table name, not a path"));
            }
            let valid = (3..=255).contains(&table.len())
                && table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !valid {
                return Err(invalid(
                    "a DynamoDB table name is 3-255 characters of a-z, A-Z, 0-9, `_`, `-`, `.`",
                ));
            }
            return Ok(StorageUrl::DynamoDb { table, location });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, path, location) = parse_aws(rest, "bucket").map_err(|e| invalid(&e))?;
            let valid = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid {
                return Err(invalid(
                    "an S3 bucket name is a DNS name: 3-63 characters of a-z, 0-9, `-`, `.`",
                ));
            }
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            return Ok(StorageUrl::S3 {
                bucket,
                prefix,
                location,
            });
        }
        Err(invalid(
            "unknown scheme (expected file://, redis://, redis+cluster://, memory://, anna://, dynamodb://, s3://)",
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
        StorageUrl::DynamoDb { table, location } => {
            dynamodb(url, &table, &location, options).await?
        }
        StorageUrl::S3 {
            bucket,
            prefix,
            location,
        } => s3(url, &bucket, &prefix, &location, options).await?,
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

/// Creates what the URL's backend stores into, if it is missing (a
/// DynamoDB table with the expected key schema, an S3 bucket), and waits
/// until it is usable. Other backends need nothing created: `Ok`.
pub async fn create(url: &str, options: StorageOptions) -> Result<(), StorageError> {
    match StorageUrl::parse(url)? {
        #[cfg(feature = "dynamodb")]
        StorageUrl::DynamoDb { table, location } => {
            super::DynamoStorage::create(url, &table, &location, options).await
        }
        #[cfg(feature = "s3")]
        StorageUrl::S3 {
            bucket,
            prefix,
            location,
        } => super::S3Storage::create(url, &bucket, &prefix, &location, options).await,
        // Builds without a backend's feature: `open` says so.
        #[cfg(not(feature = "dynamodb"))]
        StorageUrl::DynamoDb { .. } => open(url, options).await.map(|_| ()),
        #[cfg(not(feature = "s3"))]
        StorageUrl::S3 { .. } => open(url, options).await.map(|_| ()),
        _ => Ok(()),
    }
}

#[cfg(feature = "dynamodb")]
async fn dynamodb(
    url: &str,
    table: &str,
    location: &AwsLocation,
    options: StorageOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(
        super::DynamoStorage::connect(url, table, location, options).await?,
    ))
}

#[cfg(not(feature = "dynamodb"))]
async fn dynamodb(
    url: &str,
    _: &str,
    _: &AwsLocation,
    _: StorageOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    Err(StorageError::InvalidUrl {
        url: redact(url),
        reason: "this build has no DynamoDB backend (cargo feature `dynamodb`)".into(),
    })
}

#[cfg(feature = "s3")]
async fn s3(
    url: &str,
    bucket: &str,
    prefix: &str,
    location: &AwsLocation,
    options: StorageOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(
        super::S3Storage::connect(url, bucket, prefix, location, options).await?,
    ))
}

#[cfg(not(feature = "s3"))]
async fn s3(
    url: &str,
    _: &str,
    _: &str,
    _: &AwsLocation,
    _: StorageOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    Err(StorageError::InvalidUrl {
        url: redact(url),
        reason: "this build has no S3 backend (cargo feature `s3`)".into(),
    })
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
    fn parses_aws_urls_and_refuses_credentials_and_unknown_parameters() {
        assert_eq!(
            StorageUrl::parse(
                "dynamodb://aft-data?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A8000"
            )
            .ok(),
            Some(StorageUrl::DynamoDb {
                table: "aft-data".into(),
                location: AwsLocation {
                    region: Some("eu-west-1".into()),
                    endpoint: Some("http://127.0.0.1:8000".into()),
                },
            })
        );
        assert_eq!(
            StorageUrl::parse("s3://aft-bucket/runs/a?endpoint=http://127.0.0.1:9000").ok(),
            Some(StorageUrl::S3 {
                bucket: "aft-bucket".into(),
                prefix: "runs/a/".into(),
                location: AwsLocation {
                    region: None,
                    endpoint: Some("http://127.0.0.1:9000".into()),
                },
            })
        );
        for bad in [
            "dynamodb://",
            "dynamodb://t",
            "dynamodb://AKIA:secret@table",
            "dynamodb://table?regoin=x",
            "dynamodb://table/path",
            "s3://Upper_Case",
            "s3://-bucket",
            "s3://bucket?region=",
        ] {
            let err = StorageUrl::parse(bad).err().map(|e| e.to_string());
            assert!(err.is_some(), "{bad} accepted");
            assert!(!err.unwrap_or_default().contains("secret"), "{bad}");
        }
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
