//! `aft-bench memory`: what a sidecar holds in memory per committed key.
//!
//! Starts one sidecar over a fresh Redis (so the store's memory is not the
//! sidecar's) with a bounded value cache, measures its resident set size
//! idle, then commits `keys` distinct keys (small values, `keys_per_commit`
//! in each transaction, from several client threads) and measures again
//! once the index holds them all. Index bytes per key = (RSS growth - value
//! cache bytes) / keys: an upper bound, since the allocator's own overhead
//! and the commit metadata shared by a commit's keys are counted in.

use std::path::Path;
use std::time::{Duration, Instant};

use aft::client::{lww_payload, IpcClient};
use anyhow::{bail, Context as _};

use crate::cost::{counter, rss_bytes, scrape};
use crate::procs::{sidecar_spec, start_redis, start_sidecar};

/// One memory measurement.
#[derive(Debug, Clone)]
pub struct MemoryFigures {
    /// Distinct committed keys.
    pub keys: u64,
    /// Keys per committed transaction.
    pub keys_per_commit: u64,
    /// Resident set size before loading, bytes.
    pub rss_idle: u64,
    /// Resident set size with every key committed, bytes.
    pub rss_loaded: u64,
    /// Bytes the value cache held at the end (bounded by `--cache-bytes`).
    pub cache_bytes: u64,
    /// Versions in the index at the end.
    pub index_versions: u64,
    /// Seconds loading took.
    pub load_secs: f64,
}

impl MemoryFigures {
    /// Index (and everything else but the cache) bytes per committed key.
    pub fn index_bytes_per_key(&self) -> f64 {
        let growth = self.rss_loaded.saturating_sub(self.rss_idle) as f64 - self.cache_bytes as f64;
        growth.max(0.0) / self.keys.max(1) as f64
    }
}

/// Loads `keys` keys into a fresh sidecar with `cache_bytes` of cache.
pub fn measure(
    binary: &Path,
    redis_binary: &str,
    keys: u64,
    keys_per_commit: u64,
    cache_bytes: u64,
    dir: &Path,
) -> anyhow::Result<MemoryFigures> {
    let redis = start_redis(redis_binary, false)?;
    let ipc = dir.join("ipc");
    let mut spec = sidecar_spec(binary, &ipc, &redis.url(), &dir.join("sidecar.log"))
        .args(&["--cache-bytes".to_string(), cache_bytes.to_string()]);
    spec.timeout = Duration::from_secs(30);
    let sidecar = start_sidecar(&spec)?;
    let metrics = sidecar
        .metrics_addr()
        .context("the sidecar announced no metrics endpoint")?;
    let pid = sidecar.pid();
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_bytes(pid).context("cannot read the sidecar's RSS")?;
    let started = Instant::now();
    let threads = 4u64;
    let per_thread = keys.div_ceil(threads);
    let loaders: Vec<_> = (0..threads)
        .map(|t| {
            let ipc = ipc.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let client = IpcClient::connect(&ipc, 9000 + t as u32, Duration::from_secs(10))?;
                let first = t * per_thread;
                let last = (first + per_thread).min(keys);
                let mut next = first;
                while next < last {
                    let tid = client.start()?.id;
                    let end = (next + keys_per_commit).min(last);
                    let writes: Vec<(String, Vec<u8>)> = (next..end)
                        .map(|k| (format!("mem:{k:08}"), lww_payload(1, b"0123456789abcdef")))
                        .collect();
                    let refs: Vec<(&str, Vec<u8>)> = writes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect();
                    client.put(Some(&tid), &refs)?;
                    let status = client.commit(&tid, &[])?.status;
                    if status != aft::proto::aft::TransactionStatus::Committed {
                        bail!("a loading transaction did not commit: {status:?}");
                    }
                    next = end;
                }
                Ok(())
            })
        })
        .collect();
    for loader in loaders {
        loader
            .join()
            .map_err(|_| anyhow::anyhow!("a loader thread panicked"))??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    // Let background work (GC passes) settle before reading.
    std::thread::sleep(Duration::from_secs(2));
    let text = scrape(metrics).context("cannot read the sidecar's metrics")?;
    let gauge = |name: &str| counter(&text, name).unwrap_or(0.0) as u64;
    let figures = MemoryFigures {
        keys,
        keys_per_commit,
        rss_idle,
        rss_loaded: rss_bytes(pid).context("cannot read the sidecar's RSS")?,
        cache_bytes: gauge("aft_cache_bytes"),
        index_versions: gauge("aft_index_versions"),
        load_secs,
    };
    drop(sidecar);
    drop(redis);
    Ok(figures)
}
