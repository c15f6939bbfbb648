//! The storage conformance suite against every backend: embedded (on disk),
//! a real `redis-server`, and a real 3-master Redis Cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::storage::{open, Storage, StorageError, StorageOptions};
use aft_testkit::conformance as suite;
use aft_testkit::redis::{RedisCluster, RedisServer};

/// The suite tests behaviour, not speed: calls get a generous timeout so a
/// loaded machine does not turn a slow 10,000-key batch into a failure.
fn options() -> StorageOptions {
    StorageOptions {
        call_timeout: Duration::from_secs(20),
        ..StorageOptions::default()
    }
}

async fn embedded() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let s = open(&url, options()).await.unwrap();
    (dir, s)
}

async fn memory() -> ((), Arc<dyn Storage>) {
    ((), open("memory://", options()).await.unwrap())
}

async fn redis() -> (RedisServer, Arc<dyn Storage>) {
    let server = RedisServer::start();
    let s = open(&server.url(), options()).await.unwrap();
    (server, s)
}

aft_testkit::full_conformance_tests!(embedded);
aft_testkit::full_conformance_tests!(memory);
aft_testkit::full_conformance_tests!(redis);

/// The whole suite on one real 3-master cluster (starting one costs ~1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_whole_suite() {
    let cluster = RedisCluster::start();
    let s = open(&cluster.url(), options()).await.unwrap();
    suite::run_all(s.as_ref()).await;
}

#[tokio::test]
async fn embedded_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    {
        let s = open(&url, StorageOptions::default()).await.unwrap();
        s.put_many(&[(b"k".to_vec(), b"v".to_vec())]).await.unwrap();
    }
    let s = open(&url, StorageOptions::default()).await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn embedded_store_is_locked_against_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let _first = open(&url, StorageOptions::default()).await.unwrap();
    let err = open(&url, StorageOptions::default()).await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

/// Redis killed mid-suite: calls fail with typed errors within the timeout
/// (nothing hangs), and the backend reconnects by itself when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_gives_typed_errors_then_reconnects() {
    let mut server = RedisServer::start();
    let options = StorageOptions {
        call_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..StorageOptions::default()
    };
    let s = open(&server.url(), options).await.unwrap();
    suite::roundtrip_overwrite_delete(s.as_ref(), b"before/").await;
    s.put(b"durable", b"yes").await.unwrap();

    server.kill();
    let started = Instant::now();
    for _ in 0..3 {
        let err = s.get(b"durable").await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Backend { .. } | StorageError::Timeout { .. }
            ),
            "unexpected error while down: {err:?}"
        );
        let err = s
            .put_many(&[(b"x".to_vec(), b"y".to_vec())])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Backend { .. } | StorageError::Timeout { .. }
            ),
            "{err:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "calls hung while down"
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let value = loop {
        match s.get(b"durable").await {
            Ok(v) => break v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("backend did not reconnect within 10 s: {e}"),
        }
    };
    assert_eq!(
        value,
        Some(b"yes".to_vec()),
        "acknowledged write lost across restart"
    );
    suite::roundtrip_overwrite_delete(s.as_ref(), b"after/").await;
}

#[tokio::test]
async fn unreachable_redis_is_one_clear_error_naming_the_url() {
    let port = aft_testkit::ports::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let options = StorageOptions {
        connect_timeout: Duration::from_millis(300),
        ..StorageOptions::default()
    };
    let err = open(&url, options).await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn invalid_url_is_refused() {
    let err = open("postgres://x", StorageOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidUrl { .. }), "{err:?}");
}
