//! A bounded soak (not part of the default suite: run with
//! `cargo test --release -p aft-sidecar --test soak -- --ignored --nocapture`,
//! `AFT_SOAK_SECS` seconds, default 300): the benchmark's DAG workload
//! (1,000 keys, Zipf-like skew, 4 KB values) against one sidecar over Redis,
//! sampling the sidecar's resident memory. Memory must stay flat: GC keeps
//! the index, the cache is bounded, finished transactions are forgotten.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::{lww_payload, IpcClient};
use aft_testkit::redis::RedisServer;
use aft_testkit::sidecar::Sidecar;
use rand::{RngExt, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "minutes long: run explicitly (see the module doc)"]
fn memory_stays_flat_under_a_steady_workload() {
    let secs: u64 = std::env::var("AFT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ipc = dir.path().join("ipc");
    let url = redis.url();
    let sidecar = Sidecar::start(
        Path::new(BIN),
        &ipc,
        &[
            "--storage",
            &url,
            "--metrics-addr",
            "off",
            "--cache-bytes",
            "67108864",
        ],
    );
    let pid = sidecar.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let dags = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for thread in 0..8u32 {
        let (ipc, stop, dags) = (ipc.clone(), Arc::clone(&stop), Arc::clone(&dags));
        workers.push(std::thread::spawn(move || {
            let c = IpcClient::connect(&ipc, thread, Duration::from_secs(5)).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(thread));
            let value = lww_payload(1, &[7u8; 4096]);
            // Skewed keys: the square of a uniform draw favours low ids.
            let mut key = move || {
                let u: f64 = rng.random();
                format!("soak{}", (u * u * 1000.0) as u32)
            };
            while !stop.load(Ordering::Relaxed) {
                let tid = c.start().unwrap().id;
                for _ in 0..2 {
                    let (a, b, w) = (key(), key(), key());
                    c.get(Some(&tid), &[&a]).unwrap();
                    c.get(Some(&tid), &[&b]).unwrap();
                    c.put(Some(&tid), &[(&w, value.clone())]).unwrap();
                }
                c.commit(&tid, &[]).unwrap();
                dags.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        samples.push(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let peak = samples.iter().copied().max().unwrap_or(0);
    let third = samples.len() / 3;
    let middle = samples[third..2 * third].iter().copied().max().unwrap_or(0);
    let last = samples[2 * third..].iter().copied().max().unwrap_or(0);
    println!(
        "soak report: {secs} s, {} DAGs ({:.0}/s), sidecar RSS samples (KiB) {:?}, peak {} KiB, middle third max {} KiB, last third max {} KiB",
        dags.load(Ordering::Relaxed),
        dags.load(Ordering::Relaxed) as f64 / secs as f64,
        samples,
        peak,
        middle,
        last
    );
    assert!(
        last <= middle + middle / 5,
        "memory grew: middle {middle} KiB, last {last} KiB"
    );
}
