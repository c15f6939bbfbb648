//! Micro-benchmarks of the engine's in-memory path: `aft::txn::Engine` over
//! `aft::storage::MemoryStorage`, no IPC, no storage round trips.
//!
//! - `cached_read/repeat`: a transactional read of a key the transaction
//!   already read (read set hit, value from the cache);
//! - `cached_read/first`: the first read of a key in a transaction (runs
//!   the read rule, records the read set, value from the cache);
//! - `buffered_put`: a one-key 4 KB put into the transaction's buffer;
//! - `read_selection/engine/N`: first read of a key with N committed
//!   versions, the reader holding a lower bound on it (binary search);
//! - `read_selection/rule/N`: the read rule alone on the same index;
//! - `read_selection/rule_worst/N`: the read rule when the upper bound
//!   rejects every newer version (each of the N versions' transactions
//!   also wrote a key the reader read at its oldest version), a scan.
//!
//! Reads are driven by a current-thread tokio runtime's `block_on` (a cached
//! read never awaits); its overhead is included. `iter_custom` times only
//! the call measured (`start`/`abort` around it are not timed).
//!
//! Run: `cargo bench -p aft-bench --bench engine`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::lww_payload;
use aft::meta::Version;
use aft::metrics::Metrics;
use aft::storage::{MemoryStorage, StorageOptions};
use aft::txn::read_rule::{select_version, Selection};
use aft::txn::{Engine, EngineConfig};
use aft_testkit::tagged::tag_of_size as tagged_value;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn engine(rt: &Runtime) -> Arc<Engine> {
    rt.block_on(Engine::open(
        Arc::new(MemoryStorage::new(StorageOptions::default())),
        EngineConfig::default(),
        Metrics::new(),
        None,
    ))
    .expect("engine over memory storage")
}

fn payload(writer: &str, key: &str) -> Bytes {
    Bytes::from(lww_payload(1, &tagged_value(writer, key, 4096)))
}

/// Commits one transaction writing `keys`.
fn commit(rt: &Runtime, engine: &Engine, keys: &[String]) {
    let tid = engine.start().expect("start").tid;
    let writes = keys.iter().map(|k| (k.clone(), payload(&tid, k))).collect();
    engine.put(&tid, writes).expect("put");
    let outcome = rt.block_on(engine.commit(&tid)).expect("commit");
    assert!(outcome.is_committed(), "commit of {tid}: {outcome:?}");
}

fn read(rt: &Runtime, engine: &Engine, tid: &str, keys: &[String]) {
    let values = rt.block_on(engine.get(Some(tid), keys)).expect("read");
    assert!(values[0].value.is_some(), "a committed value");
    black_box(values);
}

fn cached_reads(c: &mut Criterion) {
    let rt = runtime();
    let engine = engine(&rt);
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    for pair in keys.chunks(2) {
        commit(&rt, &engine, pair);
    }
    let hot = vec![keys[7].clone()];
    let mut group = c.benchmark_group("cached_read");
    group.bench_function("repeat", |b| {
        let tid = engine.start().expect("start").tid;
        read(&rt, &engine, &tid, &hot);
        b.iter(|| read(&rt, &engine, &tid, &hot));
        engine.abort(&tid);
    });
    group.bench_function("first", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tid = engine.start().expect("start").tid;
                let started = Instant::now();
                read(&rt, &engine, &tid, &hot);
                total += started.elapsed();
                engine.abort(&tid);
            }
            total
        });
    });
    group.finish();

    c.bench_function("buffered_put", |b| {
        let tid = engine.start().expect("start").tid;
        let key = keys[3].clone();
        let value = payload(&tid, &key);
        b.iter(|| {
            engine
                .put(&tid, vec![(key.clone(), value.clone())])
                .expect("put");
        });
        engine.abort(&tid);
    });
}

/// The newest version of `key` in the index.
fn newest(engine: &Engine, key: &str) -> Version {
    let view = engine.index().view();
    view.versions(key)
        .last()
        .map(|e| e.version.clone())
        .expect("a committed version")
}

fn read_selection(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("read_selection");
    group.measurement_time(Duration::from_secs(2));
    for n in [1usize, 10, 100, 1_000, 10_000] {
        // Typical: transaction i writes `hot` and `w-i`. The reader read
        // `w-mid` first, so its lower bound on `hot` is version mid.
        let engine = engine(&rt);
        for i in 0..n {
            commit(&rt, &engine, &["hot".to_string(), format!("w-{i}")]);
        }
        let mid = format!("w-{}", n / 2);
        let hot = vec!["hot".to_string()];
        group.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let tid = engine.start().expect("start").tid;
                    read(&rt, &engine, &tid, std::slice::from_ref(&mid));
                    let started = Instant::now();
                    read(&rt, &engine, &tid, &hot);
                    total += started.elapsed();
                    engine.abort(&tid);
                }
                total
            });
        });
        let bound = newest(&engine, &mid);
        let reads: BTreeMap<String, Version> = [(mid.clone(), bound.clone())].into();
        let lower: BTreeMap<String, Version> =
            [("hot".to_string(), bound.clone()), (mid.clone(), bound)].into();
        group.bench_with_input(BenchmarkId::new("rule", n), &n, |b, _| {
            let view = engine.index().view();
            b.iter(|| {
                let s = select_version(&view, black_box("hot"), &reads, &lower);
                assert!(matches!(s, Selection::Version(_)));
                black_box(s)
            });
        });

        // Worst case: every transaction wrote `hot` and `shared`; the
        // reader read `shared` at the oldest version, so every newer `hot`
        // would fracture it and the rule walks down to the oldest.
        let worst = self::engine(&rt);
        for _ in 0..n {
            commit(&rt, &worst, &["hot".to_string(), "shared".to_string()]);
        }
        let oldest = {
            let view = worst.index().view();
            view.versions("shared")
                .first()
                .map(|e| e.version.clone())
                .expect("a committed version")
        };
        let reads: BTreeMap<String, Version> = [("shared".to_string(), oldest.clone())].into();
        let lower: BTreeMap<String, Version> = [
            ("hot".to_string(), oldest.clone()),
            ("shared".to_string(), oldest),
        ]
        .into();
        group.bench_with_input(BenchmarkId::new("rule_worst", n), &n, |b, _| {
            let view = worst.index().view();
            b.iter(|| {
                let s = select_version(&view, black_box("hot"), &reads, &lower);
                assert!(matches!(s, Selection::Version(_)));
                black_box(s)
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = cached_reads, read_selection
}
criterion_main!(benches);
