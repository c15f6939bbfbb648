//! Command-line interface of `aft-bench`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::workload::WorkloadParams;

/// aft-bench: load generator for aft-sidecar, with its baselines measured in
/// the same run (raw ZeroMQ echo, direct Redis), interleaved.
#[derive(Debug, Parser)]
#[command(
    name = "aft-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A helper process (started by the benchmark itself).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Benchmark settings (when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Helper processes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Raw ZeroMQ echo server speaking the executor protocol with no work behind it.
    EchoServer(EchoArgs),
    /// User-space TCP proxy adding a fixed delay in each direction.
    DelayProxy(ProxyArgs),
    /// Time from a commit on one node to its visibility on another.
    Staleness(StalenessArgs),
    /// Sidecar memory (RSS) per committed key, index and bounded cache.
    Memory(MemoryArgs),
}

/// Flags of `aft-bench memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Distinct keys to commit, per measurement (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub keys: Vec<u64>,
    /// Keys written by each loading transaction.
    #[arg(long, default_value_t = 100)]
    pub keys_per_commit: u64,
    /// The sidecar's `--cache-bytes`.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// The `aft-sidecar` binary (default: next to this one).
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
    /// The `redis-server` binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
}

/// Flags of `aft-bench staleness`.
#[derive(Debug, Args)]
pub struct StalenessArgs {
    /// Number of commits measured.
    #[arg(long, default_value_t = 300)]
    pub samples: u64,
    /// The `aft-sidecar` binary (default: next to this one).
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
    /// The `redis-server` binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
}

/// Flags of `aft-bench echo-server`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Directory of the endpoint sockets.
    #[arg(long)]
    pub ipc_dir: PathBuf,
    /// Bytes of the value in each get reply.
    #[arg(long, default_value_t = 4096)]
    pub reply_bytes: usize,
    /// Node address answered by start.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_address: String,
}

/// Flags of `aft-bench delay-proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address to forward to (must be on this machine).
    #[arg(long)]
    pub target: String,
    /// Delay added in each direction, microseconds.
    #[arg(long, default_value_t = 250)]
    pub delay_us: u64,
    /// Spin (instead of sleeping) for the last microseconds before each deadline.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
}

/// Flags of a benchmark run.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Smoke preset for CI (< 30 s): few keys, short slices, one round, clients 1 and 4.
    #[arg(long)]
    pub quick: bool,
    /// Name of the results (bench/results/<name>.json, plots <name>-*.svg).
    #[arg(long)]
    pub name: Option<String>,
    /// Directory of the JSON results and plots.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// Markdown report to (re)write between its generated-section markers ("off": none).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
    /// The aft-sidecar binary (default: next to this binary).
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// Redis with AOF and appendfsync always (default: in memory, no persistence).
    #[arg(long)]
    pub redis_aof: bool,
    /// Client counts to run every workload with (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Rounds (each runs every cell once, order alternating).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds of one slice (one cell in one round).
    #[arg(long)]
    pub slice_secs: Option<f64>,
    /// Most operations in one slice (all clients together).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_ops_per_slice: u64,
    /// Seconds of the unrecorded warm-up slice of each workload.
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Stop starting rounds after this many seconds (the run stays bounded).
    #[arg(long, default_value_t = 540.0)]
    pub time_limit_secs: f64,
    /// Only these workloads (comma-separated names; see the report for the list). `sidecar-dynamodb-net-dag` and `sidecar-s3-net-dag` run only when named here.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Skip the multi-node workloads.
    #[arg(long)]
    pub no_multi_node: bool,
    /// Sidecar counts of the multi-node workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub nodes: Vec<usize>,
    /// Multi-node placement: spread (a DAG's functions on different nodes) or local (whole DAGs on one node each).
    #[arg(long, default_value = "spread")]
    pub placement: String,
    /// Keys in each workload's key space.
    #[arg(long)]
    pub keys: Option<usize>,
    /// Zipf exponent of key popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 4096)]
    pub value_bytes: usize,
    /// Functions per DAG.
    #[arg(long, default_value_t = 2)]
    pub functions: usize,
    /// Reads per function.
    #[arg(long, default_value_t = 2)]
    pub reads_per_function: usize,
    /// Writes per function.
    #[arg(long, default_value_t = 1)]
    pub writes_per_function: usize,
    /// Skip `continue` when the downstream function runs on the same node (as Cloudburst does).
    #[arg(long)]
    pub no_continue_same_node: bool,
    /// Reads per transaction in the cached-read workload.
    #[arg(long, default_value_t = 50)]
    pub reads_per_txn: usize,
    /// Keys per loader transaction.
    #[arg(long, default_value_t = 2)]
    pub load_batch: usize,
    /// Delay the proxy adds in each direction, microseconds.
    #[arg(long, default_value_t = 250)]
    pub delay_us: u64,
    /// Proxy spin time before each deadline, microseconds.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// Client timeout for every IPC wait, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run every sidecar under this command (e.g. "valgrind --tool=callgrind"), split on spaces.
    #[arg(long)]
    pub sidecar_wrapper: Option<String>,
    /// Seconds to wait for a sidecar to be ready.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout_secs: u64,
    /// Don't draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Only re-render plots and report from saved JSON results (no run).
    #[arg(long)]
    pub render: Option<PathBuf>,
}

impl RunArgs {
    /// The results' name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            if self.quick {
                "quick".into()
            } else {
                "latest".into()
            }
        })
    }

    /// Client counts (default 1,2,4,8; quick: 1,4).
    pub fn client_counts(&self) -> Vec<usize> {
        let mut counts = self.clients.clone().unwrap_or_else(|| {
            if self.quick {
                vec![1, 4]
            } else {
                vec![1, 2, 4, 8]
            }
        });
        counts.retain(|c| *c > 0);
        counts.sort_unstable();
        counts.dedup();
        if counts.is_empty() {
            counts.push(1);
        }
        counts
    }

    /// Rounds (default 6; quick: 1).
    pub fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 1 } else { 6 }).max(1)
    }

    /// Slice length (default 1 s; quick: 0.4 s).
    pub fn slice(&self) -> std::time::Duration {
        let secs = self
            .slice_secs
            .unwrap_or(if self.quick { 0.4 } else { 1.0 });
        std::time::Duration::from_secs_f64(secs.clamp(0.01, 600.0))
    }

    /// Warm-up slice length (default 1 s; quick: 0.2 s).
    pub fn warmup(&self) -> std::time::Duration {
        let secs = self
            .warmup_secs
            .unwrap_or(if self.quick { 0.2 } else { 1.0 });
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 600.0))
    }

    /// The workload parameters.
    pub fn params(&self) -> WorkloadParams {
        WorkloadParams {
            keys: self.keys.unwrap_or(if self.quick { 100 } else { 1000 }),
            zipf: self.zipf,
            value_bytes: self.value_bytes,
            functions: self.functions,
            reads_per_function: self.reads_per_function,
            writes_per_function: self.writes_per_function,
            continue_same_node: !self.no_continue_same_node,
            reads_per_txn: self.reads_per_txn,
            load_batch: self.load_batch,
        }
    }
}
