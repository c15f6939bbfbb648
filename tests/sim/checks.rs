//! What must hold after every seed, judged from the history the executors
//! recorded, the outside readers' reads, every node's index and the store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aft::history::{check, Anomaly, Op, Status};
use aft::meta::Version;
use aft::proto::anna::LwwValue;
use aft::txn::decode_decision;
use prost::Message;

use super::workload::Recorded;
use super::world::World;

/// A request to a node that stays up must be answered within this.
const ANSWER_BOUND: Duration = Duration::from_secs(15);

/// The committed version of a key that every node and the plain key must show.
fn newest_versions(world: &World, rec: &Recorded) -> BTreeMap<String, Version> {
    let mut newest: BTreeMap<String, Version> = BTreeMap::new();
    let mut note = |key: &str, v: Version| {
        let slot = newest.entry(key.to_string()).or_insert_with(|| v.clone());
        if v > *slot {
            *slot = v;
        }
    };
    for t in &rec.history {
        if let (Status::Committed, Some(ts)) = (&t.status, t.commit_timestamp) {
            for op in &t.ops {
                if let Op::Write { key } = op {
                    note(key, Version::new(ts, t.id.as_str()));
                }
            }
        }
    }
    let data = world.data.lock();
    for (key, value) in data.range(b"aft/c/".to_vec()..) {
        if !key.starts_with(b"aft/c/") {
            break;
        }
        if let Ok(Some(meta)) = decode_decision(key, value) {
            for k in meta.write_set.iter() {
                note(k, meta.version());
            }
        }
    }
    newest
}

/// Settles the transactions whose outcome the executors never learned
/// from what storage holds, and finds contradictions between answers and
/// decision keys. Run it when the workload ends, before GC collects the
/// records of superseded commits.
pub fn resolve_outcomes(world: &World, rec: &mut Recorded, violations: &mut Vec<String>) {
    for t in &mut rec.history {
        let stored = world.peek(format!("aft/c/{}", t.id).as_bytes());
        let decision = stored.as_deref().map(|s| decode_decision(b"record", s));
        match (&t.status, decision) {
            (Status::Unknown, Some(Ok(Some(meta)))) => {
                t.status = Status::Committed;
                t.commit_timestamp = Some(meta.timestamp);
            }
            (Status::Unknown, Some(Ok(None))) => t.status = Status::Aborted,
            (Status::Aborted, Some(Ok(Some(_)))) => violations.push(format!(
                "{} was answered ABORTED (or abandoned) but its commit record exists",
                t.id
            )),
            // (A DAG that wrote nothing commits with no record; a retry on a
            // node that forgot it may fence it: nothing is visible either way.)
            (Status::Committed, Some(Ok(None)))
                if t.ops.iter().any(|op| matches!(op, Op::Write { .. })) =>
            {
                violations.push(format!(
                    "{} was answered COMMITTED but an abort marker holds its decision key",
                    t.id
                ))
            }
            _ => {}
        }
    }
}

/// Every check; returns the violations found.
pub fn check_all(world: &World, rec: &mut Recorded) -> Vec<String> {
    let mut violations: Vec<String> = rec.problems.clone();

    // Read atomicity (exact version order where commit timestamps are
    // known). Fractures and read-your-writes are judged for committed DAGs:
    // branches that ran side by side are checked together only at their
    // fan-in and commit, which abort the DAG if they disagree. Reads of
    // aborted or uncommitted values are violations in every DAG.
    let committed: HashMap<&str, ()> = rec
        .history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .map(|t| (t.id.as_str(), ()))
        .collect();
    for anomaly in check(&rec.history) {
        let reader = match &anomaly {
            Anomaly::FracturedRead { reader, .. } | Anomaly::ReadYourWrites { reader, .. } => {
                Some(reader.as_str())
            }
            _ => None,
        };
        if reader.is_none_or(|r| committed.contains_key(r)) {
            violations.push(format!("read atomicity: {anomaly}"));
        }
    }

    // A read failed because a version it needed was collected, with no
    // fault that can excuse it: GC deleted what a running transaction needed.
    for f in &rec.failed_reads {
        let collected = f.reason.contains("collected")
            || (f.reason.contains("is consistent with") && !f.parallel);
        if collected && !world.read_failure_excused(f.dag_started, f.at) {
            violations.push(format!(
                "{}: a read of {} failed with no fault to excuse it: {}",
                f.tid, f.key, f.reason
            ));
        }
    }

    // Every request to a node that stayed up was answered in bounded time.
    for c in &rec.calls {
        if world.was_unavailable(c.node, c.started, c.ended) {
            continue;
        }
        let took = c.ended.duration_since(c.started);
        if !c.answered || took > ANSWER_BOUND {
            violations.push(format!(
                "{} on node {} for {} took {took:?} (answered: {}) while the node was up",
                c.what,
                c.node + 1,
                c.tid,
                c.answered
            ));
        }
    }

    let aborted: HashMap<&str, ()> = rec
        .history
        .iter()
        .filter(|t| t.status == Status::Aborted)
        .map(|t| (t.id.as_str(), ()))
        .collect();
    for (_, key, writer) in &rec.outside_reads {
        if let Some(w) = writer {
            if aborted.contains_key(w.as_str()) {
                violations.push(format!("an outside reader saw {key} from aborted {w}"));
            }
        }
    }

    // The converged state: every acknowledged commit kept, served by every
    // node, published to the plain keys.
    let newest = newest_versions(world, rec);
    for t in rec.history.iter().filter(|t| t.status == Status::Committed) {
        let Some(ts) = t.commit_timestamp else {
            continue;
        };
        let version = Version::new(ts, t.id.as_str());
        let record = world.peek(format!("aft/c/{}", t.id).as_bytes());
        let superseded = t.ops.iter().all(|op| match op {
            Op::Write { key } => newest.get(key).is_some_and(|n| *n > version),
            Op::Read { .. } => true,
        });
        if record.is_none() && !superseded {
            violations.push(format!(
                "acknowledged commit {} lost: no commit record, and not all of it superseded",
                t.id
            ));
        }
    }
    for (key, version) in &newest {
        if world
            .peek(format!("aft/d/{}/{key}", version.tid).as_bytes())
            .is_none()
        {
            violations.push(format!(
                "the data of {key}'s newest version {version} is gone"
            ));
        }
        let published = world
            .peek(key.as_bytes())
            .and_then(|v| LwwValue::decode(v.as_slice()).ok())
            .map(|v| v.timestamp);
        if published != Some(version.timestamp) {
            violations.push(format!(
                "{key}: plain key holds timestamp {published:?}, the newest commit is {version}"
            ));
        }
        for node in 0..world.nodes.len() {
            let Some((engine, _)) = world.engine(node) else {
                violations.push(format!("node {} is not up at the end", node + 1));
                continue;
            };
            let served = engine
                .index()
                .view()
                .versions(key)
                .last()
                .map(|e| e.version.clone());
            if served.as_ref() != Some(version) {
                violations.push(format!(
                    "node {} serves {key} at {served:?}, the newest commit is {version}",
                    node + 1
                ));
            }
        }
    }

    // Garbage collection reclaimed everything superseded.
    for node in 0..world.nodes.len() {
        if let Some((engine, _)) = world.engine(node) {
            let (keys, versions) = engine.index().size();
            if versions != keys {
                violations.push(format!(
                    "node {} still holds {versions} versions of {keys} keys after GC",
                    node + 1
                ));
            }
        }
    }
    let newest_tids: HashMap<&str, ()> = newest.values().map(|v| (&*v.tid, ())).collect();
    for (key, value) in world.data.lock().iter() {
        let text = String::from_utf8_lossy(key);
        let Some(rest) = text.strip_prefix("aft/") else {
            continue;
        };
        let left = match rest.split_once('/') {
            Some(("d", path)) => {
                let (tid, k) = path.split_once('/').unwrap_or((path, ""));
                (newest.get(k).map(|v| &*v.tid) != Some(tid))
                    .then_some("superseded or orphaned data")
            }
            Some(("p", _)) => Some("a publication intent"),
            Some(("c", tid)) => match decode_decision(key, value) {
                Ok(Some(_)) if !newest_tids.contains_key(tid) => Some("a retired commit record"),
                Ok(None) => Some("an abort marker"),
                _ => None,
            },
            _ => None,
        };
        if let Some(what) = left {
            violations.push(format!("GC left {what}: {text}"));
        }
    }
    violations
}
