//! Measure: the interleaved rounds. Each round runs every (workload,
//! clients) cell for one slice, in an order that alternates each round
//! (A B A B), so machine noise hits every cell alike.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;

use super::check::Histories;
use super::rig::Rig;
use super::start::Workload;
use crate::cli::RunArgs;
use crate::cost::Sample;
use crate::results::round1;
use crate::session::Recorder;

/// What one (workload, clients) cell accumulates over the rounds.
pub(super) struct CellAcc {
    /// Index of the workload.
    pub workload: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Everything recorded in the measured slices (histories excepted).
    pub recorder: Recorder,
    /// Measured wall time, all slices together.
    pub wall: Duration,
    /// Median latency of each round, µs.
    pub round_p50_us: Vec<f64>,
    /// Throughput of each round, operations per second.
    pub round_throughput: Vec<f64>,
    /// What the workload's sidecars spent over the measured slices.
    pub spent: Sample,
    /// Operations committed in those slices.
    pub committed: u64,
}

/// The cells of `workloads`: one per client count (single-client workloads:
/// one, with 1 client), in workload order.
pub(super) fn cells(workloads: &[Workload], clients: &[usize]) -> Vec<CellAcc> {
    let mut cells = Vec::new();
    for (w, workload) in workloads.iter().enumerate() {
        for &c in clients {
            if workload.single_client && c != clients[0] {
                continue;
            }
            cells.push(CellAcc {
                workload: w,
                clients: if workload.single_client { 1 } else { c },
                recorder: Recorder::new(true),
                wall: Duration::ZERO,
                round_p50_us: Vec::new(),
                round_throughput: Vec::new(),
                spent: Sample::default(),
                committed: 0,
            });
        }
    }
    cells
}

/// How long the warm-up and the rounds run.
pub(super) struct Schedule {
    /// Length of a workload's warm-up slice.
    pub warmup: Duration,
    /// Rounds planned.
    pub rounds: usize,
    /// Length of one slice.
    pub slice: Duration,
    /// Most operations in one slice, all clients together.
    pub max_ops: u64,
    /// No round starts that would end after this many seconds of the run.
    pub time_limit_secs: f64,
    /// When the run started.
    pub run_started: Instant,
}

impl Schedule {
    /// The schedule `args` ask for, of a run started at `run_started`.
    pub fn new(args: &RunArgs, run_started: Instant) -> Schedule {
        Schedule {
            warmup: args.warmup(),
            rounds: args.rounds(),
            slice: args.slice(),
            max_ops: args.max_ops_per_slice,
            time_limit_secs: args.time_limit_secs,
            run_started,
        }
    }
}

/// What the measure phase reports besides the cells.
pub(super) struct Measured {
    /// Rounds that ran to the end.
    pub rounds_completed: usize,
    /// Whether the time limit cut rounds short.
    pub truncated: bool,
    /// Why, if it did.
    pub note: Option<String>,
}

/// Runs the rounds of `schedule` over `cells`, until done or until the next
/// round would pass the time limit (the first round always runs). Measured
/// transactions go into `histories`, with the client count that ran them.
pub(super) fn measure(
    schedule: &Schedule,
    cells: &mut [CellAcc],
    workloads: &[Workload],
    rig: &Rig,
    progress: &ProgressBar,
    histories: &mut Histories,
) -> anyhow::Result<Measured> {
    let rounds = schedule.rounds;
    let mut measured = Measured {
        rounds_completed: 0,
        truncated: false,
        note: None,
    };
    for round in 0..rounds {
        let elapsed = schedule.run_started.elapsed().as_secs_f64();
        let round_estimate = cells.len() as f64 * (schedule.slice.as_secs_f64() + 0.05);
        if round > 0 && elapsed + round_estimate > schedule.time_limit_secs {
            measured.truncated = true;
            measured.note = Some(format!(
                "time limit of {:.0} s reached: {round} of {rounds} rounds ran",
                schedule.time_limit_secs
            ));
            break;
        }
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cells.len()).collect()
        } else {
            (0..cells.len()).rev().collect()
        };
        for i in order {
            let cell = &mut cells[i];
            let w = &workloads[cell.workload];
            progress.set_message(format!(
                "round {}/{rounds}: {} × {} client(s)",
                round + 1,
                w.name,
                cell.clients
            ));
            run_slice(schedule, cell, w, rig, histories)?;
            progress.inc(1);
        }
        measured.rounds_completed += 1;
    }
    Ok(measured)
}

/// Runs one slice of `cell` (workload `w`) and adds what it measured.
fn run_slice(
    schedule: &Schedule,
    cell: &mut CellAcc,
    w: &Workload,
    rig: &Rig,
    histories: &mut Histories,
) -> anyhow::Result<()> {
    let probes = rig.probes(w.pool);
    let before = Sample::take(probes);
    let mut out = rig.pools[w.pool]
        .run(
            &w.spec,
            cell.clients,
            schedule.slice,
            schedule.max_ops,
            true,
        )
        .with_context(|| format!("{} with {} client(s)", w.name, cell.clients))?;
    if !probes.is_empty() {
        cell.spent.add(&Sample::take(probes).since(&before));
        cell.committed += out
            .recorder
            .ops
            .saturating_sub(out.recorder.aborts + out.recorder.errors);
    }
    let wall = out.wall.as_secs_f64().max(1e-9);
    cell.round_throughput
        .push(round1(out.recorder.ops as f64 / wall));
    cell.round_p50_us.push(round1(
        out.recorder.latency.value_at_quantile(0.5) as f64 / 1000.0,
    ));
    cell.wall += out.wall;
    let history = std::mem::take(&mut out.recorder.history);
    if let Some(space) = &w.key_space {
        histories.extend_measured(space, cell.clients, history);
    }
    cell.recorder.merge(out.recorder);
    Ok(())
}
