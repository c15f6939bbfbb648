//! Plan: what a run will do, decided from its flags before anything starts
//! (so a bad flag fails the run before any process exists).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::{default_sidecar, OPT_IN, WORKLOADS};
use crate::cli::RunArgs;
use crate::workload::WorkloadParams;

/// The checked settings of one run.
pub(super) struct Plan {
    /// Workload parameters (validated).
    pub params: Arc<WorkloadParams>,
    /// Client counts, ascending.
    pub clients: Vec<usize>,
    /// The largest client count: every pool has this many client threads.
    pub max_clients: usize,
    /// The `aft-sidecar` binary (exists).
    pub sidecar_bin: PathBuf,
    /// Sidecar counts of the multi-node workloads (1..=9, ascending, unique).
    pub node_counts: Vec<usize>,
    /// Whether the multi-node cluster starts.
    pub run_multi: bool,
    /// `--only`, if given (every name checked against [`WORKLOADS`]).
    only: Option<Vec<String>>,
}

impl Plan {
    /// Checks `args` (parameters, sidecar binary, workload names, placement)
    /// and fails with the first problem found, in that order.
    pub fn new(args: &RunArgs, bench_exe: &Path) -> anyhow::Result<Plan> {
        let params = Arc::new(args.params());
        params.validate()?;
        let clients = args.client_counts();
        let max_clients = clients.iter().copied().max().unwrap_or(1);
        let sidecar_bin = match &args.sidecar {
            Some(p) => p.clone(),
            None => default_sidecar(bench_exe)?,
        };
        if !sidecar_bin.exists() {
            bail!(
                "no sidecar binary at {} (build it: cargo build --release -p aft-sidecar, or pass --sidecar)",
                sidecar_bin.display()
            );
        }
        if let Some(only) = &args.only {
            for name in only {
                if !WORKLOADS.contains(&name.as_str()) {
                    bail!(
                        "unknown workload `{name}` (known: {})",
                        WORKLOADS.join(", ")
                    );
                }
            }
        }
        let mut node_counts: Vec<usize> = args
            .nodes
            .iter()
            .copied()
            .filter(|n| (1..=9).contains(n))
            .collect();
        node_counts.sort_unstable();
        node_counts.dedup();
        if args.placement != "spread" && args.placement != "local" {
            bail!(
                "--placement must be spread or local, not `{}`",
                args.placement
            );
        }
        let mut plan = Plan {
            params,
            clients,
            max_clients,
            sidecar_bin,
            node_counts,
            run_multi: false,
            only: args.only.clone(),
        };
        plan.run_multi = !args.no_multi_node
            && plan
                .node_counts
                .iter()
                .any(|n| plan.selected(&format!("multi-node-{n}")));
        Ok(plan)
    }

    /// Whether workload `name` runs: named by `--only`, or, without it,
    /// not opt-in ([`OPT_IN`]).
    pub fn selected(&self, name: &str) -> bool {
        match self.only.as_ref() {
            Some(only) => only.iter().any(|n| n == name),
            None => !OPT_IN.contains(&name),
        }
    }

    /// Whether any of `names` runs.
    pub fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.selected(n))
    }
}
