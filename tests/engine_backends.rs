//! The engine on every storage backend: a concurrent workload with a
//! read-atomicity history check, then a restart that must keep every
//! acknowledged commit.

use std::sync::Arc;

use aft::history::{check, Op, Status, TxnRecord};
use aft::metrics::Metrics;
use aft::storage::{open, Storage, StorageOptions};
use aft::txn::{Engine, EngineConfig, Outcome};
use aft_testkit::redis::{RedisCluster, RedisServer};
use aft_testkit::tagged::writer_of_payload;
use aft_testkit::workload::{read_op, write_op};

const KEYS: usize = 6;
const WORKERS: usize = 6;
const TXNS_PER_WORKER: usize = 25;

async fn workload(engine: Arc<Engine>, worker: usize) -> Vec<TxnRecord> {
    let mut history = Vec::new();
    for i in 0..TXNS_PER_WORKER {
        let tid = engine.start().unwrap().tid.to_string();
        let mut ops = Vec::new();
        let a = format!("k{}", (worker + i) % KEYS);
        let b = format!("k{}", (worker * 3 + i * 5 + 1) % KEYS);
        ops.push(read_op(&engine, &tid, &a).await);
        ops.push(read_op(&engine, &tid, &b).await);
        ops.push(write_op(&engine, &tid, &a));
        ops.push(write_op(&engine, &tid, &b));
        ops.push(read_op(&engine, &tid, &format!("k{}", (i * 7) % KEYS)).await);
        let outcome = if i % 7 == 3 {
            engine.abort(&tid)
        } else {
            engine.commit(&tid).await.unwrap()
        };
        let (status, ts) = match outcome {
            Outcome::Committed { timestamp } => (Status::Committed, Some(timestamp)),
            Outcome::Aborted { .. } => (Status::Aborted, None),
            Outcome::Unknown { .. } => (Status::Unknown, None),
        };
        history.push(TxnRecord {
            id: tid,
            status,
            commit_timestamp: ts,
            commit_window: None,
            ops,
        });
        if i % 10 == 0 {
            engine.collect_garbage().await;
        }
    }
    history
}

async fn exercise(storage: Arc<dyn Storage>) {
    let engine = Engine::open(
        Arc::clone(&storage),
        EngineConfig::default(),
        Metrics::new(),
        None,
    )
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        tasks.spawn(workload(Arc::clone(&engine), worker));
    }
    let mut history = Vec::new();
    while let Some(h) = tasks.join_next().await {
        history.extend(h.unwrap());
    }
    let anomalies = check(&history);
    assert!(anomalies.is_empty(), "{anomalies:?}");

    // The newest committed writer of each key, by commit timestamp.
    let mut newest: Vec<Option<(u64, String)>> = vec![None; KEYS];
    for txn in &history {
        let Some(ts) = txn.commit_timestamp else {
            continue;
        };
        for op in &txn.ops {
            if let Op::Write { key } = op {
                let k: usize = key[1..].parse().unwrap();
                if newest[k].as_ref().is_none_or(|(t, _)| *t < ts) {
                    newest[k] = Some((ts, txn.id.clone()));
                }
            }
        }
    }
    drop(engine);

    // Restart: every acknowledged commit's effect is there.
    let engine = Engine::open(storage, EngineConfig::default(), Metrics::new(), None)
        .await
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    let values = engine.get(None, &keys).await.unwrap();
    for (k, value) in values.iter().enumerate() {
        let expected = newest[k].as_ref().map(|(_, tid)| tid.clone());
        assert_eq!(
            writer_of_payload(value.value.as_ref()),
            expected,
            "key k{k} after restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    exercise(open(&url, StorageOptions::default()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let server = RedisServer::start();
    exercise(
        open(&server.url(), StorageOptions::default())
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let cluster = RedisCluster::start();
    exercise(
        open(&cluster.url(), StorageOptions::default())
            .await
            .unwrap(),
    )
    .await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb() {
    let server = aft_testkit::aws::MotoServer::start();
    let url = server.url("aft-engine");
    aft_testkit::aws::prepare_store(&url).await;
    exercise(open(&url, StorageOptions::default()).await.unwrap()).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let server = aft_testkit::aws::SeaweedFs::start();
    let url = server.url("aft-engine");
    aft_testkit::aws::prepare_store(&url).await;
    exercise(open(&url, StorageOptions::default()).await.unwrap()).await;
}
