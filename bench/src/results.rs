//! The results of a run (written as JSON) and the ratios derived from them.

use std::collections::BTreeMap;

use aft::history::Anomaly;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Name of the results file.
    pub name: String,
    /// The exact command line that produced them.
    pub command: String,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall time of the whole run, seconds.
    pub duration_secs: f64,
    /// Whether the time limit cut rounds short.
    pub truncated: bool,
    /// Facts about the machine.
    pub machine: Machine,
    /// Settings of the run.
    pub config: RunConfig,
    /// The workloads measured.
    pub workloads: Vec<WorkloadInfo>,
    /// One entry per (workload, clients).
    pub cells: Vec<CellResult>,
    /// History-checker findings per key space.
    pub anomalies: Vec<AnomalyResult>,
    /// The delay proxy measured by itself (Redis PING through it vs direct).
    pub proxy: Option<ProxyCalibration>,
    /// Headline ratios.
    pub ratios: Vec<Ratio>,
    /// What happened with the multi-node workloads.
    pub multi_node: MultiNodeStatus,
    /// Anything worth knowing when reading the numbers.
    pub notes: Vec<String>,
}

/// Settings of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// Workload parameters.
    pub params: ParamsRecord,
    /// Client counts.
    pub clients: Vec<usize>,
    /// Rounds run (or planned, if truncated).
    pub rounds: usize,
    /// Rounds completed.
    pub rounds_completed: usize,
    /// Slice length, seconds.
    pub slice_secs: f64,
    /// Warm-up slice length, seconds.
    pub warmup_secs: f64,
    /// Delay added by the proxy in each direction, microseconds.
    pub delay_us: u64,
    /// Whether Redis ran with AOF + appendfsync always.
    pub redis_aof: bool,
    /// The sidecar binary.
    pub sidecar: String,
    /// Whether the run was the quick smoke preset.
    pub quick: bool,
    /// How the network hop was simulated.
    pub network: String,
}

/// The workload parameters as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamsRecord {
    /// Keys per key space.
    pub keys: usize,
    /// Zipf exponent.
    pub zipf: f64,
    /// Value size, bytes.
    pub value_bytes: usize,
    /// Functions per DAG.
    pub functions: usize,
    /// Reads per function.
    pub reads_per_function: usize,
    /// Writes per function.
    pub writes_per_function: usize,
    /// Whether `continue` is called on the same node.
    pub continue_same_node: bool,
    /// Reads per transaction of the cached-read workload.
    pub reads_per_txn: usize,
    /// IPC round trips of one DAG.
    pub ipc_round_trips: usize,
    /// Redis round trips of one direct DAG.
    pub redis_round_trips: usize,
}

/// What one workload is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// Short name (`sidecar-redis-dag`).
    pub name: String,
    /// What it measures.
    pub title: String,
    /// What one operation is: `request`, `DAG` or `PING`.
    pub unit: String,
}

/// A latency summary, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarizes a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        Summary {
            count: h.len(),
            mean: round1(h.mean() / 1000.0),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// Points of a latency CDF: (latency µs, fraction of operations at or below).
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut quantiles: Vec<f64> = (0..18).map(|i| f64::from(i) * 0.05).collect();
    quantiles.extend([
        0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0,
    ]);
    quantiles
        .into_iter()
        .map(|q| (round1(h.value_at_quantile(q) as f64 / 1000.0), q))
        .collect()
}

/// `results` as pretty JSON with every array of plain numbers on one line
/// (the CDF points would otherwise take five lines each).
pub fn to_json(results: &Results) -> anyhow::Result<String> {
    Ok(collapse_number_arrays(&serde_json::to_string_pretty(
        results,
    )?))
}

/// Puts every `[...]` that holds only numbers on one line.
pub fn collapse_number_arrays(pretty: &str) -> String {
    let mut out = String::with_capacity(pretty.len());
    let mut rest = pretty;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(']');
        let numeric = close.is_some_and(|c| {
            after[..c]
                .chars()
                .all(|ch| ch.is_ascii_digit() || ch.is_whitespace() || ",.-+eE".contains(ch))
        });
        match close {
            Some(c) if numeric => {
                let items: Vec<&str> = after[..c]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                out.push('[');
                out.push_str(&items.join(", "));
                out.push(']');
                rest = &after[c + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `v` rounded to one decimal (keeps the JSON small and readable).
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Throughput of a cell, operations per second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// All operations over all measured wall time.
    pub mean: f64,
    /// Slowest round.
    pub min: f64,
    /// Fastest round.
    pub max: f64,
}

/// One (workload, clients) cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    /// Workload name.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations measured.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Commits answered ABORTED.
    pub aborts: u64,
    /// The first failure seen.
    pub first_error: Option<String>,
    /// Operation latency, µs.
    pub latency_us: Summary,
    /// Throughput.
    pub throughput: Throughput,
    /// Median latency of each round, µs (how much rounds differ: the noise).
    pub round_p50_us: Vec<f64>,
    /// Throughput of each round.
    pub round_throughput: Vec<f64>,
    /// Latency of each step of a DAG, µs.
    pub steps_us: BTreeMap<String, Summary>,
    /// Latency CDF points (µs, fraction).
    pub cdf: Vec<(f64, f64)>,
    /// What one committed operation cost the workload's sidecars (absent
    /// for workloads without a sidecar, and in results of older runs).
    #[serde(default)]
    pub cost: Option<crate::cost::CellCost>,
}

/// Anomalies found in one key space's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnomalyResult {
    /// The key space.
    pub key_space: String,
    /// Workloads that ran on it.
    pub workloads: Vec<String>,
    /// Whether it ran through the sidecar (0 anomalies expected).
    pub through_sidecar: bool,
    /// Transactions in the history (loaders and warm-up included).
    pub transactions: usize,
    /// Committed ones.
    pub committed: usize,
    /// Aborted ones.
    pub aborted: usize,
    /// Ones whose outcome the client never learned.
    pub unknown: usize,
    /// All anomalies.
    pub total: usize,
    /// Fractured reads.
    pub fractured_reads: usize,
    /// Reads of aborted writes.
    pub aborted_reads: usize,
    /// Reads of not yet committed writes.
    pub uncommitted_reads: usize,
    /// Read-your-writes violations.
    pub read_your_writes: usize,
    /// Anomalies by the reader's client count (warm-up readers count under "warmup").
    pub by_clients: BTreeMap<String, usize>,
    /// A few examples.
    pub examples: Vec<String>,
}

impl AnomalyResult {
    /// Counts `anomalies` by kind.
    pub fn count(&mut self, anomalies: &[Anomaly]) {
        self.total = anomalies.len();
        for a in anomalies {
            match a {
                Anomaly::FracturedRead { .. } => self.fractured_reads += 1,
                Anomaly::AbortedRead { .. } => self.aborted_reads += 1,
                Anomaly::UncommittedRead { .. } => self.uncommitted_reads += 1,
                Anomaly::ReadYourWrites { .. } => self.read_your_writes += 1,
            }
        }
        self.examples = anomalies.iter().take(3).map(|a| a.to_string()).collect();
    }
}

/// The delay proxy measured by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyCalibration {
    /// Configured delay each way, µs.
    pub delay_us_each_way: u64,
    /// PING straight to Redis, p50 µs.
    pub direct_ping_p50_us: f64,
    /// PING through the proxy, p50 µs.
    pub proxied_ping_p50_us: f64,
    /// PING through the proxy, p99 µs.
    pub proxied_ping_p99_us: f64,
    /// What the proxy adds to a round trip at p50, µs (ideal: 2 × delay).
    pub added_rtt_p50_us: f64,
}

/// A ratio of two measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    /// Stable identifier.
    pub id: String,
    /// What it compares.
    pub description: String,
    /// The ratio (`None` when a side was not measured).
    pub value: Option<f64>,
    /// The goal, as text (`<= 1.5`), empty when there is none.
    pub goal: String,
    /// The numerator, as measured.
    pub numerator: String,
    /// The denominator, as measured.
    pub denominator: String,
    /// Client count of the cells compared.
    pub clients: usize,
}

/// Multi-node outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MultiNodeStatus {
    /// `ran`, `ran with errors` or `not selected` (results of older runs
    /// may say `skipped`).
    pub status: String,
    /// Why it did not simply run: the first failure (or, in older results,
    /// why it was skipped).
    pub reason: Option<String>,
    /// Sidecar counts run.
    pub nodes: Vec<usize>,
    /// `spread` (each DAG's functions on different nodes) or `local`
    /// (each DAG on one node, DAGs spread over the nodes).
    #[serde(default)]
    pub placement: String,
}

impl Results {
    /// The cell of `workload` with `clients` clients.
    pub fn cell(&self, workload: &str, clients: usize) -> Option<&CellResult> {
        self.cells
            .iter()
            .find(|c| c.workload == workload && c.clients == clients && c.ops > 0)
    }

    /// Client count used for latency headlines: the smallest measured.
    pub fn latency_clients(&self) -> usize {
        self.config.clients.first().copied().unwrap_or(1)
    }

    /// Client count used for throughput headlines: the largest measured.
    pub fn throughput_clients(&self) -> usize {
        self.config.clients.last().copied().unwrap_or(1)
    }

    /// The ratios at the given client counts: every row of
    /// [`crate::ratios::RATIOS`] that applies, in order, then the anomaly
    /// counts.
    pub fn ratios_at(&self, lat: usize, tput: usize) -> Vec<Ratio> {
        let mut out: Vec<Ratio> = crate::ratios::RATIOS
            .iter()
            .filter_map(|def| def.evaluate(self, lat, tput))
            .collect();
        out.push(crate::ratios::anomaly_counts(self));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::collapse_number_arrays;

    #[test]
    fn number_arrays_go_on_one_line() {
        let pretty = "{\n  \"a\": [\n    [\n      1.5,\n      0.25\n    ],\n    [\n      2,\n      1\n    ]\n  ],\n  \"b\": [\n    \"x\"\n  ]\n}";
        let text = collapse_number_arrays(pretty);
        assert!(
            text.contains("[1.5, 0.25]") && text.contains("[2, 1]"),
            "{text}"
        );
        assert!(text.contains("\"x\""));
        let v: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(v["a"][0][1], 0.25);
    }
}
