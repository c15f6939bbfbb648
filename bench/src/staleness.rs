//! `aft-bench staleness`: how long after a commit on one node a transaction
//! on another node sees it (commit-metadata gossip), measured with real
//! sidecars sharing one Redis.
//!
//! Each sample commits a fresh value of one key through node 1, then polls
//! node 2 with new transactions (a read each) until the value shows, and
//! records the time from the commit's acknowledgement to the first read
//! that saw it. Samples are sequential and bounded in count and time.

use std::path::Path;
use std::time::{Duration, Instant};

use aft::client::{lww_payload, IpcClient};
use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;

use aft_testkit::cluster::{free_peer_port, node_args};

use crate::procs::{sidecar_spec, start_redis, start_sidecar};

/// Staleness figures, microseconds.
#[derive(Debug, Clone)]
pub struct Staleness {
    /// Samples taken.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Worst.
    pub max_us: u64,
}

/// Runs `samples` measurements with two sidecars (`binary`) over a fresh Redis.
pub fn measure(
    binary: &Path,
    redis_binary: &str,
    samples: u64,
    dir: &Path,
) -> anyhow::Result<Staleness> {
    let redis = start_redis(redis_binary, false)?;
    let peer_port = free_peer_port(2);
    let storage = redis.url();
    let node = |i: usize| -> anyhow::Result<_> {
        let ipc = dir.join(format!("stale-node{}", i + 1));
        let log = dir.join(format!("stale-node{}.log", i + 1));
        let spec = sidecar_spec(binary, &ipc, &storage, &log).args(&node_args(i, 2, peer_port));
        Ok(start_sidecar(&spec)?)
    };
    let _n1 = node(0)?;
    let _n2 = node(1)?;
    let writer = IpcClient::connect(&dir.join("stale-node1"), 0, Duration::from_secs(5))?;
    let reader = IpcClient::connect(&dir.join("stale-node2"), 0, Duration::from_secs(5))?;
    // Let membership settle (heartbeats) before measuring.
    std::thread::sleep(Duration::from_millis(1500));
    let mut histogram = Histogram::<u64>::new(3).context("histogram")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..samples {
        if Instant::now() > deadline {
            break;
        }
        let value = lww_payload(i + 1, format!("v{i}").as_bytes());
        let tid = writer.start()?.id;
        writer.put(Some(&tid), &[("stale-key", value.clone())])?;
        writer.commit(&tid, &[])?;
        let committed = Instant::now();
        loop {
            let t = reader.start()?.id;
            let seen = reader.get(Some(&t), &["stale-key"])?;
            reader.abort(&t)?;
            if seen.first().and_then(Option::as_ref) == Some(&value) {
                break;
            }
            if committed.elapsed() > Duration::from_secs(10) {
                bail!("node 2 did not see a commit within 10 s");
            }
        }
        let micros = u64::try_from(committed.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.record(micros.max(1)).context("record")?;
    }
    Ok(Staleness {
        samples: histogram.len(),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    })
}
