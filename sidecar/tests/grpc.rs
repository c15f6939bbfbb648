//! The gRPC front (AFT's `service Aft`) of the real `aft-sidecar` binary,
//! driven by a client generated from that service definition: transactions
//! on one node, calls of one transaction alternating between two nodes (as
//! a load balancer spreads them), gRPC and IPC transactions on one cluster
//! judged together by the history checker, results read from the store as
//! Cloudburst's user client reads them, bad input, authentication and TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aft::history::{tag_value, writer_of, Op, TxnRecord};
use aft::proto::aft::TransactionStatus;
use aft_testkit::cluster::LocalCluster;
use aft_testkit::dag::{assert_read_atomic, committed, recorded_status, HistoryClock, RecordedDag};
use aft_testkit::grpc::{ClientTls, GrpcClient};
use aft_testkit::outside::OutsideReader;
use aft_testkit::sidecar::Sidecar;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TOKEN: &str = "grpc-test-token-0123456789";

/// A token file in `dir`.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("grpc.token");
    std::fs::write(&path, format!("# test token\n{TOKEN}\n")).unwrap();
    path
}

/// A single sidecar on a real Redis with its gRPC front on a free port.
struct Node {
    sidecar: Sidecar,
    redis: aft_testkit::redis::RedisServer,
    _dir: tempfile::TempDir,
}

fn node(extra: &[&str]) -> Node {
    let redis = aft_testkit::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let url = redis.url();
    let mut args = vec![
        "--storage",
        url.as_str(),
        "--metrics-addr",
        "off",
        "--grpc-addr",
        "127.0.0.1:0",
        "--grpc-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(Path::new(BIN), &dir.path().join("ipc"), &args);
    Node {
        sidecar,
        redis,
        _dir: dir,
    }
}

fn client(sidecar: &Sidecar) -> GrpcClient {
    let addr = sidecar
        .grpc_addr()
        .expect("the sidecar printed its gRPC address");
    GrpcClient::connect(addr, Some(TOKEN)).unwrap()
}

/// The status code of a call that must fail.
fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("the call must fail").code()
}

/// A value naming its writer, as the history checker reads it.
fn value(writer: &str, key: &str) -> Vec<u8> {
    tag_value(writer, key, 8)
}

#[test]
fn a_client_of_the_aft_service_runs_transactions_and_the_store_shows_their_writes() {
    let n = node(&[]);
    let mut c = client(&n.sidecar);
    let tag = c.start().unwrap();
    assert_eq!(tag.status(), TransactionStatus::Running);
    assert_eq!(tag.address, "127.0.0.1");
    let t1 = tag.id;
    c.write(&t1, &[("a", value(&t1, "a")), ("b", value(&t1, "b"))])
        .unwrap();
    // Read your writes; a key without a value reads empty, as in AFT.
    let got = c.read(&t1, &["a", "b", "missing"]).unwrap();
    assert_eq!(writer_of(&got[0]).as_deref(), Some(t1.as_str()));
    assert_eq!(writer_of(&got[1]).as_deref(), Some(t1.as_str()));
    assert!(got[2].is_empty());
    // Buffered writes are private until the commit.
    let t2 = c.start().unwrap().id;
    assert!(c.read(&t2, &["a"]).unwrap()[0].is_empty());
    assert_eq!(c.commit(&t1).unwrap(), TransactionStatus::Committed);
    // A retried commit gets the same answer.
    assert_eq!(c.commit(&t1).unwrap(), TransactionStatus::Committed);
    let t3 = c.start().unwrap().id;
    let got = c.read(&t3, &["a", "b"]).unwrap();
    assert!(got
        .iter()
        .all(|v| writer_of(v).as_deref() == Some(t1.as_str())));
    // Cloudburst's user client reads the plain keys: LWW values holding the bytes written.
    let outside = OutsideReader::open(&n.redis.url());
    for key in ["a", "b"] {
        assert_eq!(
            outside.plain_writer(key).as_deref(),
            Some(t1.as_str()),
            "{key}"
        );
    }
    // An aborted transaction leaves nothing.
    let t4 = c.start().unwrap().id;
    c.write(&t4, &[("a", value(&t4, "a"))]).unwrap();
    assert_eq!(c.abort(&t4).unwrap(), TransactionStatus::Aborted);
    assert_eq!(outside.plain_writer("a").as_deref(), Some(t1.as_str()));
    let t5 = c.start().unwrap().id;
    assert_eq!(
        writer_of(&c.read(&t5, &["a"]).unwrap()[0]).as_deref(),
        Some(t1.as_str())
    );
}

#[test]
fn bad_input_and_missing_credentials_get_clear_status_codes_and_the_node_keeps_serving() {
    let n = node(&["--max-value-bytes", "1048576"]);
    let addr = n.sidecar.grpc_addr().unwrap();
    let mut c = client(&n.sidecar);
    // Unknown ids: NOT_FOUND, every time, and nothing is kept for them (a
    // flood of made-up ids fills no table). A commit of one fences it in
    // storage, so it can never commit later.
    let unknown = || format!("{}@127.0.0.1", uuid::Uuid::now_v7());
    let forgotten = unknown();
    assert_eq!(code(c.read(&forgotten, &["k"])), Code::NotFound);
    let write = c.write(&forgotten, &[("k", b"v".to_vec())]);
    assert_eq!(code(write), Code::NotFound);
    assert_eq!(code(c.commit(&forgotten)), Code::NotFound);
    assert_eq!(code(c.commit(&forgotten)), Code::NotFound);
    assert_eq!(code(c.abort(&unknown())), Code::NotFound);
    for _ in 0..200 {
        assert_eq!(code(c.read(&unknown(), &["k"])), Code::NotFound);
    }
    for bad in ["", "no-node", "a b@127.0.0.1", "t@127.0.0.1/x"] {
        assert_eq!(code(c.read(bad, &["k"])), Code::InvalidArgument, "{bad}");
        assert_eq!(code(c.commit(bad)), Code::InvalidArgument, "{bad}");
    }
    // No keys, empty keys, oversized values.
    let t = c.start().unwrap().id;
    assert_eq!(code(c.read(&t, &[])), Code::InvalidArgument);
    assert_eq!(
        code(c.write(&t, &[("", b"v".to_vec())])),
        Code::InvalidArgument
    );
    // Over --max-value-bytes: refused by the engine; over the message limit
    // (four times that): refused before it is decoded (tonic: OUT_OF_RANGE).
    assert_eq!(
        code(c.write(&t, &[("big", vec![0u8; 2 << 20])])),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.write(&t, &[("big", vec![0u8; 5 << 20])])),
        Code::OutOfRange
    );
    // A refused write dooms its transaction (its client may not know what
    // was kept), and a transaction that ended answers so.
    assert_eq!(c.commit(&t).unwrap(), TransactionStatus::Aborted);
    assert_eq!(
        code(c.write(&t, &[("k", b"v".to_vec())])),
        Code::FailedPrecondition
    );
    // Without the peer layer, a transaction of another node cannot be reached.
    let elsewhere = format!("{}@127.0.0.9", uuid::Uuid::now_v7());
    assert_eq!(code(c.read(&elsewhere, &["k"])), Code::Unavailable);
    // Credentials.
    let mut anonymous = GrpcClient::connect(addr, None).unwrap();
    assert_eq!(code(anonymous.start()), Code::Unauthenticated);
    let mut wrong = GrpcClient::connect(addr, Some("not-the-token-0123456789")).unwrap();
    assert_eq!(code(wrong.start()), Code::Unauthenticated);
    // Bytes that are not HTTP/2 on the gRPC port close that connection only.
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 64][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
    ] {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let _ = s.write_all(garbage);
        drop(s);
    }
    // Still serving.
    let t = c.start().unwrap().id;
    c.write(&t, &[("after", value(&t, "after"))]).unwrap();
    assert_eq!(c.commit(&t).unwrap(), TransactionStatus::Committed);
}

/// A two-node cluster with the gRPC front on each node.
fn grpc_cluster(dir: &Path, extra: &[&str]) -> LocalCluster {
    let token = token_file(dir);
    let token = token.to_str().unwrap().to_string();
    let mut args = vec!["--grpc-addr", "127.0.0.1:0", "--grpc-token-file", &token];
    args.extend_from_slice(extra);
    LocalCluster::start(Path::new(BIN), 2, &args)
}

#[test]
fn calls_of_one_transaction_alternating_between_two_nodes_reach_the_node_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = grpc_cluster(dir.path(), &[]);
    let mut a = client(&cluster.nodes[0].sidecar);
    let mut b = client(&cluster.nodes[1].sidecar);
    // Started on node 1; calls alternate between the nodes.
    let tag = a.start().unwrap();
    assert_eq!(tag.address, "127.0.0.1");
    let t = tag.id;
    b.write(&t, &[("x", value(&t, "x"))]).unwrap();
    assert_eq!(
        writer_of(&a.read(&t, &["x"]).unwrap()[0]).as_deref(),
        Some(t.as_str())
    );
    a.write(&t, &[("y", value(&t, "y"))]).unwrap();
    assert_eq!(
        writer_of(&b.read(&t, &["y"]).unwrap()[0]).as_deref(),
        Some(t.as_str())
    );
    assert_eq!(b.commit(&t).unwrap(), TransactionStatus::Committed);
    assert_eq!(
        a.commit(&t).unwrap(),
        TransactionStatus::Committed,
        "retried on the other node"
    );
    // Both nodes see the commit, and so does the store.
    for c in [&mut a, &mut b] {
        let r = c.start().unwrap().id;
        let got = c.read(&r, &["x", "y"]).unwrap();
        assert!(got
            .iter()
            .all(|v| writer_of(v).as_deref() == Some(t.as_str())));
        c.abort(&r).unwrap();
    }
    let outside = cluster.outside_reader();
    assert!(aft_testkit::eventually(Duration::from_secs(3), || {
        outside.plain_writer("x").as_deref() == Some(t.as_str())
            && outside.plain_writer("y").as_deref() == Some(t.as_str())
    }));
    // An id naming a host that is no node of the cluster is not forwarded
    // (no node dials it): NOT_FOUND.
    for stranger in ["127.0.0.9", "10.255.0.1", "127.0.0.1:22"] {
        let id = format!("{}@{stranger}", uuid::Uuid::now_v7());
        assert_eq!(code(b.read(&id, &["x"])), Code::NotFound, "{stranger}");
    }
    // Errors of the holder keep their meaning when forwarded.
    let ended = a.start().unwrap().id;
    a.write(&ended, &[("z", value(&ended, "z"))]).unwrap();
    assert_eq!(b.commit(&ended).unwrap(), TransactionStatus::Committed);
    let late = b.write(&ended, &[("z", b"v".to_vec())]);
    assert_eq!(code(late), Code::FailedPrecondition);
    let big = a.start().unwrap().id;
    let r = b.write(&big, &[("big", vec![0u8; 20 << 20])]);
    assert_eq!(
        code(r),
        Code::InvalidArgument,
        "over --max-value-bytes, forwarded"
    );
    // An abort forwarded to the holder drops the writes everywhere.
    let u = b.start().unwrap().id;
    a.write(&u, &[("x", value(&u, "x"))]).unwrap();
    assert_eq!(a.abort(&u).unwrap(), TransactionStatus::Aborted);
    let r = a.start().unwrap().id;
    assert_eq!(
        writer_of(&a.read(&r, &["x"]).unwrap()[0]).as_deref(),
        Some(t.as_str())
    );
}

#[test]
fn a_transaction_whose_node_dies_answers_unavailable_elsewhere_and_never_commits() {
    let dir = tempfile::tempdir().unwrap();
    // A forwarded commit may wait as long as the holder may take to decide
    // (10 s + storage and peer timeouts by default), but no longer than
    // heartbeats take to declare the holder dead (2 s).
    let mut cluster = grpc_cluster(dir.path(), &[]);
    let mut a = client(&cluster.nodes[0].sidecar);
    let mut b = client(&cluster.nodes[1].sidecar);
    let t = a.start().unwrap().id;
    b.write(&t, &[("lost", value(&t, "lost"))]).unwrap();
    // The node holding the transaction crashes mid-transaction.
    cluster.nodes[0].sidecar.kill();
    let asked = std::time::Instant::now();
    let failed = b.commit(&t).expect_err("the holder is gone");
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "the client waited {:?} for a dead holder",
        asked.elapsed()
    );
    assert!(
        matches!(failed.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{failed:?}"
    );
    // The other node keeps serving its own transactions, and nothing of the
    // lost one is visible.
    let u = b.start().unwrap().id;
    assert!(b.read(&u, &["lost"]).unwrap()[0].is_empty());
    b.write(&u, &[("kept", value(&u, "kept"))]).unwrap();
    assert_eq!(b.commit(&u).unwrap(), TransactionStatus::Committed);
    // Restarted, the holder has forgotten the transaction: it cannot commit.
    cluster.nodes[0].sidecar.spawn().unwrap();
    let mut a = client(&cluster.nodes[0].sidecar);
    let answer = a.commit(&t);
    assert!(
        matches!(&answer, Err(s) if s.code() == Code::NotFound)
            || matches!(answer, Ok(TransactionStatus::Aborted)),
        "{answer:?}"
    );
    let r = a.start().unwrap().id;
    assert!(a.read(&r, &["lost"]).unwrap()[0].is_empty());
}

#[test]
fn grpc_transactions_and_ipc_dags_on_one_cluster_are_read_atomic_together() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(grpc_cluster(dir.path(), &[]));
    let clock = HistoryClock::new();
    let keys: Arc<Vec<String>> = Arc::new((0..6).map(|i| format!("mixed{i}")).collect());
    let mut workers = Vec::new();
    // gRPC clients: each transaction's calls alternate between the nodes.
    for worker in 0..3usize {
        let (cluster, keys) = (Arc::clone(&cluster), Arc::clone(&keys));
        workers.push(std::thread::spawn(move || {
            let mut nodes = [
                client(&cluster.nodes[0].sidecar),
                client(&cluster.nodes[1].sidecar),
            ];
            let mut history = Vec::new();
            for i in 0..15usize {
                let pick = |j: usize| keys[(worker * 5 + i * 7 + j * 3) % keys.len()].as_str();
                let id = nodes[i % 2].start().unwrap().id;
                let mut ops = Vec::new();
                for j in 0..4 {
                    let c = &mut nodes[(i + j) % 2];
                    if j % 2 == 0 {
                        let key = pick(j);
                        let got = c.read(&id, &[key]).unwrap().remove(0);
                        ops.push(Op::Read {
                            key: key.to_string(),
                            writer: writer_of(&got),
                            returned_at: clock.now(),
                        });
                    } else {
                        let key = pick(j);
                        c.write(&id, &[(key, value(&id, key))]).unwrap();
                        ops.push(Op::Write {
                            key: key.to_string(),
                        });
                    }
                }
                let requested = clock.now();
                let status = recorded_status(Some(nodes[(i + 1) % 2].commit(&id).unwrap()));
                history.push(TxnRecord {
                    id,
                    status,
                    commit_timestamp: None,
                    commit_window: Some((requested, clock.now())),
                    ops,
                });
            }
            history
        }));
    }
    // IPC executors: two-function DAGs across the two nodes.
    for worker in 0..3u32 {
        let (cluster, keys) = (Arc::clone(&cluster), Arc::clone(&keys));
        workers.push(std::thread::spawn(move || {
            let timeout = Duration::from_secs(10);
            let up = cluster.client(0, worker, timeout);
            let down = cluster.client(1, worker + 100, timeout);
            let mut history = Vec::new();
            for i in 0..15usize {
                let pick =
                    |j: usize| keys[(worker as usize * 3 + i * 5 + j * 7) % keys.len()].as_str();
                let mut dag = RecordedDag::start(&up, clock, 8).unwrap();
                dag.read(&up, pick(0)).unwrap();
                dag.write(&up, pick(1)).unwrap();
                dag.continue_from(&down, &cluster.nodes[0].address).unwrap();
                dag.read(&down, pick(2)).unwrap();
                dag.write(&down, pick(3)).unwrap();
                history.push(
                    dag.commit(&down, &[cluster.nodes[0].address.clone()])
                        .unwrap(),
                );
            }
            history
        }));
    }
    let history: Vec<TxnRecord> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(history.len(), 6 * 15);
    assert!(
        committed(&history) > history.len() / 2,
        "only {} committed",
        committed(&history)
    );
    assert_read_atomic(&history);
}

/// A CA, and a certificate it signed for `name` (PEM).
fn signed_by(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_of_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(
        rcgen::CertificateParams::new(vec!["aft test CA".to_string()]).unwrap(),
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let (server_cert, server_key) = signed_by(&ca, "localhost");
    let (client_cert, client_key) = signed_by(&ca, "aft-client");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca_file = write("ca.pem", &ca.pem());
    let cert_file = write("server.pem", &server_cert);
    let key_file = write("server.key", &server_key);
    let n = node(&[
        "--grpc-tls-cert",
        &cert_file,
        "--grpc-tls-key",
        &key_file,
        "--grpc-tls-client-ca",
        &ca_file,
    ]);
    let addr = n.sidecar.grpc_addr().unwrap();
    let tls = |identity| ClientTls {
        ca_pem: ca.pem().into_bytes(),
        domain: "localhost".into(),
        identity,
    };
    let identity = Some((client_cert.into_bytes(), client_key.into_bytes()));
    let mut c = GrpcClient::connect_with(addr, Some(TOKEN), Some(tls(identity))).unwrap();
    let t = c.start().unwrap().id;
    c.write(&t, &[("tls", value(&t, "tls"))]).unwrap();
    assert_eq!(c.commit(&t).unwrap(), TransactionStatus::Committed);
    // Without a client certificate the handshake or the first call fails.
    let refused = GrpcClient::connect_with(addr, Some(TOKEN), Some(tls(None)))
        .map_err(|e| e.to_string())
        .and_then(|mut c| c.start().map_err(|s| s.to_string()));
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
    // Plaintext is not spoken on a TLS port.
    let plain = GrpcClient::connect(addr, Some(TOKEN))
        .map_err(|e| e.to_string())
        .and_then(|mut c| c.start().map_err(|s| s.to_string()));
    assert!(plain.is_err(), "a plaintext client was served");
}

/// One transaction through a client generated from AFT's interface in the
/// shape of AFT's own file (no package, AFT's message types): the calls
/// alternate between `addrs`; returns the id and the commit's status.
async fn compat_transaction(
    addrs: &[std::net::SocketAddr],
    key: &str,
) -> (String, aft_testkit::compat::TransactionStatus) {
    use aft_testkit::compat::aft_client::AftClient;
    use aft_testkit::compat::aft_key_request::KeyPair;
    use aft_testkit::compat::{AftKeyRequest, TransactionTag};
    let mut clients = Vec::new();
    for addr in addrs {
        clients.push(AftClient::connect(format!("http://{addr}")).await.unwrap());
    }
    fn authed<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        request
    }
    let n = clients.len();
    let tag = clients[0]
        .start_transaction(authed(()))
        .await
        .unwrap()
        .into_inner();
    let id = tag.id.clone();
    let pair = |value: Vec<u8>| KeyPair {
        key: key.to_string(),
        value,
    };
    clients[1 % n]
        .write(authed(AftKeyRequest {
            tid: id.clone(),
            pairs: vec![pair(value(&id, key))],
        }))
        .await
        .unwrap();
    let read = clients[0]
        .read(authed(AftKeyRequest {
            tid: id.clone(),
            pairs: vec![pair(Vec::new())],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        writer_of(&read.pairs[0].value).as_deref(),
        Some(id.as_str())
    );
    let done = clients[1 % n]
        .commit_transaction(authed(TransactionTag {
            id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    (id, done.status())
}

#[test]
fn a_client_generated_from_afts_own_interface_runs_transactions_on_one_and_two_nodes() {
    use aft_testkit::compat::TransactionStatus as Compat;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let one = node(&[]);
    let addr = one.sidecar.grpc_addr().unwrap();
    let (_, status) = runtime.block_on(compat_transaction(&[addr], "compat1"));
    assert_eq!(status, Compat::Committed);
    let dir = tempfile::tempdir().unwrap();
    let cluster = grpc_cluster(dir.path(), &[]);
    let addrs: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.sidecar.grpc_addr().unwrap())
        .collect();
    let (id, status) = runtime.block_on(compat_transaction(&addrs, "compat2"));
    assert_eq!(status, Compat::Committed);
    let outside = cluster.outside_reader();
    assert!(aft_testkit::eventually(Duration::from_secs(3), || {
        outside.plain_writer("compat2").as_deref() == Some(id.as_str())
    }));
}
