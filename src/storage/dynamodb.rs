//! AWS DynamoDB backend (`dynamodb://TABLE?region=R[&endpoint=URL]`), on
//! the official AWS SDK.
//!
//! **Table layout.** One table, partition key `p` (string) and sort key `k`
//! (string), on-demand capacity (`--create-storage` makes it):
//! - `k` is the storage key, percent-encoded to ASCII (`aws::encode_key`:
//!   byte by byte, so prefixes carry over);
//! - `p` is the key's *namespace* (the encoded key up to and including its
//!   second `/`, or the whole key if it has fewer) followed by `#` and a
//!   shard, two hex digits: CRC-32 of the raw key modulo 16. Commit records
//!   (`aft/c/…`), versions (`aft/d/…`), markers and intents are thus spread
//!   over 16 partitions each instead of one hot partition, and a prefix scan
//!   of a namespace (what recovery and GC do) is 16 `Query` calls on the
//!   sort key, never a table scan. A scan of a prefix shorter than a
//!   namespace (never done by the engine) falls back to a `Scan`;
//! - `v` (binary) is the value; `t` (number) is its LWW timestamp when the
//!   value is a serialized `LWWValue` (what `merge_lww` compares).
//!
//! **AWS limits, and what this backend does at them.**
//! - An item holds 400 KB: values up to [`VALUE_LIMIT`] (296 KiB) are stored,
//!   larger ones are refused with [`StorageError::ValueTooLarge`] (they are
//!   not split: a split value could not be written atomically with its
//!   commit). The sidecar lowers `--max-value-bytes` to this at start-up.
//! - A sort key holds 1,024 bytes: longer encoded keys are refused.
//! - `BatchWriteItem` takes 25 items and may leave some unprocessed: batches
//!   are cut to 25, sent 16 at a time, and unprocessed items are retried
//!   with backoff within the call timeout. `BatchGetItem` likewise, by 100.
//! - `TransactWriteItems` takes 100 items and 4 MB: a commit that fits
//!   (data, markers, intent and record) is one transaction guarded by
//!   `attribute_not_exists` on the record; a larger one takes the engine's
//!   non-atomic path (data first, the record last with a conditional put),
//!   like Anna and Redis Cluster.
//! - Reads are strongly consistent.
//! - Throttling (`ProvisionedThroughputExceeded`, `ThrottlingException`)
//!   and transient errors are retried by the SDK's standard retry mode
//!   until the call timeout, then surface as a storage error.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    KeysAndAttributes, Put, PutRequest, ScalarAttributeType, TableStatus, TransactWriteItem,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::aws::{
    all_of, bounded, decode_key, encode_key, merge_all, require_region, sdk_config, sdk_error,
};
use super::url::{redact, AwsLocation};
use super::{lww_timestamp, put_many_then_guard, Entry, Storage, StorageError, StorageOptions};

/// Largest value stored: 296 KiB. A DynamoDB item holds 400 KB; some
/// emulators (moto) count a binary attribute at its base64 size, so the
/// limit leaves room for that and for the item's keys.
pub const VALUE_LIMIT: usize = 296 * 1024;
/// Largest encoded sort key.
const SORT_KEY_BYTES: usize = 1024;
/// Shards per namespace (part of the table layout: never change it for a
/// table that has data).
const SHARDS: u32 = 16;
const BATCH_WRITE_ITEMS: usize = 25;
const BATCH_GET_KEYS: usize = 100;
const TRANSACT_ITEMS: usize = 100;
const TRANSACT_BYTES: usize = 4_000_000;
/// Room each item takes in a transaction besides its value.
const ITEM_OVERHEAD: usize = 2 * SORT_KEY_BYTES + 64;
/// Batches in flight at once.
const CONCURRENCY: usize = 16;

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB table as a [`Storage`].
#[derive(Debug)]
pub struct DynamoStorage {
    client: Client,
    table: String,
    options: StorageOptions,
    url: String,
}

/// `p` of a storage key: its namespace and shard.
fn partition(key: &[u8]) -> String {
    let namespace_end = key
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .nth(1)
        .map_or(key.len(), |(i, _)| i + 1);
    format!(
        "{}#{:02x}",
        encode_key(&key[..namespace_end]),
        crc32fast::hash(key) % SHARDS
    )
}

/// Whether a prefix covers a whole namespace (then a scan is 16 queries).
fn covers_namespace(prefix: &[u8]) -> bool {
    prefix.iter().filter(|b| **b == b'/').count() >= 2
}

fn key_item(key: &[u8]) -> Result<Item, StorageError> {
    let sort_key = encode_key(key);
    if sort_key.len() > SORT_KEY_BYTES {
        return Err(StorageError::backend(
            "dynamodb key",
            format!(
                "key of {} bytes is {} bytes encoded, over DynamoDB's {SORT_KEY_BYTES}-byte sort key limit",
                key.len(),
                sort_key.len()
            ),
        ));
    }
    Ok(HashMap::from([
        ("p".to_string(), AttributeValue::S(partition(key))),
        ("k".to_string(), AttributeValue::S(sort_key)),
    ]))
}

fn value_of(item: &Item) -> Option<Vec<u8>> {
    match item.get("v") {
        Some(AttributeValue::B(blob)) => Some(blob.as_ref().to_vec()),
        _ => None,
    }
}

fn key_of(item: &Item) -> Option<Vec<u8>> {
    match item.get("k") {
        Some(AttributeValue::S(encoded)) => Some(decode_key(encoded)),
        _ => None,
    }
}

/// The service error code of a failed call (`None` for transport errors).
fn is_conditional_failure<R>(error: &SdkError<PutItemError, R>) -> bool {
    matches!(
        error.as_service_error(),
        Some(PutItemError::ConditionalCheckFailedException(_))
    )
}

/// The keys of every page of a paged listing: `page(start)` fetches one
/// page from `start` and returns its items and where the next page starts
/// (none or empty: that was the last).
async fn keys_of_pages<F, Fut>(mut page: F) -> Result<Vec<Vec<u8>>, StorageError>
where
    F: FnMut(Option<Item>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<Item>), StorageError>>,
{
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let (items, next) = page(start.take()).await?;
        keys.extend(items.iter().filter_map(key_of));
        match next {
            Some(last) if !last.is_empty() => start = Some(last),
            _ => return Ok(keys),
        }
    }
}

/// Keeps the last entry of each key (batch APIs refuse duplicates).
fn last_per_key(entries: &[Entry]) -> Vec<&Entry> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Entry> = entries
        .iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.as_slice()))
        .collect();
    kept.reverse();
    kept
}

impl DynamoStorage {
    /// Connects to `table` (which must exist: see [`DynamoStorage::create`]).
    pub async fn connect(
        url: &str,
        table: &str,
        location: &AwsLocation,
        options: StorageOptions,
    ) -> Result<Self, StorageError> {
        let config = sdk_config(location, &options).await;
        require_region(&config, &redact(url))?;
        Ok(DynamoStorage {
            client: Client::new(&config),
            table: table.to_string(),
            options,
            url: redact(url),
        })
    }

    /// Creates `table` with the layout above if it does not exist, and waits
    /// until it is active.
    pub async fn create(
        url: &str,
        table: &str,
        location: &AwsLocation,
        options: StorageOptions,
    ) -> Result<(), StorageError> {
        let storage = DynamoStorage::connect(url, table, location, options).await?;
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StorageError::backend("create table", e))
        };
        let string = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StorageError::backend("create table", e))
        };
        let created = storage
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("p", KeyType::Hash)?)
            .key_schema(key("k", KeyType::Range)?)
            .attribute_definitions(string("p")?)
            .attribute_definitions(string("k")?)
            .send()
            .await;
        if let Err(e) = created {
            let exists = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception());
            if !exists {
                return Err(sdk_error("create table", e));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match storage.check_table().await {
                Ok(()) => return Ok(()),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks that the table exists, is active and has the expected keys.
    async fn check_table(&self) -> Result<(), StorageError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        let table = match described {
            Ok(out) => match out.table {
                Some(table) => table,
                None => {
                    return Err(StorageError::backend(
                        "describe table",
                        "no table in the answer",
                    ))
                }
            },
            Err(e) => {
                if let Some(DescribeTableError::ResourceNotFoundException(_)) = e.as_service_error()
                {
                    return Err(StorageError::Unreachable {
                        url: self.url.clone(),
                        reason: format!(
                            "table `{}` does not exist; create it with `aft-sidecar --create-storage` (see docs/CONFIG.md)",
                            self.table
                        ),
                    });
                }
                return Err(sdk_error("describe table", e));
            }
        };
        let schema: Vec<(String, KeyType)> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
            .collect();
        let expected = vec![
            ("p".to_string(), KeyType::Hash),
            ("k".to_string(), KeyType::Range),
        ];
        if schema != expected {
            return Err(StorageError::Unreachable {
                url: self.url.clone(),
                reason: format!(
                    "table `{}` has keys {schema:?}; aft-sidecar needs partition key `p` and sort key `k`, both strings",
                    self.table
                ),
            });
        }
        match table.table_status() {
            Some(TableStatus::Active) | Some(TableStatus::Updating) => Ok(()),
            status => Err(StorageError::Unreachable {
                url: self.url.clone(),
                reason: format!("table `{}` is not active ({status:?})", self.table),
            }),
        }
    }

    fn limit(&self) -> usize {
        self.options.max_value_bytes.min(VALUE_LIMIT)
    }

    fn check_size(&self, size: usize) -> Result<(), StorageError> {
        if size > self.limit() {
            return Err(StorageError::ValueTooLarge {
                size,
                limit: self.limit(),
            });
        }
        Ok(())
    }

    /// The item storing `value` at `key`.
    fn item(&self, key: &[u8], value: &[u8]) -> Result<Item, StorageError> {
        self.check_size(value.len())?;
        let mut item = key_item(key)?;
        item.insert("v".into(), AttributeValue::B(Blob::new(value)));
        if let Some(ts) = lww_timestamp(value) {
            item.insert("t".into(), AttributeValue::N(ts.to_string()));
        }
        Ok(item)
    }

    fn timeout(&self) -> Duration {
        self.options.call_timeout
    }

    /// One `BatchWriteItem` of at most 25 requests, retrying what the
    /// service leaves unprocessed.
    async fn write_batch(&self, mut requests: Vec<WriteRequest>) -> Result<(), StorageError> {
        let mut pause = Duration::from_millis(10);
        while !requests.is_empty() {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| sdk_error("batch write", e))?;
            requests = out
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if !requests.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
        Ok(())
    }

    /// Sends write requests in batches of 25, 16 batches at a time.
    async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), StorageError> {
        let mut batches = Vec::new();
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            batches.push(
                requests
                    .by_ref()
                    .take(BATCH_WRITE_ITEMS)
                    .collect::<Vec<_>>(),
            );
        }
        let writes: Vec<_> = batches
            .into_iter()
            .map(|batch| self.write_batch(batch))
            .collect();
        all_of(writes, CONCURRENCY).await
    }

    /// One `BatchGetItem` of at most 100 keys, retrying unprocessed keys.
    async fn read_batch(&self, keys: Vec<Item>) -> Result<Vec<Item>, StorageError> {
        let mut found = Vec::new();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StorageError::backend("batch get", e))?,
        );
        let mut pause = Duration::from_millis(10);
        while let Some(request) = pending.take() {
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error("batch get", e))?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.table).unwrap_or_default());
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
                .filter(|left| !left.keys().is_empty());
            if pending.is_some() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
        Ok(found)
    }

    /// Every key of one partition starting with `prefix` (encoded).
    async fn query_partition(&self, p: String, prefix: &str) -> Result<Vec<Vec<u8>>, StorageError> {
        keys_of_pages(|start| {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#p = :p AND begins_with(#k, :prefix)")
                .expression_attribute_names("#p", "p")
                .expression_attribute_names("#k", "k")
                .expression_attribute_values(":p", AttributeValue::S(p.clone()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
                .projection_expression("#k")
                .consistent_read(true)
                .set_exclusive_start_key(start);
            async move {
                let out = request
                    .send()
                    .await
                    .map_err(|e| sdk_error("scan prefix", e))?;
                Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
            }
        })
        .await
    }

    /// Every key starting with `prefix` (encoded) by a table scan: only for
    /// prefixes shorter than a namespace.
    async fn scan_table(&self, prefix: &str) -> Result<Vec<Vec<u8>>, StorageError> {
        keys_of_pages(|start| {
            let request = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#k, :prefix)")
                .expression_attribute_names("#k", "k")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
                .projection_expression("#k")
                .consistent_read(true)
                .set_exclusive_start_key(start);
            async move {
                let out = request
                    .send()
                    .await
                    .map_err(|e| sdk_error("scan prefix", e))?;
                Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
            }
        })
        .await
    }

    /// The guarded batch as one `TransactWriteItems`.
    async fn transact_if_absent(
        &self,
        guard: &[u8],
        entries: &[&Entry],
    ) -> Result<bool, StorageError> {
        let mut items = Vec::with_capacity(entries.len());
        let mut guard_index = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            let mut put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(self.item(key, value)?));
            if key.as_slice() == guard {
                guard_index = Some(i);
                put = put
                    .condition_expression("attribute_not_exists(#p)")
                    .expression_attribute_names("#p", "p");
            }
            let put = put
                .build()
                .map_err(|e| StorageError::backend("put_many_if_absent", e))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let Some(guard_index) = guard_index else {
            return Err(StorageError::backend(
                "put_many_if_absent",
                "the guard key is not among the entries",
            ));
        };
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                    e.as_service_error()
                {
                    let guard_taken = cancel
                        .cancellation_reasons()
                        .get(guard_index)
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed");
                    if guard_taken {
                        return Ok(false);
                    }
                }
                Err(sdk_error("put_many_if_absent", e))
            }
        }
    }
}

#[async_trait]
impl Storage for DynamoStorage {
    fn describe(&self) -> String {
        format!("dynamodb table `{}` ({})", self.table, self.url)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key_item(key)?;
        bounded("get", self.timeout(), async {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("get", e))?;
            Ok(out.item.as_ref().and_then(value_of))
        })
        .await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let item = self.item(key, value)?;
        bounded("put", self.timeout(), async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk_error("put", e))?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let key = key_item(key)?;
        bounded("delete", self.timeout(), async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(|e| sdk_error("delete", e))?;
            Ok(())
        })
        .await
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let mut unique: Vec<&Vec<u8>> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let mut batches = Vec::new();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            batches.push(
                chunk
                    .iter()
                    .map(|k| key_item(k))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let found = bounded("get_many", self.timeout(), async {
            stream::iter(batches)
                .map(|batch| self.read_batch(batch))
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<Vec<Item>>>()
                .await
        })
        .await?;
        let mut values: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for item in found.iter().flatten() {
            if let (Some(key), Some(value)) = (key_of(item), value_of(item)) {
                values.insert(key, value);
            }
        }
        Ok(keys.iter().map(|k| values.get(k).cloned()).collect())
    }

    async fn put_many(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut requests = Vec::with_capacity(entries.len());
        for (key, value) in last_per_key(entries) {
            let put = PutRequest::builder()
                .set_item(Some(self.item(key, value)?))
                .build()
                .map_err(|e| StorageError::backend("put_many", e))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        bounded("put_many", self.timeout(), self.write_all(requests)).await
    }

    async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut unique: Vec<&Vec<u8>> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let mut requests = Vec::with_capacity(unique.len());
        for key in unique {
            let delete = DeleteRequest::builder()
                .set_key(Some(key_item(key)?))
                .build()
                .map_err(|e| StorageError::backend("delete_many", e))?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        bounded("delete_many", self.timeout(), self.write_all(requests)).await
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let encoded = encode_key(prefix);
        // Listing a namespace is paged; give it the time of several calls.
        let timeout = self.timeout() * 8;
        let mut keys = bounded("scan_prefix", timeout, async {
            if !covers_namespace(prefix) {
                return self.scan_table(&encoded).await;
            }
            let namespace = partition(prefix);
            let namespace = namespace
                .rsplit_once('#')
                .map_or(namespace.as_str(), |(n, _)| n);
            let partitions = (0..SHARDS).map(|shard| format!("{namespace}#{shard:02x}"));
            let lists = stream::iter(partitions)
                .map(|p| self.query_partition(p, &encoded))
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?;
            Ok(lists.into_iter().flatten().collect::<Vec<_>>())
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
        let item = self.item(key, lww_value)?;
        bounded("merge_lww", self.timeout(), async {
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#t) OR #t < :t")
                .expression_attribute_names("#t", "t")
                .expression_attribute_values(":t", AttributeValue::N(timestamp.to_string()))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(()),
                // A value as new or newer is there: nothing to do.
                Err(e) if is_conditional_failure(&e) => Ok(()),
                Err(e) => Err(sdk_error("merge_lww", e)),
            }
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
        let item = self.item(key, value)?;
        bounded("put_if_absent", self.timeout(), async {
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#p)")
                .expression_attribute_names("#p", "p")
                .send()
                .await;
            match sent {
                Ok(_) => Ok(true),
                Err(e) if is_conditional_failure(&e) => Ok(false),
                Err(e) => Err(sdk_error("put_if_absent", e)),
            }
        })
        .await
    }

    async fn put_many_if_absent(
        &self,
        guard: &[u8],
        entries: &[Entry],
    ) -> Result<bool, StorageError> {
        let unique = last_per_key(entries);
        let bytes: usize = unique.iter().map(|(_, v)| v.len()).sum();
        if self.atomic_batch_fits(unique.len(), bytes) {
            bounded(
                "put_many_if_absent",
                self.timeout(),
                self.transact_if_absent(guard, &unique),
            )
            .await
        } else {
            put_many_then_guard(self, guard, entries).await
        }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        bounded("ping", self.timeout(), self.check_table()).await
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    fn atomic_batch_fits(&self, items: usize, bytes: usize) -> bool {
        items <= TRANSACT_ITEMS && bytes + items * ITEM_OVERHEAD <= TRANSACT_BYTES
    }

    fn value_limit(&self) -> Option<usize> {
        (VALUE_LIMIT < self.options.max_value_bytes).then_some(VALUE_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_namespace_and_shard() {
        let p = partition(b"aft/c/0001-tid");
        assert!(p.starts_with("aft/c/#"), "{p}");
        assert_eq!(p.len(), "aft/c/#00".len());
        assert!(partition(b"plain").starts_with("plain#"));
        assert!(partition(b"a/b").starts_with("a/b#"));
        // Every key of a namespace is in one of its 16 partitions.
        let shards: std::collections::HashSet<String> = (0..1000)
            .map(|i| partition(format!("aft/d/t{i}/k").as_bytes()))
            .collect();
        assert_eq!(shards.len(), SHARDS as usize);
        assert!(shards.iter().all(|s| s.starts_with("aft/d/#")));
        assert!(covers_namespace(b"aft/d/"));
        assert!(!covers_namespace(b"aft/"));
    }

    #[test]
    fn overlong_keys_are_refused_by_name() {
        let err = key_item(&[0xffu8; 400]).unwrap_err().to_string();
        assert!(err.contains("1024-byte sort key limit"), "{err}");
    }
}
