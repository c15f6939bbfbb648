//! The real `aft-sidecar` binary over real ZeroMQ IPC, driven exactly as a
//! Cloudburst executor drives its node cache (hand-built KeyRequests,
//! transaction ids in a trailing TRANSACTION_ID tuple).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::{lww_payload, ClientError, IpcClient};
use aft::history::TxnRecord;
use aft::ipc::request::{Endpoint, TRANSACTION_ID_KEY};
use aft::proto::aft::{TransactionStatus, TransactionTag};
use aft::proto::anna::{AnnaError, KeyRequest, KeyResponse, KeyTuple, LatticeType};
use aft_testkit::dag::{assert_read_atomic, committed, HistoryClock, RecordedDag};
use aft_testkit::sidecar::Sidecar;
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TIMEOUT: Duration = Duration::from_secs(5);

struct Node {
    _dir: tempfile::TempDir,
    ipc: std::path::PathBuf,
    sidecar: Sidecar,
}

fn node(extra: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let ipc = dir.path().join("ipc");
    let data = format!("file://{}", dir.path().join("data").display());
    let mut args = vec!["--storage", data.as_str(), "--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(Path::new(BIN), &ipc, &args);
    Node {
        _dir: dir,
        ipc,
        sidecar,
    }
}

fn client(node: &Node, thread: u32) -> IpcClient {
    IpcClient::connect(&node.ipc, thread, TIMEOUT).unwrap()
}

fn value(writer: &str) -> Vec<u8> {
    lww_payload(7, writer.as_bytes())
}

#[test]
fn every_endpoint_answers_in_the_executor_shapes() {
    let n = node(&[]);
    let c = client(&n, 0);
    let tag = c.start().unwrap();
    assert_eq!(tag.status, TransactionStatus::Running);
    assert_eq!(tag.address, "127.0.0.1");
    assert!(!tag.id.is_empty());

    // Put payloads are stored and returned byte for byte.
    let payload = lww_payload(123_456, b"\x00binary\xff");
    c.put(Some(&tag.id), &[("k", payload.clone())]).unwrap();
    assert_eq!(
        c.get(Some(&tag.id), &["k"]).unwrap(),
        vec![Some(payload.clone())]
    );
    // Not visible outside the transaction before commit.
    assert_eq!(c.get(None, &["k"]).unwrap(), vec![None]);
    assert_eq!(
        c.commit(&tag.id, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    assert_eq!(c.get(None, &["k"]).unwrap(), vec![Some(payload.clone())]);

    // Plain put is a transaction of its own.
    c.put(None, &[("p1", value("plain")), ("p2", value("plain"))])
        .unwrap();
    let got = c.get(None, &["p1", "p2", "missing"]).unwrap();
    assert_eq!(got, vec![Some(value("plain")), Some(value("plain")), None]);

    // abort, continue (own node), commit of an aborted transaction.
    let t2 = c.start().unwrap();
    c.continue_from(&t2.id, "127.0.0.1").unwrap();
    c.put(Some(&t2.id), &[("k", value("aborted"))]).unwrap();
    assert_eq!(c.abort(&t2.id).unwrap().status, TransactionStatus::Aborted);
    assert_eq!(
        c.abort(&t2.id).unwrap().status,
        TransactionStatus::Aborted,
        "idempotent"
    );
    assert_eq!(
        c.commit(&t2.id, &[]).unwrap().status,
        TransactionStatus::Aborted
    );
    assert_eq!(c.get(None, &["k"]).unwrap(), vec![Some(payload)]);
}

#[test]
fn raw_get_reply_echoes_the_request_id_and_reports_missing_keys_as_key_dne() {
    let n = node(&[]);
    let c = client(&n, 0);
    c.put(None, &[("present", value("x"))]).unwrap();
    let request = KeyRequest {
        tuples: vec![
            KeyTuple {
                key: "present".into(),
                ..Default::default()
            },
            KeyTuple {
                key: "absent".into(),
                ..Default::default()
            },
        ],
        response_address: c.reply_address(Endpoint::Get),
        request_id: "req-42".into(),
        ..Default::default()
    };
    c.send_raw(Endpoint::Get, &request.encode_to_vec()).unwrap();
    let response = KeyResponse::decode(c.recv_raw(Endpoint::Get).unwrap().as_slice()).unwrap();
    assert_eq!(response.response_id, "req-42");
    assert_eq!(
        response.tuples.len(),
        2,
        "exactly one tuple per key, in one response"
    );
    let present = &response.tuples[0];
    assert_eq!(
        (present.key.as_str(), present.lattice_type, present.error),
        ("present", LatticeType::Lww as i32, 0)
    );
    assert_eq!(present.payload, value("x"));
    let absent = &response.tuples[1];
    assert_eq!(absent.key, "absent");
    assert_eq!(absent.error, AnnaError::KeyDne as i32);
}

#[test]
fn unknown_and_finished_transactions_are_answered_never_crash() {
    let n = node(&[]);
    let c = client(&n, 0);
    let err = c.get(Some("no-such-txn"), &["a", "b"]).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: AnnaError::KeyDne,
                ..
            }
        ),
        "{err}"
    );
    let err = c
        .put(Some("no-such-txn"), &[("a", value("x"))])
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
    assert_eq!(
        c.commit("no-such-txn", &[]).unwrap().status,
        TransactionStatus::Aborted
    );
    assert_eq!(
        c.abort("no-such-txn").unwrap().status,
        TransactionStatus::Aborted
    );
    // A malformed transaction id (it would break storage keys).
    let err = c.get(Some("bad/id"), &["a"]).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: AnnaError::KeyDne,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        c.commit("bad/id", &[]).unwrap().status,
        TransactionStatus::Aborted
    );

    let t = c.start().unwrap();
    assert_eq!(
        c.commit(&t.id, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    assert_eq!(
        c.commit(&t.id, &[]).unwrap().status,
        TransactionStatus::Committed,
        "retry"
    );
    let err = c.get(Some(&t.id), &["a"]).unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
}

#[test]
fn bad_values_are_refused_with_a_reason_and_nothing_is_written() {
    let n = node(&["--max-value-bytes", "1024"]);
    let c = client(&n, 0);
    let t = c.start().unwrap();
    let send_put = |tuples: Vec<KeyTuple>| -> KeyResponse {
        let mut tuples = tuples;
        tuples.push(KeyTuple {
            key: TRANSACTION_ID_KEY.into(),
            payload: t.id.clone().into_bytes(),
            ..Default::default()
        });
        let request = KeyRequest {
            tuples,
            response_address: c.reply_address(Endpoint::Put),
            request_id: "p".into(),
            ..Default::default()
        };
        c.send_raw(Endpoint::Put, &request.encode_to_vec()).unwrap();
        KeyResponse::decode(c.recv_raw(Endpoint::Put).unwrap().as_slice()).unwrap()
    };
    let good = KeyTuple {
        key: "good".into(),
        lattice_type: LatticeType::Lww as i32,
        payload: value("v"),
        ..Default::default()
    };
    let cases = [
        (
            KeyTuple {
                key: "set".into(),
                lattice_type: LatticeType::Set as i32,
                payload: vec![],
                ..Default::default()
            },
            "lattice",
        ),
        (
            KeyTuple {
                key: "junk".into(),
                lattice_type: LatticeType::Lww as i32,
                payload: vec![0xff, 0xff, 0xff],
                ..Default::default()
            },
            "not a valid LWWValue",
        ),
        (
            KeyTuple {
                key: "big".into(),
                lattice_type: LatticeType::Lww as i32,
                payload: lww_payload(1, &[0u8; 2000]),
                ..Default::default()
            },
            "exceeds the limit",
        ),
    ];
    for (bad, reason) in cases {
        let response = send_put(vec![good.clone(), bad]);
        assert_eq!(response.tuples.len(), 2);
        for tuple in &response.tuples {
            assert_eq!(tuple.error, AnnaError::Lattice as i32);
            let text = String::from_utf8_lossy(&tuple.payload);
            assert!(text.contains(reason), "{text}");
        }
    }
    // All or nothing: the good key of the refused requests was not buffered.
    assert_eq!(c.get(Some(&t.id), &["good"]).unwrap(), vec![None]);
    // The transaction still answers, but a refused write dooms it: committing
    // it without that write would commit half of what the DAG wrote.
    c.put(Some(&t.id), &[("good", value("v"))]).unwrap();
    assert_eq!(
        c.commit(&t.id, &[]).unwrap().status,
        TransactionStatus::Aborted
    );
    assert_eq!(
        c.get(None, &["good"]).unwrap(),
        vec![None],
        "nothing visible"
    );
    // Other transactions are unaffected.
    let other = c.start().unwrap();
    c.put(Some(&other.id), &[("good", value("v"))]).unwrap();
    assert_eq!(
        c.commit(&other.id, &[]).unwrap().status,
        TransactionStatus::Committed
    );
}

#[test]
fn malformed_requests_and_bogus_reply_addresses_do_not_stop_the_sidecar() {
    let mut n = node(&[]);
    let c = client(&n, 0);
    for endpoint in Endpoint::ALL {
        c.send_raw(endpoint, &[0xff, 0xff, 0x01, 0x02]).unwrap();
        c.send_raw(endpoint, b"").unwrap();
    }
    let bogus = [
        "",
        "not-an-address",
        "http://127.0.0.1:1/x",
        "ipc:///etc/passwd",
        "tcp://127.0.0.1:1",
    ];
    let nowhere = format!("ipc://{}/nobody_listens_here", n.ipc.display());
    for address in bogus.iter().copied().chain([nowhere.as_str()]) {
        c.send_raw(Endpoint::Start, address.as_bytes()).unwrap();
        let request = KeyRequest {
            tuples: vec![KeyTuple {
                key: "k".into(),
                ..Default::default()
            }],
            response_address: address.to_string(),
            ..Default::default()
        };
        c.send_raw(Endpoint::Get, &request.encode_to_vec()).unwrap();
        c.send_raw(Endpoint::Abort, format!("tid~{address}").as_bytes())
            .unwrap();
    }
    // A commit request whose transaction id is garbage but whose address is fine is answered.
    let garbage_commit = aft::proto::aft::CommitRequest {
        tid: "\u{0}\u{1}".into(),
        response_address: c.reply_address(Endpoint::Commit),
        addresses: vec![],
    };
    c.send_raw(Endpoint::Commit, &garbage_commit.encode_to_vec())
        .unwrap();
    let tag = TransactionTag::decode(c.recv_raw(Endpoint::Commit).unwrap().as_slice()).unwrap();
    assert_eq!(tag.status, TransactionStatus::Aborted as i32);

    assert!(
        n.sidecar.is_running(),
        "sidecar died: {}",
        n.sidecar.stderr()
    );
    let t = c.start().expect("still serving");
    assert_eq!(t.status, TransactionStatus::Running);
    let metrics = http_get(n.sidecar.metrics_url.as_deref().unwrap(), "/metrics");
    assert!(metrics.contains("reason=\"malformed\""), "{metrics}");
    assert!(
        metrics.contains("reason=\"bad_reply_address\""),
        "{metrics}"
    );
}

#[test]
fn a_flooding_client_does_not_starve_the_others() {
    let n = node(&["--max-pending-per-client", "64"]);
    let flooder = client(&n, 0);
    let polite = client(&n, 1);
    polite.put(None, &[("k", value("x"))]).unwrap();
    let request = KeyRequest {
        tuples: vec![KeyTuple {
            key: "k".into(),
            ..Default::default()
        }],
        response_address: flooder.reply_address(Endpoint::Get),
        ..Default::default()
    }
    .encode_to_vec();
    let flood = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if flooder.send_raw(Endpoint::Get, &request).is_err() {
                break;
            }
        }
        flooder
    });
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(polite.get(None, &["k"]).unwrap(), vec![Some(value("x"))]);
    }
    let elapsed = started.elapsed();
    let _flooder = flood.join().unwrap();
    assert!(
        elapsed < Duration::from_secs(5),
        "50 reads took {elapsed:?} under a flood"
    );
}

/// 32 concurrent clients run two-function DAG transactions; the whole
/// history is checked for read atomicity.
#[test]
fn thirty_two_concurrent_clients_produce_a_read_atomic_history() {
    let n = Arc::new(node(&[]));
    let clock = HistoryClock::new();
    let keys: Vec<String> = (0..8).map(|i| format!("key{i}")).collect();
    let mut handles = Vec::new();
    for thread in 0..32u32 {
        let n = Arc::clone(&n);
        let keys = keys.clone();
        handles.push(std::thread::spawn(move || {
            let c = client(&n, thread);
            let mut history = Vec::new();
            for i in 0..15usize {
                let mut dag = RecordedDag::start(&c, clock, 64).unwrap();
                let pick = |j: usize| &keys[(thread as usize * 5 + i * 3 + j * 7) % keys.len()];
                // Function 1: two reads, one write; function 2 (same
                // node, after continue): the same.
                for function in 0..2 {
                    if function == 1 {
                        dag.continue_from(&c, dag.upstream()).unwrap();
                    }
                    for j in 0..2 {
                        dag.read(&c, pick(function * 3 + j)).unwrap();
                    }
                    dag.write(&c, pick(function * 3 + 2)).unwrap();
                }
                history.push(if i % 9 == 4 {
                    dag.abort(&c).unwrap()
                } else {
                    dag.commit(&c, &[]).unwrap()
                });
            }
            history
        }));
    }
    let history: Vec<TxnRecord> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(history.len(), 32 * 15);
    let committed = committed(&history);
    assert!(committed > 32 * 12, "only {committed} committed");
    assert_read_atomic(&history);
}

#[test]
fn committed_data_survives_a_restart_and_a_crash() {
    let mut n = node(&[]);
    {
        let c = client(&n, 0);
        let t = c.start().unwrap();
        c.put(Some(&t.id), &[("a", value("t")), ("b", value("t"))])
            .unwrap();
        assert_eq!(
            c.commit(&t.id, &[]).unwrap().status,
            TransactionStatus::Committed
        );
    }
    assert!(
        n.sidecar.stop(),
        "graceful stop failed: {}",
        n.sidecar.stderr()
    );
    assert!(
        !n.ipc.join("get").exists(),
        "socket files must be removed on shutdown"
    );
    n.sidecar.spawn().unwrap();
    {
        let c = client(&n, 1);
        assert_eq!(
            c.get(None, &["a", "b"]).unwrap(),
            vec![Some(value("t")), Some(value("t"))]
        );
        let t = c.start().unwrap();
        c.put(Some(&t.id), &[("a", value("u"))]).unwrap();
        assert_eq!(
            c.commit(&t.id, &[]).unwrap().status,
            TransactionStatus::Committed
        );
    }
    n.sidecar.kill();
    n.sidecar.spawn().unwrap();
    let c = client(&n, 2);
    assert_eq!(
        c.get(None, &["a", "b"]).unwrap(),
        vec![Some(value("u")), Some(value("t"))]
    );
}

#[test]
fn an_idle_transaction_expires_and_its_commit_answers_aborted() {
    let n = node(&["--txn-lease-secs", "1"]);
    let c = client(&n, 0);
    let t = c.start().unwrap();
    c.put(Some(&t.id), &[("k", value("late"))]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        c.commit(&t.id, &[]).unwrap().status,
        TransactionStatus::Aborted
    );
    assert_eq!(c.get(None, &["k"]).unwrap(), vec![None]);
}

#[test]
fn a_second_sidecar_on_the_same_directory_is_refused_with_one_clear_line() {
    let n = node(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--ipc-dir")
        .arg(&n.ipc)
        .arg("--storage")
        .arg(format!("file://{}", dir.path().display()))
        .args(["--metrics-addr", "off"])
        .env("AFT_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already bound"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = std::process::Command::new(BIN)
        .args(["--ipc-dir", dir.path().join("ipc").to_str().unwrap()])
        .args(["--storage", "redis://127.0.0.1:1", "--metrics-addr", "off"])
        .env("AFT_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis://127.0.0.1:1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let world = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        world.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--ipc-dir", world.path().to_str().unwrap()])
        .args(["--storage", "memory://", "--metrics-addr", "off"])
        .env("AFT_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("world-writable"));
}

#[test]
fn metrics_and_health_endpoints_report_activity() {
    let n = node(&[]);
    let c = client(&n, 0);
    let t = c.start().unwrap();
    c.put(Some(&t.id), &[("k", value("x"))]).unwrap();
    c.get(Some(&t.id), &["k"]).unwrap();
    c.commit(&t.id, &[]).unwrap();
    let url = n.sidecar.metrics_url.clone().unwrap();
    assert_eq!(http_get(&url, "/health").trim(), "ok");
    assert_eq!(http_get(&url, "/ready").trim(), "ready");
    let metrics = http_get(&url, "/metrics");
    for needle in [
        "aft_txn_started_total 1",
        "aft_txn_committed_total 1",
        "aft_reads_total{source=\"Buffer\"} 1",
        "aft_request_seconds_count{endpoint=\"commit\"} 1",
        "aft_commit_seconds_count 1",
    ] {
        assert!(
            metrics.contains(needle),
            "missing `{needle}` in:\n{metrics}"
        );
    }
}

/// A minimal HTTP/1.0 GET over a TCP socket (no client library needed).
fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(hostport).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[test]
fn socket_files_get_the_configured_mode_and_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Group 65534 (nogroup) exists on Debian; the tests run as root, who may chown.
    let n = node(&["--socket-mode", "640", "--socket-group", "65534"]);
    for name in ["get", "put", "start", "commit", "abort", "continue"] {
        let meta = std::fs::metadata(n.ipc.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{name}");
        assert_eq!(meta.gid(), 65534, "{name}");
    }
}

/// An executor that closes its reply sockets and binds the same addresses
/// again (a restarted process with the same thread id) gets its replies on
/// the new sockets, as it would from a libzmq PUSH socket that reconnects.
#[test]
fn a_client_that_binds_its_reply_address_again_gets_its_replies() {
    let node = node(&[]);
    for round in 0..5 {
        let c = client(&node, 42);
        let tid = c
            .start()
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .id;
        c.put(Some(&tid), &[("rebound", value(&tid))]).unwrap();
        assert_eq!(
            c.commit(&tid, &[]).unwrap().status,
            TransactionStatus::Committed
        );
        drop(c);
    }
}

/// A process that connects to an endpoint's socket without speaking ZMTP,
/// or that announces a frame larger than allowed, is disconnected; the
/// sidecar keeps serving real executors.
#[test]
fn a_connection_that_does_not_speak_zmtp_is_dropped_and_others_are_served() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let node = node(&["--max-value-bytes", "1024"]);
    let socket = node.ipc.join("get");
    // Not ZMTP at all.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    // The sidecar answers with its own greeting, then closes the connection.
    let _ = garbage.read_to_end(&mut rest);
    // A well-formed greeting and handshake, then a frame claiming 2^40 bytes.
    let mut huge = UnixStream::connect(&socket).unwrap();
    let mut hello = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    hello.extend_from_slice(b"NULL");
    hello.resize(64, 0);
    let ready = b"\x05READY\x0bSocket-Type\x00\x00\x00\x04PUSH";
    hello.push(0x04);
    hello.push(ready.len() as u8);
    hello.extend_from_slice(ready);
    hello.push(0x02);
    hello.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.write_all(&hello).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = huge.read_to_end(&mut rest);
    // Still serving.
    let c = client(&node, 3);
    let tid = c.start().unwrap().id;
    c.put(Some(&tid), &[("after-garbage", value(&tid))])
        .unwrap();
    assert_eq!(
        c.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Committed
    );
}

/// Values of several MiB travel both ways intact (frames larger than any
/// single read, grown as they arrive).
#[test]
fn multi_megabyte_values_round_trip() {
    let node = node(&["--max-value-bytes", &(16usize << 20).to_string()]);
    let c = client(&node, 5);
    let tid = c.start().unwrap().id;
    let big: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    let payload = lww_payload(1, &big);
    c.put(Some(&tid), &[("big", payload.clone())]).unwrap();
    assert_eq!(
        c.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    let tid = c.start().unwrap().id;
    assert_eq!(c.get(Some(&tid), &["big"]).unwrap(), vec![Some(payload)]);
}
