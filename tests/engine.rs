//! The transaction engine on one node: the read rule, commit, abort,
//! idempotence, leases, crash points, recovery and GC.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aft::history::{check, Op, Status, TxnRecord};
use aft::metrics::Metrics;
use aft::storage::{MemoryStorage, Storage, StorageOptions};
use aft::txn::{AbortCause, Engine, EngineConfig, Outcome, PeerFailure, TxnError};
use aft_testkit::faulty::{Faults, FaultyStorage};
use aft_testkit::tagged::writer_of_payload;
use aft_testkit::workload::{payload, read_op, write_op};
use bytes::Bytes;

async fn engine_over(storage: Arc<dyn Storage>, config: EngineConfig) -> Arc<Engine> {
    Engine::open(storage, config, Metrics::new(), None)
        .await
        .expect("engine opens")
}

async fn memory_engine() -> (Arc<Engine>, MemoryStorage) {
    let storage = MemoryStorage::new(StorageOptions::default());
    let engine = engine_over(Arc::new(storage.clone()), EngineConfig::default()).await;
    (engine, storage)
}

async fn read_writer(engine: &Arc<Engine>, tid: &str, key: &str) -> Option<String> {
    let values = engine.get(Some(tid), &[key.to_string()]).await.unwrap();
    writer_of_payload(values[0].value.as_ref())
}

async fn commit_writes(engine: &Arc<Engine>, keys: &[&str]) -> String {
    let tid = engine.start().unwrap().tid.to_string();
    for key in keys {
        write_op(engine, &tid, key);
    }
    let outcome = engine.commit(&tid).await.unwrap();
    assert!(outcome.is_committed(), "{outcome:?}");
    tid
}

#[tokio::test]
async fn buffered_writes_are_private_until_commit_then_visible() {
    let (engine, _) = memory_engine().await;
    let writer = engine.start().unwrap().tid.to_string();
    write_op(&engine, &writer, "k");
    assert_eq!(
        read_writer(&engine, &writer, "k").await.as_deref(),
        Some(writer.as_str())
    );
    let other = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &other, "k").await,
        None,
        "buffered write leaked"
    );
    assert!(engine.commit(&writer).await.unwrap().is_committed());
    let later = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &later, "k").await.as_deref(),
        Some(writer.as_str())
    );
    // `other` already read k (nothing): repeatable read keeps it.
    assert_eq!(read_writer(&engine, &other, "k").await, None);
}

#[tokio::test]
async fn aborted_writes_never_become_visible() {
    let (engine, storage) = memory_engine().await;
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    assert!(!engine.abort(&tid).is_committed());
    let reader = engine.start().unwrap().tid.to_string();
    assert_eq!(read_writer(&engine, &reader, "k").await, None);
    assert!(
        !engine.commit(&tid).await.unwrap().is_committed(),
        "commit after abort"
    );
    assert!(
        storage.is_empty(),
        "an aborted transaction wrote to storage"
    );
}

#[tokio::test]
async fn commit_and_abort_are_idempotent() {
    let (engine, _) = memory_engine().await;
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    let first = engine.commit(&tid).await.unwrap();
    assert!(first.is_committed());
    assert_eq!(engine.commit(&tid).await.unwrap(), first);
    assert_eq!(
        engine.abort(&tid),
        first,
        "abort of a committed txn reports the commit"
    );
    let (v, n) = engine.index().size();
    assert_eq!(
        (v, n),
        (1, 2),
        "a retried commit installed twice (1 key: base + one version)"
    );

    let aborted = engine.start().unwrap().tid.to_string();
    let a1 = engine.abort(&aborted);
    assert_eq!(engine.abort(&aborted), a1);
    assert!(!engine.commit(&aborted).await.unwrap().is_committed());
}

#[tokio::test]
async fn unknown_transactions_get_clear_errors() {
    let (engine, _) = memory_engine().await;
    let err = engine.get(Some("nope"), &["k".into()]).await.unwrap_err();
    assert!(matches!(err, TxnError::UnknownTransaction { .. }), "{err}");
    // The first request for an unknown transaction leaves it recorded as
    // failed (this node may have restarted and lost it): later calls say so.
    let err = engine
        .put("nope", vec![("k".into(), payload("x", "k"))])
        .unwrap_err();
    assert!(
        matches!(&err, TxnError::Failed { reason, .. } if reason.contains("unknown transaction")),
        "{err}"
    );
    assert!(matches!(
        engine.commit("nope").await.unwrap(),
        Outcome::Aborted { .. }
    ));
    assert!(matches!(engine.abort("nope"), Outcome::Aborted { .. }));
    let tid = commit_writes(&engine, &["k"]).await;
    let err = engine.get(Some(&tid), &["k".into()]).await.unwrap_err();
    assert!(
        matches!(
            err,
            TxnError::Ended {
                outcome: "committed",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_commit_is_known_from_its_record_after_a_restart() {
    let storage = MemoryStorage::new(StorageOptions::default());
    let engine = engine_over(Arc::new(storage.clone()), EngineConfig::default()).await;
    let tid = commit_writes(&engine, &["k"]).await;
    drop(engine);
    let engine = engine_over(Arc::new(storage), EngineConfig::default()).await;
    assert!(
        engine.commit(&tid).await.unwrap().is_committed(),
        "retry after restart"
    );
}

#[tokio::test]
async fn a_reader_never_sees_a_newer_version_than_its_read_set_allows() {
    let (engine, _) = memory_engine().await;
    let t1 = commit_writes(&engine, &["x", "y"]).await;
    let reader = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &reader, "x").await.as_deref(),
        Some(t1.as_str())
    );
    let _t2 = commit_writes(&engine, &["x", "y"]).await;
    // Upper bound: t2 also wrote x, which the reader read older: keep t1's y.
    assert_eq!(
        read_writer(&engine, &reader, "y").await.as_deref(),
        Some(t1.as_str())
    );
}

#[tokio::test]
async fn a_reader_never_sees_an_older_version_than_its_read_set_requires() {
    let (engine, _) = memory_engine().await;
    let _t1 = commit_writes(&engine, &["x"]).await;
    let _t0 = commit_writes(&engine, &["y"]).await;
    let reader = engine.start().unwrap().tid.to_string();
    let t2 = commit_writes(&engine, &["x", "y"]).await;
    // The reader reads x = t2 (newest); lower bound: y must be t2 or newer.
    assert_eq!(
        read_writer(&engine, &reader, "x").await.as_deref(),
        Some(t2.as_str())
    );
    assert_eq!(
        read_writer(&engine, &reader, "y").await.as_deref(),
        Some(t2.as_str())
    );
}

#[tokio::test]
async fn plain_keys_are_the_base_version_and_stay_consistent() {
    let (engine, storage) = memory_engine().await;
    // Values written by outside clients under plain keys.
    storage.put(b"x", &payload("outside", "x")).await.unwrap();
    storage.put(b"y", &payload("outside", "y")).await.unwrap();
    let reader = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &reader, "x").await.as_deref(),
        Some("outside")
    );
    let t1 = commit_writes(&engine, &["x", "y"]).await;
    // t1 wrote x too: the reader must still see the base y, even after t1
    // published its y to the plain key.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        read_writer(&engine, &reader, "y").await.as_deref(),
        Some("outside")
    );
    // A new transaction sees t1 everywhere, and the plain keys show t1 to outsiders.
    let fresh = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &fresh, "y").await.as_deref(),
        Some(t1.as_str())
    );
    let published = storage.get(b"y").await.unwrap().map(Bytes::from);
    assert_eq!(
        writer_of_payload(published.as_ref()).as_deref(),
        Some(t1.as_str())
    );
}

#[tokio::test]
async fn plain_reads_are_atomic_across_the_keys_of_one_request() {
    let (engine, _) = memory_engine().await;
    let t1 = commit_writes(&engine, &["a", "b"]).await;
    let values = engine
        .get(None, &["a".into(), "b".into(), "c".into()])
        .await
        .unwrap();
    let writers: Vec<Option<String>> = values
        .iter()
        .map(|v| writer_of_payload(v.value.as_ref()))
        .collect();
    assert_eq!(writers, vec![Some(t1.clone()), Some(t1), None]);
    let outcome = engine
        .put_outside_transaction(vec![
            ("a".into(), payload("p", "a")),
            ("b".into(), payload("p", "b")),
        ])
        .await
        .unwrap();
    assert!(outcome.is_committed());
    let values = engine.get(None, &["a".into(), "b".into()]).await.unwrap();
    assert!(values
        .iter()
        .all(|v| writer_of_payload(v.value.as_ref()).as_deref() == Some("p")));
}

#[tokio::test]
async fn limits_are_enforced_with_clear_errors() {
    let config = EngineConfig {
        max_value_bytes: 100,
        max_txn_write_bytes: 250,
        max_open_txns: 3,
        ..EngineConfig::default()
    };
    let engine = engine_over(Arc::new(MemoryStorage::default()), config).await;
    let tid = engine.start().unwrap().tid.to_string();
    let err = engine
        .put(&tid, vec![("k".into(), Bytes::from(vec![0u8; 101]))])
        .unwrap_err();
    assert!(
        matches!(
            err,
            TxnError::ValueTooLarge {
                size: 101,
                limit: 100,
                ..
            }
        ),
        "{err}"
    );
    for i in 0..2 {
        engine
            .put(&tid, vec![(format!("k{i}"), Bytes::from(vec![0u8; 100]))])
            .unwrap();
    }
    let err = engine
        .put(&tid, vec![("k9".into(), Bytes::from(vec![0u8; 100]))])
        .unwrap_err();
    assert!(matches!(err, TxnError::WriteSetTooLarge { .. }), "{err}");
    // Overwriting a buffered key does not count twice.
    engine
        .put(&tid, vec![("k0".into(), Bytes::from(vec![1u8; 100]))])
        .unwrap();
    engine.start().unwrap();
    engine.start().unwrap();
    assert!(matches!(
        engine.start().unwrap_err(),
        TxnError::TooManyTransactions { limit: 3 }
    ));
}

#[tokio::test]
async fn an_idle_transaction_is_aborted_by_its_lease_and_its_buffer_freed() {
    let config = EngineConfig {
        lease: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = engine_over(Arc::new(MemoryStorage::default()), config).await;
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    let active = engine.start().unwrap().tid.to_string();
    tokio::time::sleep(Duration::from_millis(30)).await;
    write_op(&engine, &active, "j");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(engine.reap_expired(), 1);
    assert_eq!(engine.open_transactions(), 1);
    let outcome = engine.commit(&tid).await.unwrap();
    assert!(
        matches!(
            &outcome,
            Outcome::Aborted {
                cause: AbortCause::LeaseExpired(_)
            }
        ),
        "{outcome:?}"
    );
    assert!(engine.commit(&active).await.unwrap().is_committed());
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_aborts_the_dag_with_a_typed_cause() {
    // No peer layer: other nodes of a DAG cannot be reached.
    let (engine, _) = memory_engine().await;
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    let outcome = engine
        .commit_with(&tid, &["10.0.0.9".to_string()])
        .await
        .unwrap();
    match outcome {
        Outcome::Aborted {
            cause: AbortCause::Participant(e),
        } => assert!(
            matches!(&*e, TxnError::Peer { peer, failure: PeerFailure::Off, .. } if peer == "10.0.0.9"),
            "{e:?}"
        ),
        other => panic!("expected a participant abort, got {other:?}"),
    }
    let err = engine
        .continue_from("started-elsewhere", "10.0.0.9")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TxnError::Peer {
                failure: PeerFailure::Off,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        engine.abort("never-started"),
        Outcome::Aborted {
            cause: AbortCause::UnknownTransaction
        }
    );
}

#[tokio::test]
async fn storage_failure_before_the_commit_point_aborts_and_leaves_nothing() {
    let inner = MemoryStorage::default();
    let faults = Arc::new(Faults::default());
    let storage = Arc::new(FaultyStorage {
        inner: Arc::new(inner.clone()),
        faults: Arc::clone(&faults),
    });
    let engine = engine_over(storage, EngineConfig::default()).await;

    faults.put_many.store(true, Ordering::SeqCst);
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    // The storage error reaches the outcome typed, not as a string.
    match engine.commit(&tid).await.unwrap() {
        Outcome::Aborted {
            cause: AbortCause::Storage(e),
        } => assert!(matches!(*e, TxnError::Storage { .. }), "{e:?}"),
        other => panic!("expected a storage abort, got {other:?}"),
    }
    faults.put_many.store(false, Ordering::SeqCst);

    // Data written, commit record write fails: aborted, data cleaned up.
    faults.commit_record.store(true, Ordering::SeqCst);
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    assert!(!engine.commit(&tid).await.unwrap().is_committed());
    faults.commit_record.store(false, Ordering::SeqCst);
    let left: Vec<String> = inner
        .scan_prefix(b"")
        .await
        .unwrap()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // What may stay: abort markers that fence the failed commits (so their
    // records can never land later), and the saved base of the key they
    // would have written first.
    for key in &left {
        if key.starts_with("aft/c/") {
            let stored = inner.get(key.as_bytes()).await.unwrap().unwrap();
            assert!(
                matches!(aft::txn::decode_decision(key.as_bytes(), &stored), Ok(None)),
                "{key} must be an abort marker"
            );
        } else {
            assert_eq!(key, "aft/d/~base/k", "aborted commit left data: {left:?}");
        }
    }
    assert!(
        left.contains(&format!("aft/c/{tid}")),
        "the failed commit is fenced"
    );

    // The record lands but its acknowledgement is lost: read back, committed.
    faults.commit_record_lost_ack.store(true, Ordering::SeqCst);
    let tid = engine.start().unwrap().tid.to_string();
    write_op(&engine, &tid, "k");
    assert!(engine.commit(&tid).await.unwrap().is_committed());
    faults.commit_record_lost_ack.store(false, Ordering::SeqCst);
    let reader = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &reader, "k").await.as_deref(),
        Some(tid.as_str())
    );

    // Storage down: reads fail with a typed error, nothing hangs.
    faults.everything.store(true, Ordering::SeqCst);
    let fresh = engine.start().unwrap().tid.to_string();
    let err = engine
        .get(Some(&fresh), &["other".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, TxnError::Storage { .. }), "{err}");
}

/// Crash points: a commit that stopped after its data but before its record
/// is invisible after restart and its data is collected; one that stopped
/// right after its record is fully visible. (Paused time: the orphan sweep
/// waits on this node's own clock before it takes data for an orphan.)
#[tokio::test(start_paused = true)]
async fn crash_points_around_the_commit_record() {
    let inner = MemoryStorage::default();
    let faults = Arc::new(Faults::default());
    let faulty = Arc::new(FaultyStorage {
        inner: Arc::new(inner.clone()),
        faults: Arc::clone(&faults),
    });
    let config = EngineConfig {
        orphan_grace: Duration::ZERO,
        ..EngineConfig::default()
    };
    let engine = engine_over(faulty.clone(), config.clone()).await;
    let committed = commit_writes(&engine, &["a", "b"]).await;

    // "Crash" between data and record: simulate by storing a crashed
    // transaction's data with no record, as a dead sidecar would leave it.
    let crashed = uuid::Uuid::now_v7().to_string();
    for key in ["a", "b"] {
        inner
            .put(
                &aft::txn::keys::data_key_for_tid(&crashed, key),
                &payload(&crashed, key),
            )
            .await
            .unwrap();
    }
    drop(engine);

    let engine = engine_over(faulty, config.clone()).await;
    let reader = engine.start().unwrap().tid.to_string();
    for key in ["a", "b"] {
        assert_eq!(
            read_writer(&engine, &reader, key).await.as_deref(),
            Some(committed.as_str()),
            "after restart, {key} must show the committed transaction, never the crashed one"
        );
    }
    assert_eq!(
        engine.sweep_orphans().await,
        0,
        "a first sighting is not enough: the commit might still be writing its record"
    );
    // Still within the time a commit may take to write its record.
    tokio::time::advance(config.decision_timeout).await;
    assert_eq!(engine.sweep_orphans().await, 0, "seen too recently");
    // Past it (decision timeout + storage timeout + a storage call): an orphan.
    tokio::time::advance(config.storage_timeout * 2 + Duration::from_millis(1)).await;
    let deleted = engine.sweep_orphans().await;
    assert_eq!(
        deleted, 2,
        "orphaned data of the crashed commit must be collected"
    );
    let left = inner.scan_prefix(b"aft/d/").await.unwrap();
    assert!(
        left.iter()
            .all(|k| !String::from_utf8_lossy(k).contains(&crashed)),
        "{left:?}"
    );
}

#[tokio::test]
async fn gc_keeps_index_and_storage_flat_under_a_steady_workload() {
    let storage = MemoryStorage::default();
    let config = EngineConfig {
        retired_record_retention: Duration::ZERO,
        ..EngineConfig::default()
    };
    let engine = engine_over(Arc::new(storage.clone()), config).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut sizes = Vec::new();
    for round in 0..10 {
        for i in 0..200 {
            let tid = engine.start().unwrap().tid.to_string();
            let a = &keys[(i * 7 + round) % keys.len()];
            let b = &keys[(i * 13 + 1) % keys.len()];
            engine
                .get(Some(&tid), std::slice::from_ref(a))
                .await
                .unwrap();
            write_op(&engine, &tid, a);
            write_op(&engine, &tid, b);
            assert!(engine.commit(&tid).await.unwrap().is_committed());
        }
        engine.collect_garbage().await;
        tokio::time::sleep(Duration::from_millis(5)).await; // let publications land
        sizes.push((engine.index().size().1, storage.len()));
    }
    let (versions, stored) = *sizes.last().unwrap();
    assert!(versions <= keys.len(), "index grew: {sizes:?}");
    // per key: plain key + marker + newest version's data + at most one live commit record.
    assert!(stored <= keys.len() * 4, "storage grew: {sizes:?}");
    let early = sizes[..5].iter().map(|s| s.1).max().unwrap();
    let late = sizes[5..].iter().map(|s| s.1).max().unwrap();
    assert!(late <= early, "not flat: {sizes:?}");
}

/// A transaction none of whose versions remain keeps its commit record for
/// the retention, so a retried commit still answers COMMITTED; then it goes.
#[tokio::test(start_paused = true)]
async fn a_retired_commit_record_outlives_its_versions_for_the_retention() {
    let storage = MemoryStorage::default();
    let config = EngineConfig {
        retired_record_retention: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let engine = engine_over(Arc::new(storage.clone()), config.clone()).await;
    let first = commit_writes(&engine, &["r"]).await;
    commit_writes(&engine, &["r"]).await;
    engine.collect_garbage().await;
    let record = format!("aft/c/{first}");
    assert!(
        storage.get(record.as_bytes()).await.unwrap().is_some(),
        "kept for retries"
    );
    // A node that forgot the outcome (say, it restarted) still answers from it.
    let restarted = engine_over(Arc::new(storage.clone()), config).await;
    assert!(restarted.commit(&first).await.unwrap().is_committed());
    tokio::time::advance(Duration::from_secs(61)).await;
    engine.collect_garbage().await;
    assert!(
        storage.get(record.as_bytes()).await.unwrap().is_none(),
        "deleted after the retention"
    );
}

#[tokio::test]
async fn gc_never_removes_a_version_a_running_transaction_needs() {
    let (engine, _) = memory_engine().await;
    let t1 = commit_writes(&engine, &["x", "y"]).await;
    let reader = engine.start().unwrap().tid.to_string();
    assert_eq!(
        read_writer(&engine, &reader, "x").await.as_deref(),
        Some(t1.as_str())
    );
    for _ in 0..5 {
        commit_writes(&engine, &["x", "y"]).await;
        engine.collect_garbage().await;
    }
    assert_eq!(
        read_writer(&engine, &reader, "y").await.as_deref(),
        Some(t1.as_str())
    );
    engine.abort(&reader);
    engine.collect_garbage().await;
    assert_eq!(engine.index().size(), (2, 2));
}

/// Random interleavings of many concurrent transactions over few keys, with
/// commits, aborts and GC: every history is read-atomic.
mod interleavings {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Action {
        Read(usize),
        Write(usize),
        Commit,
        Abort,
        Gc,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (0..4usize).prop_map(Action::Read),
            3 => (0..4usize).prop_map(Action::Write),
            2 => Just(Action::Commit),
            1 => Just(Action::Abort),
            1 => Just(Action::Gc),
        ]
    }

    struct Actor {
        tid: String,
        ops: Vec<Op>,
    }

    async fn run(steps: Vec<(usize, Action)>) -> Vec<TxnRecord> {
        let (engine, _) = memory_engine().await;
        let mut actors: HashMap<usize, Actor> = HashMap::new();
        let mut history = Vec::new();
        let key = |k: usize| format!("k{k}");
        for (who, action) in steps {
            if matches!(action, Action::Gc) {
                engine.collect_garbage().await;
                continue;
            }
            let actor = actors.entry(who).or_insert_with(|| Actor {
                tid: engine.start().unwrap().tid.to_string(),
                ops: Vec::new(),
            });
            match action {
                Action::Read(k) => actor.ops.push(read_op(&engine, &actor.tid, &key(k)).await),
                Action::Write(k) => actor.ops.push(write_op(&engine, &actor.tid, &key(k))),
                Action::Commit | Action::Abort => {
                    let actor = actors.remove(&who).unwrap();
                    let outcome = if matches!(action, Action::Commit) {
                        engine.commit(&actor.tid).await.unwrap()
                    } else {
                        engine.abort(&actor.tid)
                    };
                    history.push(record(actor, outcome));
                }
                Action::Gc => {}
            }
        }
        for (_, actor) in actors {
            let outcome = engine.commit(&actor.tid).await.unwrap();
            history.push(record(actor, outcome));
        }
        history
    }

    fn record(actor: Actor, outcome: Outcome) -> TxnRecord {
        let (status, ts) = match outcome {
            Outcome::Committed { timestamp } => (Status::Committed, Some(timestamp)),
            Outcome::Aborted { .. } => (Status::Aborted, None),
            Outcome::Unknown { .. } => (Status::Unknown, None),
        };
        TxnRecord {
            id: actor.tid,
            status,
            commit_timestamp: ts,
            commit_window: None,
            ops: actor.ops,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn every_history_is_read_atomic(steps in prop::collection::vec((0..6usize, action()), 1..120)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let history = rt.block_on(run(steps));
            let anomalies = check(&history);
            prop_assert!(anomalies.is_empty(), "anomalies: {:?}", anomalies);
        }
    }
}
