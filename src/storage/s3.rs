//! AWS S3 backend (`s3://BUCKET[/PREFIX]?region=R[&endpoint=URL]`), on the
//! official AWS SDK.
//!
//! **Layout.** Each storage key is one object, named `PREFIX/` followed by
//! the key percent-encoded to ASCII (`aws::encode_key`: byte by byte, so a
//! prefix scan is a `ListObjectsV2` of the encoded prefix; `/` stays
//! readable, so the console shows `aft/c/…`, `aft/d/…` as folders).
//!
//! **What S3 gives, and what this backend does with it.**
//! - Reads and lists are strongly consistent (S3 since December 2020).
//! - `put_if_absent` is a `PutObject` with `If-None-Match: *`: a real
//!   conditional create, which closes the race between a commit record and
//!   a participant's abort marker.
//! - `merge_lww` reads the object and its ETag, and writes with `If-Match`
//!   (or `If-None-Match: *` when there is none), retrying when another
//!   writer got in between: atomic per key.
//! - There is no atomic multi-object write: [`Storage::atomic_batches`] is
//!   false, so the engine writes a commit's data first and its record last
//!   (as on Anna and Redis Cluster), and publishes after the record.
//! - Batches: `put_many` and `get_many` run 32 requests at a time;
//!   `delete_many` uses `DeleteObjects` (1,000 keys a request).
//! - Object keys hold 1,024 bytes: longer encoded keys are refused. Values
//!   are bounded only by `--max-value-bytes` (S3 takes 5 GB in one `PUT`).
//! - Throttling (HTTP 503 `SlowDown`) and transient errors are retried by
//!   the SDK's standard retry mode until the call timeout, then surface as
//!   a storage error.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::aws::{
    all_of, bounded, decode_key, encode_key, merge_all, require_region, sdk_config, sdk_error,
};
use super::lww::lww_should_replace;
use super::url::{redact, AwsLocation};
use super::{Entry, Storage, StorageError, StorageOptions};

/// Largest object key.
const OBJECT_KEY_BYTES: usize = 1024;
/// Keys per `DeleteObjects` request.
const DELETE_BATCH: usize = 1000;
/// Requests in flight at once for batched calls.
const CONCURRENCY: usize = 32;

/// An S3 bucket (or a prefix in one) as a [`Storage`].
#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    options: StorageOptions,
    url: String,
}

/// Longest run of an object name between two `/` (file-backed S3 servers,
/// such as SeaweedFS and MinIO, refuse longer path segments).
const SEGMENT_CHARS: usize = 200;
/// Marks a `/` inserted to cut a long segment (`~` never appears in an
/// encoded key, which escapes it).
const CUT: &str = "~/";

/// An encoded key with every segment longer than [`SEGMENT_CHARS`] cut
/// into pieces joined by [`CUT`]. Cuts fall between whole escapes at
/// positions that depend only on what precedes them, so the name of a
/// key's prefix is still a prefix of the key's name.
fn cut_long_segments(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len() + encoded.len() / SEGMENT_CHARS * 2);
    let mut run = 0;
    let mut chars = encoded.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // One unit: a kept character, or a `%XX` escape.
        let unit = if c == '%' {
            let end = (i + 3).min(encoded.len());
            chars.next();
            chars.next();
            &encoded[i..end]
        } else {
            &encoded[i..i + c.len_utf8()]
        };
        if unit == "/" {
            run = 0;
        } else if run + unit.len() > SEGMENT_CHARS {
            out.push_str(CUT);
            run = 0;
        }
        if unit != "/" {
            run += unit.len();
        }
        out.push_str(unit);
    }
    out
}

/// The encoded key an object name (without the store's prefix) stands for.
fn join_cut_segments(name: &str) -> String {
    name.replace(CUT, "")
}

/// Whether a failed call was refused by a precondition (`If-Match`,
/// `If-None-Match`): HTTP 412, or 409 for a concurrent conditional write.
fn precondition_failed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    let code = error.as_service_error().and_then(|e| e.code());
    matches!(
        code,
        Some("PreconditionFailed") | Some("ConditionalRequestConflict")
    )
}

impl S3Storage {
    /// Connects to `bucket` (which must exist: see [`S3Storage::create`]).
    pub async fn connect(
        url: &str,
        bucket: &str,
        prefix: &str,
        location: &AwsLocation,
        options: StorageOptions,
    ) -> Result<Self, StorageError> {
        let config = sdk_config(location, &options).await;
        require_region(&config, &redact(url))?;
        let mut s3 = aws_sdk_s3::config::Builder::from(&config);
        if location.endpoint.is_some() {
            // Local and private endpoints are addressed by path, not by a
            // bucket host name.
            s3 = s3.force_path_style(true);
        }
        Ok(S3Storage {
            client: Client::from_conf(s3.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            options,
            url: redact(url),
        })
    }

    /// Creates `bucket` if it does not exist.
    pub async fn create(
        url: &str,
        bucket: &str,
        prefix: &str,
        location: &AwsLocation,
        options: StorageOptions,
    ) -> Result<(), StorageError> {
        let storage = S3Storage::connect(url, bucket, prefix, location, options).await?;
        if storage.check_bucket().await.is_ok() {
            return Ok(());
        }
        let mut create = storage.client.create_bucket().bucket(bucket);
        let region = storage.client.config().region().map(|r| r.to_string());
        if let Some(region) = region.filter(|r| r != "us-east-1") {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        region.as_str(),
                    ))
                    .build(),
            );
        }
        if let Err(e) = create.send().await {
            let mine = e
                .as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you());
            if !mine {
                return Err(sdk_error("create bucket", e));
            }
        }
        storage.check_bucket().await
    }

    async fn check_bucket(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let missing = matches!(e.as_service_error(), Some(HeadBucketError::NotFound(_)))
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if missing {
                    return Err(StorageError::Unreachable {
                        url: self.url.clone(),
                        reason: format!(
                            "bucket `{}` does not exist; create it with `aft-sidecar --create-storage` (see docs/CONFIG.md)",
                            self.bucket
                        ),
                    });
                }
                Err(sdk_error("head bucket", e))
            }
        }
    }

    fn object_key(&self, key: &[u8]) -> Result<String, StorageError> {
        let name = format!("{}{}", self.prefix, cut_long_segments(&encode_key(key)));
        if name.len() > OBJECT_KEY_BYTES {
            return Err(StorageError::backend(
                "s3 key",
                format!(
                    "key of {} bytes is {} bytes as an object name, over S3's {OBJECT_KEY_BYTES}-byte limit",
                    key.len(),
                    name.len()
                ),
            ));
        }
        Ok(name)
    }

    fn timeout(&self) -> Duration {
        self.options.call_timeout
    }

    /// The object's bytes and ETag (`None` if there is no object).
    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, Option<String>)>, StorageError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if let Some(GetObjectError::NoSuchKey(_)) = e.as_service_error() {
                    return Ok(None);
                }
                return Err(sdk_error("get", e));
            }
        };
        let etag = out.e_tag().map(str::to_string);
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::backend("get", e))?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    async fn write(&self, name: String, value: &[u8]) -> Result<(), StorageError> {
        self.options.check_value_size(value.len())?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(name)
            .body(ByteStream::from(value.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("put", e))?;
        Ok(())
    }

    async fn merge_once(
        &self,
        name: &str,
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<bool, StorageError> {
        let current = self.read(name).await?;
        if !lww_should_replace(current.as_ref().map(|(v, _)| v.as_slice()), timestamp) {
            return Ok(true);
        }
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(name)
            .body(ByteStream::from(lww_value.to_vec()));
        put = match current.and_then(|(_, etag)| etag) {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if precondition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("merge_lww", e)),
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn describe(&self) -> String {
        format!("s3 bucket `{}` ({})", self.bucket, self.url)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let name = self.object_key(key)?;
        bounded("get", self.timeout(), async {
            Ok(self.read(&name).await?.map(|(value, _)| value))
        })
        .await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let name = self.object_key(key)?;
        bounded("put", self.timeout(), self.write(name, value)).await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let name = self.object_key(key)?;
        bounded("delete", self.timeout(), async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(name)
                .send()
                .await
                .map_err(|e| sdk_error("delete", e))?;
            Ok(())
        })
        .await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let names = keys
            .iter()
            .map(|k| self.object_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        bounded("get_many", self.timeout(), async {
            stream::iter(names)
                .map(|name| async move { Ok(self.read(&name).await?.map(|(v, _)| v)) })
                .buffered(CONCURRENCY)
                .try_collect()
                .await
        })
        .await
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        for (_, value) in entries {
            self.options.check_value_size(value.len())?;
        }
        let writes = entries
            .iter()
            .map(|(k, v)| Ok((self.object_key(k)?, v)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        // The last entry of a key wins; each key is written once.
        let mut last: std::collections::HashMap<&str, &Vec<u8>> = Default::default();
        for (name, value) in &writes {
            last.insert(name.as_str(), value);
        }
        let puts: Vec<_> = last
            .into_iter()
            .map(|(name, value)| self.write(name.to_string(), value))
            .collect();
        bounded("put_many", self.timeout(), all_of(puts, CONCURRENCY)).await
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let names = keys
            .iter()
            .map(|k| self.object_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut requests = Vec::new();
        for chunk in names.chunks(DELETE_BATCH) {
            let objects = chunk
                .iter()
                .map(|name| ObjectIdentifier::builder().key(name).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::backend("delete_many", e))?;
            requests.push(
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(|e| StorageError::backend("delete_many", e))?,
            );
        }
        bounded("delete_many", self.timeout(), async {
            stream::iter(requests)
                .map(|delete| async move {
                    let out = self
                        .client
                        .delete_objects()
                        .bucket(&self.bucket)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| sdk_error("delete_many", e))?;
                    match out.errors().first() {
                        Some(error) => Err(StorageError::backend(
                            "delete_many",
                            format!(
                                "{} keys not deleted, e.g. {:?}: {:?}",
                                out.errors().len(),
                                error.key(),
                                error.message()
                            ),
                        )),
                        None => Ok(()),
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let listed = format!("{}{}", self.prefix, cut_long_segments(&encode_key(prefix)));
        // Listing is paged (1,000 keys a page); give it the time of several calls.
        let mut keys = bounded("scan_prefix", self.timeout() * 8, async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&listed)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error("scan_prefix", e))?;
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .filter_map(|name| name.strip_prefix(self.prefix.as_str()))
                        .map(|name| decode_key(&join_cut_segments(name))),
                );
                match (out.is_truncated(), out.next_continuation_token()) {
                    (Some(true), Some(next)) => token = Some(next.to_string()),
                    _ => return Ok::<_, StorageError>(keys),
                }
            }
        })
        .await?;
        keys.sort();
        Ok(keys)
    }

    async fn merge_lww(
        &self,
        key: &[u8],
        timestamp: u64,
        lww_value: &[u8],
    ) -> Result<(), StorageError> {
        self.options.check_value_size(lww_value.len())?;
        let name = self.object_key(key)?;
        bounded("merge_lww", self.timeout(), async {
            // Another writer between the read and the conditional write: read again.
            while !self.merge_once(&name, timestamp, lww_value).await? {}
            Ok(())
        })
        .await
    }

    async fn merge_lww_many(
        &self,
        entries: &[(Vec<u8>, u64, Vec<u8>)],
    ) -> Result<(), StorageError> {
        merge_all(self, entries, CONCURRENCY).await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.options.check_value_size(value.len())?;
        let name = self.object_key(key)?;
        bounded("put_if_absent", self.timeout(), async {
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(name)
                .body(ByteStream::from(value.to_vec()))
                .if_none_match("*")
                .send()
                .await;
            match sent {
                Ok(_) => Ok(true),
                Err(e) if precondition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_error("put_if_absent", e)),
            }
        })
        .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        bounded("ping", self.timeout(), self.check_bucket()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_segments_are_cut_and_joined_again_keeping_prefixes() {
        let key: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let name = cut_long_segments(&encode_key(&key));
        assert!(name
            .split('/')
            .all(|segment| segment.len() <= SEGMENT_CHARS + 1));
        assert_eq!(decode_key(&join_cut_segments(&name)), key);
        for cut in 0..key.len() {
            let prefix = cut_long_segments(&encode_key(&key[..cut]));
            assert!(name.starts_with(&prefix), "prefix of {cut} bytes");
        }
        assert_eq!(cut_long_segments("aft/c/t1"), "aft/c/t1");
    }
}
