//! `aft-demo`: starts an `aft-sidecar` on the embedded store in a temporary
//! directory, runs concurrent two-function DAG transactions through the real
//! IPC sockets (as Cloudburst executor threads would), checks the history for
//! read atomicity, prints what happened, and stops the sidecar.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::IpcClient;
use aft::history::{check, Op, TxnRecord};
use aft_testkit::dag::{committed, HistoryClock, RecordedDag};
use aft_testkit::process::ChildProcess;
use aft_testkit::sidecar::{launch, SidecarSpec};
use aft_testkit::tagged::writer_of_payload;
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
    let clock = HistoryClock::new();
    let mut workers = Vec::new();
    let keys: Arc<Vec<String>> =
        Arc::new((0..args.keys).map(|i| format!("demo-key-{i}")).collect());
    for thread in 0..args.threads {
        let (ipc, keys, dags) = (ipc.clone(), Arc::clone(&keys), args.dags);
        workers.push(std::thread::spawn(move || {
            run_executor(&ipc, thread, &keys, dags, clock)
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
    let committed = committed(&history);
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
        let writer = writer_of_payload(value);
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

/// Starts the sidecar on the embedded store in `data` and echoes what it
/// printed on standard output.
fn start_sidecar(binary: &Path, ipc: &Path, data: &Path) -> anyhow::Result<ChildProcess> {
    let spec = SidecarSpec::new(binary, ipc).args(&[
        "--storage".to_string(),
        format!("file://{}", data.display()),
        "--metrics-addr".to_string(),
        "127.0.0.1:0".to_string(),
    ]);
    let process = launch(&spec).with_context(|| format!("cannot start {}", binary.display()))?;
    for line in process.startup_lines() {
        println!("   sidecar: {line}");
    }
    println!(
        "   sidecar: aft-sidecar ready (log: {})",
        spec.log.display()
    );
    Ok(process)
}

/// One executor thread: DAGs of two functions, each 2 reads + 1 write
/// (values of 4 KiB); every tenth DAG aborts on purpose.
fn run_executor(
    ipc: &Path,
    thread: u32,
    keys: &[String],
    dags: usize,
    clock: HistoryClock,
) -> anyhow::Result<Vec<TxnRecord>> {
    let client = IpcClient::connect(ipc, thread, Duration::from_secs(5))?;
    let mut history = Vec::with_capacity(dags);
    for i in 0..dags {
        let mut dag = RecordedDag::start(&client, clock, 4096)?;
        let pick = |j: usize| &keys[(thread as usize * 7 + i * 3 + j * 5) % keys.len()];
        for function in 0..2 {
            if function == 1 {
                dag.continue_from(&client, dag.upstream())?;
            }
            for j in 0..2 {
                dag.read(&client, pick(function * 3 + j))?;
            }
            dag.write(&client, pick(function * 3 + 2))?;
        }
        history.push(if i % 10 == 9 {
            dag.abort(&client)?
        } else {
            dag.commit(&client, &[])?
        });
    }
    Ok(history)
}
