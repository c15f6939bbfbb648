//! A DAG run through [`IpcClient`]s and recorded as the history checker
//! wants it: every read with the writer it saw, every write, and how the
//! commit ended with the time window it took. The same recording serves a
//! DAG of one function, of several functions on one node (`continue`), and
//! of functions on different nodes (a client per node).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aft::client::{ClientError, IpcClient, Tag};
use aft::history::{check, Anomaly, Op, Status, TxnRecord};
use aft::ipc::request::Endpoint;
use aft::proto::aft::TransactionStatus;
use prost::Message;

use crate::tagged::{tagged_of_size, writer_of_payload};

/// Monotonic nanoseconds since a common start, shared by every recorder of
/// one history (the checker compares commit windows and read times).
#[derive(Debug, Clone, Copy)]
pub struct HistoryClock {
    epoch: Instant,
}

impl HistoryClock {
    /// A clock starting now.
    pub fn new() -> Self {
        HistoryClock {
            epoch: Instant::now(),
        }
    }

    /// The clock every caller in this process shares (started at its first use).
    pub fn process_wide() -> Self {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        HistoryClock {
            epoch: *EPOCH.get_or_init(Instant::now),
        }
    }

    /// Nanoseconds since the clock started.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Default for HistoryClock {
    fn default() -> Self {
        Self::new()
    }
}

/// How long [`RecordedDag::commit`] keeps asking while the sidecar answers
/// RUNNING (settling a commit whose record write storage did not confirm).
pub const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// The history status a commit's reply records. COMMITTED and ABORTED are
/// final. RUNNING (the sidecar is still settling a commit whose record
/// write storage did not confirm) and a failed call (`None`) leave the
/// transaction `Unknown`: it may have committed, and the checker must allow
/// both. Recording RUNNING as aborted would flag every later read of its
/// writes as an anomaly.
pub fn recorded_status(reply: Option<TransactionStatus>) -> Status {
    match reply {
        Some(TransactionStatus::Committed) => Status::Committed,
        Some(TransactionStatus::Aborted) => Status::Aborted,
        _ => Status::Unknown,
    }
}

/// Commits `tid` as an executor should: while the reply is RUNNING (the
/// outcome is being settled), asks again, for at most `within`. Returns the
/// last reply (still RUNNING if the commit did not settle in time).
pub fn commit_until_settled(
    client: &IpcClient,
    tid: &str,
    other_nodes: &[String],
    within: Duration,
) -> Result<Tag, ClientError> {
    let deadline = Instant::now() + within;
    loop {
        let reply = client.commit(tid, other_nodes)?;
        if reply.status != TransactionStatus::Running || Instant::now() >= deadline {
            return Ok(reply);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One DAG in flight: its transaction id and what it did so far.
#[derive(Debug)]
pub struct RecordedDag {
    tid: String,
    /// The node that started it (its `start` reply's address).
    upstream: String,
    ops: Vec<Op>,
    clock: HistoryClock,
    /// Size of each value written (the tag and its padding).
    value_bytes: usize,
}

impl RecordedDag {
    /// Starts a transaction through `client`; the values it writes will be
    /// `value_bytes` long (at least the tag naming the writer).
    pub fn start(
        client: &IpcClient,
        clock: HistoryClock,
        value_bytes: usize,
    ) -> Result<Self, ClientError> {
        let tag = client.start()?;
        Ok(RecordedDag {
            tid: tag.id,
            upstream: tag.address,
            ops: Vec::new(),
            clock,
            value_bytes,
        })
    }

    /// The transaction id.
    pub fn tid(&self) -> &str {
        &self.tid
    }

    /// The address of the node that started it.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The next function runs through `client`, after the function that
    /// ran on node `from` (`continue`).
    pub fn continue_from(&self, client: &IpcClient, from: &str) -> Result<(), ClientError> {
        client.continue_from(&self.tid, from)
    }

    /// Reads `key` and records the writer it saw.
    pub fn read(&mut self, client: &IpcClient, key: &str) -> Result<Option<String>, ClientError> {
        let payload = client.get(Some(&self.tid), &[key])?.pop().flatten();
        let writer = writer_of_payload(payload);
        self.ops.push(Op::Read {
            key: key.to_string(),
            writer: writer.clone(),
            returned_at: self.clock.now(),
        });
        Ok(writer)
    }

    /// Writes a value naming this transaction to `key`, and records it.
    pub fn write(&mut self, client: &IpcClient, key: &str) -> Result<(), ClientError> {
        let value = tagged_of_size(&self.tid, key, self.value_bytes);
        client.put(Some(&self.tid), &[(key, value)])?;
        self.ops.push(Op::Write {
            key: key.to_string(),
        });
        Ok(())
    }

    /// Commits through `client` (the node of the last function), naming
    /// the other nodes the DAG ran on; returns the record.
    pub fn commit(
        self,
        client: &IpcClient,
        other_nodes: &[String],
    ) -> Result<TxnRecord, ClientError> {
        let (record, reply) = self.commit_recorded(client, other_nodes);
        reply.map(|_| record)
    }

    /// [`RecordedDag::commit`] that keeps the record when the call fails:
    /// its status is then `Unknown` (the commit may or may not have landed).
    pub fn commit_recorded(
        self,
        client: &IpcClient,
        other_nodes: &[String],
    ) -> (TxnRecord, Result<Tag, ClientError>) {
        let requested = self.clock.now();
        let reply = commit_until_settled(client, &self.tid, other_nodes, SETTLE_WITHIN);
        let status = recorded_status(reply.as_ref().ok().map(|tag| tag.status));
        (self.finish(status, requested), reply)
    }

    /// Aborts through `client`; returns the record.
    pub fn abort(self, client: &IpcClient) -> Result<TxnRecord, ClientError> {
        let (record, reply) = self.abort_recorded(client);
        reply.map(|_| record)
    }

    /// [`RecordedDag::abort`] that keeps the record when the call fails or
    /// the reply is not ABORTED: its status is then `Unknown`.
    pub fn abort_recorded(self, client: &IpcClient) -> (TxnRecord, Result<Tag, ClientError>) {
        let reply = client.abort(&self.tid);
        let status = match &reply {
            Ok(tag) if tag.status == TransactionStatus::Aborted => Status::Aborted,
            _ => Status::Unknown,
        };
        let record = TxnRecord {
            id: self.tid,
            status,
            commit_timestamp: None,
            // No commit was asked for.
            commit_window: None,
            ops: self.ops,
        };
        (record, reply)
    }

    /// The record of a DAG whose end is `status`, its commit requested at
    /// `requested` and answered now.
    pub fn finish(self, status: Status, requested: u64) -> TxnRecord {
        TxnRecord {
            id: self.tid,
            status,
            commit_timestamp: None,
            commit_window: Some((requested, self.clock.now())),
            ops: self.ops,
        }
    }
}

/// Sends a commit request for `tid` without waiting for the reply (crash
/// tests: the node may die before it answers, and the caller watches what
/// happens instead); `other_nodes` are the DAG's other nodes.
pub fn send_commit(client: &IpcClient, tid: &str, other_nodes: &[String]) {
    let request = aft::proto::aft::CommitRequest {
        tid: tid.to_string(),
        response_address: client.reply_address(Endpoint::Commit),
        addresses: other_nodes.to_vec(),
    };
    if let Err(e) = client.send_raw(Endpoint::Commit, &request.encode_to_vec()) {
        panic!("cannot send the commit of {tid}: {e}");
    }
}

/// Panics, showing the first five anomalies, unless `history` is read-atomic.
pub fn assert_read_atomic(history: &[TxnRecord]) {
    assert_read_atomic_in(history, "");
}

/// [`assert_read_atomic`] that adds `report` (a seed, a fault schedule) to
/// the panic message.
pub fn assert_read_atomic_in(history: &[TxnRecord], report: &str) {
    let anomalies: Vec<Anomaly> = check(history);
    assert!(
        anomalies.is_empty(),
        "{} anomalies in {} transactions: {:?}\n{report}",
        anomalies.len(),
        history.len(),
        &anomalies[..anomalies.len().min(5)]
    );
}

/// What a store may show for each key once a history is over: the newest
/// acknowledged commit of the key, or a write no older than it (one whose
/// outcome is unknown, or a commit acknowledged no earlier than that one
/// was requested). Never an aborted transaction's write; never nothing
/// where a commit was acknowledged.
pub struct AcknowledgedCommits<'a> {
    newest: BTreeMap<&'a str, &'a TxnRecord>,
    by_id: HashMap<&'a str, &'a TxnRecord>,
}

impl<'a> AcknowledgedCommits<'a> {
    /// The newest acknowledged commit of every key written in `history`.
    pub fn of(history: &'a [TxnRecord]) -> Self {
        let acked_at = |t: &TxnRecord| t.commit_window.map_or(0, |(_, acked)| acked);
        let mut newest: BTreeMap<&str, &TxnRecord> = BTreeMap::new();
        for t in history.iter().filter(|t| t.status == Status::Committed) {
            for op in &t.ops {
                if let Op::Write { key } = op {
                    if newest
                        .get(key.as_str())
                        .is_none_or(|prev| acked_at(prev) < acked_at(t))
                    {
                        newest.insert(key.as_str(), t);
                    }
                }
            }
        }
        let by_id = history.iter().map(|t| (t.id.as_str(), t)).collect();
        AcknowledgedCommits { newest, by_id }
    }

    /// `Ok` if a store showing the write of `seen` (a writer id, `None` for
    /// no value) for `key` keeps every acknowledged commit; else why not.
    /// Writers outside the history (an initial load) are let pass.
    pub fn judge(&self, key: &str, seen: Option<&str>) -> Result<(), String> {
        let Some(acked) = self.newest.get(key) else {
            return Ok(());
        };
        let Some(seen) = seen else {
            return Err(format!("{key}: no value, but {} committed it", acked.id));
        };
        if seen == acked.id {
            return Ok(());
        }
        let Some(writer) = self.by_id.get(seen) else {
            return Ok(());
        };
        match (&writer.status, writer.commit_window, acked.commit_window) {
            (Status::Aborted, _, _) => Err(format!("{key}: shows aborted {seen}")),
            (Status::Committed, Some((_, seen_acked)), Some((requested, _)))
                if seen_acked < requested =>
            {
                Err(format!(
                    "{key}: acknowledged commit {} lost under older {seen}",
                    acked.id
                ))
            }
            _ => Ok(()),
        }
    }
}

/// How many of `history` committed.
pub fn committed(history: &[TxnRecord]) -> usize {
    history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count()
}
