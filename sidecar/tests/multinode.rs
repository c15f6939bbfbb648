//! Several real sidecars over one real `redis-server`, on loopback
//! addresses 127.0.0.1..3: DAGs whose functions run on different nodes,
//! atomic commit across nodes, and what happens when nodes die or stall.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::IpcClient;
use aft::history::TxnRecord;
use aft::proto::aft::TransactionStatus;
use aft_testkit::cluster::LocalCluster;
use aft_testkit::dag::send_commit;
use aft_testkit::dag::{assert_read_atomic, committed, HistoryClock, RecordedDag};
use aft_testkit::eventually;
use aft_testkit::tagged::{tagged, writer_of_payload};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TIMEOUT: Duration = Duration::from_secs(10);

fn client(cluster: &LocalCluster, node: usize, thread: u32) -> IpcClient {
    IpcClient::connect(&cluster.nodes[node].ipc, thread, TIMEOUT).unwrap()
}

fn plain_writers(c: &IpcClient, keys: &[&str]) -> Vec<Option<String>> {
    c.get(None, keys)
        .unwrap()
        .into_iter()
        .map(writer_of_payload)
        .collect()
}

#[test]
fn a_chain_across_three_nodes_reads_its_upstream_writes_and_commits_atomically() {
    let cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let (a, b, c) = (
        client(&cluster, 0, 0),
        client(&cluster, 1, 0),
        client(&cluster, 2, 0),
    );
    let tag = a.start().unwrap();
    let tid = tag.id.clone();
    assert_eq!(tag.address, "127.0.0.1");
    a.put(Some(&tid), &[("k1", tagged(&tid, "k1"))]).unwrap();

    b.continue_from(&tid, "127.0.0.1").unwrap();
    assert_eq!(
        writer_of_payload(b.get(Some(&tid), &["k1"]).unwrap().remove(0)),
        Some(tid.clone()),
        "read-your-writes from upstream"
    );
    b.put(Some(&tid), &[("k2", tagged(&tid, "k2"))]).unwrap();

    c.continue_from(&tid, "127.0.0.2").unwrap();
    // k1 was written two hops upstream: read straight from its owner, no loop.
    let got = c.get(Some(&tid), &["k1", "k2", "k3"]).unwrap();
    assert_eq!(
        got.into_iter().map(writer_of_payload).collect::<Vec<_>>(),
        vec![Some(tid.clone()), Some(tid.clone()), None]
    );
    c.put(Some(&tid), &[("k3", tagged(&tid, "k3"))]).unwrap();

    // Nothing is visible before the commit, anywhere.
    assert_eq!(
        plain_writers(&a, &["k1", "k2", "k3"]),
        vec![None, None, None]
    );
    let outcome = c.commit(&tid, &cluster.others(2)).unwrap();
    assert_eq!(outcome.status, TransactionStatus::Committed);
    for (i, cl) in [&a, &b, &c].into_iter().enumerate() {
        let expected = vec![Some(tid.clone()); 3];
        assert!(
            eventually(Duration::from_secs(3), || plain_writers(
                cl,
                &["k1", "k2", "k3"]
            ) == expected),
            "node {} does not see the whole commit: {:?}",
            i + 1,
            plain_writers(cl, &["k1", "k2", "k3"])
        );
    }
}

#[test]
fn fan_out_and_fan_in_dags_commit_every_branch() {
    let cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let (a, b, c) = (
        client(&cluster, 0, 0),
        client(&cluster, 1, 0),
        client(&cluster, 2, 0),
    );
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("root", tagged(&tid, "root"))])
        .unwrap();
    // Fan-out: two branches continue from A.
    b.continue_from(&tid, "127.0.0.1").unwrap();
    c.continue_from(&tid, "127.0.0.1").unwrap();
    assert_eq!(
        writer_of_payload(b.get(Some(&tid), &["root"]).unwrap().remove(0)),
        Some(tid.clone())
    );
    b.put(Some(&tid), &[("left", tagged(&tid, "left"))])
        .unwrap();
    c.put(Some(&tid), &[("right", tagged(&tid, "right"))])
        .unwrap();
    // Fan-in on A: the sink continues from both branches.
    a.continue_from(&tid, "127.0.0.2").unwrap();
    a.continue_from(&tid, "127.0.0.3").unwrap();
    let got = a.get(Some(&tid), &["root", "left", "right"]).unwrap();
    assert!(got
        .into_iter()
        .map(writer_of_payload)
        .all(|w| w.as_deref() == Some(tid.as_str())));
    a.put(Some(&tid), &[("sink", tagged(&tid, "sink"))])
        .unwrap();
    assert_eq!(
        a.commit(&tid, &cluster.others(0)).unwrap().status,
        TransactionStatus::Committed
    );
    let keys = ["root", "left", "right", "sink"];
    for cl in [&a, &b, &c] {
        assert!(eventually(Duration::from_secs(3), || plain_writers(
            cl, &keys
        )
        .iter()
        .all(|w| w.as_deref() == Some(tid.as_str()))));
    }
}

/// Concurrent two-function DAGs, each spread over two nodes, on all nodes at
/// once; the whole history must be read-atomic.
#[test]
fn concurrent_dags_spread_over_all_nodes_are_read_atomic() {
    let cluster = Arc::new(LocalCluster::start(Path::new(BIN), 3, &[]));
    let clock = HistoryClock::new();
    let keys: Vec<String> = (0..6).map(|i| format!("hot{i}")).collect();
    let mut handles = Vec::new();
    for worker in 0..9u32 {
        let (cluster, keys) = (Arc::clone(&cluster), keys.clone());
        handles.push(std::thread::spawn(move || {
            let first = worker as usize % 3;
            let second = (first + 1) % 3;
            let up = client(&cluster, first, worker);
            let down = client(&cluster, second, worker + 100);
            let mut history = Vec::new();
            for i in 0..12usize {
                let mut dag = RecordedDag::start(&up, clock, 8).unwrap();
                let pick = |j: usize| &keys[(worker as usize * 5 + i * 7 + j * 3) % keys.len()];
                // One function on each of two nodes: two reads, one write.
                for (c, range) in [(&up, 0..2usize), (&down, 3..5usize)] {
                    if range.start == 3 {
                        dag.continue_from(c, &cluster.nodes[first].address).unwrap();
                    }
                    for j in range.clone() {
                        dag.read(c, pick(j)).unwrap();
                    }
                    dag.write(c, pick(range.end)).unwrap();
                }
                let upstream = [cluster.nodes[first].address.clone()];
                history.push(dag.commit(&down, &upstream).unwrap());
            }
            history
        }));
    }
    let history: Vec<TxnRecord> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        committed(&history),
        history.len(),
        "healthy cluster: every DAG commits"
    );
    assert_read_atomic(&history);
}

#[test]
fn a_participant_killed_before_the_commit_point_aborts_the_dag_everywhere() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("pa", tagged(&tid, "pa"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("pb", tagged(&tid, "pb"))]).unwrap();
    cluster.nodes[0].sidecar.kill();
    let started = Instant::now();
    let outcome = b.commit(&tid, &["127.0.0.1".to_string()]).unwrap();
    assert_eq!(outcome.status, TransactionStatus::Aborted);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "abort took {:?}",
        started.elapsed()
    );
    let c = client(&cluster, 2, 0);
    assert_eq!(plain_writers(&b, &["pa", "pb"]), vec![None, None]);
    assert_eq!(plain_writers(&c, &["pa", "pb"]), vec![None, None]);
    // Other work on the surviving nodes is unaffected.
    let t = b.start().unwrap().id;
    b.put(Some(&t), &[("other", tagged(&t, "other"))]).unwrap();
    assert_eq!(
        b.commit(&t, &[]).unwrap().status,
        TransactionStatus::Committed
    );
}

#[test]
fn a_participant_killed_after_the_commit_point_sees_the_commit_after_restart() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 3, &[]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("qa", tagged(&tid, "qa"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("qb", tagged(&tid, "qb"))]).unwrap();
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );
    drop(a);
    cluster.nodes[0].sidecar.kill();
    cluster.nodes[0].sidecar.spawn().unwrap();
    let a = client(&cluster, 0, 1);
    let expected = vec![Some(tid.clone()), Some(tid.clone())];
    assert_eq!(
        plain_writers(&a, &["qa", "qb"]),
        expected,
        "restarted participant lost the commit"
    );
    let c = client(&cluster, 2, 0);
    assert!(eventually(Duration::from_secs(3), || plain_writers(
        &c,
        &["qa", "qb"]
    ) == expected));
}

fn crash_coordinator_at(failpoint: &str) -> (LocalCluster, String) {
    let cluster =
        LocalCluster::start_with(Path::new(BIN), 3, &["--decision-timeout-ms", "800"], |i| {
            if i == 1 {
                vec![("AFT_FAILPOINTS".to_string(), format!("{failpoint}=exit"))]
            } else {
                Vec::new()
            }
        });
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("ca", tagged(&tid, "ca"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("cb", tagged(&tid, "cb"))]).unwrap();
    // The coordinator (node 2) dies inside the commit: no reply comes.
    send_commit(&b, &tid, &["127.0.0.1".to_string()]);
    (cluster, tid)
}

#[test]
fn a_coordinator_crash_before_the_commit_point_aborts_everywhere() {
    let (mut cluster, tid) = crash_coordinator_at("commit.after_prepare");
    assert_eq!(
        cluster.nodes[1].sidecar.wait_exit(Duration::from_secs(10)),
        Some(137)
    );
    // The participant settles on its own (abort marker), nothing is visible.
    let a = client(&cluster, 0, 1);
    let c = client(&cluster, 2, 0);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(plain_writers(&a, &["ca", "cb"]), vec![None, None]);
    assert_eq!(plain_writers(&c, &["ca", "cb"]), vec![None, None]);
    // Restarted, the coordinator answers a retried commit with ABORTED.
    cluster.nodes[1].sidecar.spec.env.clear();
    cluster.nodes[1].sidecar.spawn().unwrap();
    let b = client(&cluster, 1, 1);
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Aborted
    );
    assert_eq!(plain_writers(&b, &["ca", "cb"]), vec![None, None]);
}

#[test]
fn a_coordinator_crash_after_the_commit_point_leaves_it_committed_everywhere() {
    let (mut cluster, tid) = crash_coordinator_at("commit.after_record");
    assert_eq!(
        cluster.nodes[1].sidecar.wait_exit(Duration::from_secs(10)),
        Some(137)
    );
    let expected = vec![Some(tid.clone()), Some(tid.clone())];
    let a = client(&cluster, 0, 1);
    assert!(
        eventually(Duration::from_secs(5), || plain_writers(&a, &["ca", "cb"])
            == expected),
        "participant did not learn the commit: {:?}",
        plain_writers(&a, &["ca", "cb"])
    );
    cluster.nodes[1].sidecar.spec.env.clear();
    cluster.nodes[1].sidecar.spawn().unwrap();
    let b = client(&cluster, 1, 1);
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );
    assert_eq!(plain_writers(&b, &["ca", "cb"]), expected);
    let c = client(&cluster, 2, 0);
    assert!(eventually(Duration::from_secs(5), || plain_writers(
        &c,
        &["ca", "cb"]
    ) == expected));
}

#[test]
fn a_stalled_peer_makes_its_dags_abort_in_bounded_time_then_recovers() {
    let cluster = LocalCluster::start(Path::new(BIN), 3, &["--decision-timeout-ms", "800"]);
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("sa", tagged(&tid, "sa"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    b.put(Some(&tid), &[("sb", tagged(&tid, "sb"))]).unwrap();
    cluster.nodes[0].sidecar.signal("STOP");
    let started = Instant::now();
    let outcome = b.commit(&tid, &["127.0.0.1".to_string()]).unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.status, TransactionStatus::Aborted);
    assert!(took < Duration::from_secs(8), "abort took {took:?}");
    // Unaffected work on B goes on while A is stalled.
    let t = b.start().unwrap().id;
    b.put(Some(&t), &[("unrelated", tagged(&t, "unrelated"))])
        .unwrap();
    assert_eq!(
        b.commit(&t, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    cluster.nodes[0].sidecar.signal("CONT");
    std::thread::sleep(Duration::from_millis(2000));
    // A processed the stale prepare after resuming; the abort reached it (or it settled).
    assert_eq!(plain_writers(&a, &["sa", "sb"]), vec![None, None]);
    assert!(eventually(Duration::from_secs(5), || plain_writers(
        &a,
        &["unrelated"]
    ) == vec![Some(
        t.clone()
    )]));
    // And A serves new cross-node DAGs again.
    let t2 = a.start().unwrap().id;
    a.put(Some(&t2), &[("after", tagged(&t2, "after"))])
        .unwrap();
    b.continue_from(&t2, "127.0.0.1").unwrap();
    assert_eq!(
        b.commit(&t2, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );
}

#[test]
fn a_node_started_late_catches_up_and_joins() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 2, &[]);
    let a = client(&cluster, 0, 0);
    let mut committed = Vec::new();
    for i in 0..5 {
        let t = a.start().unwrap().id;
        let key = format!("early{i}");
        a.put(Some(&t), &[(&key, tagged(&t, &key))]).unwrap();
        assert_eq!(
            a.commit(&t, &[]).unwrap().status,
            TransactionStatus::Committed
        );
        committed.push((key, t));
    }
    cluster.add_node(Path::new(BIN), &[]);
    let c = client(&cluster, 2, 0);
    for (key, t) in &committed {
        assert_eq!(
            writer_of_payload(c.get(None, &[key]).unwrap().remove(0)).as_deref(),
            Some(t.as_str())
        );
    }
    // It takes part in DAGs with the others.
    let t = c.start().unwrap().id;
    c.put(Some(&t), &[("late", tagged(&t, "late"))]).unwrap();
    let b = client(&cluster, 1, 0);
    b.continue_from(&t, "127.0.0.3").unwrap();
    assert_eq!(
        writer_of_payload(b.get(Some(&t), &["late"]).unwrap().remove(0)),
        Some(t.clone())
    );
    assert_eq!(
        b.commit(&t, &["127.0.0.3".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );
    assert!(eventually(Duration::from_secs(3), || plain_writers(
        &a,
        &["late"]
    ) == vec![Some(
        t.clone()
    )]));
}

/// A peer that speaks garbage, or another protocol version, gets an error
/// answer; the node keeps serving its executors and its real peers.
#[test]
fn a_peer_speaking_garbage_or_another_version_is_answered_and_ignored() {
    use aft::proto::peer::{peer_envelope::Body, ErrorCode, FetchTransaction, PeerEnvelope};
    use prost::Message;
    use std::io::{Read, Write};
    let cluster = LocalCluster::start(Path::new(BIN), 2, &[]);
    // The peer wire: each frame is a 4-byte big-endian length, then the bytes.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", cluster.peer_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut answer = |frame: &[u8]| -> PeerEnvelope {
        let length = u32::try_from(frame.len()).unwrap().to_be_bytes();
        stream.write_all(&length).unwrap();
        stream.write_all(frame).unwrap();
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut reply).unwrap();
        PeerEnvelope::decode(reply.as_slice()).unwrap()
    };
    let reply = answer(&[0xff, 0x00, 0x13, 0x37]);
    assert!(matches!(reply.body, Some(Body::Error(e)) if e.code == ErrorCode::Malformed as i32));
    let wrong_version = PeerEnvelope {
        protocol_version: 99,
        correlation_id: 5,
        sender: "127.0.0.9".into(),
        body: Some(Body::FetchTransaction(FetchTransaction {
            tid: "x".into(),
            ..Default::default()
        })),
    };
    let reply = answer(&wrong_version.encode_to_vec());
    assert_eq!(reply.correlation_id, 5);
    assert!(
        matches!(reply.body, Some(Body::Error(e)) if e.code == ErrorCode::VersionMismatch as i32)
    );
    let unknown = PeerEnvelope {
        protocol_version: aft::proto::peer::PROTOCOL_VERSION,
        correlation_id: 6,
        sender: "127.0.0.9".into(),
        body: Some(Body::FetchTransaction(FetchTransaction {
            tid: "no-such".into(),
            ..Default::default()
        })),
    };
    let reply = answer(&unknown.encode_to_vec());
    assert!(
        matches!(reply.body, Some(Body::Error(e)) if e.code == ErrorCode::UnknownTransaction as i32)
    );
    // Still fine for real work across nodes.
    let (a, b) = (client(&cluster, 0, 0), client(&cluster, 1, 0));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("g", tagged(&tid, "g"))]).unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );
}

/// With a sealed peer layer, peers holding the cluster key work together; a
/// peer with another key cannot talk to them (its DAG aborts, nothing leaks).
#[test]
fn sealed_peers_need_the_cluster_key() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str| -> String {
        let out = std::process::Command::new(BIN)
            .arg("--generate-peer-key")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.path().join(name);
        std::fs::write(&path, &out.stdout).unwrap();
        path.display().to_string()
    };
    let (good, bad) = (keygen("good.key"), keygen("bad.key"));
    let redis = aft_testkit::redis::RedisServer::start();
    let port = aft_testkit::ports::free_port().to_string();
    let spawn = |i: usize, key: &str| {
        let ipc = dir.path().join(format!("n{i}"));
        let address = format!("127.0.0.{i}");
        aft_testkit::sidecar::Sidecar::start(
            Path::new(BIN),
            &ipc,
            &[
                "--storage",
                &redis.url(),
                "--node-address",
                &address,
                "--peer-mode",
                "sealed",
                "--peer-key-file",
                key,
                "--peer-port",
                &port,
                "--peers",
                "127.0.0.1,127.0.0.2,127.0.0.3",
                "--metrics-addr",
                "off",
            ],
        )
    };
    let _n1 = spawn(1, &good);
    let _n2 = spawn(2, &good);
    let _n3 = spawn(3, &bad);
    let c = |i: usize| IpcClient::connect(&dir.path().join(format!("n{i}")), 0, TIMEOUT).unwrap();
    let (a, b, x) = (c(1), c(2), c(3));
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("secret", tagged(&tid, "secret"))])
        .unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    assert_eq!(
        writer_of_payload(b.get(Some(&tid), &["secret"]).unwrap().remove(0)),
        Some(tid.clone())
    );
    assert_eq!(
        b.commit(&tid, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Committed
    );

    let t2 = a.start().unwrap().id;
    a.put(Some(&t2), &[("secret2", tagged(&t2, "secret2"))])
        .unwrap();
    x.continue_from(&t2, "127.0.0.1").unwrap();
    let err = x.get(Some(&t2), &["secret2"]).unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    assert_eq!(
        x.commit(&t2, &["127.0.0.1".to_string()]).unwrap().status,
        TransactionStatus::Aborted
    );
}
