//! Faults aimed at DAGs in flight across nodes, judged from outside: real
//! sidecars over a real `redis-server`, DAGs spanning 2 and 3 nodes, and a
//! seeded fault schedule (SIGKILL of the coordinator, a participant or an
//! uninvolved node, including 0 ms after a commit request; SIGSTOP; storage
//! outages). Every run prints its seed; `AFT_FAULT_SEED=<seed>` replays the
//! same schedule (timings are real, so the interleaving may differ).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aft::client::IpcClient;
use aft::history::{Op, Status, TxnRecord};
use aft::proto::aft::TransactionStatus;
use aft_testkit::cluster::{ClusterStore, LocalCluster};
use aft_testkit::dag::{
    assert_read_atomic_in, recorded_status, AcknowledgedCommits, SETTLE_WITHIN,
};
use aft_testkit::eventually;
use aft_testkit::seeded::FaultRun;
use aft_testkit::tagged::{tagged, writer_of_payload};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");

fn client(cluster: &LocalCluster, node: usize, thread: u32, timeout: Duration) -> IpcClient {
    IpcClient::connect(&cluster.nodes[node].ipc, thread, timeout).unwrap()
}

/// A node restarted while a DAG moves onto it keeps what that DAG needs.
///
/// 1. init commits k1 and k2;
/// 2. T starts on node 1 and reads init's k1;
/// 3. U on node 3 overwrites k1 and k2;
/// 4. node 2 is killed and restarted;
/// 5. T continues on node 2 and reads k2: read atomicity requires init's
///    k2, so the restart must not have deleted it (nor init's commit record).
#[test]
fn a_node_restarted_while_a_dag_moves_onto_it_keeps_what_the_dag_needs() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let timeout = Duration::from_secs(10);
    let (a, c) = (
        client(&cluster, 0, 0, timeout),
        client(&cluster, 2, 0, timeout),
    );
    let init = a.start().unwrap().id;
    a.put(
        Some(&init),
        &[("k1", tagged(&init, "k1")), ("k2", tagged(&init, "k2"))],
    )
    .unwrap();
    assert_eq!(
        a.commit(&init, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    let t = a.start().unwrap().id;
    assert_eq!(
        writer_of_payload(a.get(Some(&t), &["k1"]).unwrap().remove(0)),
        Some(init.clone())
    );
    let u = c.start().unwrap().id;
    c.put(
        Some(&u),
        &[("k1", tagged(&u, "k1")), ("k2", tagged(&u, "k2"))],
    )
    .unwrap();
    assert_eq!(
        c.commit(&u, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    // Every node learns U and runs GC passes (every second) meanwhile.
    let b = client(&cluster, 1, 0, timeout);
    assert!(eventually(Duration::from_secs(3), || writer_of_payload(
        b.get(None, &["k2"]).unwrap().remove(0)
    ) == Some(u.clone())));
    std::thread::sleep(Duration::from_millis(1500));
    drop(b);

    cluster.nodes[1].sidecar.kill();
    cluster.nodes[1].sidecar.spawn().unwrap();
    // Give the restarted node time for its recovery GC and a few passes.
    std::thread::sleep(Duration::from_millis(1500));
    let outside = cluster.outside_reader();
    assert!(
        outside.raw(format!("aft/d/{init}/k2").as_bytes()).is_some(),
        "the restart deleted init's k2, which T still needs"
    );
    assert!(
        outside.raw(format!("aft/c/{init}").as_bytes()).is_some(),
        "the restart deleted init's commit record, which T still needs"
    );
    let b = client(&cluster, 1, 1, timeout);
    b.continue_from(&t, "127.0.0.1").unwrap();
    let k2 = b
        .get(Some(&t), &["k2"])
        .expect("T's read of k2 on the restarted node");
    assert_eq!(
        writer_of_payload(k2.into_iter().next().flatten()),
        Some(init.clone()),
        "read atomicity: T read init's k1, so it must read init's k2"
    );
    assert_eq!(
        b.commit(&t, &["127.0.0.1".into()]).unwrap().status,
        TransactionStatus::Committed
    );
    // Once T is over, the superseded versions do go (GC is not just off).
    assert!(
        eventually(Duration::from_secs(30), || outside
            .raw(format!("aft/d/{init}/k2").as_bytes())
            .is_none()),
        "init's superseded k2 is never collected"
    );
}

/// A continue that fails is remembered across a crash of its node.
///
/// 1. T starts on node 1 and writes x;
/// 2. node 1 stalls until node 2 declares it down: node 2's continue of T
///    fails without reaching node 1, so node 1 never learns T came to
///    node 2 (its record of visits cannot help later);
/// 3. node 2 dies right after that failure, before answering (failpoint
///    `continue.failed`): its executor saw nothing, as its reads would
///    have answered nothing;
/// 4. node 2 restarts, T continues there again (now it works), writes y,
///    and commits: it must abort, and nothing of it may reach the store.
///
/// On Redis the failure is fenced in storage before the continue is
/// answered; on Anna (no conditional writes) the restarted node refuses
/// transactions that began before it. Either way a DAG started after the
/// restart still commits across both nodes.
fn a_failed_continue_survives_a_crash_of_its_node(store: ClusterStore) {
    let mut cluster = LocalCluster::start_on(
        store,
        Path::new(BIN),
        2,
        &["--peer-timeout-ms", "500", "--peer-dead-after-ms", "600"],
        |i| {
            if i == 1 {
                vec![("AFT_FAILPOINTS".into(), "continue.failed=exit".into())]
            } else {
                Vec::new()
            }
        },
    );
    let timeout = Duration::from_secs(10);
    let a = client(&cluster, 0, 0, timeout);
    let t = a.start().unwrap().id;
    a.put(Some(&t), &[("x", tagged(&t, "x"))]).unwrap();

    // Long enough for node 2 to declare node 1 down, short enough that
    // node 1 does not count itself stalled (which would doom T there).
    let b = client(&cluster, 1, 0, Duration::from_secs(3));
    cluster.nodes[0].sidecar.signal("STOP");
    std::thread::sleep(Duration::from_millis(1000));
    let tid = t.clone();
    let lost = std::thread::spawn(move || b.continue_from(&tid, "127.0.0.1").is_err());
    let died = cluster.nodes[1].sidecar.wait_exit(Duration::from_secs(5));
    cluster.nodes[0].sidecar.signal("CONT");
    assert_eq!(died, Some(137), "node 2 did not die at the failpoint");
    assert!(
        lost.join().unwrap(),
        "node 2 answered a continue it should have died in"
    );
    cluster.nodes[1]
        .sidecar
        .spec
        .env
        .retain(|(name, _)| name != "AFT_FAILPOINTS");
    cluster.nodes[1].sidecar.spawn().unwrap();

    // Node 2 reaches node 1 again once a probe DAG's continue works.
    let b = client(&cluster, 1, 1, timeout);
    assert!(
        eventually(Duration::from_secs(10), || {
            let probe = a.start().unwrap().id;
            let moved = b.continue_from(&probe, "127.0.0.1").is_ok();
            let _ = b.abort(&probe);
            moved
        }),
        "node 2 never reached node 1 again"
    );
    b.continue_from(&t, "127.0.0.1")
        .expect("T's second continue onto node 2");
    b.put(Some(&t), &[("y", tagged(&t, "y"))]).unwrap();
    let ended = b.commit(&t, &["127.0.0.1".into()]).unwrap();
    assert_eq!(
        ended.status,
        TransactionStatus::Aborted,
        "T committed although its function on node 2 ran on a failed continue that node 2 forgot in its crash"
    );
    let outside = cluster.outside_reader();
    for key in ["x", "y"] {
        assert_ne!(
            outside.plain_writer(key).as_deref(),
            Some(t.as_str()),
            "the aborted T's {key} reached the store"
        );
    }

    // A DAG that begins after the restart moves between the nodes and commits.
    let u = a.start().unwrap().id;
    a.put(Some(&u), &[("x", tagged(&u, "x"))]).unwrap();
    b.continue_from(&u, "127.0.0.1").unwrap();
    b.put(Some(&u), &[("y", tagged(&u, "y"))]).unwrap();
    assert_eq!(
        b.commit(&u, &["127.0.0.1".into()]).unwrap().status,
        TransactionStatus::Committed
    );
    let published = outside.await_published(&["x", "y"], &u, Duration::from_secs(10));
    assert!(
        published.is_ok(),
        "U's writes never reached the store: {published:?}"
    );
}

#[test]
fn a_failed_continue_survives_a_crash_of_its_node_on_redis() {
    a_failed_continue_survives_a_crash_of_its_node(ClusterStore::redis());
}

#[test]
fn a_failed_continue_survives_a_crash_of_its_node_on_anna() {
    a_failed_continue_survives_a_crash_of_its_node(ClusterStore::anna());
}

/// What the workload records of one call.
#[derive(Debug, Clone)]
struct Call {
    node: usize,
    started: Instant,
    took: Duration,
}

/// When each node, and storage, was faulted.
#[derive(Default)]
struct FaultLog {
    /// (node or `usize::MAX` for storage, from, to, what).
    windows: Vec<(usize, Instant, Instant, String)>,
}

impl FaultLog {
    /// Whether `node` or storage was faulted at any time in `[from, to]`
    /// (with a margin for detection and recovery).
    fn overlaps(&self, node: usize, from: Instant, to: Instant, margin: Duration) -> bool {
        self.windows.iter().any(|(n, start, end, _)| {
            (*n == node || *n == usize::MAX) && *start <= to && *end + margin >= from
        })
    }
}

/// A commit request the workload just sent: (coordinator, other nodes of the DAG).
type CommitSent = (usize, Vec<usize>);

struct Workload {
    dirs: Vec<std::path::PathBuf>,
    addresses: Vec<String>,
    keys: Vec<String>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    commits: crossbeam_channel::Sender<CommitSent>,
}

/// One executor thread's clients, one per node, rebuilt after any error (a
/// node that restarted, or a reply that never came) so no stale reply is
/// ever taken for a new one.
struct Clients {
    worker: u32,
    generation: u32,
    dirs: Vec<std::path::PathBuf>,
    clients: Vec<Option<IpcClient>>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl Clients {
    fn get(&mut self, node: usize) -> Option<&IpcClient> {
        if self.clients[node].is_none() {
            self.generation += 1;
            let thread = self.worker * 10_000 + self.generation;
            self.clients[node] = IpcClient::connect(&self.dirs[node], thread, CALL_TIMEOUT).ok();
        }
        self.clients[node].as_ref()
    }

    fn reset(&mut self, node: usize) {
        self.clients[node] = None;
    }
}

fn run_worker(w: &Workload, worker: u32, seed: u64) -> (Vec<TxnRecord>, Vec<Call>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = Clients {
        worker,
        generation: 0,
        dirs: w.dirs.clone(),
        clients: vec![None, None, None],
    };
    let now = || w.epoch.elapsed().as_nanos() as u64;
    let mut history = Vec::new();
    let mut calls = Vec::new();
    let mut problems = Vec::new();
    while !w.stop.load(Ordering::Relaxed) {
        // A chain over 2 or 3 distinct nodes, or a fan-out/fan-in over 3.
        let mut nodes = vec![0usize, 1, 2];
        for i in (1..nodes.len()).rev() {
            nodes.swap(i, rng.random_range(0..=i));
        }
        let fan = rng.random_bool(0.25);
        let len = if fan { 3 } else { rng.random_range(2..=3) };
        nodes.truncate(len);
        let mut ops = Vec::new();
        let mut failed_reads: Vec<String> = Vec::new();
        let mut failed = false;
        let mut tid = String::new();
        // (function node, upstream function nodes)
        let functions: Vec<(usize, Vec<usize>)> = if fan {
            vec![
                (nodes[0], vec![]),
                (nodes[1], vec![nodes[0]]),
                (nodes[2], vec![nodes[0], nodes[1]]),
            ]
        } else {
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, if i == 0 { vec![] } else { vec![nodes[i - 1]] }))
                .collect()
        };
        let call = |clients: &mut Clients,
                    node: usize,
                    calls: &mut Vec<Call>,
                    f: &mut dyn FnMut(&IpcClient) -> Result<(), String>|
         -> Result<(), String> {
            let started = Instant::now();
            let result = match clients.get(node) {
                Some(c) => f(c),
                None => Err("cannot connect".into()),
            };
            calls.push(Call {
                node,
                started,
                took: started.elapsed(),
            });
            if result.is_err() {
                clients.reset(node);
            }
            result
        };
        for (i, (node, upstream)) in functions.iter().enumerate() {
            if failed {
                break;
            }
            let r = if i == 0 {
                call(&mut clients, *node, &mut calls, &mut |c| {
                    tid = c.start().map_err(|e| e.to_string())?.id;
                    Ok(())
                })
            } else {
                let mut r = Ok(());
                for up in upstream {
                    let address = w.addresses[*up].clone();
                    let t = tid.clone();
                    r = r.and_then(|()| {
                        call(&mut clients, *node, &mut calls, &mut |c| {
                            c.continue_from(&t, &address).map_err(|e| e.to_string())
                        })
                    });
                }
                r
            };
            if r.is_err() {
                failed = true;
                break;
            }
            for _ in 0..2 {
                let key = w.keys[rng.random_range(0..w.keys.len())].clone();
                let t = tid.clone();
                let mut seen = None;
                let read = call(&mut clients, *node, &mut calls, &mut |c| {
                    let got = c.get(Some(&t), &[&key]).map_err(|e| e.to_string())?;
                    seen = writer_of_payload(got.into_iter().next().flatten());
                    Ok(())
                });
                match read {
                    Ok(()) => ops.push(Op::Read {
                        key,
                        writer: seen,
                        returned_at: now(),
                    }),
                    // Cloudburst's client reports an error reply as "no
                    // value", and the function goes on: the sidecar must
                    // then refuse to commit the DAG. (The failed read is not
                    // a read of the store, so the history leaves it out.)
                    Err(_) => failed_reads.push(key),
                }
            }
            let key = w.keys[rng.random_range(0..w.keys.len())].clone();
            let t = tid.clone();
            let put = call(&mut clients, *node, &mut calls, &mut |c| {
                c.put(Some(&t), &[(&key, tagged(&t, &key))])
                    .map_err(|e| e.to_string())
            });
            if put.is_err() {
                failed = true;
                break;
            }
            ops.push(Op::Write { key });
        }
        if tid.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let sink = functions.last().map(|(n, _)| *n).unwrap_or(0);
        let others: Vec<usize> = nodes.iter().copied().filter(|n| *n != sink).collect();
        let mut status = Status::Aborted;
        let mut window = None;
        if !failed {
            let addresses: Vec<String> = others.iter().map(|n| w.addresses[*n].clone()).collect();
            let _ = w.commits.try_send((sink, others.clone()));
            let requested = now();
            let t = tid.clone();
            let mut answer;
            // RUNNING: storage did not confirm the commit point and the
            // sidecar is settling it; ask again, as an executor would, so
            // the history records the settled outcome (each ask is its own
            // timed call).
            let settle_by = Instant::now() + SETTLE_WITHIN;
            loop {
                answer = None;
                let sent = call(&mut clients, sink, &mut calls, &mut |c| {
                    let tag = c.commit(&t, &addresses).map_err(|e| e.to_string())?;
                    if tag.id != t {
                        return Err(format!("commit reply for {} to {t}", tag.id));
                    }
                    answer = Some(tag.status);
                    Ok(())
                });
                if sent.is_err()
                    || answer != Some(TransactionStatus::Running)
                    || Instant::now() >= settle_by
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            status = recorded_status(answer);
            window = Some((requested, now()));
        } else {
            // Best effort: the DAG is abandoned; its commit was never asked for.
            let t = tid.clone();
            let _ = call(&mut clients, functions[0].0, &mut calls, &mut |c| {
                c.abort(&t).map(|_| ()).map_err(|e| e.to_string())
            });
        }
        if status == Status::Committed {
            for key in &failed_reads {
                problems.push(format!(
                    "committed DAG {tid} had a read of {key} that failed (its executor saw `None`)"
                ));
            }
            for op in &ops {
                if let Op::Read {
                    key, writer: None, ..
                } = op
                {
                    problems.push(format!(
                        "committed DAG {tid} read `None` for {key}, which always had a committed value"
                    ));
                }
            }
        }
        history.push(TxnRecord {
            id: tid,
            status,
            commit_timestamp: None,
            commit_window: window,
            ops,
        });
    }
    (history, calls, problems)
}

/// Seeded faults against DAGs in flight across 3 nodes over Redis.
#[test]
fn cross_node_faults_at_random_moments_keep_every_guarantee_on_redis() {
    fault_run(ClusterStore::redis(), 20);
}

/// The same over Anna (the protocol-faithful test server: no conditional
/// writes, no atomic batches), shorter.
#[test]
fn cross_node_faults_at_random_moments_keep_every_guarantee_on_anna() {
    fault_run(ClusterStore::anna(), 12);
}

/// The same over S3 (SeaweedFS: no atomic batches, conditional writes by
/// `If-None-Match` and `If-Match`; a storage outage kills it and starts it
/// again on its data), shorter.
#[test]
fn cross_node_faults_at_random_moments_keep_every_guarantee_on_s3() {
    // A commit is several HTTP requests to SeaweedFS on shared cores: a
    // storage timeout of 500 ms would abort most DAGs and test little.
    fault_run_with(ClusterStore::s3(), 10, 2000);
}

/// Runs DAGs on 4 executor threads across 3 nodes over `store` for
/// `default_secs` (or `AFT_FAULT_SECS`) under a seeded fault schedule
/// (`AFT_FAULT_SEED`), then judges the history and the converged state.
fn fault_run(store: ClusterStore, default_secs: u64) {
    fault_run_with(store, default_secs, 500);
}

/// [`fault_run`] with the sidecars' storage timeout (the decision timeout
/// stays four times as long).
fn fault_run_with(store: ClusterStore, default_secs: u64, storage_timeout_ms: u64) {
    let storage_timeout = storage_timeout_ms.to_string();
    let decision_timeout = (4 * storage_timeout_ms).to_string();
    let store_name = store.name();
    let FaultRun { seed, secs } = FaultRun::from_env(
        &format!("cross-node fault run on {store_name}"),
        default_secs,
    );
    let cluster = LocalCluster::start_on(
        store,
        Path::new(BIN),
        3,
        &[
            "--decision-timeout-ms",
            &decision_timeout,
            "--publish-sweep-ms",
            "500",
            "--storage-timeout-ms",
            &storage_timeout,
            "--peer-timeout-ms",
            "800",
        ],
        |_| Vec::new(),
    );
    let keys: Vec<String> = (0..6).map(|i| format!("hot{i}")).collect();
    // Every key gets a committed value first: a committed DAG must never read `None`.
    {
        let c = client(&cluster, 0, 999, Duration::from_secs(10));
        let init = c.start().unwrap().id;
        let writes: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.as_str(), tagged(&init, k)))
            .collect();
        c.put(Some(&init), &writes).unwrap();
        assert_eq!(
            c.commit(&init, &[]).unwrap().status,
            TransactionStatus::Committed
        );
        for node in 0..3 {
            let n = client(&cluster, node, 998, Duration::from_secs(10));
            let probe: Vec<&str> = keys.iter().map(String::as_str).collect();
            assert!(eventually(Duration::from_secs(5), || n
                .get(None, &probe)
                .unwrap()
                .iter()
                .all(|v| v.is_some())));
        }
    }
    let dirs: Vec<_> = cluster.nodes.iter().map(|n| n.ipc.clone()).collect();
    let addresses: Vec<_> = cluster.nodes.iter().map(|n| n.address.clone()).collect();
    let cluster = Arc::new(Mutex::new(cluster));
    let stop = Arc::new(AtomicBool::new(false));
    let (commits_tx, commits_rx) = crossbeam_channel::bounded::<CommitSent>(64);
    let workload = Arc::new(Workload {
        dirs,
        addresses,
        keys: keys.clone(),
        epoch: Instant::now(),
        stop: Arc::clone(&stop),
        commits: commits_tx,
    });
    let workers: Vec<_> = (0..4u32)
        .map(|w| {
            let workload = Arc::clone(&workload);
            let worker_seed = seed.wrapping_add(u64::from(w) + 1);
            std::thread::spawn(move || run_worker(&workload, w, worker_seed))
        })
        .collect();

    // The fault schedule.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = FaultLog::default();
    let run_until = Instant::now() + Duration::from_secs(secs);
    let mut schedule = Vec::new();
    while Instant::now() < run_until {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..900)));
        let kind = rng.random_range(0..10);
        match kind {
            // Kill a node of a DAG whose commit was just requested.
            0..=4 => {
                while commits_rx.try_recv().is_ok() {}
                let Ok((coordinator, others)) = commits_rx.recv_timeout(Duration::from_secs(3))
                else {
                    continue;
                };
                let (victim, role) = match rng.random_range(0..3) {
                    0 => (coordinator, "coordinator"),
                    1 if !others.is_empty() => {
                        (others[rng.random_range(0..others.len())], "participant")
                    }
                    _ => {
                        let uninvolved: Vec<usize> = (0..3)
                            .filter(|n| *n != coordinator && !others.contains(n))
                            .collect();
                        match uninvolved.first() {
                            Some(n) => (*n, "uninvolved"),
                            None => (coordinator, "coordinator"),
                        }
                    }
                };
                let delay_ms = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..5)
                };
                std::thread::sleep(Duration::from_millis(delay_ms));
                let down_ms = rng.random_range(100..1500);
                let from = Instant::now();
                cluster.lock().unwrap().nodes[victim].sidecar.kill();
                std::thread::sleep(Duration::from_millis(down_ms));
                let restarted = cluster.lock().unwrap().nodes[victim].sidecar.spawn();
                assert!(
                    restarted.is_ok(),
                    "node {victim} did not restart: {restarted:?}"
                );
                let what = format!("SIGKILL {role} node {} {delay_ms} ms after a commit request, down {down_ms} ms", victim + 1);
                log.windows
                    .push((victim, from, Instant::now(), what.clone()));
                schedule.push(what);
            }
            // Stall a node longer than the peer timeouts.
            5..=6 => {
                let victim = rng.random_range(0..3);
                let stall_ms = rng.random_range(1000..3000);
                let from = Instant::now();
                cluster.lock().unwrap().nodes[victim].sidecar.signal("STOP");
                std::thread::sleep(Duration::from_millis(stall_ms));
                cluster.lock().unwrap().nodes[victim].sidecar.signal("CONT");
                let what = format!("SIGSTOP node {} for {stall_ms} ms", victim + 1);
                log.windows
                    .push((victim, from, Instant::now(), what.clone()));
                schedule.push(what);
            }
            // A storage outage.
            _ => {
                let down_ms = rng.random_range(300..2000);
                let from = Instant::now();
                cluster.lock().unwrap().store.set_outage(true);
                std::thread::sleep(Duration::from_millis(down_ms));
                cluster.lock().unwrap().store.set_outage(false);
                let what = format!("{store_name} down for {down_ms} ms");
                log.windows
                    .push((usize::MAX, from, Instant::now(), what.clone()));
                schedule.push(what);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    let mut calls = Vec::new();
    let mut problems = Vec::new();
    for worker in workers {
        let (h, c, p) = worker.join().unwrap();
        history.extend(h);
        calls.extend(c);
        problems.extend(p);
    }
    let report = format!("{store_name}, seed {seed}; faults: {schedule:#?}");

    // 1. Read atomicity over the whole history.
    assert_read_atomic_in(&history, &report);
    // 2. No committed DAG read `None` for a key with a committed value.
    assert!(problems.is_empty(), "{problems:#?}\n{report}");
    // 3. Requests to a node that was up (and storage up) were answered in
    //    bounded time: a dead peer costs at most a prepare timeout.
    let bound = Duration::from_secs(8);
    let slow: Vec<&Call> = calls
        .iter()
        .filter(|c| c.took > bound)
        .filter(|c| {
            !log.overlaps(
                c.node,
                c.started,
                c.started + c.took,
                Duration::from_secs(1),
            )
        })
        .collect();
    assert!(
        slow.is_empty(),
        "slow calls on healthy nodes: {slow:?}\n{report}"
    );

    // 4. After the faults: every node, and the store's plain keys, converge
    //    on a state that loses no acknowledged commit.
    let cluster = cluster.lock().unwrap();
    let acknowledged = AcknowledgedCommits::of(&history);
    let outside = cluster.outside_reader();
    let judge = |key: &str, seen: Option<String>| acknowledged.judge(key, seen.as_deref());
    let converged = eventually(Duration::from_secs(15), || {
        (0..3).all(|node| {
            let Ok(c) = IpcClient::connect(
                &cluster.nodes[node].ipc,
                5000 + node as u32,
                Duration::from_secs(5),
            ) else {
                return false;
            };
            keys.iter().all(|k| {
                let seen = c
                    .get(None, &[k])
                    .ok()
                    .and_then(|mut v| writer_of_payload(v.remove(0)));
                judge(k, seen).is_ok()
            })
        }) && keys
            .iter()
            .all(|k| judge(k, outside.plain_writer(k)).is_ok())
    });
    if !converged {
        let outside_view: Vec<_> = keys
            .iter()
            .map(|k| {
                (
                    k,
                    outside.plain_writer(k),
                    judge(k, outside.plain_writer(k)),
                )
            })
            .collect();
        panic!("no convergence on a state that keeps every acknowledged commit: {outside_view:#?}\n{report}");
    }
    let committed = history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count();
    println!(
        "fault report ({store_name}): seed {seed}, {} DAGs ({committed} committed), {} faults, 0 anomalies, 0 lost commits, 0 None reads",
        history.len(),
        schedule.len()
    );
}
