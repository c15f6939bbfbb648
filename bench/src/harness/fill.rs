//! Fill: preloads every key space, so the measured reads find their keys.

use anyhow::Context as _;
use indicatif::ProgressBar;

use super::check::Histories;
use super::rig::Rig;
use super::start::Workload;

/// The key spaces of `workloads`, sorted, each once.
pub(super) fn key_spaces(workloads: &[Workload]) -> Vec<String> {
    let mut spaces: Vec<String> = workloads
        .iter()
        .filter_map(|w| w.key_space.clone())
        .collect();
    spaces.sort();
    spaces.dedup();
    spaces
}

/// Writes keys `0..keys` of each key space in `key_spaces` through the pool
/// of the first workload using it; the loaders' transactions go into
/// `histories` (the checker needs the writes that reads later see).
pub(super) fn fill(
    workloads: &[Workload],
    key_spaces: &[String],
    rig: &Rig,
    keys: usize,
    progress: &ProgressBar,
    histories: &mut Histories,
) -> anyhow::Result<()> {
    for space in key_spaces {
        let Some(w) = workloads
            .iter()
            .find(|w| w.key_space.as_ref() == Some(space))
        else {
            continue;
        };
        progress.set_message(format!("loading key space `{space}`"));
        let rec = rig.pools[w.pool]
            .load(space, keys)
            .with_context(|| format!("cannot fill key space `{space}`"))?;
        histories.extend(space, rec.history);
        progress.inc(1);
    }
    Ok(())
}
