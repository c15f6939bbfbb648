//! Warm up: one unrecorded slice of each workload (connections open,
//! caches filled) before any measured round.

use indicatif::ProgressBar;

use super::check::Histories;
use super::measure::Schedule;
use super::rig::Rig;
use super::start::Workload;

/// Runs each workload for `schedule.warmup` with `max_clients` clients (one if
/// it is single-client). Latencies are dropped, histories kept: measured
/// reads may read warm-up writes.
pub(super) fn warm_up(
    schedule: &Schedule,
    workloads: &[Workload],
    rig: &Rig,
    max_clients: usize,
    progress: &ProgressBar,
    histories: &mut Histories,
) -> anyhow::Result<()> {
    for w in workloads {
        progress.set_message(format!("warm-up: {}", w.name));
        let n = if w.single_client { 1 } else { max_clients };
        let out = rig.pools[w.pool].run(&w.spec, n, schedule.warmup, schedule.max_ops, false)?;
        if let Some(space) = &w.key_space {
            histories.extend(space, out.recorder.history);
        }
        progress.inc(1);
    }
    Ok(())
}
