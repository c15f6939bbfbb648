//! `aft-demo`: starts an `aft-sidecar` on the embedded store in a temporary
//! directory, runs concurrent two-function DAG transactions through the real
//! IPC sockets (as Cloudburst executor threads would), checks the history for
//! read atomicity, prints what happened, and stops the sidecar.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::{lww_inner, lww_payload, IpcClient};
use aft::history::{check, tag_value, writer_of, Op, Status, TxnRecord};
use aft::proto::aft::TransactionStatus;
use anyhow::{bail, Context as _};
use clap::Parser;

/// Runs a short demo of aft-sidecar.
#[derive(Debug, Parser)]
#[command(name = "aft-demo", version, about)]
struct Args {
    /// Concurrent executor threads.
    #[arg(long, default_value_t = 8)]
    threads: u32,
    /// DAGs (transactions) per thread.
    #[arg(long, default_value_t = 25)]
    dags: usize,
    /// Keys in the workload (few keys = many conflicts).
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Path of the aft-sidecar binary (default: next to this one).
    #[arg(long)]
    sidecar: Option<PathBuf>,
}

struct SidecarProcess(Child);

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.sidecar.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("aft-sidecar"),
    };
    let dir = tempfile::tempdir()?;
    let ipc = dir.path().join("ipc");
    let data = dir.path().join("data");
    println!(
        "== starting {} (embedded store in {})",
        binary.display(),
        data.display()
    );
    let sidecar = start_sidecar(&binary, &ipc, &data)?;

    let started = Instant::now();
    let epoch = Instant::now();
    let mut workers = Vec::new();
    let keys: Arc<Vec<String>> =
        Arc::new((0..args.keys).map(|i| format!("demo-key-{i}")).collect());
    for thread in 0..args.threads {
        let (ipc, keys, dags) = (ipc.clone(), Arc::clone(&keys), args.dags);
        workers.push(std::thread::spawn(move || {
            run_executor(&ipc, thread, &keys, dags, epoch)
        }));
    }
    let mut history = Vec::new();
    for worker in workers {
        history.extend(
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("executor thread panicked"))??,
        );
    }
    let elapsed = started.elapsed();
    let committed = history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count();
    let aborted = history.len() - committed;
    let reads = history
        .iter()
        .flat_map(|t| &t.ops)
        .filter(|op| matches!(op, Op::Read { .. }))
        .count();
    let anomalies = check(&history);

    // Atomic visibility, seen from outside: a plain read of all keys.
    let observer = IpcClient::connect(&ipc, 1000, Duration::from_secs(5))?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let latest = observer.get(None, &key_refs)?;
    println!(
        "== {} DAG transactions (2 functions x (2 reads + 1 write)) from {} executor threads in {:.2?}",
        history.len(),
        args.threads,
        elapsed
    );
    println!("   committed: {committed}, aborted on purpose: {aborted}, reads: {reads}");
    println!(
        "   throughput: {:.0} DAGs/s, mean DAG latency: {:.2?}",
        history.len() as f64 / elapsed.as_secs_f64(),
        elapsed * args.threads / history.len().max(1) as u32
    );
    println!("   final value of each key (writer transaction):");
    for (key, value) in keys.iter().zip(latest) {
        let writer = value
            .and_then(|v| lww_inner(&v))
            .and_then(|v| writer_of(&v));
        println!(
            "     {key:<12} <- {}",
            writer.as_deref().unwrap_or("(none)")
        );
    }
    println!(
        "== read-atomicity anomalies found by the history checker: {}",
        anomalies.len()
    );
    for anomaly in anomalies.iter().take(5) {
        println!("   {anomaly}");
    }
    drop(sidecar);
    if !anomalies.is_empty() {
        bail!("{} anomalies", anomalies.len());
    }
    println!("== demo passed: sidecar stopped");
    Ok(())
}

fn start_sidecar(binary: &Path, ipc: &Path, data: &Path) -> anyhow::Result<SidecarProcess> {
    let mut child = Command::new(binary)
        .arg("--ipc-dir")
        .arg(ipc)
        .arg("--storage")
        .arg(format!("file://{}", data.display()))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("AFT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let process = SidecarProcess(child);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("   sidecar: {line}");
        if line.starts_with("aft-sidecar ready") {
            return Ok(process);
        }
    }
    bail!("the sidecar exited before it was ready")
}

/// One executor thread: DAGs of two functions, each 2 reads + 1 write.
fn run_executor(
    ipc: &Path,
    thread: u32,
    keys: &[String],
    dags: usize,
    epoch: Instant,
) -> anyhow::Result<Vec<TxnRecord>> {
    let client = IpcClient::connect(ipc, thread, Duration::from_secs(5))?;
    let now = || epoch.elapsed().as_nanos() as u64;
    let mut history = Vec::with_capacity(dags);
    for i in 0..dags {
        let tag = client.start()?;
        let tid = tag.id.clone();
        let mut ops = Vec::new();
        let pick = |j: usize| &keys[(thread as usize * 7 + i * 3 + j * 5) % keys.len()];
        for function in 0..2 {
            if function == 1 {
                client.continue_from(&tid, &tag.address)?;
            }
            for j in 0..2 {
                let key = pick(function * 3 + j);
                let value = client.get(Some(&tid), &[key])?.remove(0);
                let writer = value
                    .and_then(|v| lww_inner(&v))
                    .and_then(|v| writer_of(&v));
                ops.push(Op::Read {
                    key: key.clone(),
                    writer,
                    returned_at: now(),
                });
            }
            let key = pick(function * 3 + 2);
            client.put(
                Some(&tid),
                &[(key, lww_payload(1, &tag_value(&tid, key, 4096)))],
            )?;
            ops.push(Op::Write { key: key.clone() });
        }
        let requested = now();
        let status = if i % 10 == 9 {
            client.abort(&tid)?;
            Status::Aborted
        } else {
            match client.commit(&tid, &[])?.status {
                TransactionStatus::Committed => Status::Committed,
                _ => Status::Aborted,
            }
        };
        history.push(TxnRecord {
            id: tid,
            status,
            commit_timestamp: None,
            commit_window: Some((requested, now())),
            ops,
        });
    }
    Ok(history)
}
