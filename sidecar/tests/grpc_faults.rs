//! Seeded faults at random moments against gRPC transactions in flight
//! across a 3-node cluster behind a "load balancer" (every call of a
//! transaction goes to a node picked at random, so most calls are forwarded
//! to the node that holds the transaction): SIGKILL of the holder, of the
//! node serving the commit or of a bystander right after a commit request,
//! SIGSTOP of a node, Redis down. The history checker judges every
//! transaction, and the store's plain keys (what Cloudburst's user client
//! reads) must converge on a state that keeps every acknowledged commit.
//!
//! `AFT_FAULT_SEED` replays a run's fault schedule; `AFT_FAULT_SECS` sets
//! its length.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aft::history::{tag_value, writer_of, Op, Status, TxnRecord};
use aft::proto::aft::TransactionStatus;
use aft_testkit::cluster::{node_address, ClusterStore, LocalCluster};
use aft_testkit::dag::{
    assert_read_atomic_in, recorded_status, AcknowledgedCommits, SETTLE_WITHIN,
};
use aft_testkit::eventually;
use aft_testkit::grpc::GrpcClient;
use aft_testkit::ports::free_port_on_all;
use aft_testkit::seeded::FaultRun;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TOKEN: &str = "grpc-fault-token-0123456789";
const NODES: usize = 3;
/// A client's deadline for one call (a stalled node answers after its stall).
const DEADLINE: Duration = Duration::from_secs(10);

/// (node holding the transaction, node serving its commit), sent when a
/// commit is requested: the fault schedule aims at them.
type CommitSent = (usize, usize);

struct Workload {
    grpc: Vec<SocketAddr>,
    addresses: Vec<String>,
    keys: Vec<String>,
    epoch: Instant,
    stop: AtomicBool,
    commits: crossbeam_channel::Sender<CommitSent>,
}

impl Workload {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The node a routed transaction id (`<uuid>@<node address>`) names.
    fn holder_of(&self, tid: &str) -> Option<usize> {
        let (_, node) = tid.rsplit_once('@')?;
        self.addresses.iter().position(|a| a == node)
    }
}

/// One client per node, rebuilt after any error (the node may have restarted).
struct Clients {
    grpc: Vec<SocketAddr>,
    clients: Vec<Option<GrpcClient>>,
}

impl Clients {
    fn call<T>(
        &mut self,
        node: usize,
        f: impl FnOnce(&mut GrpcClient) -> Result<T, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        if self.clients[node].is_none() {
            self.clients[node] =
                GrpcClient::connect_with_deadline(self.grpc[node], Some(TOKEN), DEADLINE).ok();
        }
        let Some(client) = self.clients[node].as_mut() else {
            return Err(tonic::Status::unavailable("cannot connect"));
        };
        let result = f(client);
        if result.is_err() {
            self.clients[node] = None;
        }
        result
    }
}

fn run_worker(w: &Workload, seed: u64) -> Vec<TxnRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = Clients {
        grpc: w.grpc.clone(),
        clients: (0..NODES).map(|_| None).collect(),
    };
    let mut history = Vec::new();
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(tag) = clients.call(rng.random_range(0..NODES), |c| c.start()) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let tid = tag.id;
        let mut ops = Vec::new();
        let mut failed = false;
        for step in 0..4 {
            let node = rng.random_range(0..NODES);
            let key = w.keys[rng.random_range(0..w.keys.len())].clone();
            if step % 2 == 0 {
                match clients.call(node, |c| c.read(&tid, &[&key])) {
                    Ok(values) => ops.push(Op::Read {
                        writer: values.first().and_then(|v| writer_of(v)),
                        key,
                        returned_at: w.now(),
                    }),
                    Err(_) => failed = true,
                }
            } else {
                let value = tag_value(&tid, &key, 8);
                match clients.call(node, |c| c.write(&tid, &[(&key, value)])) {
                    Ok(()) => ops.push(Op::Write { key }),
                    Err(_) => failed = true,
                }
            }
            if failed {
                break;
            }
        }
        if failed {
            // A gRPC client sees its errors: it gives the transaction up
            // (never asking for its commit), so it must never commit.
            let _ = clients.call(rng.random_range(0..NODES), |c| c.abort(&tid));
            history.push(TxnRecord {
                id: tid,
                status: Status::Aborted,
                commit_timestamp: None,
                commit_window: None,
                ops,
            });
            continue;
        }
        let via = rng.random_range(0..NODES);
        if let Some(holder) = w.holder_of(&tid) {
            let _ = w.commits.try_send((holder, via));
        }
        let requested = w.now();
        let settle_by = Instant::now() + SETTLE_WITHIN;
        let mut node = via;
        let status = loop {
            match clients.call(node, |c| c.commit(&tid)) {
                Ok(status) => break recorded_status(Some(status)),
                // The holder is unreachable, storage is down, or the outcome
                // is being settled: ask again (anywhere), as a client would.
                Err(s) if s.code() == Code::Unavailable && Instant::now() < settle_by => {
                    std::thread::sleep(Duration::from_millis(200));
                    node = rng.random_range(0..NODES);
                }
                // No truthful answer (a deadline, or a restarted holder that
                // no longer knows the id): it may have committed.
                Err(_) => break Status::Unknown,
            }
        };
        history.push(TxnRecord {
            id: tid,
            status,
            commit_timestamp: None,
            commit_window: Some((requested, w.now())),
            ops,
        });
    }
    history
}

/// Seeded faults at random moments against gRPC transactions whose calls
/// land on random nodes of a 3-node cluster on Redis.
#[test]
fn grpc_transactions_keep_every_guarantee_under_faults_at_random_moments() {
    let FaultRun { seed, secs } = FaultRun::from_env("gRPC fault run", 15);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("grpc.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let token = token.to_str().unwrap().to_string();
    // A fixed gRPC port on every node's own address: a restarted node is
    // found where it was.
    let addresses: Vec<String> = (0..NODES).map(node_address).collect();
    let port = free_port_on_all(&addresses);
    let grpc: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| format!("{a}:{port}").parse().unwrap())
        .collect();
    let grpc_of = grpc.clone();
    let cluster = LocalCluster::start_on(
        ClusterStore::redis(),
        Path::new(BIN),
        NODES,
        &[
            "--grpc-token-file",
            &token,
            "--decision-timeout-ms",
            "2000",
            "--publish-sweep-ms",
            "500",
            "--storage-timeout-ms",
            "500",
            "--peer-timeout-ms",
            "800",
        ],
        move |i| vec![("AFT_GRPC_ADDR".into(), grpc_of[i].to_string())],
    );
    let keys: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
    // Every key has a committed value from the start.
    {
        let mut c = GrpcClient::connect_with_deadline(grpc[0], Some(TOKEN), DEADLINE).unwrap();
        let init = c.start().unwrap().id;
        let writes: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.as_str(), tag_value(&init, k, 8)))
            .collect();
        c.write(&init, &writes).unwrap();
        assert_eq!(c.commit(&init).unwrap(), TransactionStatus::Committed);
    }
    let cluster = Arc::new(Mutex::new(cluster));
    let (commits_tx, commits_rx) = crossbeam_channel::bounded::<CommitSent>(64);
    let workload = Arc::new(Workload {
        grpc,
        addresses,
        keys: keys.clone(),
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        commits: commits_tx,
    });
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let workload = Arc::clone(&workload);
            std::thread::spawn(move || run_worker(&workload, seed.wrapping_add(w + 1)))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedule = Vec::new();
    let run_until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < run_until {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..900)));
        match rng.random_range(0..10) {
            // Kill a node of a transaction whose commit was just requested.
            0..=4 => {
                while commits_rx.try_recv().is_ok() {}
                let Ok((holder, via)) = commits_rx.recv_timeout(Duration::from_secs(3)) else {
                    continue;
                };
                let (victim, role) = match rng.random_range(0..3) {
                    0 => (holder, "holder"),
                    1 => (via, "commit-serving"),
                    _ => match (0..NODES).find(|n| *n != holder && *n != via) {
                        Some(n) => (n, "uninvolved"),
                        None => (holder, "holder"),
                    },
                };
                let delay_ms = rng.random_range(0..5);
                std::thread::sleep(Duration::from_millis(delay_ms));
                let down_ms = rng.random_range(100..1500);
                cluster.lock().unwrap().nodes[victim].sidecar.kill();
                std::thread::sleep(Duration::from_millis(down_ms));
                let restarted = cluster.lock().unwrap().nodes[victim].sidecar.spawn();
                assert!(
                    restarted.is_ok(),
                    "node {victim} did not restart: {restarted:?}"
                );
                schedule.push(format!(
                    "SIGKILL {role} node {} {delay_ms} ms after a commit request, down {down_ms} ms",
                    victim + 1
                ));
            }
            5..=6 => {
                let victim = rng.random_range(0..NODES);
                let stall_ms = rng.random_range(1000..3000);
                cluster.lock().unwrap().nodes[victim].sidecar.signal("STOP");
                std::thread::sleep(Duration::from_millis(stall_ms));
                cluster.lock().unwrap().nodes[victim].sidecar.signal("CONT");
                schedule.push(format!("SIGSTOP node {} for {stall_ms} ms", victim + 1));
            }
            _ => {
                let down_ms = rng.random_range(300..2000);
                cluster.lock().unwrap().store.set_outage(true);
                std::thread::sleep(Duration::from_millis(down_ms));
                cluster.lock().unwrap().store.set_outage(false);
                schedule.push(format!("redis down for {down_ms} ms"));
            }
        }
    }
    workload.stop.store(true, Ordering::Relaxed);
    let history: Vec<TxnRecord> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let report = format!("seed {seed}; faults: {schedule:#?}");

    // 1. Read atomicity (and no read of an aborted transaction's writes).
    assert_read_atomic_in(&history, &report);
    let committed = history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count();
    assert!(
        committed > 0,
        "no transaction committed in {} tries\n{report}",
        history.len()
    );

    // 2. The plain keys converge on a state that keeps every acknowledged
    //    commit and shows no aborted one.
    let acknowledged = AcknowledgedCommits::of(&history);
    let judge = |key: &str, seen: Option<String>| acknowledged.judge(key, seen.as_deref());
    let outside = cluster.lock().unwrap().outside_reader();
    let converged = eventually(Duration::from_secs(15), || {
        keys.iter()
            .all(|k| judge(k, outside.plain_writer(k)).is_ok())
    });
    if !converged {
        let view: Vec<_> = keys
            .iter()
            .map(|k| (k, judge(k, outside.plain_writer(k))))
            .collect();
        panic!("the plain keys never kept every acknowledged commit: {view:#?}\n{report}");
    }
    println!(
        "gRPC fault report: seed {seed}, {} transactions ({committed} committed), {} faults, 0 anomalies, 0 lost commits",
        history.len(),
        schedule.len()
    );
}
