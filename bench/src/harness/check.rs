//! Check: after the rounds, notes any process that died, and runs the
//! history checker over each key space's transactions.

use std::collections::{BTreeMap, HashMap};

use aft::history::{check, Anomaly, Status, TxnRecord};

use super::rig::Rig;
use super::start::Workload;
use crate::results::AnomalyResult;

/// The transactions recorded in each key space (fill, warm-up and measured
/// rounds), and the client count of each measured one.
#[derive(Default)]
pub(super) struct Histories {
    by_space: HashMap<String, Vec<TxnRecord>>,
    /// Transaction id → client count of the cell that ran it.
    reader_clients: HashMap<String, usize>,
}

impl Histories {
    /// Adds `records` (not measured: loaders, warm-up) to key space `space`.
    pub fn extend(&mut self, space: &str, records: Vec<TxnRecord>) {
        self.by_space
            .entry(space.to_string())
            .or_default()
            .extend(records);
    }

    /// Adds `records` measured with `clients` clients to key space `space`.
    pub fn extend_measured(&mut self, space: &str, clients: usize, records: Vec<TxnRecord>) {
        for t in &records {
            self.reader_clients.insert(t.id.clone(), clients);
        }
        self.extend(space, records);
    }
}

/// A note, with its log's tail, for each process of `rig` no longer running.
pub(super) fn dead_processes(rig: &mut Rig) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, owner) in &mut rig.processes {
        let Some(process) = owner.process_mut() else {
            continue;
        };
        if !process.is_running() {
            notes.push(format!(
                "{name} was no longer running at the end of the run; its log:\n{}",
                process.log_tail()
            ));
        }
    }
    notes
}

/// Checks the history of each of `key_spaces` for read-atomicity anomalies;
/// one result per key space, in the same order.
pub(super) fn anomalies(
    key_spaces: &[String],
    workloads: &[Workload],
    mut histories: Histories,
) -> Vec<AnomalyResult> {
    key_spaces
        .iter()
        .map(|space| {
            let history = histories.by_space.remove(space).unwrap_or_default();
            check_space(space, &history, workloads, &histories.reader_clients)
        })
        .collect()
}

/// The checker's findings in key space `space`, whose transactions are `history`.
fn check_space(
    space: &str,
    history: &[TxnRecord],
    workloads: &[Workload],
    reader_clients: &HashMap<String, usize>,
) -> AnomalyResult {
    let found = check(history);
    let on_space = || {
        workloads
            .iter()
            .filter(move |w| w.key_space.as_deref() == Some(space))
    };
    let with_status = |s: Status| history.iter().filter(|t| t.status == s).count();
    let mut result = AnomalyResult {
        key_space: space.to_string(),
        workloads: on_space().map(|w| w.name.to_string()).collect(),
        through_sidecar: on_space().any(|w| w.through_sidecar),
        transactions: history.len(),
        committed: with_status(Status::Committed),
        aborted: with_status(Status::Aborted),
        unknown: with_status(Status::Unknown),
        ..Default::default()
    };
    result.count(&found);
    let mut by_clients: BTreeMap<String, usize> = BTreeMap::new();
    for a in &found {
        let reader = match a {
            Anomaly::FracturedRead { reader, .. }
            | Anomaly::AbortedRead { reader, .. }
            | Anomaly::UncommittedRead { reader, .. }
            | Anomaly::ReadYourWrites { reader, .. } => reader,
        };
        let key = reader_clients
            .get(reader)
            .map_or_else(|| "warmup".to_string(), |c| c.to_string());
        *by_clients.entry(key).or_default() += 1;
    }
    result.by_clients = by_clients;
    result
}
