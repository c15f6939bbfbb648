//! The quick smoke mode, end to end: `aft-bench --quick` against the real
//! `aft-sidecar` binary and `redis-server`. It checks that every workload
//! ran, that the JSON results and plots were written, and that the history
//! checker found no read-atomicity anomaly in any key space served by a
//! sidecar. Ratios are reported, never asserted.
//!
//! Needs `redis-server` on the PATH and the sidecar built next to this
//! crate's binary (`cargo build --workspace` does both binaries).

use std::path::PathBuf;
use std::process::Command;

use aft_bench::results::Results;

fn sidecar_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_aft-bench"));
    let sidecar = bench.with_file_name("aft-sidecar");
    assert!(
        sidecar.exists(),
        "no sidecar binary at {}: build it first (cargo build -p aft-sidecar)",
        sidecar.display()
    );
    sidecar
}

#[test]
fn quick_run_writes_results_and_finds_no_anomaly_through_the_sidecar() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_aft-bench"))
        .arg("--quick")
        .arg("--no-progress")
        .args(["--report", "off", "--time-limit-secs", "60"])
        .arg("--out-dir")
        .arg(out.path())
        .arg("--sidecar")
        .arg(sidecar_binary())
        .output()
        .expect("aft-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "aft-bench --quick failed:\n{stderr}"
    );

    let json = out.path().join("quick.json");
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no results at {}: {e}\n{stderr}", json.display()));
    let results: Results = serde_json::from_str(&text).expect("results parse");

    // Every single-node workload ran and did work without failures.
    for name in [
        "echo-get",
        "echo-dag",
        "redis-dag",
        "redis-net-dag",
        "sidecar-get",
        "sidecar-file-dag",
        "sidecar-redis-dag",
        "sidecar-redis-net-dag",
        "ping-direct",
        "ping-net",
    ] {
        let cells: Vec<_> = results
            .cells
            .iter()
            .filter(|c| c.workload == name)
            .collect();
        assert!(!cells.is_empty(), "workload {name} did not run");
        for cell in cells {
            assert!(cell.ops > 0, "{name} × {} did nothing", cell.clients);
            assert_eq!(
                cell.errors, 0,
                "{name} × {} failed: {:?}",
                cell.clients, cell.first_error
            );
        }
    }

    // Read atomicity: zero anomalies wherever a sidecar served the reads.
    let through_sidecar: Vec<_> = results
        .anomalies
        .iter()
        .filter(|a| a.through_sidecar)
        .collect();
    assert!(
        through_sidecar.len() >= 3,
        "expected the file, redis and net key spaces to be checked: {:?}",
        results.anomalies
    );
    for a in through_sidecar {
        assert!(a.transactions > 0, "empty history for `{}`", a.key_space);
        assert_eq!(
            a.total, 0,
            "anomalies through the sidecar in `{}`: {:?}",
            a.key_space, a.examples
        );
    }
    assert!(!results.ratios.is_empty());
    let plots = out.path().join("plots");
    let svgs = std::fs::read_dir(&plots)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert!(svgs >= 4, "expected the plots in {}", plots.display());
}
