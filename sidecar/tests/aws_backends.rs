//! The real `aft-sidecar` on DynamoDB (moto) and S3 (SeaweedFS), driven
//! over IPC as a Cloudburst executor drives it: start-up without the table
//! or bucket, `--create-storage`, DAG transactions whose results an outside
//! reader finds in the store, and DynamoDB's value limit at the put.

use std::path::Path;
use std::time::Duration;

use aft::client::{lww_inner, IpcClient};
use aft::history::writer_of;
use aft::proto::aft::TransactionStatus;
use aft_testkit::aws::{MotoServer, SeaweedFs};
use aft_testkit::outside::OutsideReader;
use aft_testkit::sidecar::Sidecar;
use aft_testkit::tagged::{tagged_padded, writer_of_payload};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const TIMEOUT: Duration = Duration::from_secs(10);

/// The sidecar refuses to start on a store that is not there, in one line
/// that names the URL and the way out; with `--create-storage` it creates
/// it and serves.
fn starts_only_on_existing_storage(url: &str) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--ipc-dir")
        .arg(dir.path().join("refused"))
        .args(["--storage", url, "--metrics-addr", "off"])
        .env("AFT_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started without its table or bucket");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--create-storage"), "{stderr}");
    assert!(
        !stderr.contains("aft-test-secret"),
        "credentials leaked: {stderr}"
    );
    let ipc = dir.keep().join("ipc");
    let sidecar = Sidecar::start(
        Path::new(BIN),
        &ipc,
        &[
            "--storage",
            url,
            "--create-storage",
            "--metrics-addr",
            "off",
        ],
    );
    // A fresh SeaweedFS allocates its volumes on the first write, which may
    // take longer than the sidecar's storage timeout: write once first.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(aft_testkit::aws::prepare_store(url));
    sidecar
}

/// A two-function DAG through the sidecar, then the result as an outside
/// reader sees it in the store.
fn serves_dags_whose_results_reach_the_store(sidecar: &Sidecar, url: &str) {
    let a = IpcClient::connect(&sidecar.ipc_dir, 0, TIMEOUT).unwrap();
    let b = IpcClient::connect(&sidecar.ipc_dir, 1, TIMEOUT).unwrap();
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("order", tagged_padded(&tid, "order", 64))])
        .unwrap();
    b.continue_from(&tid, "127.0.0.1").unwrap();
    let seen = b.get(Some(&tid), &["order"]).unwrap();
    let _writer = |v: Option<Vec<u8>>| v.and_then(|p| lww_inner(&p)).and_then(|v| writer_of(&v));
    assert_eq!(
        writer_of_payload(seen.into_iter().next().flatten()),
        Some(tid.clone())
    );
    b.put(
        Some(&tid),
        &[("receipt", tagged_padded(&tid, "receipt", 64))],
    )
    .unwrap();
    assert_eq!(
        b.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    let outside = OutsideReader::open(url);
    match outside.await_published(&["order", "receipt"], &tid, Duration::from_secs(5)) {
        Ok(_) => {}
        Err(seen) => panic!("not published to the store: {seen:?}"),
    }
    // A plain (non-transactional) read sees the committed value too.
    let plain = a.get(None, &["receipt"]).unwrap();
    assert_eq!(
        writer_of_payload(plain.into_iter().next().flatten()),
        Some(tid)
    );
}

#[test]
fn a_sidecar_on_dynamodb_serves_dags_and_refuses_what_an_item_cannot_hold() {
    let server = MotoServer::start();
    let url = server.url("aft-sidecar");
    let sidecar = starts_only_on_existing_storage(&url);
    serves_dags_whose_results_reach_the_store(&sidecar, &url);

    // The sidecar lowered --max-value-bytes (16 MiB) to what an item holds:
    // a 1 MiB value is refused at the put, and the transaction still commits
    // what it wrote within the limit.
    let c = IpcClient::connect(&sidecar.ipc_dir, 2, TIMEOUT).unwrap();
    let tid = c.start().unwrap().id;
    let refused = c.put(
        Some(&tid),
        &[("huge", tagged_padded(&tid, "huge", 1 << 20))],
    );
    assert!(refused.is_err(), "a 1 MiB value was accepted on DynamoDB");
    let near_limit = tagged_padded(&tid, "large", aft::storage::DYNAMODB_VALUE_LIMIT - 1024);
    let ok = c.start().unwrap().id;
    c.put(Some(&ok), &[("large", near_limit)]).unwrap();
    assert_eq!(
        c.commit(&ok, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    assert!(
        sidecar.stderr().contains("max-value-bytes"),
        "no warning about the lowered limit: {}",
        sidecar.stderr()
    );
}

#[test]
fn a_sidecar_on_s3_serves_dags() {
    let server = SeaweedFs::start();
    let url = server.url("aft-sidecar");
    let sidecar = starts_only_on_existing_storage(&url);
    serves_dags_whose_results_reach_the_store(&sidecar, &url);
}
