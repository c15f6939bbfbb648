//! One benchmark run: starts the processes, fills the key spaces, warms up,
//! runs the interleaved rounds, checks the histories, and returns the
//! [`Results`].
//!
//! Targets and the workloads on them:
//!
//! | target | process | workloads |
//! | --- | --- | --- |
//! | `echo` | `aft-bench echo-server` | `echo-get`, `echo-dag` |
//! | `redis` | `redis-server` on loopback | `redis-dag`, `ping-direct` |
//! | `redis-net` | the same server behind `aft-bench delay-proxy` | `redis-net-dag`, `ping-net` |
//! | `sd-file` | `aft-sidecar --storage file://` | `sidecar-get`, `sidecar-file-dag` |
//! | `sd-redis` | `aft-sidecar --storage redis://` (loopback) | `sidecar-redis-dag` |
//! | `sd-net` | `aft-sidecar --storage redis://` (through the proxy) | `sidecar-redis-net-dag` |
//! | `sd-dynamodb` | `aft-sidecar --storage dynamodb://` (moto, through a proxy) | `sidecar-dynamodb-net-dag` |
//! | `sd-s3` | `aft-sidecar --storage s3://` (SeaweedFS, through a proxy) | `sidecar-s3-net-dag` |
//! | `multi` | 3 × `aft-sidecar` sharing the loopback Redis, peers | `multi-node-1/2/3` |
//!
//! Every workload has its own key space (a key prefix), so workloads sharing
//! a Redis server never read each other's keys, and each key space's history
//! is checked on its own.
//!
//! [`run`] is a sequence of phases, one module each:
//!
//! | phase | module | what it does |
//! | --- | --- | --- |
//! | plan | `plan` | checks the flags, picks the workloads and the sidecar binary |
//! | start | `start` (on a `rig::Rig`) | starts the targets' processes, proxies and client pools |
//! | fill | `fill` | preloads every key space |
//! | warm up | `warmup` | runs each workload once, unrecorded |
//! | measure | `measure` | runs the interleaved rounds of every (workload, clients) cell |
//! | check | `check` | notes dead processes, checks each key space's history for anomalies |
//! | assemble | `assemble` | turns what was measured into [`Results`], ratios included |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::RunArgs;
use crate::machine::{load_average, Machine};
use crate::results::Results;

mod assemble;
mod check;
mod fill;
mod measure;
mod plan;
mod rig;
mod start;
mod warmup;

pub use self::assemble::command_line;

/// Names of every workload, in report order.
pub const WORKLOADS: [&str; 16] = [
    "echo-get",
    "sidecar-get",
    "echo-dag",
    "redis-dag",
    "sidecar-redis-dag",
    "sidecar-file-dag",
    "redis-net-dag",
    "sidecar-redis-net-dag",
    "sidecar-grpc-net-dag",
    "sidecar-dynamodb-net-dag",
    "sidecar-s3-net-dag",
    "ping-direct",
    "ping-net",
    "multi-node-1",
    "multi-node-2",
    "multi-node-3",
];

/// Workloads that run only when `--only` names them: the DynamoDB and S3
/// cells run against local emulators (moto, SeaweedFS), whose latency is
/// their own (moto copies the whole table in every transaction), not AWS's.
/// What they measure is the sidecar's path: storage calls, bytes and CPU
/// per DAG, and the history check.
pub const OPT_IN: [&str; 2] = ["sidecar-dynamodb-net-dag", "sidecar-s3-net-dag"];

/// The default sidecar binary: `aft-sidecar` next to `bench_exe`.
pub fn default_sidecar(bench_exe: &Path) -> anyhow::Result<PathBuf> {
    Ok(bench_exe
        .parent()
        .context("the benchmark binary has no parent directory")?
        .join("aft-sidecar"))
}

/// Runs the benchmark described by `args`. `bench_exe` is this binary (it
/// starts its own helper subcommands).
pub fn run(args: &RunArgs, bench_exe: &Path) -> anyhow::Result<Results> {
    let started = assemble::Started::now();
    let plan = plan::Plan::new(args, bench_exe)?;
    let mut machine = Machine::collect(&plan.sidecar_bin, &args.redis_server);
    let dir = tempfile::Builder::new()
        .prefix("aft-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let progress = progress_bar(args.no_progress)?;

    progress.set_message("starting processes");
    let mut rig = rig::Rig::new();
    let setup = start::Setup {
        args,
        plan: &plan,
        bench_exe,
        dir: dir.path(),
    };
    let (workloads, multi_node) = start::start_targets(&setup, &mut rig)?;
    if workloads.is_empty() {
        bail!("no workload selected");
    }
    let mut cells = measure::cells(&workloads, &plan.clients);
    let key_spaces = fill::key_spaces(&workloads);
    let schedule = measure::Schedule::new(args, started.instant);
    let slices = key_spaces.len() + workloads.len() + schedule.rounds * cells.len();
    progress.set_length(slices as u64);

    let mut histories = check::Histories::default();
    fill::fill(
        &workloads,
        &key_spaces,
        &rig,
        plan.params.keys,
        &progress,
        &mut histories,
    )?;
    warmup::warm_up(
        &schedule,
        &workloads,
        &rig,
        plan.max_clients,
        &progress,
        &mut histories,
    )?;
    let measured = measure::measure(
        &schedule,
        &mut cells,
        &workloads,
        &rig,
        &progress,
        &mut histories,
    )?;

    progress.set_message("checking histories");
    let mut notes: Vec<String> = measured.note.iter().cloned().collect();
    notes.extend(check::dead_processes(&mut rig));
    drop(rig);
    progress.finish_and_clear();
    machine.load_average_at_end = load_average();
    let anomalies = check::anomalies(&key_spaces, &workloads, histories);

    Ok(assemble::results(assemble::Parts {
        args,
        plan: &plan,
        started: &started,
        machine,
        workloads: &workloads,
        cells: &cells,
        schedule: &schedule,
        measured: &measured,
        anomalies,
        multi_node,
        notes,
    }))
}

/// The progress bar of a run (hidden with `--no-progress`), drawn on stderr.
fn progress_bar(hidden: bool) -> anyhow::Result<ProgressBar> {
    if hidden {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    Ok(bar)
}
