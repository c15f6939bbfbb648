//! Assemble: turns what the phases measured into [`Results`]: one result
//! per cell, the run's settings, the proxy calibration and the ratios.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::measure::{CellAcc, Measured, Schedule};
use super::plan::Plan;
use super::start::Workload;
use crate::cli::RunArgs;
use crate::cost::CellCost;
use crate::machine::Machine;
use crate::results::{
    cdf, round1, AnomalyResult, CellResult, MultiNodeStatus, ParamsRecord, ProxyCalibration,
    Results, RunConfig, Summary, Throughput, WorkloadInfo,
};
use crate::workload::WorkloadParams;

/// When the run started.
pub(super) struct Started {
    /// For the run's duration and time limit.
    pub instant: Instant,
    /// Seconds since the Unix epoch (0 if the clock is before it).
    pub unix: u64,
}

impl Started {
    /// Now.
    pub fn now() -> Started {
        Started {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Everything the phases produced that goes into the results.
pub(super) struct Parts<'a> {
    /// The run's flags.
    pub args: &'a RunArgs,
    /// The checked settings.
    pub plan: &'a Plan,
    /// When the run started.
    pub started: &'a Started,
    /// Facts about the machine (load averages at both ends).
    pub machine: Machine,
    /// The workloads, in report order.
    pub workloads: &'a [Workload],
    /// The cells, as measured.
    pub cells: &'a [CellAcc],
    /// How the rounds were run.
    pub schedule: &'a Schedule,
    /// What the measure phase reported.
    pub measured: &'a Measured,
    /// The checker's findings, per key space.
    pub anomalies: Vec<AnomalyResult>,
    /// What happened with the multi-node workloads.
    pub multi_node: MultiNodeStatus,
    /// Notes for the reader.
    pub notes: Vec<String>,
}

/// The results of the run: every cell, the settings, the multi-node status
/// (marked "ran with errors" if a multi-node cell failed), the proxy
/// calibration and the ratios at the headline client counts.
pub(super) fn results(parts: Parts<'_>) -> Results {
    let Parts {
        args,
        plan,
        started,
        machine,
        workloads,
        cells,
        schedule,
        measured,
        anomalies,
        mut multi_node,
        notes,
    } = parts;
    let cells: Vec<CellResult> = cells
        .iter()
        .map(|c| cell_result(c, workloads[c.workload].name))
        .collect();
    mark_multi_node_errors(&mut multi_node, &cells);
    let mut results = Results {
        name: args.name(),
        command: command_line(),
        started_unix: started.unix,
        duration_secs: round1(started.instant.elapsed().as_secs_f64()),
        truncated: measured.truncated,
        machine,
        config: run_config(args, plan, schedule, measured),
        workloads: workloads
            .iter()
            .map(|w| WorkloadInfo {
                name: w.name.into(),
                title: w.title.clone(),
                unit: w.unit.into(),
            })
            .collect(),
        cells,
        anomalies,
        proxy: None,
        ratios: Vec::new(),
        multi_node,
        notes,
    };
    results.proxy = proxy_calibration(&results, args.delay_us);
    results.ratios = results.ratios_at(results.latency_clients(), results.throughput_clients());
    results
}

/// The result of cell `c`, of workload `workload`.
fn cell_result(c: &CellAcc, workload: &str) -> CellResult {
    let wall = c.wall.as_secs_f64();
    let rec = &c.recorder;
    CellResult {
        workload: workload.to_string(),
        clients: c.clients,
        ops: rec.ops,
        errors: rec.errors,
        aborts: rec.aborts,
        first_error: rec.first_error.clone(),
        latency_us: Summary::of(&rec.latency),
        throughput: Throughput {
            mean: if wall > 0.0 {
                round1(rec.ops as f64 / wall)
            } else {
                0.0
            },
            min: c
                .round_throughput
                .iter()
                .copied()
                .reduce(f64::min)
                .unwrap_or(0.0),
            max: c
                .round_throughput
                .iter()
                .copied()
                .reduce(f64::max)
                .unwrap_or(0.0),
        },
        round_p50_us: c.round_p50_us.clone(),
        round_throughput: c.round_throughput.clone(),
        steps_us: rec
            .steps
            .iter()
            .map(|(k, h)| ((*k).to_string(), Summary::of(h)))
            .collect(),
        cdf: cdf(&rec.latency),
        cost: CellCost::per_op(&c.spent, c.committed),
    }
}

/// Turns a multi-node status of "ran" into "ran with errors" (and says
/// why) if any multi-node cell had failed operations.
fn mark_multi_node_errors(multi_node: &mut MultiNodeStatus, cells: &[CellResult]) {
    if multi_node.status != "ran" {
        return;
    }
    let failing: Vec<&CellResult> = cells
        .iter()
        .filter(|c| c.workload.starts_with("multi-node-") && c.errors > 0)
        .collect();
    if let Some(first) = failing.first() {
        multi_node.status = "ran with errors".into();
        multi_node.reason = Some(format!(
            "{} of the multi-node cells had failed DAGs; first error ({} × {}): {}",
            failing.len(),
            first.workload,
            first.clients,
            first.first_error.clone().unwrap_or_default()
        ));
    }
}

/// The run's settings, as recorded.
fn run_config(args: &RunArgs, plan: &Plan, schedule: &Schedule, measured: &Measured) -> RunConfig {
    RunConfig {
        params: params_record(&plan.params),
        clients: plan.clients.clone(),
        rounds: schedule.rounds,
        rounds_completed: measured.rounds_completed,
        slice_secs: schedule.slice.as_secs_f64(),
        warmup_secs: schedule.warmup.as_secs_f64(),
        delay_us: args.delay_us,
        redis_aof: args.redis_aof,
        sidecar: plan.sidecar_bin.display().to_string(),
        quick: args.quick,
        network: "loopback only: the delay proxy listens on 127.0.0.1 and forwards to Redis on 127.0.0.1 (no network namespace)".into(),
    }
}

/// The workload parameters, as recorded.
fn params_record(params: &WorkloadParams) -> ParamsRecord {
    ParamsRecord {
        keys: params.keys,
        zipf: params.zipf,
        value_bytes: params.value_bytes,
        functions: params.functions,
        reads_per_function: params.reads_per_function,
        writes_per_function: params.writes_per_function,
        continue_same_node: params.continue_same_node,
        reads_per_txn: params.reads_per_txn,
        ipc_round_trips: params.ipc_round_trips(),
        redis_round_trips: params.redis_round_trips(),
    }
}

/// The delay proxy measured by itself, if both PING cells ran.
fn proxy_calibration(results: &Results, delay_us: u64) -> Option<ProxyCalibration> {
    let direct = results.cell("ping-direct", 1)?;
    let net = results.cell("ping-net", 1)?;
    Some(ProxyCalibration {
        delay_us_each_way: delay_us,
        direct_ping_p50_us: direct.latency_us.p50,
        proxied_ping_p50_us: net.latency_us.p50,
        proxied_ping_p99_us: net.latency_us.p99,
        added_rtt_p50_us: net.latency_us.p50 - direct.latency_us.p50,
    })
}

/// `arg` as the shell reads it: unquoted if it has only safe characters,
/// else in single quotes.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line of this process, shell-quoted.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_else(|| "aft-bench".into());
    std::iter::once(program)
        .chain(args)
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}
