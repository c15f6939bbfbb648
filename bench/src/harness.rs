//! One benchmark run: starts the processes, fills the key spaces, warms up,
//! runs the interleaved rounds, checks the histories, and returns the
//! [`Results`].
//!
//! Targets and the workloads on them:
//!
//! | target | process | workloads |
//! | --- | --- | --- |
//! | `echo` | `aft-bench echo-server` | `echo-get`, `echo-dag` |
//! | `redis` | `redis-server` on loopback | `redis-dag`, `ping-direct` |
//! | `redis-net` | the same server behind `aft-bench delay-proxy` | `redis-net-dag`, `ping-net` |
//! | `sd-file` | `aft-sidecar --storage file://` | `sidecar-get`, `sidecar-file-dag` |
//! | `sd-redis` | `aft-sidecar --storage redis://` (loopback) | `sidecar-redis-dag` |
//! | `sd-net` | `aft-sidecar --storage redis://` (through the proxy) | `sidecar-redis-net-dag` |
//! | `sd-dynamodb` | `aft-sidecar --storage dynamodb://` (moto, through a proxy) | `sidecar-dynamodb-net-dag` |
//! | `sd-s3` | `aft-sidecar --storage s3://` (SeaweedFS, through a proxy) | `sidecar-s3-net-dag` |
//! | `multi` | 3 × `aft-sidecar` sharing the loopback Redis, peers | `multi-node-1/2/3` |
//!
//! Every workload has its own key space (a key prefix), so workloads sharing
//! a Redis server never read each other's keys, and each key space's history
//! is checked on its own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aft::client::IpcClient;
use aft::history::{check, Status, TxnRecord};
use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::RunArgs;
use crate::cost::{CellCost, Probe, Sample};
use crate::machine::{load_average, Machine};
use crate::procs::{
    start_echo, start_proxy, start_sidecar, ChildProcess, RedisProcess, SidecarSpec,
};
use crate::resp::RespClient;
use crate::results::{
    cdf, round1, AnomalyResult, CellResult, MultiNodeStatus, ParamsRecord, ProxyCalibration,
    Results, RunConfig, Summary, Throughput, WorkloadInfo,
};
use crate::runner::{Connector, Pool};
use crate::session::{Conn, Recorder, Spec, Worker};
use crate::workload::WorkloadParams;

/// Names of every workload, in report order.
pub const WORKLOADS: [&str; 15] = [
    "echo-get",
    "sidecar-get",
    "echo-dag",
    "redis-dag",
    "sidecar-redis-dag",
    "sidecar-file-dag",
    "redis-net-dag",
    "sidecar-redis-net-dag",
    "sidecar-dynamodb-net-dag",
    "sidecar-s3-net-dag",
    "ping-direct",
    "ping-net",
    "multi-node-1",
    "multi-node-2",
    "multi-node-3",
];

/// Workloads that run only when `--only` names them: the DynamoDB and S3
/// cells run against local emulators (moto, SeaweedFS), whose latency is
/// their own (moto copies the whole table in every transaction), not AWS's.
/// What they measure is the sidecar's path: storage calls, bytes and CPU
/// per DAG, and the history check.
pub const OPT_IN: [&str; 2] = ["sidecar-dynamodb-net-dag", "sidecar-s3-net-dag"];

/// Node addresses of the multi-node sidecars (distinct loopback IPs).
pub fn node_address(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// The flags that make sidecar `i` of `n` one node of a cluster, as the
/// project's own local cluster launcher passes them: every node binds the
/// same peer port on its own loopback address (`127.0.0.X`), as nodes of a
/// real cluster do on their own IPs, and gets every node as a seed peer.
pub fn multi_node_args(i: usize, n: usize, peer_port: u16) -> Vec<String> {
    let peers: Vec<String> = (0..n).map(node_address).collect();
    vec![
        "--node-address".into(),
        node_address(i),
        "--peer-mode".into(),
        "plaintext".into(),
        "--peer-port".into(),
        peer_port.to_string(),
        "--peers".into(),
        peers.join(","),
    ]
}

/// A TCP port free on every node address `127.0.0.1..=n`.
pub fn free_peer_port(n: usize) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = crate::procs::free_port()?;
        if (0..n).all(|i| std::net::TcpListener::bind((node_address(i).as_str(), port)).is_ok()) {
            return Ok(port);
        }
    }
    bail!("no TCP port is free on all of 127.0.0.1..{n}")
}

/// One workload as scheduled.
struct Workload {
    name: &'static str,
    title: String,
    unit: &'static str,
    pool: usize,
    spec: Spec,
    /// Key space to fill before the run, and whose history to check.
    key_space: Option<String>,
    through_sidecar: bool,
    /// Run only with one client (calibration).
    single_client: bool,
}

/// Accumulates one cell over rounds.
struct CellAcc {
    workload: usize,
    clients: usize,
    recorder: Recorder,
    wall: Duration,
    round_p50_us: Vec<f64>,
    round_throughput: Vec<f64>,
    /// What the workload's sidecars spent over the measured slices.
    spent: Sample,
    /// Operations committed in those slices.
    committed: u64,
}

/// Processes and pools of one run (dropped at its end: pools first, so the
/// client threads end before the servers they talk to).
struct Rig {
    pools: Vec<Pool>,
    processes: Vec<(String, ChildProcess)>,
    /// The sidecars behind each pool (by pool index), for the cost figures.
    probes: HashMap<usize, Vec<Probe>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.pools.clear();
        // Sidecars before the Redis they use.
        while let Some((_, mut p)) = self.processes.pop() {
            p.stop();
        }
    }
}

/// How to sample a sidecar's costs (`None` if it announced no metrics endpoint).
fn probe_of(process: &ChildProcess) -> Option<Probe> {
    Some(Probe {
        pid: process.pid(),
        metrics: process.metrics_addr()?,
    })
}

fn ipc_connector(
    dirs: Vec<PathBuf>,
    addresses: Vec<String>,
    params: Arc<WorkloadParams>,
    seed: u64,
    timeout: Duration,
) -> Connector {
    Arc::new(move |id| {
        let clients = dirs
            .iter()
            .map(|d| {
                IpcClient::connect(d, id, timeout)
                    .with_context(|| format!("IPC client {id} on {}", d.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Worker::new(
            id,
            Conn::Ipc {
                clients,
                addresses: addresses.clone(),
            },
            Arc::clone(&params),
            seed,
        )
    })
}

fn redis_connector(
    addr: std::net::SocketAddr,
    params: Arc<WorkloadParams>,
    seed: u64,
    timeout: Duration,
) -> Connector {
    Arc::new(move |id| {
        let redis = RespClient::connect(addr, timeout)?;
        Worker::new(id, Conn::Redis(redis), Arc::clone(&params), seed)
    })
}

/// The default sidecar binary: `aft-sidecar` next to `bench_exe`.
pub fn default_sidecar(bench_exe: &Path) -> anyhow::Result<PathBuf> {
    Ok(bench_exe
        .parent()
        .context("the benchmark binary has no parent directory")?
        .join("aft-sidecar"))
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line of this process, shell-quoted.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_else(|| "aft-bench".into());
    std::iter::once(program)
        .chain(args)
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`start_targets`] needs from the run.
struct Setup<'a> {
    args: &'a RunArgs,
    params: &'a Arc<WorkloadParams>,
    bench_exe: &'a Path,
    sidecar_bin: &'a Path,
    dir: &'a Path,
    max_clients: usize,
    run_multi: bool,
    node_counts: &'a [usize],
}

impl Setup<'_> {
    /// Whether workload `name` was selected (`--only`).
    fn selected(&self, name: &str) -> bool {
        match self.args.only.as_ref() {
            Some(only) => only.iter().any(|n| n == name),
            None => !OPT_IN.contains(&name),
        }
    }
}

/// Starts the processes and client pools that the selected workloads need
/// (into `rig`) and returns the workloads, in report order.
fn start_targets(
    setup: &Setup<'_>,
    rig: &mut Rig,
    ids: &AtomicU32,
    multi_node: &mut MultiNodeStatus,
) -> anyhow::Result<Vec<Workload>> {
    let Setup {
        args,
        params,
        bench_exe,
        sidecar_bin,
        dir,
        max_clients,
        run_multi,
        node_counts,
    } = *setup;
    let selected = |name: &str| setup.selected(name);
    let any = |names: &[&str]| names.iter().any(|n| setup.selected(n));
    let timeout = Duration::from_millis(args.timeout_ms);
    let seed = args.seed;
    let wrapper: Vec<String> = args
        .sidecar_wrapper
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    let mut workloads: Vec<Workload> = Vec::new();

    // --- processes and pools ---
    let sidecar = |name: &str,
                   storage: String,
                   extra: Vec<String>|
     -> anyhow::Result<(PathBuf, ChildProcess)> {
        let ipc_dir = dir.join(name);
        let spec = SidecarSpec {
            binary: sidecar_bin.to_path_buf(),
            ipc_dir: ipc_dir.clone(),
            storage,
            extra_args: extra,
            wrapper: wrapper.clone(),
            log: dir.join(format!("{name}.log")),
            // For the DynamoDB and S3 cells' local servers (harmless elsewhere).
            env: crate::aws::CREDENTIALS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let process = start_sidecar(&spec, ready_timeout)?;
        Ok((ipc_dir, process))
    };
    // One sidecar on 127.0.0.1 with its client pool; returns the pool's index.
    let single_sidecar = |rig: &mut Rig,
                          name: &str,
                          label: &str,
                          storage: String,
                          extra: Vec<String>|
     -> anyhow::Result<usize> {
        let (ipc_dir, process) = sidecar(name, storage, extra)?;
        let pool = rig.pools.len();
        rig.probes
            .entry(pool)
            .or_default()
            .extend(probe_of(&process));
        rig.processes.push((label.into(), process));
        rig.pools.push(Pool::spawn(
            name,
            max_clients,
            ids,
            ipc_connector(
                vec![ipc_dir],
                vec!["127.0.0.1".into()],
                Arc::clone(params),
                seed,
                timeout,
            ),
        )?);
        Ok(pool)
    };
    // The DAG workload through one sidecar, in its own key space `prefix`.
    let single_node_dag = |name: &'static str, title: &str, pool: usize, prefix: &str| Workload {
        name,
        title: title.into(),
        unit: "DAG",
        pool,
        spec: Spec::Dag {
            prefix: prefix.into(),
            nodes: 1,
            spread: false,
            history: true,
        },
        key_space: Some(prefix.into()),
        through_sidecar: true,
        single_client: false,
    };

    if any(&["echo-get", "echo-dag"]) {
        let ipc_dir = dir.join("echo");
        let process = start_echo(
            bench_exe,
            &ipc_dir,
            params.value_bytes,
            &dir.join("echo.log"),
        )?;
        rig.processes.push(("echo-server".into(), process));
        let pool = rig.pools.len();
        rig.pools.push(Pool::spawn(
            "echo",
            max_clients,
            ids,
            ipc_connector(
                vec![ipc_dir],
                vec!["127.0.0.1".into()],
                Arc::clone(params),
                seed,
                timeout,
            ),
        )?);
        workloads.push(Workload {
            name: "echo-get",
            title: "raw ZeroMQ request/reply: one-key get against the echo server (4 KB reply), the floor of one request".into(),
            unit: "request",
            pool,
            spec: Spec::Get { prefix: "echo".into() },
            key_space: None,
            through_sidecar: false,
            single_client: false,
        });
        workloads.push(Workload {
            name: "echo-dag",
            title: "the sidecar DAG's IPC requests against the echo server: an ideal sidecar doing no work".into(),
            unit: "DAG",
            pool,
            spec: Spec::Dag { prefix: "echo".into(), nodes: 1, spread: false, history: false },
            key_space: None,
            through_sidecar: false,
            single_client: false,
        });
    }

    let needs_redis = any(&[
        "redis-dag",
        "sidecar-redis-dag",
        "redis-net-dag",
        "sidecar-redis-net-dag",
        "ping-direct",
        "ping-net",
    ]) || run_multi;
    let needs_net = any(&["redis-net-dag", "sidecar-redis-net-dag", "ping-net"]);
    let mut redis_addr = None;
    let mut net_addr = None;
    if needs_redis {
        let redis_dir = dir.join("redis");
        std::fs::create_dir_all(&redis_dir)?;
        let redis = RedisProcess::start(&args.redis_server, &redis_dir, args.redis_aof)?;
        redis_addr = Some(redis.addr);
        rig.processes.push(("redis-server".into(), redis.process));
        if needs_net {
            let (proxy, addr) = start_proxy(
                bench_exe,
                redis.addr,
                Duration::from_micros(args.delay_us),
                Duration::from_micros(args.spin_us),
                &dir.join("proxy.log"),
            )?;
            net_addr = Some(addr);
            rig.processes.push(("delay-proxy".into(), proxy));
        }
    }
    if let Some(addr) = redis_addr.filter(|_| any(&["redis-dag", "ping-direct"])) {
        let pool = rig.pools.len();
        rig.pools.push(Pool::spawn(
            "redis",
            max_clients,
            ids,
            redis_connector(addr, Arc::clone(params), seed, timeout),
        )?);
        if selected("redis-dag") {
            workloads.push(Workload {
                name: "redis-dag",
                title: "the same DAG IO straight to Redis on loopback: plain GET/SET, no atomicity"
                    .into(),
                unit: "DAG",
                pool,
                spec: Spec::RedisDag {
                    prefix: "direct".into(),
                },
                key_space: Some("direct".into()),
                through_sidecar: false,
                single_client: false,
            });
        }
        if selected("ping-direct") {
            workloads.push(Workload {
                name: "ping-direct",
                title: "Redis PING on loopback (proxy calibration)".into(),
                unit: "PING",
                pool,
                spec: Spec::Ping,
                key_space: None,
                through_sidecar: false,
                single_client: true,
            });
        }
    }
    if let Some(addr) = net_addr.filter(|_| any(&["redis-net-dag", "ping-net"])) {
        let pool = rig.pools.len();
        rig.pools.push(Pool::spawn(
            "redis-net",
            max_clients,
            ids,
            redis_connector(addr, Arc::clone(params), seed, timeout),
        )?);
        if selected("redis-net-dag") {
            workloads.push(Workload {
                name: "redis-net-dag",
                title: "the same DAG IO straight to Redis behind the simulated network hop".into(),
                unit: "DAG",
                pool,
                spec: Spec::RedisDag {
                    prefix: "direct-net".into(),
                },
                key_space: Some("direct-net".into()),
                through_sidecar: false,
                single_client: false,
            });
        }
        if selected("ping-net") {
            workloads.push(Workload {
                name: "ping-net",
                title: "Redis PING through the delay proxy (proxy calibration)".into(),
                unit: "PING",
                pool,
                spec: Spec::Ping,
                key_space: None,
                through_sidecar: false,
                single_client: true,
            });
        }
    }

    if any(&["sidecar-get", "sidecar-file-dag"]) {
        let data = dir.join("sd-file-data");
        let pool = single_sidecar(
            rig,
            "sd-file",
            "aft-sidecar (file://)",
            format!("file://{}", data.display()),
            Vec::new(),
        )?;
        if selected("sidecar-get") {
            workloads.push(Workload {
                name: "sidecar-get",
                title: format!(
                    "cached transactional read through the sidecar (embedded store; {} reads per transaction)",
                    params.reads_per_txn
                ),
                unit: "request",
                pool,
                spec: Spec::Get { prefix: "get".into() },
                key_space: Some("get".into()),
                through_sidecar: true,
                single_client: false,
            });
        }
        if selected("sidecar-file-dag") {
            workloads.push(single_node_dag(
                "sidecar-file-dag",
                "the DAG through the sidecar over the embedded store (file://)",
                pool,
                "file",
            ));
        }
    }
    if let Some(addr) = redis_addr.filter(|_| selected("sidecar-redis-dag")) {
        let pool = single_sidecar(
            rig,
            "sd-redis",
            "aft-sidecar (redis, loopback)",
            format!("redis://{addr}"),
            Vec::new(),
        )?;
        workloads.push(single_node_dag(
            "sidecar-redis-dag",
            "the DAG through the sidecar over Redis on loopback",
            pool,
            "redis",
        ));
    }
    if let Some(addr) = net_addr.filter(|_| selected("sidecar-redis-net-dag")) {
        let pool = single_sidecar(
            rig,
            "sd-net",
            "aft-sidecar (redis behind the proxy)",
            format!("redis://{addr}"),
            Vec::new(),
        )?;
        workloads.push(single_node_dag(
            "sidecar-redis-net-dag",
            "the DAG through the sidecar, Redis behind the simulated network hop",
            pool,
            "net",
        ));
    }
    for (name, store, target, label, title) in [
        (
            "sidecar-dynamodb-net-dag",
            crate::aws::AwsStore::DynamoDb,
            "sd-dynamodb",
            "aft-sidecar (DynamoDB on moto, behind a proxy)",
            "the DAG through the sidecar, DynamoDB (moto) behind the simulated network hop",
        ),
        (
            "sidecar-s3-net-dag",
            crate::aws::AwsStore::S3,
            "sd-s3",
            "aft-sidecar (S3 on SeaweedFS, behind a proxy)",
            "the DAG through the sidecar, S3 (SeaweedFS) behind the simulated network hop",
        ),
    ] {
        if !selected(name) {
            continue;
        }
        let Some((server, port)) = crate::aws::start(store, dir)? else {
            eprintln!(
                "aft-bench: skipping {name}: its local server is not installed (scripts/install-deps.sh)"
            );
            continue;
        };
        rig.processes.push((format!("{target} server"), server));
        let direct = format!("127.0.0.1:{port}");
        crate::aws::prepare(&store.url(&direct))?;
        let (proxy, proxied) = start_proxy(
            bench_exe,
            direct.parse()?,
            Duration::from_micros(args.delay_us),
            Duration::from_micros(args.spin_us),
            &dir.join(format!("{target}-proxy.log")),
        )?;
        rig.processes.push((format!("{target} proxy"), proxy));
        // Local emulators answer slower than the services (moto is one
        // Python process): a longer storage timeout than the default 2 s.
        let patient = vec!["--storage-timeout-ms".to_string(), "10000".to_string()];
        let pool = single_sidecar(rig, target, label, store.url(&proxied.to_string()), patient)?;
        workloads.push(single_node_dag(name, title, pool, target));
    }
    if let (true, Some(addr)) = (run_multi, redis_addr) {
        let n = node_counts.iter().copied().max().unwrap_or(1);
        let peer_port = free_peer_port(n)?;
        let mut dirs = Vec::new();
        let pool = rig.pools.len();
        for i in 0..n {
            let (ipc_dir, process) = sidecar(
                &format!("node-{i}"),
                format!("redis://{addr}"),
                multi_node_args(i, n, peer_port),
            )?;
            rig.probes
                .entry(pool)
                .or_default()
                .extend(probe_of(&process));
            rig.processes
                .push((format!("aft-sidecar node {i}"), process));
            dirs.push(ipc_dir);
        }
        rig.pools.push(Pool::spawn(
            "multi",
            max_clients,
            ids,
            ipc_connector(
                dirs,
                (0..n).map(node_address).collect(),
                Arc::clone(params),
                seed,
                timeout,
            ),
        )?);
        for k in node_counts {
            let name: &'static str = match k {
                1 => "multi-node-1",
                2 => "multi-node-2",
                3 => "multi-node-3",
                _ => continue,
            };
            if !selected(name) {
                continue;
            }
            workloads.push(Workload {
                name,
                title: if args.placement == "spread" {
                    format!("the DAG with its functions spread over {k} sidecar(s) sharing one Redis (loopback): each DAG crosses nodes")
                } else {
                    format!("whole DAGs spread over {k} sidecar(s) sharing one Redis (loopback): each DAG on one node")
                },
                unit: "DAG",
                pool,
                spec: Spec::Dag { prefix: "multi".into(), nodes: *k, spread: args.placement == "spread", history: true },
                key_space: Some("multi".into()),
                through_sidecar: true,
                single_client: false,
            });
            multi_node.nodes.push(*k);
        }
        multi_node.status = "ran".into();
        multi_node.placement = args.placement.clone();
    }
    Ok(workloads)
}

/// Runs the benchmark described by `args`. `bench_exe` is this binary (it
/// starts its own helper subcommands).
pub fn run(args: &RunArgs, bench_exe: &Path) -> anyhow::Result<Results> {
    let run_started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let params = Arc::new(args.params());
    params.validate()?;
    let clients = args.client_counts();
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    let sidecar_bin = match &args.sidecar {
        Some(p) => p.clone(),
        None => default_sidecar(bench_exe)?,
    };
    if !sidecar_bin.exists() {
        bail!(
            "no sidecar binary at {} (build it: cargo build --release -p aft-sidecar, or pass --sidecar)",
            sidecar_bin.display()
        );
    }
    let mut machine = Machine::collect(&sidecar_bin, &args.redis_server);
    if let Some(only) = &args.only {
        for name in only {
            if !WORKLOADS.contains(&name.as_str()) {
                bail!(
                    "unknown workload `{name}` (known: {})",
                    WORKLOADS.join(", ")
                );
            }
        }
    }
    let selected = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    let mut notes = Vec::new();

    let node_counts: Vec<usize> = {
        let mut n: Vec<usize> = args
            .nodes
            .iter()
            .copied()
            .filter(|n| (1..=9).contains(n))
            .collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    if args.placement != "spread" && args.placement != "local" {
        bail!(
            "--placement must be spread or local, not `{}`",
            args.placement
        );
    }
    let run_multi = !args.no_multi_node
        && node_counts
            .iter()
            .any(|n| selected(&format!("multi-node-{n}")));
    let mut multi_node = MultiNodeStatus {
        status: "not selected".into(),
        reason: None,
        nodes: Vec::new(),
        placement: String::new(),
    };

    let dir = tempfile::Builder::new()
        .prefix("aft-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    let progress = if args.no_progress {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
        );
        bar
    };
    progress.set_message("starting processes");

    let mut rig = Rig {
        pools: Vec::new(),
        processes: Vec::new(),
        probes: HashMap::new(),
    };
    let ids = AtomicU32::new(0);
    let setup = Setup {
        args,
        params: &params,
        bench_exe,
        sidecar_bin: &sidecar_bin,
        dir: dir.path(),
        max_clients,
        run_multi,
        node_counts: &node_counts,
    };
    let workloads = start_targets(&setup, &mut rig, &ids, &mut multi_node)?;
    if workloads.is_empty() {
        bail!("no workload selected");
    }

    // --- cells and progress ---
    let mut cells: Vec<CellAcc> = Vec::new();
    for (w, workload) in workloads.iter().enumerate() {
        for &c in &clients {
            if workload.single_client && c != clients[0] {
                continue;
            }
            cells.push(CellAcc {
                workload: w,
                clients: if workload.single_client { 1 } else { c },
                recorder: Recorder::new(true),
                wall: Duration::ZERO,
                round_p50_us: Vec::new(),
                round_throughput: Vec::new(),
                spent: Sample::default(),
                committed: 0,
            });
        }
    }
    let rounds = args.rounds();
    let key_spaces: Vec<String> = {
        let mut k: Vec<String> = workloads
            .iter()
            .filter_map(|w| w.key_space.clone())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    progress.set_length((key_spaces.len() + workloads.len() + rounds * cells.len()) as u64);

    // --- fill the key spaces ---
    let mut histories: HashMap<String, Vec<TxnRecord>> = HashMap::new();
    for space in &key_spaces {
        let Some(w) = workloads
            .iter()
            .find(|w| w.key_space.as_ref() == Some(space))
        else {
            continue;
        };
        progress.set_message(format!("loading key space `{space}`"));
        let rec = rig.pools[w.pool]
            .load(space, params.keys)
            .with_context(|| format!("cannot fill key space `{space}`"))?;
        histories
            .entry(space.clone())
            .or_default()
            .extend(rec.history);
        progress.inc(1);
    }

    // --- warm-up (histories kept: measured reads may read warm-up writes) ---
    let max_ops = args.max_ops_per_slice;
    for w in &workloads {
        progress.set_message(format!("warm-up: {}", w.name));
        let n = if w.single_client { 1 } else { max_clients };
        let out = rig.pools[w.pool].run(&w.spec, n, args.warmup(), max_ops, false)?;
        if let Some(space) = &w.key_space {
            histories
                .entry(space.clone())
                .or_default()
                .extend(out.recorder.history);
        }
        progress.inc(1);
    }

    // --- interleaved rounds ---
    let slice = args.slice();
    let mut truncated = false;
    let mut rounds_completed = 0;
    let mut reader_clients: HashMap<String, usize> = HashMap::new();
    for round in 0..rounds {
        let elapsed = run_started.elapsed().as_secs_f64();
        let round_estimate = cells.len() as f64 * (slice.as_secs_f64() + 0.05);
        if round > 0 && elapsed + round_estimate > args.time_limit_secs {
            truncated = true;
            notes.push(format!(
                "time limit of {:.0} s reached: {round} of {rounds} rounds ran",
                args.time_limit_secs
            ));
            break;
        }
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cells.len()).collect()
        } else {
            (0..cells.len()).rev().collect()
        };
        for i in order {
            let cell = &mut cells[i];
            let w = &workloads[cell.workload];
            progress.set_message(format!(
                "round {}/{rounds}: {} × {} client(s)",
                round + 1,
                w.name,
                cell.clients
            ));
            let probes = rig.probes.get(&w.pool).map_or(&[][..], Vec::as_slice);
            let before = Sample::take(probes);
            let mut out = rig.pools[w.pool]
                .run(&w.spec, cell.clients, slice, max_ops, true)
                .with_context(|| format!("{} with {} client(s)", w.name, cell.clients))?;
            if !probes.is_empty() {
                cell.spent.add(&Sample::take(probes).since(&before));
                cell.committed += out
                    .recorder
                    .ops
                    .saturating_sub(out.recorder.aborts + out.recorder.errors);
            }
            let wall = out.wall.as_secs_f64().max(1e-9);
            cell.round_throughput
                .push(round1(out.recorder.ops as f64 / wall));
            cell.round_p50_us.push(round1(
                out.recorder.latency.value_at_quantile(0.5) as f64 / 1000.0,
            ));
            cell.wall += out.wall;
            let history = std::mem::take(&mut out.recorder.history);
            if let Some(space) = &w.key_space {
                for t in &history {
                    reader_clients.insert(t.id.clone(), cell.clients);
                }
                histories.entry(space.clone()).or_default().extend(history);
            }
            cell.recorder.merge(out.recorder);
            progress.inc(1);
        }
        rounds_completed += 1;
    }
    progress.set_message("checking histories");

    // Did every process survive?
    for (name, process) in &mut rig.processes {
        if !process.is_running() {
            notes.push(format!(
                "{name} was no longer running at the end of the run; its log:\n{}",
                process.log_tail()
            ));
        }
    }
    drop(rig);
    progress.finish_and_clear();
    machine.load_average_at_end = load_average();

    // --- anomalies ---
    let mut anomalies = Vec::new();
    for space in &key_spaces {
        let history = histories.remove(space).unwrap_or_default();
        let found = check(&history);
        let mut result = AnomalyResult {
            key_space: space.clone(),
            workloads: workloads
                .iter()
                .filter(|w| w.key_space.as_ref() == Some(space))
                .map(|w| w.name.to_string())
                .collect(),
            through_sidecar: workloads
                .iter()
                .any(|w| w.key_space.as_ref() == Some(space) && w.through_sidecar),
            transactions: history.len(),
            committed: history
                .iter()
                .filter(|t| t.status == Status::Committed)
                .count(),
            aborted: history
                .iter()
                .filter(|t| t.status == Status::Aborted)
                .count(),
            unknown: history
                .iter()
                .filter(|t| t.status == Status::Unknown)
                .count(),
            ..Default::default()
        };
        result.count(&found);
        let mut by_clients: BTreeMap<String, usize> = BTreeMap::new();
        for a in &found {
            let reader = match a {
                aft::history::Anomaly::FracturedRead { reader, .. }
                | aft::history::Anomaly::AbortedRead { reader, .. }
                | aft::history::Anomaly::UncommittedRead { reader, .. }
                | aft::history::Anomaly::ReadYourWrites { reader, .. } => reader,
            };
            let key = reader_clients
                .get(reader)
                .map_or_else(|| "warmup".to_string(), |c| c.to_string());
            *by_clients.entry(key).or_default() += 1;
        }
        result.by_clients = by_clients;
        anomalies.push(result);
    }

    // --- cells ---
    let cell_results: Vec<CellResult> = cells
        .iter()
        .map(|c| {
            let wall = c.wall.as_secs_f64();
            let rec = &c.recorder;
            CellResult {
                workload: workloads[c.workload].name.to_string(),
                clients: c.clients,
                ops: rec.ops,
                errors: rec.errors,
                aborts: rec.aborts,
                first_error: rec.first_error.clone(),
                latency_us: Summary::of(&rec.latency),
                throughput: Throughput {
                    mean: if wall > 0.0 {
                        round1(rec.ops as f64 / wall)
                    } else {
                        0.0
                    },
                    min: c
                        .round_throughput
                        .iter()
                        .copied()
                        .reduce(f64::min)
                        .unwrap_or(0.0),
                    max: c
                        .round_throughput
                        .iter()
                        .copied()
                        .reduce(f64::max)
                        .unwrap_or(0.0),
                },
                round_p50_us: c.round_p50_us.clone(),
                round_throughput: c.round_throughput.clone(),
                steps_us: rec
                    .steps
                    .iter()
                    .map(|(k, h)| ((*k).to_string(), Summary::of(h)))
                    .collect(),
                cdf: cdf(&rec.latency),
                cost: CellCost::per_op(&c.spent, c.committed),
            }
        })
        .collect();

    if multi_node.status == "ran" {
        let failing: Vec<&CellResult> = cell_results
            .iter()
            .filter(|c| c.workload.starts_with("multi-node-") && c.errors > 0)
            .collect();
        if let Some(first) = failing.first() {
            multi_node.status = "ran with errors".into();
            multi_node.reason = Some(format!(
                "{} of the multi-node cells had failed DAGs; first error ({} × {}): {}",
                failing.len(),
                first.workload,
                first.clients,
                first.first_error.clone().unwrap_or_default()
            ));
        }
    }
    let mut results = Results {
        name: args.name(),
        command: command_line(),
        started_unix,
        duration_secs: round1(run_started.elapsed().as_secs_f64()),
        truncated,
        machine,
        config: RunConfig {
            params: ParamsRecord {
                keys: params.keys,
                zipf: params.zipf,
                value_bytes: params.value_bytes,
                functions: params.functions,
                reads_per_function: params.reads_per_function,
                writes_per_function: params.writes_per_function,
                continue_same_node: params.continue_same_node,
                reads_per_txn: params.reads_per_txn,
                ipc_round_trips: params.ipc_round_trips(),
                redis_round_trips: params.redis_round_trips(),
            },
            clients: clients.clone(),
            rounds,
            rounds_completed,
            slice_secs: slice.as_secs_f64(),
            warmup_secs: args.warmup().as_secs_f64(),
            delay_us: args.delay_us,
            redis_aof: args.redis_aof,
            sidecar: sidecar_bin.display().to_string(),
            quick: args.quick,
            network: "loopback only: the delay proxy listens on 127.0.0.1 and forwards to Redis on 127.0.0.1 (no network namespace)".into(),
        },
        workloads: workloads
            .iter()
            .map(|w| WorkloadInfo {
                name: w.name.into(),
                title: w.title.clone(),
                unit: w.unit.into(),
            })
            .collect(),
        cells: cell_results,
        anomalies,
        proxy: None,
        ratios: Vec::new(),
        multi_node,
        notes,
    };
    if let (Some(direct), Some(net)) = (results.cell("ping-direct", 1), results.cell("ping-net", 1))
    {
        results.proxy = Some(ProxyCalibration {
            delay_us_each_way: args.delay_us,
            direct_ping_p50_us: direct.latency_us.p50,
            proxied_ping_p50_us: net.latency_us.p50,
            proxied_ping_p99_us: net.latency_us.p99,
            added_rtt_p50_us: net.latency_us.p50 - direct.latency_us.p50,
        });
    }
    results.ratios = results.ratios_at(results.latency_clients(), results.throughput_clients());
    Ok(results)
}
