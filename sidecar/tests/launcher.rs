//! The local multi-node launcher (`cluster/local/launch.sh`) as a user runs
//! it: up, a DAG across two of its nodes, down, nothing left running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aft::client::{lww_payload, IpcClient};
use aft::proto::aft::TransactionStatus;

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");

fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/local/launch.sh")
}

struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(launcher())
            .arg("down")
            .arg(&self.0)
            .output();
    }
}

/// Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
fn the_launcher_starts_a_working_cluster_and_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let out = Command::new("bash")
        .arg(launcher())
        .args(["up", "2"])
        .arg(&cluster_dir)
        .env("AFT_SIDECAR_BIN", BIN)
        .output()
        .unwrap();
    let _down = Down(cluster_dir.clone());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node 2: address 127.0.0.2"), "{stdout}");

    let env: HashMap<String, String> = std::fs::read_to_string(cluster_dir.join("cluster.env"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let a = IpcClient::connect(
        Path::new(&env["AFT_LOCAL_NODE1_IPC"]),
        0,
        Duration::from_secs(10),
    )
    .unwrap();
    let b = IpcClient::connect(
        Path::new(&env["AFT_LOCAL_NODE2_IPC"]),
        0,
        Duration::from_secs(10),
    )
    .unwrap();
    let tid = a.start().unwrap().id;
    a.put(Some(&tid), &[("launched", lww_payload(1, b"v"))])
        .unwrap();
    b.continue_from(&tid, &env["AFT_LOCAL_NODE1_ADDRESS"])
        .unwrap();
    assert_eq!(
        b.get(Some(&tid), &["launched"]).unwrap(),
        vec![Some(lww_payload(1, b"v"))]
    );
    assert_eq!(
        b.commit(&tid, &[env["AFT_LOCAL_NODE1_ADDRESS"].clone()])
            .unwrap()
            .status,
        TransactionStatus::Committed
    );

    let pids = [
        &env["AFT_LOCAL_NODE1_PID"],
        &env["AFT_LOCAL_NODE2_PID"],
        &env["AFT_LOCAL_REDIS_PID"],
    ];
    assert!(pids.iter().all(|p| alive(p)));
    let out = Command::new("bash")
        .arg(launcher())
        .arg("down")
        .arg(&cluster_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    for pid in pids {
        assert!(!alive(pid), "process {pid} still running after down");
    }
    assert!(
        !Path::new(&env["AFT_LOCAL_NODE1_IPC"]).join("get").exists(),
        "socket files left behind"
    );
}
