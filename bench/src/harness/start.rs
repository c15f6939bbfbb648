//! Start: the processes (echo server, Redis, delay proxies, sidecars, the
//! multi-node cluster) and client pools that the selected workloads need,
//! one function per target, started in report order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::plan::Plan;
use super::rig::{grpc_connector, ipc_connector, redis_connector, Rig};
use crate::aws::AwsStore;
use crate::cli::RunArgs;
use crate::procs::{
    sidecar_spec, start_echo, start_proxy, start_redis, start_sidecar, ChildProcess,
};
use crate::results::MultiNodeStatus;
use crate::runner::Connector;
use crate::session::Spec;
use aft_testkit::cluster::{free_peer_port, node_address, node_args};
use aft_testkit::sidecar::grpc_addr_of;
use anyhow::Context as _;

/// One workload as scheduled.
pub(super) struct Workload {
    /// Its name (one of [`super::WORKLOADS`]).
    pub name: &'static str,
    /// What it measures.
    pub title: String,
    /// What one operation is: `request`, `DAG` or `PING`.
    pub unit: &'static str,
    /// The index of the client pool that runs it.
    pub pool: usize,
    /// What each client does.
    pub spec: Spec,
    /// Key space to fill before the run, and whose history to check.
    pub key_space: Option<String>,
    /// Whether a sidecar serves it (its key space must show no anomaly).
    pub through_sidecar: bool,
    /// Run only with one client (calibration).
    pub single_client: bool,
}

impl Workload {
    /// A workload with no key space, not through a sidecar, run at every
    /// client count (callers override the fields that differ).
    fn new(
        name: &'static str,
        title: &str,
        unit: &'static str,
        pool: usize,
        spec: Spec,
    ) -> Workload {
        Workload {
            name,
            title: title.into(),
            unit,
            pool,
            spec,
            key_space: None,
            through_sidecar: false,
            single_client: false,
        }
    }

    /// The DAG workload through one sidecar, in its own key space `prefix`.
    fn single_node_dag(name: &'static str, title: &str, pool: usize, prefix: &str) -> Workload {
        Workload {
            key_space: Some(prefix.into()),
            through_sidecar: true,
            ..Workload::new(
                name,
                title,
                "DAG",
                pool,
                Spec::Dag {
                    prefix: prefix.into(),
                    nodes: 1,
                    spread: false,
                    history: true,
                },
            )
        }
    }
}

/// What the start phase needs from the run.
pub(super) struct Setup<'a> {
    /// The run's flags.
    pub args: &'a RunArgs,
    /// The checked settings.
    pub plan: &'a Plan,
    /// This binary (the echo server and the delay proxy are its subcommands).
    pub bench_exe: &'a Path,
    /// The run's temporary directory (IPC directories, logs, data).
    pub dir: &'a Path,
}

impl Setup<'_> {
    /// Whether workload `name` runs.
    fn selected(&self, name: &str) -> bool {
        self.plan.selected(name)
    }

    /// The clients' timeout for every IPC or Redis wait.
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.args.timeout_ms)
    }

    /// Clients of the IPC servers in `dirs`, at node `addresses`.
    fn ipc_clients(&self, dirs: Vec<PathBuf>, addresses: Vec<String>) -> Connector {
        ipc_connector(
            dirs,
            addresses,
            Arc::clone(&self.plan.params),
            self.args.seed,
            self.timeout(),
        )
    }

    /// Clients of the Redis server at `addr`.
    fn redis_clients(&self, addr: SocketAddr) -> Connector {
        redis_connector(
            addr,
            Arc::clone(&self.plan.params),
            self.args.seed,
            self.timeout(),
        )
    }

    /// A delay proxy in front of `target`, logging to `log_name` in the run's directory.
    fn proxy(
        &self,
        target: SocketAddr,
        log_name: &str,
    ) -> anyhow::Result<(ChildProcess, SocketAddr)> {
        start_proxy(
            self.bench_exe,
            target,
            Duration::from_micros(self.args.delay_us),
            Duration::from_micros(self.args.spin_us),
            &self.dir.join(log_name),
        )
    }

    /// Starts sidecar `name` (its IPC directory and log named after it) on
    /// `storage` with `extra` flags; returns its IPC directory and process.
    fn sidecar(
        &self,
        name: &str,
        storage: String,
        extra: Vec<String>,
    ) -> anyhow::Result<(PathBuf, ChildProcess)> {
        let ipc_dir = self.dir.join(name);
        let mut spec = sidecar_spec(
            &self.plan.sidecar_bin,
            &ipc_dir,
            &storage,
            &self.dir.join(format!("{name}.log")),
        )
        .args(&extra)
        // For the DynamoDB and S3 cells' local servers (harmless elsewhere).
        .envs(&crate::aws::CREDENTIALS);
        spec.wrapper = self
            .args
            .sidecar_wrapper
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        spec.timeout = Duration::from_secs(self.args.ready_timeout_secs);
        let process = start_sidecar(&spec)?;
        Ok((ipc_dir, process))
    }

    /// One sidecar on 127.0.0.1 with its client pool; returns the pool's index.
    fn single_sidecar(
        &self,
        rig: &mut Rig,
        name: &str,
        label: &str,
        storage: String,
        extra: Vec<String>,
    ) -> anyhow::Result<usize> {
        let (ipc_dir, process) = self.sidecar(name, storage, extra)?;
        let pool = rig.next_pool();
        rig.add_sidecar(pool, label, process);
        rig.spawn_pool(
            name,
            self.plan.max_clients,
            self.ipc_clients(vec![ipc_dir], vec!["127.0.0.1".into()]),
        )
    }
}

/// Where the run's Redis server listens, directly and through the delay proxy.
#[derive(Default)]
struct RedisAddrs {
    direct: Option<SocketAddr>,
    net: Option<SocketAddr>,
}

/// Starts the processes and client pools that the selected workloads need
/// (into `rig`); returns the workloads, in report order, and the
/// multi-node status ("ran" if the cluster started, else "not selected").
pub(super) fn start_targets(
    setup: &Setup<'_>,
    rig: &mut Rig,
) -> anyhow::Result<(Vec<Workload>, MultiNodeStatus)> {
    let mut multi_node = MultiNodeStatus {
        status: "not selected".into(),
        ..MultiNodeStatus::default()
    };
    let mut workloads = echo(setup, rig)?;
    let redis = redis_server(setup, rig)?;
    workloads.extend(direct_redis(setup, rig, &redis)?);
    workloads.extend(file_sidecar(setup, rig)?);
    workloads.extend(redis_sidecars(setup, rig, &redis)?);
    workloads.extend(grpc_sidecar(setup, rig, &redis)?);
    workloads.extend(aws_sidecars(setup, rig)?);
    if let (true, Some(addr)) = (setup.plan.run_multi, redis.direct) {
        workloads.extend(multi_node_cluster(setup, rig, addr, &mut multi_node)?);
    }
    Ok((workloads, multi_node))
}

/// Target `echo`: the echo server and its pool (`echo-get`, `echo-dag`).
fn echo(setup: &Setup<'_>, rig: &mut Rig) -> anyhow::Result<Vec<Workload>> {
    if !setup.plan.any(&["echo-get", "echo-dag"]) {
        return Ok(Vec::new());
    }
    let ipc_dir = setup.dir.join("echo");
    let process = start_echo(
        setup.bench_exe,
        &ipc_dir,
        setup.plan.params.value_bytes,
        &setup.dir.join("echo.log"),
    )?;
    rig.add_process("echo-server", process);
    let pool = rig.spawn_pool(
        "echo",
        setup.plan.max_clients,
        setup.ipc_clients(vec![ipc_dir], vec!["127.0.0.1".into()]),
    )?;
    Ok(vec![
        Workload::new(
            "echo-get",
            "raw ZeroMQ request/reply: one-key get against the echo server (4 KB reply), the floor of one request",
            "request",
            pool,
            Spec::Get { prefix: "echo".into() },
        ),
        Workload::new(
            "echo-dag",
            "the sidecar DAG's IPC requests against the echo server: an ideal sidecar doing no work",
            "DAG",
            pool,
            Spec::Dag { prefix: "echo".into(), nodes: 1, spread: false, history: false },
        ),
    ])
}

/// The Redis server on loopback, and the delay proxy in front of it, if any
/// selected workload (or the multi-node cluster) needs them.
fn redis_server(setup: &Setup<'_>, rig: &mut Rig) -> anyhow::Result<RedisAddrs> {
    let needs_redis = setup.plan.any(&[
        "redis-dag",
        "sidecar-redis-dag",
        "redis-net-dag",
        "sidecar-redis-net-dag",
        "ping-direct",
        "ping-net",
    ]) || setup.plan.run_multi;
    let needs_net = setup
        .plan
        .any(&["redis-net-dag", "sidecar-redis-net-dag", "ping-net"]);
    let mut addrs = RedisAddrs::default();
    if !needs_redis {
        return Ok(addrs);
    }
    let redis = start_redis(&setup.args.redis_server, setup.args.redis_aof)?;
    let redis_addr = redis.addr();
    addrs.direct = Some(redis_addr);
    rig.add_process("redis-server", redis);
    if needs_net {
        let (proxy, addr) = setup.proxy(redis_addr, "proxy.log")?;
        addrs.net = Some(addr);
        rig.add_process("delay-proxy", proxy);
    }
    Ok(addrs)
}

/// Targets `redis` and `redis-net`: pools straight to Redis, on loopback and
/// through the proxy (the DAG without atomicity, and PING for calibration).
fn direct_redis(
    setup: &Setup<'_>,
    rig: &mut Rig,
    redis: &RedisAddrs,
) -> anyhow::Result<Vec<Workload>> {
    // (pool, address, DAG workload, its title, its key space, PING workload, its title)
    let targets = [
        (
            "redis",
            redis.direct,
            "redis-dag",
            "the same DAG IO straight to Redis on loopback: plain GET/SET, no atomicity",
            "direct",
            "ping-direct",
            "Redis PING on loopback (proxy calibration)",
        ),
        (
            "redis-net",
            redis.net,
            "redis-net-dag",
            "the same DAG IO straight to Redis behind the simulated network hop",
            "direct-net",
            "ping-net",
            "Redis PING through the delay proxy (proxy calibration)",
        ),
    ];
    let mut workloads = Vec::new();
    for (pool_name, addr, dag, dag_title, prefix, ping, ping_title) in targets {
        let Some(addr) = addr.filter(|_| setup.plan.any(&[dag, ping])) else {
            continue;
        };
        let pool = rig.spawn_pool(pool_name, setup.plan.max_clients, setup.redis_clients(addr))?;
        if setup.selected(dag) {
            workloads.push(Workload {
                key_space: Some(prefix.into()),
                ..Workload::new(
                    dag,
                    dag_title,
                    "DAG",
                    pool,
                    Spec::RedisDag {
                        prefix: prefix.into(),
                    },
                )
            });
        }
        if setup.selected(ping) {
            workloads.push(Workload {
                single_client: true,
                ..Workload::new(ping, ping_title, "PING", pool, Spec::Ping)
            });
        }
    }
    Ok(workloads)
}

/// Target `sd-file`: a sidecar over the embedded store (`sidecar-get`,
/// `sidecar-file-dag`).
fn file_sidecar(setup: &Setup<'_>, rig: &mut Rig) -> anyhow::Result<Vec<Workload>> {
    if !setup.plan.any(&["sidecar-get", "sidecar-file-dag"]) {
        return Ok(Vec::new());
    }
    let data = setup.dir.join("sd-file-data");
    let pool = setup.single_sidecar(
        rig,
        "sd-file",
        "aft-sidecar (file://)",
        format!("file://{}", data.display()),
        Vec::new(),
    )?;
    let mut workloads = Vec::new();
    if setup.selected("sidecar-get") {
        let title = format!(
            "cached transactional read through the sidecar (embedded store; {} reads per transaction)",
            setup.plan.params.reads_per_txn
        );
        workloads.push(Workload {
            key_space: Some("get".into()),
            through_sidecar: true,
            ..Workload::new(
                "sidecar-get",
                &title,
                "request",
                pool,
                Spec::Get {
                    prefix: "get".into(),
                },
            )
        });
    }
    if setup.selected("sidecar-file-dag") {
        workloads.push(Workload::single_node_dag(
            "sidecar-file-dag",
            "the DAG through the sidecar over the embedded store (file://)",
            pool,
            "file",
        ));
    }
    Ok(workloads)
}

/// Targets `sd-redis` and `sd-net`: a sidecar over Redis on loopback, and
/// one over Redis through the proxy.
fn redis_sidecars(
    setup: &Setup<'_>,
    rig: &mut Rig,
    redis: &RedisAddrs,
) -> anyhow::Result<Vec<Workload>> {
    // (address, workload, target, process label, title, key space)
    let targets = [
        (
            redis.direct,
            "sidecar-redis-dag",
            "sd-redis",
            "aft-sidecar (redis, loopback)",
            "the DAG through the sidecar over Redis on loopback",
            "redis",
        ),
        (
            redis.net,
            "sidecar-redis-net-dag",
            "sd-net",
            "aft-sidecar (redis behind the proxy)",
            "the DAG through the sidecar, Redis behind the simulated network hop",
            "net",
        ),
    ];
    let mut workloads = Vec::new();
    for (addr, name, target, label, title, prefix) in targets {
        let Some(addr) = addr.filter(|_| setup.selected(name)) else {
            continue;
        };
        let storage = format!("redis://{addr}");
        let pool = setup.single_sidecar(rig, target, label, storage, Vec::new())?;
        workloads.push(Workload::single_node_dag(name, title, pool, prefix));
    }
    Ok(workloads)
}

/// Target `sd-grpc`: a sidecar on the Redis behind the proxy, reached over
/// its gRPC front through a second proxy (functions with no sidecar on
/// their node reach it over the network); workload `sidecar-grpc-net-dag`.
fn grpc_sidecar(
    setup: &Setup<'_>,
    rig: &mut Rig,
    redis: &RedisAddrs,
) -> anyhow::Result<Vec<Workload>> {
    let name = "sidecar-grpc-net-dag";
    let Some(redis_net) = redis.net.filter(|_| setup.selected(name)) else {
        return Ok(Vec::new());
    };
    let extra = ["--grpc-addr", "127.0.0.1:0", "--grpc-insecure"]
        .map(String::from)
        .to_vec();
    let (_ipc_dir, process) = setup.sidecar("sd-grpc", format!("redis://{redis_net}"), extra)?;
    let grpc = grpc_addr_of(&process).context("the sidecar printed no gRPC address")?;
    let pool = rig.next_pool();
    rig.add_sidecar(
        pool,
        "aft-sidecar (gRPC front, redis behind the proxy)",
        process,
    );
    let (proxy, proxied) = setup.proxy(grpc, "grpc-proxy.log")?;
    rig.add_process("delay-proxy (gRPC)", proxy);
    rig.spawn_pool(
        "sd-grpc",
        setup.plan.max_clients,
        grpc_connector(proxied, Arc::clone(&setup.plan.params), setup.args.seed),
    )?;
    Ok(vec![Workload {
        key_space: Some("grpc".into()),
        through_sidecar: true,
        ..Workload::new(
            name,
            "the DAG as one gRPC transaction: client and Redis each behind the simulated network hop",
            "DAG",
            pool,
            Spec::GrpcDag {
                prefix: "grpc".into(),
            },
        )
    }])
}

/// Targets `sd-dynamodb` and `sd-s3` (opt-in): a local emulator, a delay
/// proxy in front of it and a sidecar on it; skipped, with a message, when
/// the emulator is not installed.
fn aws_sidecars(setup: &Setup<'_>, rig: &mut Rig) -> anyhow::Result<Vec<Workload>> {
    let targets = [
        (
            "sidecar-dynamodb-net-dag",
            AwsStore::DynamoDb,
            "sd-dynamodb",
            "aft-sidecar (DynamoDB on moto, behind a proxy)",
            "the DAG through the sidecar, DynamoDB (moto) behind the simulated network hop",
        ),
        (
            "sidecar-s3-net-dag",
            AwsStore::S3,
            "sd-s3",
            "aft-sidecar (S3 on SeaweedFS, behind a proxy)",
            "the DAG through the sidecar, S3 (SeaweedFS) behind the simulated network hop",
        ),
    ];
    let mut workloads = Vec::new();
    for (name, store, target, label, title) in targets {
        if !setup.selected(name) {
            continue;
        }
        let Some((server, direct)) = crate::aws::start(store)? else {
            eprintln!(
                "aft-bench: skipping {name}: its local server is not installed (scripts/install-deps.sh)"
            );
            continue;
        };
        rig.add_process(format!("{target} server"), server);
        crate::aws::prepare(&store.url(&direct.to_string()))?;
        let (proxy, proxied) = setup.proxy(direct, &format!("{target}-proxy.log"))?;
        rig.add_process(format!("{target} proxy"), proxy);
        // Local emulators answer slower than the services (moto is one
        // Python process): a longer storage timeout than the default 2 s.
        let patient = vec!["--storage-timeout-ms".to_string(), "10000".to_string()];
        let storage = store.url(&proxied.to_string());
        let pool = setup.single_sidecar(rig, target, label, storage, patient)?;
        workloads.push(Workload::single_node_dag(name, title, pool, target));
    }
    Ok(workloads)
}

/// Target `multi`: as many sidecars as the largest node count, sharing the
/// Redis at `redis`, peers of each other, behind one pool (`multi-node-N`);
/// sets `multi_node` to "ran".
fn multi_node_cluster(
    setup: &Setup<'_>,
    rig: &mut Rig,
    redis: SocketAddr,
    multi_node: &mut MultiNodeStatus,
) -> anyhow::Result<Vec<Workload>> {
    let n = setup.plan.node_counts.iter().copied().max().unwrap_or(1);
    let peer_port = free_peer_port(n);
    let mut dirs = Vec::new();
    let pool = rig.next_pool();
    for i in 0..n {
        let (ipc_dir, process) = setup.sidecar(
            &format!("node-{i}"),
            format!("redis://{redis}"),
            node_args(i, n, peer_port),
        )?;
        rig.add_sidecar(pool, format!("aft-sidecar node {i}"), process);
        dirs.push(ipc_dir);
    }
    let addresses = (0..n).map(node_address).collect();
    rig.spawn_pool(
        "multi",
        setup.plan.max_clients,
        setup.ipc_clients(dirs, addresses),
    )?;
    let placement = &setup.args.placement;
    let spread = placement == "spread";
    let mut workloads = Vec::new();
    for &k in &setup.plan.node_counts {
        let name: &'static str = match k {
            1 => "multi-node-1",
            2 => "multi-node-2",
            3 => "multi-node-3",
            _ => continue,
        };
        if !setup.selected(name) {
            continue;
        }
        let title = if spread {
            format!("the DAG with its functions spread over {k} sidecar(s) sharing one Redis (loopback): each DAG crosses nodes")
        } else {
            format!("whole DAGs spread over {k} sidecar(s) sharing one Redis (loopback): each DAG on one node")
        };
        let spec = Spec::Dag {
            prefix: "multi".into(),
            nodes: k,
            spread,
            history: true,
        };
        workloads.push(Workload {
            key_space: Some("multi".into()),
            through_sidecar: true,
            ..Workload::new(name, &title, "DAG", pool, spec)
        });
        multi_node.nodes.push(k);
    }
    multi_node.status = "ran".into();
    multi_node.placement = placement.clone();
    Ok(workloads)
}
