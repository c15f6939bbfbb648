//! The storage conformance suite, and Anna-specific behaviour, against the
//! Anna backend on anna-client's protocol-faithful test server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::storage::{open, AnnaStorage, Storage, StorageError, StorageOptions};
use anna_client::proto::AnnaError;
use anna_client::test_server::{TestServer, TestServerConfig};
use anna_client::{Envelope, LwwValue, Value};

/// A test server with `kvs_threads` KVS threads and the backend opened on
/// it through its `anna://` URL.
async fn anna_with(kvs_threads: usize) -> (TestServer, Arc<dyn Storage>) {
    let server = TestServer::start(TestServerConfig::with_kvs_threads(kvs_threads)).unwrap();
    let url = format!("anna://{}", server.routing_host_port());
    let s = open(&url, StorageOptions::default()).await.unwrap();
    (server, s)
}

async fn anna() -> (TestServer, Arc<dyn Storage>) {
    anna_with(1).await
}

/// Two KVS threads: multi-key calls span threads.
async fn anna_two_threads() -> (TestServer, Arc<dyn Storage>) {
    anna_with(2).await
}

aft_testkit::conformance_tests!(
    anna,
    roundtrip_overwrite_delete,
    empty_value_is_not_missing,
    binary_keys_and_values,
    values_up_to_the_limit,
    batch_of_ten_thousand,
    prefix_scan_of_one_hundred_thousand,
    prefix_scan_escapes_globs,
    lww_merge_keeps_newest,
    put_many_if_absent_is_guarded,
    guarded_batch_with_merges,
);

aft_testkit::conformance_tests!(
    anna_two_threads,
    roundtrip_overwrite_delete,
    empty_value_is_not_missing,
    binary_keys_and_values,
    batch_of_ten_thousand,
    prefix_scan_escapes_globs,
    lww_merge_keeps_newest,
);

fn lww(ts: u64, value: &[u8]) -> Vec<u8> {
    LwwValue::new(ts, value.to_vec()).encode()
}

#[tokio::test]
async fn url_opens_and_describes_itself() {
    let (server, s) = anna().await;
    assert_eq!(
        s.describe(),
        format!("anna://{}", server.routing_host_port())
    );
    s.ping().await.unwrap();
}

#[tokio::test]
async fn unreachable_anna_is_one_clear_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("anna://127.0.0.1:{port}");
    let options = StorageOptions {
        call_timeout: Duration::from_millis(300),
        ..StorageOptions::default()
    };
    let started = Instant::now();
    let err = open(&url, options).await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    for bad in ["anna://", "anna://a/b", "anna://u@h"] {
        assert!(
            matches!(
                open(bad, StorageOptions::default()).await,
                Err(StorageError::InvalidUrl { .. })
            ),
            "{bad}"
        );
    }
}

/// `merge_lww` stores the caller's LWWValue under the plain key without
/// the envelope, so Cloudburst reads it directly; what Cloudburst wrote is
/// read back as its LWWValue.
#[tokio::test]
async fn plain_keys_interoperate_with_cloudburst() {
    let (server, s) = anna().await;
    s.merge_lww(b"result:dag-1", 1234, &lww(1234, b"\x08\x01out"))
        .await
        .unwrap();
    assert_eq!(
        server.stored("result:dag-1"),
        Some(Value::Lww(LwwValue::new(1234, b"\x08\x01out".to_vec())))
    );
    server.insert(
        "funcs:index-allfuncs",
        Value::Lww(LwwValue::new(9, b"\x12\x03abc".to_vec())),
    );
    assert_eq!(
        s.get(b"funcs:index-allfuncs").await.unwrap(),
        Some(lww(9, b"\x12\x03abc"))
    );
    // A put is stored in the envelope, at timestamp 0.
    s.put(b"mine", b"v").await.unwrap();
    assert_eq!(
        server.stored("mine"),
        Some(Value::Lww(LwwValue::new(
            0,
            Envelope::Value(b"v".to_vec()).encode()
        )))
    );
}

#[tokio::test]
async fn scan_sees_revived_keys_and_hides_deleted_ones() {
    let (server, s) = anna().await;
    s.put_many(&[
        (b"p/a".to_vec(), b"1".to_vec()),
        (b"p/b".to_vec(), b"2".to_vec()),
        (b"p/c".to_vec(), b"3".to_vec()),
    ])
    .await
    .unwrap();
    s.delete(b"p/b").await.unwrap();
    assert_eq!(
        s.scan_prefix(b"p/").await.unwrap(),
        vec![b"p/a".to_vec(), b"p/c".to_vec()]
    );
    s.put(b"p/b", b"again").await.unwrap();
    assert_eq!(s.scan_prefix(b"p/").await.unwrap().len(), 3);
    // A tombstone written behind the directory's back (as if a delete
    // died after its first step): the scan still hides the key.
    let anna = AnnaStorage::connect(&server.routing_host_port(), StorageOptions::default())
        .await
        .unwrap();
    anna.client().delete("p/c").await.unwrap();
    assert_eq!(
        s.scan_prefix(b"p/").await.unwrap(),
        vec![b"p/a".to_vec(), b"p/b".to_vec()]
    );
}

/// Faults on the way (WRONG_THREAD, dropped answers, NO_SERVERS) are
/// absorbed by retries within the call timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_within_the_call() {
    let (server, s) = anna_two_threads().await;
    let options = StorageOptions {
        call_timeout: Duration::from_secs(2),
        ..StorageOptions::default()
    };
    let s2 = AnnaStorage::connect(&server.routing_host_port(), options)
        .await
        .unwrap();
    server.inject_wrong_thread("f/1", 2);
    server.inject_key_error("f/2", AnnaError::NoServers, 1);
    server.inject_no_servers(2);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| (format!("f/{i}").into_bytes(), vec![i as u8]))
        .collect();
    s.put_many(&entries).await.unwrap();
    server.drop_kvs_responses(1);
    let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
    let got = s2.get_many(&keys).await.unwrap();
    assert_eq!(
        got,
        entries
            .iter()
            .map(|(_, v)| Some(v.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.scan_prefix(b"f/").await.unwrap().len(), 20);
    let stats = server.stats();
    assert_eq!(stats.multi_key_address_requests, 0);
    assert_eq!(stats.malformed_response_addresses, 0);
}

/// Anna answering nothing gives a typed timeout error within the call
/// timeout, never a hang.
#[tokio::test]
async fn silent_anna_times_out() {
    let server = TestServer::start_default().unwrap();
    let options = StorageOptions {
        call_timeout: Duration::from_millis(300),
        ..StorageOptions::default()
    };
    let s = AnnaStorage::connect(&server.routing_host_port(), options)
        .await
        .unwrap();
    s.put(b"k", b"v").await.unwrap();
    server.set_kvs_delay(Duration::from_secs(5));
    let started = Instant::now();
    let err = s.get(b"k").await.unwrap_err();
    assert!(matches!(err, StorageError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn merge_lww_refuses_a_payload_that_is_not_an_lww_value() {
    let (_server, s) = anna().await;
    let err = s.merge_lww(b"k", 1, b"\xff\xff").await.unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
    let err = s.merge_lww(b"k", 2, &lww(3, b"x")).await.unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
}
