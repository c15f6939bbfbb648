//! Multi-node DAGs judged the way a deployment sees them: results read
//! straight from the store's plain keys (as Cloudburst's user client reads
//! them), reads that fail, and a function registered on one node and pinned
//! on another. Real sidecars over a real `redis-server`, and over Anna
//! through anna-client's protocol-faithful test server.

use std::path::Path;
use std::time::{Duration, Instant};

use aft::client::IpcClient;
use aft::proto::aft::TransactionStatus;
use aft_testkit::cluster::{ClusterStore, LocalCluster};
use aft_testkit::dag::send_commit;
use aft_testkit::eventually;
use aft_testkit::tagged::{tagged, writer_of_payload};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TIMEOUT: Duration = Duration::from_secs(10);
/// While every node is up, a committed write set reaches its plain keys
/// within this bound of the acknowledgement (docs/ARCHITECTURE.md).
const PUBLISH_BOUND: Duration = Duration::from_secs(1);

fn client(cluster: &LocalCluster, node: usize, thread: u32) -> IpcClient {
    IpcClient::connect(&cluster.nodes[node].ipc, thread, TIMEOUT).unwrap()
}

/// A read as Cloudburst's executor client makes it: an error reply is
/// reported as "no value", exactly like a missing key.
fn cloudburst_get(c: &IpcClient, tid: &str, key: &str) -> Option<String> {
    c.get(Some(tid), &[key])
        .ok()
        .and_then(|mut v| writer_of_payload(v.remove(0)))
}

/// A DAG shape: which node each function runs on, which functions it
/// continues from (indexes into the list), and the keys it writes. Function 0 starts the DAG; the last one is
/// the sink and commits.
struct Shape {
    name: &'static str,
    functions: Vec<(usize, Vec<usize>, Vec<&'static str>)>,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "chain over 2 nodes",
            functions: vec![(0, vec![], vec!["c2a"]), (1, vec![0], vec!["c2b"])],
        },
        Shape {
            name: "chain over 3 nodes",
            functions: vec![
                (0, vec![], vec!["c3a"]),
                (1, vec![0], vec!["c3b"]),
                (2, vec![1], vec!["c3c"]),
            ],
        },
        Shape {
            name: "fan-out then fan-in on the first node",
            functions: vec![
                (0, vec![], vec!["foroot"]),
                (1, vec![0], vec!["foleft"]),
                (2, vec![0], vec!["foright"]),
                (0, vec![1, 2], vec!["fosink"]),
            ],
        },
        Shape {
            name: "fan-in on a third node that writes nothing",
            functions: vec![
                (0, vec![], vec!["fiup", "fishared"]),
                (1, vec![0], vec!["fileft", "fishared"]),
                (2, vec![0, 1], vec![]),
            ],
        },
        Shape {
            name: "every node writes, a key rewritten downstream",
            functions: vec![
                (1, vec![], vec!["ewa", "ewshared"]),
                (2, vec![0], vec!["ewb", "ewshared"]),
                (0, vec![1], vec!["ewc"]),
            ],
        },
    ]
}

/// Runs `shape` as one DAG; returns its id and the keys it wrote.
fn run_shape(cluster: &LocalCluster, shape: &Shape, thread: u32) -> (String, Vec<&'static str>) {
    let clients: Vec<IpcClient> = (0..cluster.nodes.len())
        .map(|i| client(cluster, i, thread))
        .collect();
    let (first, _, _) = &shape.functions[0];
    let tid = clients[*first].start().unwrap().id;
    let mut written = Vec::new();
    let mut placed = Vec::new();
    for (node, upstream, writes) in &shape.functions {
        let c = &clients[*node];
        for up in upstream {
            let (up_node, _, _) = &shape.functions[*up];
            if up_node != node {
                c.continue_from(&tid, &cluster.nodes[*up_node].address)
                    .unwrap();
            }
        }
        for key in writes {
            c.put(Some(&tid), &[(key, tagged(&tid, key))]).unwrap();
            written.push(*key);
        }
        placed.push(*node);
    }
    let (sink, _, _) = shape.functions.last().unwrap();
    let others: Vec<String> = placed
        .iter()
        .filter(|n| *n != sink)
        .map(|n| cluster.nodes[*n].address.clone())
        .collect();
    let status = clients[*sink].commit(&tid, &others).unwrap().status;
    if status != TransactionStatus::Committed {
        let logs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.address, n.sidecar.stderr()))
            .collect();
        panic!("{}: {status:?}\n{}", shape.name, logs.join("\n"));
    }
    written.sort();
    written.dedup();
    (tid, written)
}

/// `published_with_the_record`: the store applies a commit's record and its
/// publication in one atomic step (Redis), so the plain keys must hold the
/// DAG's writes as soon as the commit is acknowledged, with no wait.
fn every_shape_reaches_the_plain_keys(store: ClusterStore, published_with_the_record: bool) {
    let cluster = LocalCluster::start_on(store, Path::new(BIN), 3, &[], |_| Vec::new());
    let outside = cluster.outside_reader();
    for (i, shape) in shapes().iter().enumerate() {
        let (tid, keys) = run_shape(&cluster, shape, i as u32);
        let bound = if published_with_the_record {
            Duration::ZERO
        } else {
            PUBLISH_BOUND
        };
        match outside.await_published(&keys, &tid, bound) {
            Ok(took) => println!("{}: published in {took:?}", shape.name),
            Err(seen) => panic!(
                "{}: plain keys {keys:?} not published within {PUBLISH_BOUND:?}: writers {seen:?}",
                shape.name
            ),
        }
        // Nothing is left to the sweep: the coordinator published it all.
        let intent = format!("aft/p/{tid}");
        assert!(
            outside.raw(intent.as_bytes()).is_none(),
            "{}: publication intent left behind",
            shape.name
        );
    }
}

#[test]
fn every_dag_shape_reaches_the_plain_keys_on_redis() {
    every_shape_reaches_the_plain_keys(ClusterStore::redis(), true);
}

#[test]
fn every_dag_shape_reaches_the_plain_keys_on_anna() {
    every_shape_reaches_the_plain_keys(ClusterStore::anna(), false);
}

/// DynamoDB: a commit that fits one transaction is one `TransactWriteItems`
/// (data, markers, intent, record); publication follows the acknowledgement.
#[test]
fn every_dag_shape_reaches_the_plain_keys_on_dynamodb() {
    every_shape_reaches_the_plain_keys(ClusterStore::dynamodb(), false);
}

/// S3: no atomic multi-object write; data first, the record last with
/// `If-None-Match`, publication after the acknowledgement.
#[test]
fn every_dag_shape_reaches_the_plain_keys_on_s3() {
    every_shape_reaches_the_plain_keys(ClusterStore::s3(), false);
}

/// The coordinator dies right after its commit point and never comes back.
/// On Anna the commit's data carries a publication intent and another
/// node's publication sweep publishes the whole write set, the
/// participant's keys included; on Redis the publication went with the
/// record. Either way, the write set reaches the plain keys.
#[test]
fn a_coordinator_that_dies_after_its_commit_point_is_published_by_another_node() {
    coordinator_dies_after_its_commit_point(ClusterStore::anna());
}

#[test]
fn a_coordinator_that_dies_after_its_commit_point_is_published_with_its_record_on_redis() {
    coordinator_dies_after_its_commit_point(ClusterStore::redis());
}

fn coordinator_dies_after_its_commit_point(store: ClusterStore) {
    let sweep_ms = 300;
    let cluster = LocalCluster::start_on(
        store,
        Path::new(BIN),
        3,
        &["--publish-sweep-ms", "300"],
        |i| {
            if i == 1 {
                vec![(
                    "AFT_FAILPOINTS".to_string(),
                    "commit.after_record=exit".to_string(),
                )]
            } else {
                Vec::new()
            }
        },
    );
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("pa", tagged(&tid, "pa"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("pb", tagged(&tid, "pb"))]).unwrap();
    send_commit(&b, &tid, &["127.0.0.1".to_string()]);
    let died = Instant::now();
    let mut cluster = cluster;
    assert_eq!(
        cluster.nodes[1].sidecar.wait_exit(Duration::from_secs(10)),
        Some(137),
        "the coordinator did not reach its commit point"
    );
    // The sweep acts on intents older than one interval and runs every
    // interval: two intervals, plus slack for a loaded machine.
    let bound = Duration::from_millis(2 * sweep_ms) + Duration::from_secs(3);
    let outside = cluster.outside_reader();
    match outside.await_published(&["pa", "pb"], &tid, bound) {
        Ok(_) => println!(
            "published by the sweep {:?} after the crash",
            died.elapsed()
        ),
        Err(seen) => panic!("not published within {bound:?} of the crash: {seen:?}"),
    }
    let intent = format!("aft/p/{tid}");
    assert!(eventually(Duration::from_secs(2), || outside
        .raw(intent.as_bytes())
        .is_none()));
}

/// A participant killed right after the commit is acknowledged: its keys
/// still reach the plain keys (the coordinator publishes them from storage).
#[test]
fn a_participant_killed_after_the_acknowledgement_is_published_all_the_same() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 2, &[]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("ka", tagged(&tid, "ka"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("kb", tagged(&tid, "kb"))]).unwrap();
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".into()]).unwrap().status,
        TransactionStatus::Committed
    );
    cluster.nodes[0].sidecar.kill();
    let outside = cluster.outside_reader();
    if let Err(seen) = outside.await_published(&["ka", "kb"], &tid, PUBLISH_BOUND) {
        panic!("not published: {seen:?}");
    }
}

/// Commits `key` through `c` in a transaction of its own.
fn commit_key(c: &IpcClient, key: &str) -> String {
    let tid = c.start().unwrap().id;
    c.put(Some(&tid), &[(key, tagged(&tid, key))]).unwrap();
    assert_eq!(
        c.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    tid
}

/// An upstream node that stops answering, with values kept where they were
/// buffered (`--peer-ship-values-bytes 0`): the downstream read of the key
/// it buffers fails (Cloudburst's executor sees "no value"), and the DAG can
/// then only abort, read-only or not.
#[test]
fn a_read_that_an_unreachable_upstream_could_not_answer_aborts_the_dag() {
    let cluster = LocalCluster::start(
        Path::new(BIN),
        2,
        &["--peer-timeout-ms", "500", "--peer-ship-values-bytes", "0"],
    );
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("up", tagged(&tid, "up"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    cluster.nodes[0].sidecar.signal("STOP");
    assert_eq!(
        cloudburst_get(&b, &tid, "up"),
        None,
        "the read cannot succeed"
    );
    b.put(Some(&tid), &[("down", tagged(&tid, "down"))])
        .unwrap();
    cluster.nodes[0].sidecar.signal("CONT");
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".into()]).unwrap().status,
        TransactionStatus::Aborted,
        "a DAG that read `None` for a buffered key must not commit"
    );
    let outside = cluster.outside_reader();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outside.plain_writer("up"), None);
    assert_eq!(outside.plain_writer("down"), None);
}

/// With the default settings the upstream node hands its buffered values to
/// the downstream node at `continue`: the downstream read of them needs no
/// peer, and succeeds while the upstream node is stopped. The commit still
/// needs the upstream node's vote, so it aborts while that node is away,
/// and nothing of the DAG reaches storage.
#[test]
fn values_handed_over_at_continue_are_read_without_the_upstream_node() {
    let cluster = LocalCluster::start(Path::new(BIN), 2, &["--peer-timeout-ms", "500"]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("handed", tagged(&tid, "handed"))])
        .unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    cluster.nodes[0].sidecar.signal("STOP");
    assert_eq!(
        cloudburst_get(&b, &tid, "handed"),
        Some(tid.clone()),
        "the DAG reads its own upstream write"
    );
    b.put(Some(&tid), &[("after", tagged(&tid, "after"))])
        .unwrap();
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".into()]).unwrap().status,
        TransactionStatus::Aborted,
        "no commit without the upstream node's vote"
    );
    cluster.nodes[0].sidecar.signal("CONT");
    let outside = cluster.outside_reader();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outside.plain_writer("handed"), None);
    assert_eq!(outside.plain_writer("after"), None);
}

/// Storage fails under a running transaction: the read that failed dooms it
/// (read-only and read-write alike), and its commit answers ABORTED even
/// after storage is back; the sidecar serves new transactions as before.
#[test]
fn a_read_that_storage_could_not_answer_aborts_the_dag() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 2, &["--storage-timeout-ms", "300"]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let init = commit_key(&a, "sx");
    commit_key(&a, "sy");
    // A reader that read something, and a writer, both on node 2.
    let reader = b.start().unwrap().id;
    let writer_txn = b.start().unwrap().id;
    assert_eq!(cloudburst_get(&b, &reader, "sx"), Some(init.clone()));
    b.put(Some(&writer_txn), &[("sw", tagged(&writer_txn, "sw"))])
        .unwrap();
    cluster.store.redis_server().kill();
    // "sy" is not cached on node 2: these reads need storage.
    assert_eq!(cloudburst_get(&b, &reader, "sy"), None);
    assert_eq!(cloudburst_get(&b, &writer_txn, "sy"), None);
    cluster.store.redis_server().restart();
    // The reads work again...
    assert!(eventually(Duration::from_secs(5), || cloudburst_get(
        &b, &reader, "sy"
    )
    .is_some()));
    // ...but neither transaction may commit: each read `None` for a key with a value.
    for tid in [&reader, &writer_txn] {
        assert_eq!(
            b.commit(tid, &[]).unwrap().status,
            TransactionStatus::Aborted,
            "a transaction whose read failed committed"
        );
    }
    let outside = cluster.outside_reader();
    assert_eq!(outside.plain_writer("sw"), None);
    let fresh = commit_key(&b, "after");
    if let Err(seen) = outside.await_published(&["after"], &fresh, PUBLISH_BOUND) {
        panic!("a new commit after the outage is not published: {seen:?}");
    }
}

/// Data of a committed version that is gone (as a node that deleted what
/// others needed would leave it): the read fails, never answers `None`, and
/// the transaction aborts.
#[test]
fn a_read_of_a_committed_version_whose_data_is_missing_aborts_the_dag() {
    let cluster = LocalCluster::start(Path::new(BIN), 2, &[]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let writer_tid = commit_key(&a, "gone");
    // Remove the version's data behind the sidecars' backs. Node 2 never
    // read the key, so it has nothing cached: it must go to storage.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = runtime
        .block_on(aft::storage::open(
            &cluster.store.url(),
            aft::storage::StorageOptions::default(),
        ))
        .unwrap();
    runtime
        .block_on(storage.delete(format!("aft/d/{writer_tid}/gone").as_bytes()))
        .unwrap();
    let t = b.start().unwrap().id;
    let read = b.get(Some(&t), &["gone"]);
    assert!(read.is_err(), "a missing version was answered as {read:?}");
    assert_eq!(
        b.commit(&t, &[]).unwrap().status,
        TransactionStatus::Aborted
    );
}

/// Cloudburst pins a function on an executor by reading `funcs:<name>`
/// through the executor's own node, in one transaction, retrying until the
/// code is found; the function was registered through another node moments
/// before. The first read must find it (and the retry loop must end).
#[test]
fn a_function_registered_on_one_node_is_found_at_once_when_pinned_on_another() {
    let cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let clients: Vec<IpcClient> = (0..3).map(|i| client(&cluster, i, 0)).collect();
    let mut first_try = 0;
    let rounds = 60;
    for round in 0..rounds {
        let name = format!("funcs:f{round}");
        let registered = commit_key(&clients[round % 3], &name);
        let pinner = &clients[(round + 1) % 3];
        let tid = pinner.start().unwrap().id;
        let mut tries = 0;
        let found = loop {
            tries += 1;
            if let Some(w) = cloudburst_get(pinner, &tid, &name) {
                break w;
            }
            assert!(tries < 2000, "round {round}: the pin loop does not end");
        };
        assert_eq!(found, registered);
        if tries == 1 {
            first_try += 1;
        }
        assert_eq!(
            pinner.commit(&tid, &[]).unwrap().status,
            TransactionStatus::Committed
        );
    }
    assert_eq!(
        first_try, rounds,
        "a commit acknowledged on one node must be found by a read that starts after it on any other"
    );
}

/// A sidecar that stops running (SIGSTOP) longer than half the executor's
/// read timeout: the executor's read times out and it sees "no value",
/// although the sidecar answers every request once it runs again. The
/// transaction must then not commit.
#[test]
fn a_read_that_timed_out_while_the_sidecar_was_stopped_aborts_the_dag() {
    let cluster = LocalCluster::start(Path::new(BIN), 1, &[]);
    let patient = client(&cluster, 0, 0);
    let init = commit_key(&patient, "st");
    // Cloudburst's executor client: 5 s per get.
    let executor = IpcClient::connect(&cluster.nodes[0].ipc, 1, Duration::from_secs(5)).unwrap();
    let tid = executor.start().unwrap().id;
    assert_eq!(cloudburst_get(&executor, &tid, "st"), Some(init));
    cluster.nodes[0].sidecar.signal("STOP");
    let stopped = Instant::now();
    assert_eq!(
        cloudburst_get(&executor, &tid, "st"),
        None,
        "the read times out"
    );
    assert!(stopped.elapsed() >= Duration::from_secs(4));
    cluster.nodes[0].sidecar.signal("CONT");
    let executor = IpcClient::connect(&cluster.nodes[0].ipc, 2, Duration::from_secs(10)).unwrap();
    executor
        .put(Some(&tid), &[("st2", tagged(&tid, "st2"))])
        .unwrap();
    assert_eq!(
        executor.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Aborted,
        "a transaction whose read timed out at its executor committed"
    );
    // New work after the stall is fine.
    let fresh = commit_key(&executor, "st3");
    assert_eq!(
        writer_of_payload(executor.get(None, &["st3"]).unwrap().remove(0)),
        Some(fresh)
    );
}
