//! What the DynamoDB and S3 backends share: the AWS SDK's configuration
//! (region, endpoint, credentials from the standard AWS chain, timeouts and
//! retries) and the key encoding.
//!
//! Credentials never come from the storage URL: the SDK's default chain
//! finds them (environment, shared profile, web identity / IRSA, container
//! or instance metadata), and they are never logged.

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::error::display::DisplayErrorContext;
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::url::AwsLocation;
use super::{LwwMerge, Storage, StorageError, StorageOptions};

/// Bytes kept as they are in encoded keys; every other byte becomes `%XX`.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'/');

/// A storage key as the ASCII text AWS keys must be. The encoding works
/// byte by byte, so a key's prefix encodes to a prefix of its encoding and
/// prefix scans carry over; `/` stays readable.
pub fn encode_key(key: &[u8]) -> String {
    percent_encode(key, KEPT).to_string()
}

/// The storage key an [`encode_key`] text stands for.
pub fn decode_key(encoded: &str) -> Vec<u8> {
    percent_decode_str(encoded).collect()
}

/// The SDK configuration for `location`: the given region and endpoint over
/// the defaults, credentials from the default chain, connect and call
/// timeouts from `options`, and the standard retry mode (throttling and
/// transient errors retried with backoff; the call timeout bounds them all).
pub async fn sdk_config(location: &AwsLocation, options: &StorageOptions) -> SdkConfig {
    let retries = RetryConfig::standard()
        .with_max_attempts(10)
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(500));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout)
        .operation_timeout(options.call_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retries)
        .timeout_config(timeouts);
    if let Some(region) = &location.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &location.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader.load().await
}

/// Fails unless the configuration names a region.
pub fn require_region(config: &SdkConfig, url: &str) -> Result<(), StorageError> {
    if config.region().is_none() {
        return Err(StorageError::InvalidUrl {
            url: url.to_string(),
            reason: "no region: add `?region=R` or set AWS_REGION".into(),
        });
    }
    Ok(())
}

/// Runs `call`, failing with [`StorageError::Timeout`] after `timeout`.
pub async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| StorageError::Timeout { op, timeout })?
}

/// Runs `calls`, at most `in_flight` at a time; the first error wins.
pub async fn all_of<F>(calls: Vec<F>, in_flight: usize) -> Result<(), StorageError>
where
    F: Future<Output = Result<(), StorageError>>,
{
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(calls)
        .buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// [`Storage::merge_lww`] of every entry, at most `in_flight` at a time
/// (each merge is one conditional request of its own on these stores).
pub async fn merge_all<S: Storage + ?Sized>(
    storage: &S,
    entries: &[LwwMerge],
    in_flight: usize,
) -> Result<(), StorageError> {
    let merges: Vec<_> = entries
        .iter()
        .map(|(key, timestamp, value)| storage.merge_lww(key, *timestamp, value))
        .collect();
    all_of(merges, in_flight).await
}

/// An SDK error as a storage error, with the service's own code and message.
pub fn sdk_error<E>(op: &'static str, error: E) -> StorageError
where
    E: std::error::Error,
{
    StorageError::backend(op, DisplayErrorContext(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_to_ascii_and_back_keeping_prefixes() {
        let key = b"aft/d/t1/k\x00\xff %#*?";
        let encoded = encode_key(key);
        assert!(encoded.is_ascii());
        assert_eq!(decode_key(&encoded), key.to_vec());
        assert!(encoded.starts_with(&encode_key(b"aft/d/t1/k\x00")));
        assert_eq!(encode_key(b"aft/c/tid-1.x_y"), "aft/c/tid-1.x_y");
        assert_eq!(encode_key(b"~"), "%7E");
        assert_eq!(encode_key(b"%"), "%25");
    }
}
