//! A read-atomicity history checker, for tests, benchmarks and operators
//! who want to verify a deployment.
//!
//! Workloads write values that name their writer ([`tag_value`]), so every
//! read identifies the transaction it read from ([`writer_of`]). Given every
//! transaction's operations and outcome, [`check`] reports:
//! - **fractured reads**: `T` read `x` from `Ti`, `Ti` also wrote `y`, and `T`
//!   read `y` from a transaction definitely older than `Ti` (or from the
//!   initial state);
//! - **aborted reads**: `T` read a value whose writer aborted or never committed;
//! - **uncommitted reads**: `T` read a value before its writer began committing;
//! - **read-your-writes violations**: `T` wrote `k`, then read `k` and did not
//!   see its own value.
//!
//! Version order comes from commit timestamps where known (exact); otherwise
//! from real time: `Tj` is definitely older than `Ti` when `Tj`'s commit was
//! acknowledged before `Ti`'s commit was requested. The checker is sound
//! (every report is a real violation) and, with timestamps, complete.

use std::collections::HashMap;
use std::fmt;

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The commit was acknowledged.
    Committed,
    /// Aborted (or the commit answered aborted).
    Aborted,
    /// Unknown (the client never learned: e.g. it crashed).
    Unknown,
}

/// One operation of a transaction, in the order its functions issued them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read of `key` that returned a value written by `writer`
    /// (`None`: no value, i.e. the initial state).
    Read {
        /// Key read.
        key: String,
        /// Writer of the value read.
        writer: Option<String>,
        /// When the read returned (monotonic nanoseconds; 0 if unknown).
        returned_at: u64,
    },
    /// A write of `key` (with a value naming this transaction).
    Write {
        /// Key written.
        key: String,
    },
}

/// Everything observed of one transaction.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// Transaction id.
    pub id: String,
    /// Outcome.
    pub status: Status,
    /// Commit timestamp, where the test knows it (exact version order).
    pub commit_timestamp: Option<u64>,
    /// When commit was requested and acknowledged (monotonic nanoseconds).
    pub commit_window: Option<(u64, u64)>,
    /// Operations in order.
    pub ops: Vec<Op>,
}

/// A violation found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// `reader` read `first_key` from `writer`, which also wrote `second_key`,
    /// but read `second_key` from the older `older_writer` (`None` = initial).
    FracturedRead {
        /// The reading transaction.
        reader: String,
        /// Key read from `writer`.
        first_key: String,
        /// The writer of both keys.
        writer: String,
        /// The key read too old.
        second_key: String,
        /// Where `second_key` was read from.
        older_writer: Option<String>,
    },
    /// `reader` read `key` from `writer`, which did not commit.
    AbortedRead {
        /// The reading transaction.
        reader: String,
        /// Key.
        key: String,
        /// The writer that aborted or never committed.
        writer: String,
    },
    /// `reader` read `key` from `writer` before `writer` began to commit.
    UncommittedRead {
        /// The reading transaction.
        reader: String,
        /// Key.
        key: String,
        /// The writer.
        writer: String,
    },
    /// `reader` wrote `key`, then read it and saw `saw` instead of its own value.
    ReadYourWrites {
        /// The transaction.
        reader: String,
        /// Key.
        key: String,
        /// Whose value it saw.
        saw: Option<String>,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The value a history workload writes: it names its writer and key.
pub fn tag_value(writer: &str, key: &str, padding: usize) -> Vec<u8> {
    let mut v = format!("aft-history|{writer}|{key}|").into_bytes();
    v.resize(v.len() + padding, b'.');
    v
}

/// The writer named by a value written with [`tag_value`].
pub fn writer_of(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value.get(..value.len().min(512))?).ok()?;
    let rest = text.strip_prefix("aft-history|")?;
    let (writer, _) = rest.split_once('|')?;
    Some(writer.to_string())
}

/// Checks a history; returns every anomaly found (empty = the history is read-atomic).
pub fn check(history: &[TxnRecord]) -> Vec<Anomaly> {
    let by_id: HashMap<&str, &TxnRecord> = history.iter().map(|t| (t.id.as_str(), t)).collect();
    let write_sets: HashMap<&str, Vec<&str>> = history
        .iter()
        .map(|t| {
            let keys = t
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::Write { key } => Some(key.as_str()),
                    Op::Read { .. } => None,
                })
                .collect();
            (t.id.as_str(), keys)
        })
        .collect();
    let mut anomalies = Vec::new();
    for txn in history {
        let mut own_writes: Vec<&str> = Vec::new();
        // key -> writer of the first external read of that key
        let mut read_from: Vec<(&str, Option<&str>)> = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Write { key } => own_writes.push(key),
                Op::Read {
                    key,
                    writer,
                    returned_at,
                } => {
                    let writer = writer.as_deref();
                    if own_writes.contains(&key.as_str()) {
                        if writer != Some(txn.id.as_str()) {
                            anomalies.push(Anomaly::ReadYourWrites {
                                reader: txn.id.clone(),
                                key: key.clone(),
                                saw: writer.map(str::to_string),
                            });
                        }
                        continue;
                    }
                    if let Some(w) = writer {
                        if w == txn.id {
                            // Its own value without having written it yet.
                            anomalies.push(Anomaly::UncommittedRead {
                                reader: txn.id.clone(),
                                key: key.clone(),
                                writer: w.to_string(),
                            });
                            continue;
                        }
                        match by_id.get(w) {
                            Some(wt) if wt.status == Status::Aborted => {
                                anomalies.push(Anomaly::AbortedRead {
                                    reader: txn.id.clone(),
                                    key: key.clone(),
                                    writer: w.to_string(),
                                });
                            }
                            Some(wt) => {
                                if let Some((start, _)) = wt.commit_window {
                                    if *returned_at != 0 && *returned_at < start {
                                        anomalies.push(Anomaly::UncommittedRead {
                                            reader: txn.id.clone(),
                                            key: key.clone(),
                                            writer: w.to_string(),
                                        });
                                    }
                                }
                            }
                            None => {}
                        }
                    }
                    read_from.push((key, writer));
                }
            }
        }
        // Fractured reads among the external reads.
        for &(first_key, writer) in &read_from {
            let Some(writer) = writer else { continue };
            let Some(cowritten) = write_sets.get(writer) else {
                continue;
            };
            for &(second_key, other) in &read_from {
                if second_key == first_key || !cowritten.contains(&second_key) {
                    continue;
                }
                if other == Some(writer) {
                    continue;
                }
                if definitely_older(&by_id, other, writer) {
                    anomalies.push(Anomaly::FracturedRead {
                        reader: txn.id.clone(),
                        first_key: first_key.to_string(),
                        writer: writer.to_string(),
                        second_key: second_key.to_string(),
                        older_writer: other.map(str::to_string),
                    });
                }
            }
        }
    }
    anomalies
}

/// Whether the version written by `a` (`None` = initial) is definitely older
/// than the one written by `b`.
fn definitely_older(by_id: &HashMap<&str, &TxnRecord>, a: Option<&str>, b: &str) -> bool {
    let Some(a) = a else { return true };
    let (Some(ta), Some(tb)) = (by_id.get(a), by_id.get(b)) else {
        return false;
    };
    if let (Some(x), Some(y)) = (ta.commit_timestamp, tb.commit_timestamp) {
        return (x, a) < (y, b);
    }
    match (ta.commit_window, tb.commit_window) {
        (Some((_, acked_a)), Some((requested_b, _))) => acked_a < requested_b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(id: &str, ts: u64, ops: Vec<Op>) -> TxnRecord {
        TxnRecord {
            id: id.into(),
            status: Status::Committed,
            commit_timestamp: Some(ts),
            commit_window: None,
            ops,
        }
    }
    fn w(key: &str) -> Op {
        Op::Write { key: key.into() }
    }
    fn r(key: &str, writer: Option<&str>) -> Op {
        Op::Read {
            key: key.into(),
            writer: writer.map(str::to_string),
            returned_at: 0,
        }
    }

    #[test]
    fn values_name_their_writer() {
        let v = tag_value("t1", "k", 100);
        assert_eq!(writer_of(&v).as_deref(), Some("t1"));
        assert_eq!(writer_of(b"something else"), None);
    }

    #[test]
    fn a_read_atomic_history_passes() {
        let h = vec![
            committed("t1", 1, vec![w("x"), w("y")]),
            committed("t2", 2, vec![w("x"), w("y")]),
            committed("t3", 3, vec![w("y")]),
            // x from t1 with y from the newer t3 is fine (t3 did not write x).
            committed("r", 4, vec![r("x", Some("t1")), r("y", Some("t3"))]),
            committed(
                "r2",
                4,
                vec![
                    r("x", Some("t2")),
                    r("y", Some("t2")),
                    w("x"),
                    r("x", Some("r2")),
                ],
            ),
        ];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn catches_a_fractured_read() {
        let h = vec![
            committed("t1", 1, vec![w("x"), w("y")]),
            committed("t2", 2, vec![w("x"), w("y")]),
            committed("r", 3, vec![r("x", Some("t2")), r("y", Some("t1"))]),
        ];
        let found = check(&h);
        assert!(
            matches!(&found[..], [Anomaly::FracturedRead { writer, older_writer, .. }]
                if writer == "t2" && older_writer.as_deref() == Some("t1")),
            "{found:?}"
        );
    }

    #[test]
    fn catches_a_fractured_read_of_the_initial_state() {
        let h = vec![
            committed("t1", 1, vec![w("x"), w("y")]),
            committed("r", 3, vec![r("y", None), r("x", Some("t1"))]),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn catches_fractures_by_real_time_order_without_timestamps() {
        let mut t1 = committed("t1", 0, vec![w("x"), w("y")]);
        let mut t2 = committed("t2", 0, vec![w("x"), w("y")]);
        t1.commit_timestamp = None;
        t2.commit_timestamp = None;
        t1.commit_window = Some((10, 20));
        t2.commit_window = Some((30, 40));
        let mut reader = committed("r", 0, vec![r("x", Some("t2")), r("y", Some("t1"))]);
        reader.commit_timestamp = None;
        assert_eq!(check(&[t1.clone(), t2.clone(), reader]).len(), 1);
        // Overlapping commits: order unknown, so no report (sound, not complete).
        t2.commit_window = Some((15, 40));
        let mut reader = committed("r", 0, vec![r("x", Some("t2")), r("y", Some("t1"))]);
        reader.commit_timestamp = None;
        assert_eq!(check(&[t1, t2, reader]), vec![]);
    }

    #[test]
    fn catches_aborted_and_uncommitted_reads() {
        let mut aborted = committed("a", 1, vec![w("x")]);
        aborted.status = Status::Aborted;
        let mut late = committed("l", 2, vec![w("y")]);
        late.commit_window = Some((1000, 2000));
        let reader = committed(
            "r",
            3,
            vec![
                r("x", Some("a")),
                Op::Read {
                    key: "y".into(),
                    writer: Some("l".into()),
                    returned_at: 500,
                },
                r("z", Some("r")),
            ],
        );
        let found = check(&[aborted, late, reader]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(matches!(found[0], Anomaly::AbortedRead { .. }));
        assert!(matches!(found[1], Anomaly::UncommittedRead { .. }));
        assert!(matches!(found[2], Anomaly::UncommittedRead { .. }));
    }

    #[test]
    fn catches_read_your_writes_violations() {
        let h = vec![
            committed("t1", 1, vec![w("x")]),
            committed("r", 2, vec![w("x"), r("x", Some("t1"))]),
        ];
        assert!(matches!(&check(&h)[..], [Anomaly::ReadYourWrites { .. }]));
    }
}
