//! One client thread's work: its connection (IPC clients to one or more
//! sidecars or the echo server, or a Redis connection), the operations of
//! each workload, and what it records (latencies, per-step latencies, the
//! history of its transactions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft::client::{lww_payload, IpcClient};
use aft::history::{writer_of, Op, Status, TxnRecord};
use aft::proto::aft::TransactionStatus;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;

use crate::resp::RespClient;
use crate::workload::{key_name, KeyPicker, WorkloadParams};
use aft_testkit::dag::{recorded_status, HistoryClock, RecordedDag};
use aft_testkit::grpc::GrpcClient;
use aft_testkit::tagged::tag_of_size as tagged_value;

/// Monotonic nanoseconds since the first call in this process (the
/// timeline of every history record).
pub fn now_ns() -> u64 {
    HistoryClock::process_wide().now()
}

/// A latency histogram in nanoseconds (1 ns to 60 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// What a client thread talks to.
pub enum Conn {
    /// IPC clients, one per sidecar node (or one to the echo server).
    Ipc {
        /// One client per node, all with this thread's id.
        clients: Vec<IpcClient>,
        /// Each node's address (what `continue` and `commit` name).
        addresses: Vec<String>,
    },
    /// A plain Redis connection.
    Redis(RespClient),
    /// A client of a sidecar's gRPC front (AFT's `service Aft`).
    Grpc(GrpcClient),
}

/// What a slice of work runs.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Transactional single-key reads through IPC (`start` and `commit`
    /// every `reads_per_txn` reads, not timed): the cached-read workload.
    Get {
        /// Key space.
        prefix: String,
    },
    /// The DAG through IPC, its functions spread over the first `nodes` nodes.
    Dag {
        /// Key space.
        prefix: String,
        /// Nodes used (1 = single node).
        nodes: usize,
        /// Whether a DAG's functions go to different nodes (`true`), or
        /// each DAG runs on one node with DAGs spread over the nodes.
        spread: bool,
        /// Whether to record a history (not against the echo server).
        history: bool,
    },
    /// The same DAG IO pattern with plain Redis GET/SET (no atomicity).
    RedisDag {
        /// Key space.
        prefix: String,
    },
    /// The DAG's reads and writes as one transaction through the gRPC front.
    GrpcDag {
        /// Key space.
        prefix: String,
    },
    /// Redis PING (calibrates the delay proxy).
    Ping,
}

/// What one client thread recorded in one slice.
pub struct Recorder {
    /// Whether latencies are recorded (not during warm-up).
    pub measure: bool,
    /// Latency of each operation (a request, or a whole DAG), ns.
    pub latency: Histogram<u64>,
    /// Latency of each step of a DAG (`start`, `get`, ...), ns.
    pub steps: BTreeMap<&'static str, Histogram<u64>>,
    /// Operations completed (requests or DAGs).
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Transactions that answered ABORTED to commit.
    pub aborts: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Transactions run.
    pub history: Vec<TxnRecord>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new(measure: bool) -> Self {
        Recorder {
            measure,
            latency: new_histogram(),
            steps: BTreeMap::new(),
            ops: 0,
            errors: 0,
            aborts: 0,
            first_error: None,
            history: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str, elapsed: Duration) {
        if self.measure {
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.steps
                .entry(name)
                .or_insert_with(new_histogram)
                .saturating_record(ns);
        }
    }

    fn op(&mut self, elapsed: Duration) {
        self.ops += 1;
        if self.measure {
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.latency.saturating_record(ns);
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    /// Adds `other` into this recorder.
    pub fn merge(&mut self, other: Recorder) {
        let _ = self.latency.add(&other.latency);
        for (name, hist) in other.steps {
            let _ = self
                .steps
                .entry(name)
                .or_insert_with(new_histogram)
                .add(&hist);
        }
        self.ops += other.ops;
        self.errors += other.errors;
        self.aborts += other.aborts;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.history.extend(other.history);
    }
}

/// Runs `f`, records its duration as step `name`, returns its result.
fn timed<T>(rec: &mut Recorder, name: &'static str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    rec.step(name, started.elapsed());
    out
}

/// One client thread.
pub struct Worker {
    /// Unique across the run (also the IPC thread id).
    pub id: u32,
    /// What it talks to.
    pub conn: Conn,
    rng: SmallRng,
    picker: KeyPicker,
    params: Arc<WorkloadParams>,
    seq: u64,
    /// The transaction of the cached-read workload: (tid, reads so far).
    open_read: Option<(String, usize)>,
}

impl Worker {
    /// A worker over `conn`.
    pub fn new(
        id: u32,
        conn: Conn,
        params: Arc<WorkloadParams>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        use rand::SeedableRng;
        Ok(Worker {
            id,
            conn,
            rng: SmallRng::seed_from_u64(seed ^ (u64::from(id) << 32)),
            picker: KeyPicker::new(params.keys, params.zipf)?,
            params,
            seq: 0,
            open_read: None,
        })
    }

    fn key(&mut self, prefix: &str) -> String {
        key_name(prefix, self.picker.pick(&mut self.rng))
    }

    /// Runs one operation of `spec`.
    pub fn run_op(&mut self, spec: &Spec, rec: &mut Recorder) {
        self.seq += 1;
        let result = match spec {
            Spec::Get { prefix } => self.ipc_get(prefix, rec),
            Spec::Dag {
                prefix,
                nodes,
                spread,
                history,
            } => self.ipc_dag(prefix, *nodes, *spread, *history, rec),
            Spec::RedisDag { prefix } => self.redis_dag(prefix, rec),
            Spec::GrpcDag { prefix } => self.grpc_dag(prefix, rec),
            Spec::Ping => self.ping(rec),
        };
        if let Err(e) = result {
            rec.error(e);
        }
    }

    /// Ends what a slice left open (the cached-read transaction).
    pub fn finish(&mut self, rec: &mut Recorder) {
        if let (Some((tid, _)), Conn::Ipc { clients, .. }) = (self.open_read.take(), &self.conn) {
            if let Some(client) = clients.first() {
                if let Err(e) = client.commit(&tid, &[]) {
                    rec.error(format!("commit of a read-only transaction: {e}"));
                }
            }
        }
    }

    fn ipc_get(&mut self, prefix: &str, rec: &mut Recorder) -> Result<(), String> {
        let key = self.key(prefix);
        let Conn::Ipc { clients, .. } = &self.conn else {
            return Err("the get workload needs an IPC connection".into());
        };
        let client = clients.first().ok_or("no IPC client")?;
        let (tid, reads) = match self.open_read.take() {
            Some(open) => open,
            None => (client.start().map_err(|e| format!("start: {e}"))?.id, 0),
        };
        let started = Instant::now();
        let value = client
            .get(Some(&tid), &[&key])
            .map_err(|e| format!("get: {e}"))?;
        rec.op(started.elapsed());
        if value.first().is_none_or(Option::is_none) {
            rec.error(format!("cached read of `{key}` found no value"));
        }
        if reads + 1 >= self.params.reads_per_txn {
            let tag = client
                .commit(&tid, &[])
                .map_err(|e| format!("commit: {e}"))?;
            if tag.status != TransactionStatus::Committed {
                rec.aborts += 1;
            }
        } else {
            self.open_read = Some((tid, reads + 1));
        }
        Ok(())
    }

    fn ipc_dag(
        &mut self,
        prefix: &str,
        nodes: usize,
        spread: bool,
        history: bool,
        rec: &mut Recorder,
    ) -> Result<(), String> {
        let params = Arc::clone(&self.params);
        // Choose every key first (the rng is not borrowed while clients are).
        let plan = self.dag_keys(prefix);
        let Conn::Ipc { clients, addresses } = &self.conn else {
            return Err("the DAG workload needs an IPC connection".into());
        };
        if clients.is_empty() || addresses.len() < clients.len() {
            return Err("no IPC client (or a node without an address)".into());
        }
        let nodes = nodes.min(clients.len()).max(1);
        // Function f of this worker's n-th DAG runs on node (id + n + f) mod
        // nodes when spread, on node (id + n) mod nodes otherwise.
        let place =
            |f: usize| (self.id as usize + self.seq as usize + if spread { f } else { 0 }) % nodes;
        let dag_started = Instant::now();
        let first = place(0);
        let clock = HistoryClock::process_wide();
        let mut dag = timed(rec, "start", || {
            RecordedDag::start(&clients[first], clock, params.value_bytes)
        })
        .map_err(|e| format!("start: {e}"))?;
        let mut prev = first;
        let mut used = vec![first];
        let outcome: Result<(), String> = (|| {
            for (f, (reads, writes)) in plan.iter().enumerate() {
                let node = place(f);
                if f > 0 && (node != prev || params.continue_same_node) {
                    timed(rec, "continue", || {
                        dag.continue_from(&clients[node], &addresses[prev])
                    })
                    .map_err(|e| format!("continue: {e}"))?;
                }
                if !used.contains(&node) {
                    used.push(node);
                }
                let client = &clients[node];
                for key in reads {
                    timed(rec, "get", || dag.read(client, key)).map_err(|e| format!("get: {e}"))?;
                }
                for key in writes {
                    timed(rec, "put", || dag.write(client, key))
                        .map_err(|e| format!("put: {e}"))?;
                }
                prev = node;
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            let (record, _) = dag.abort_recorded(&clients[prev]);
            if history {
                rec.history.push(record);
            }
            return Err(e);
        }
        let others: Vec<String> = used
            .iter()
            .filter(|n| **n != prev)
            .map(|n| addresses[*n].clone())
            .collect();
        let (record, committed) = timed(rec, "commit", || {
            dag.commit_recorded(&clients[prev], &others)
        });
        let status = record.status.clone();
        if history {
            rec.history.push(record);
        }
        match committed {
            Ok(_) if status == Status::Aborted => {
                rec.aborts += 1;
                rec.op(dag_started.elapsed());
                Ok(())
            }
            Ok(_) => {
                rec.op(dag_started.elapsed());
                Ok(())
            }
            Err(e) => Err(format!("commit: {e}")),
        }
    }

    fn redis_dag(&mut self, prefix: &str, rec: &mut Recorder) -> Result<(), String> {
        let params = Arc::clone(&self.params);
        let mut plan: Vec<(Vec<String>, Vec<String>)> = Vec::with_capacity(params.functions);
        for _ in 0..params.functions {
            let reads = (0..params.reads_per_function)
                .map(|_| self.key(prefix))
                .collect();
            let writes = (0..params.writes_per_function)
                .map(|_| self.key(prefix))
                .collect();
            plan.push((reads, writes));
        }
        let id = format!("d{}-{}", self.id, self.seq);
        let Conn::Redis(redis) = &mut self.conn else {
            return Err("the direct DAG needs a Redis connection".into());
        };
        let started = Instant::now();
        let mut ops = Vec::new();
        let mut first_write: Option<u64> = None;
        let mut last_write = 0;
        let mut failure = None;
        'dag: for (reads, writes) in &plan {
            for key in reads {
                match timed(rec, "get", || redis.get(key.as_bytes())) {
                    Ok(value) => ops.push(Op::Read {
                        key: key.clone(),
                        writer: value.and_then(|v| writer_of(&v)),
                        returned_at: now_ns(),
                    }),
                    Err(e) => {
                        failure = Some(format!("GET: {e:#}"));
                        break 'dag;
                    }
                }
            }
            for key in writes {
                let value = tagged_value(&id, key, params.value_bytes);
                first_write.get_or_insert_with(now_ns);
                match timed(rec, "set", || redis.set(key.as_bytes(), &value)) {
                    Ok(()) => {
                        last_write = now_ns();
                        ops.push(Op::Write { key: key.clone() });
                    }
                    Err(e) => {
                        failure = Some(format!("SET: {e:#}"));
                        break 'dag;
                    }
                }
            }
        }
        // Plain writes have no commit: each is visible once its SET
        // returns. So the "commit window" spans the first SET's request to
        // the last SET's reply: a transaction whose last write was
        // acknowledged before another's first write was sent is older on
        // every key (what the checker's real-time order needs).
        let failed = failure.is_some();
        rec.history.push(TxnRecord {
            id,
            status: if failed {
                Status::Unknown
            } else {
                Status::Committed
            },
            commit_timestamp: None,
            commit_window: first_write.map(|first| (first, last_write.max(first))),
            ops,
        });
        match failure {
            Some(e) => Err(e),
            None => {
                rec.op(started.elapsed());
                Ok(())
            }
        }
    }

    /// The keys of one DAG: for each function, the keys it reads and the
    /// keys it writes, drawn from key space `prefix`.
    fn dag_keys(&mut self, prefix: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let params = Arc::clone(&self.params);
        (0..params.functions)
            .map(|_| {
                let reads = (0..params.reads_per_function)
                    .map(|_| self.key(prefix))
                    .collect();
                let writes = (0..params.writes_per_function)
                    .map(|_| self.key(prefix))
                    .collect();
                (reads, writes)
            })
            .collect()
    }

    /// The DAG's functions, one after another, as calls of one gRPC
    /// transaction (a platform without a sidecar on the function's node).
    fn grpc_dag(&mut self, prefix: &str, rec: &mut Recorder) -> Result<(), String> {
        let params = Arc::clone(&self.params);
        let keys = self.dag_keys(prefix);
        let Conn::Grpc(client) = &mut self.conn else {
            return Err("the gRPC DAG needs a gRPC connection".into());
        };
        let started = Instant::now();
        let id = timed(rec, "start", || client.start())
            .map_err(|e| format!("start: {e}"))?
            .id;
        let mut ops = Vec::new();
        let mut run = || -> Result<(), String> {
            for (reads, writes) in &keys {
                for key in reads {
                    let value = timed(rec, "get", || client.read(&id, &[key]))
                        .map_err(|e| format!("read: {e}"))?;
                    ops.push(Op::Read {
                        key: key.clone(),
                        writer: value.first().and_then(|v| writer_of(v)),
                        returned_at: now_ns(),
                    });
                }
                for key in writes {
                    let value = tagged_value(&id, key, params.value_bytes);
                    timed(rec, "put", || client.write(&id, &[(key, value)]))
                        .map_err(|e| format!("write: {e}"))?;
                    ops.push(Op::Write { key: key.clone() });
                }
            }
            Ok(())
        };
        let outcome = run();
        let requested = now_ns();
        let ended = match &outcome {
            Ok(()) => timed(rec, "commit", || client.commit(&id)),
            Err(_) => client.abort(&id),
        };
        let status = recorded_status(ended.as_ref().ok().copied());
        rec.history.push(TxnRecord {
            id,
            status: status.clone(),
            commit_timestamp: None,
            commit_window: Some((requested, now_ns())),
            ops,
        });
        outcome?;
        match ended {
            Ok(_) => {
                if status == Status::Aborted {
                    rec.aborts += 1;
                }
                rec.op(started.elapsed());
                Ok(())
            }
            Err(e) => Err(format!("commit: {e}")),
        }
    }

    fn ping(&mut self, rec: &mut Recorder) -> Result<(), String> {
        let Conn::Redis(redis) = &mut self.conn else {
            return Err("PING needs a Redis connection".into());
        };
        let started = Instant::now();
        redis.ping().map_err(|e| format!("PING: {e:#}"))?;
        rec.op(started.elapsed());
        Ok(())
    }

    /// Fills keys `indices` of key space `prefix` with values written by
    /// loader transactions of `load_batch` keys (recorded in the history).
    pub fn load(&mut self, prefix: &str, indices: &[usize], rec: &mut Recorder) {
        let batch = self.params.load_batch;
        let value_bytes = self.params.value_bytes;
        for chunk in indices.chunks(batch) {
            self.seq += 1;
            let keys: Vec<String> = chunk.iter().map(|i| key_name(prefix, *i)).collect();
            let result = match &mut self.conn {
                Conn::Ipc { clients, .. } => load_ipc(&clients[0], &keys, value_bytes),
                Conn::Redis(redis) => {
                    let id = format!("load{}-{}", self.id, self.seq);
                    load_redis(redis, &id, &keys, value_bytes)
                }
                Conn::Grpc(client) => load_grpc(client, &keys, value_bytes),
            };
            match result {
                Ok(record) => {
                    rec.ops += 1;
                    rec.history.push(record);
                }
                Err(e) => rec.error(format!("loading {prefix}: {e}")),
            }
        }
    }
}

fn load_ipc(client: &IpcClient, keys: &[String], value_bytes: usize) -> Result<TxnRecord, String> {
    let tid = client.start().map_err(|e| format!("start: {e}"))?.id;
    let writes: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .map(|k| {
            (
                k.as_str(),
                lww_payload(1, &tagged_value(&tid, k, value_bytes)),
            )
        })
        .collect();
    client
        .put(Some(&tid), &writes)
        .map_err(|e| format!("put: {e}"))?;
    let requested = now_ns();
    let tag = client
        .commit(&tid, &[])
        .map_err(|e| format!("commit: {e}"))?;
    if tag.status != TransactionStatus::Committed {
        return Err(format!(
            "loader transaction {tid} answered {:?}",
            tag.status
        ));
    }
    Ok(TxnRecord {
        id: tid,
        status: Status::Committed,
        commit_timestamp: None,
        commit_window: Some((requested, now_ns())),
        ops: keys.iter().map(|k| Op::Write { key: k.clone() }).collect(),
    })
}

fn load_grpc(
    client: &mut GrpcClient,
    keys: &[String],
    value_bytes: usize,
) -> Result<TxnRecord, String> {
    let id = client.start().map_err(|e| format!("start: {e}"))?.id;
    let writes: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .map(|k| (k.as_str(), tagged_value(&id, k, value_bytes)))
        .collect();
    client
        .write(&id, &writes)
        .map_err(|e| format!("write: {e}"))?;
    let requested = now_ns();
    let status = client.commit(&id).map_err(|e| format!("commit: {e}"))?;
    if status != TransactionStatus::Committed {
        return Err(format!("loader transaction {id} answered {status:?}"));
    }
    Ok(TxnRecord {
        id,
        status: Status::Committed,
        commit_timestamp: None,
        commit_window: Some((requested, now_ns())),
        ops: keys.iter().map(|k| Op::Write { key: k.clone() }).collect(),
    })
}

fn load_redis(
    redis: &mut RespClient,
    id: &str,
    keys: &[String],
    value_bytes: usize,
) -> Result<TxnRecord, String> {
    let requested = now_ns();
    for key in keys {
        redis
            .set(key.as_bytes(), &tagged_value(id, key, value_bytes))
            .map_err(|e| format!("SET: {e:#}"))?;
    }
    Ok(TxnRecord {
        id: id.to_string(),
        status: Status::Committed,
        commit_timestamp: None,
        commit_window: Some((requested, now_ns())),
        ops: keys.iter().map(|k| Op::Write { key: k.clone() }).collect(),
    })
}
