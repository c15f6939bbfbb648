//! The simulated executors: DAGs of 1-4 functions over 1-4 nodes (chains,
//! fan-out, fan-in) reading and writing a small hot key set, aborting,
//! retrying commits, vanishing mid-DAG; and outside readers that read the
//! store's plain keys as Cloudburst's user client does. Everything they
//! see is recorded for the checks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aft::history::{tag_value, writer_of, Op, Status, TxnRecord};
use aft::proto::anna::LwwValue;
use aft::txn::{Engine, Outcome, TxnError};
use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use rand::rngs::StdRng;
use rand::RngExt;
use tokio::time::{sleep, Instant};

use super::world::World;

/// How long an executor waits for a get or put (Cloudburst's client: 5 s).
const KEY_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it waits for start, continue, commit, abort (Cloudburst: for
/// ever; here long enough that a missing answer shows as a violation).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One call an executor made.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub node: usize,
    pub what: &'static str,
    pub tid: String,
    pub started: Instant,
    pub ended: Instant,
    pub answered: bool,
}

/// A read that failed (the executor saw "no value").
#[derive(Debug, Clone)]
pub struct FailedRead {
    pub tid: String,
    /// Whether the DAG had branches running side by side (whose reads may
    /// turn out inconsistent together: then later reads can find no version).
    pub parallel: bool,
    pub key: String,
    pub dag_started: Instant,
    pub at: Instant,
    pub reason: String,
}

/// Everything the workload observed.
#[derive(Debug, Default)]
pub struct Recorded {
    pub history: Vec<TxnRecord>,
    pub calls: Vec<CallRecord>,
    pub failed_reads: Vec<FailedRead>,
    /// Violations seen on the spot (retried commits that changed their
    /// answer, commits after a failed read or a refused write, ...).
    pub problems: Vec<String>,
    /// (when, key, writer) of each outside read of a plain key.
    pub outside_reads: Vec<(Instant, String, Option<String>)>,
    /// Node addresses each DAG ran on, by transaction id.
    pub dag_nodes: Vec<(String, Vec<usize>)>,
}

/// The workload's shared state.
pub struct Workload {
    pub world: Arc<World>,
    pub keys: Vec<String>,
    pub recorded: Mutex<Recorded>,
}

/// A value naming its writer (so every read tells whom it read from).
pub fn value(tid: &str, key: &str) -> Bytes {
    Bytes::from(
        LwwValue {
            timestamp: 1,
            value: tag_value(tid, key, 16),
        }
        .encode_to_vec(),
    )
}

/// The writer named by a stored LWW payload.
pub fn writer(payload: Option<&[u8]>) -> Option<String> {
    let lww = LwwValue::decode(payload?).ok()?;
    writer_of(&lww.value)
}

impl Workload {
    /// Calls `f` on `node`'s engine as an executor on that node would:
    /// errors when the node is down, gone mid-call or too slow.
    async fn call<T, F, Fut>(
        &self,
        node: usize,
        what: &'static str,
        tid: &str,
        timeout: Duration,
        f: F,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Engine>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, TxnError>> + Send + 'static,
    {
        let world = Arc::clone(&self.world);
        let started = Instant::now();
        // A request to a node that is down waits for it (ZeroMQ queues it
        // until the endpoint is back), up to the call's timeout.
        while self.world.engine(node).is_none() && started.elapsed() < timeout {
            sleep(Duration::from_millis(10)).await;
        }
        let left = timeout.saturating_sub(started.elapsed());
        let handle = self.world.spawn_on(node, async move {
            world.gate(node).await;
            match world.engine(node) {
                Some((engine, _)) => Some(f(engine).await),
                None => None,
            }
        });
        let result = tokio::time::timeout(left, handle).await;
        let answered = matches!(result, Ok(Ok(Some(_))));
        self.recorded.lock().calls.push(CallRecord {
            node,
            what,
            tid: tid.to_string(),
            started,
            ended: Instant::now(),
            answered,
        });
        let result = match result {
            Ok(Ok(Some(Ok(v)))) => Ok(v),
            Ok(Ok(Some(Err(e)))) => Err(e.to_string()),
            Ok(Ok(None)) => Err("node is down".into()),
            Ok(Err(_)) => Err("node crashed during the call".into()),
            Err(_) => Err("no answer in time".into()),
        };
        match &result {
            Ok(_) => self
                .world
                .trace(format!("{what} {tid} on node {}: ok", node + 1)),
            Err(e) => self
                .world
                .trace(format!("{what} {tid} on node {}: {e}", node + 1)),
        }
        result
    }

    /// Commits `writes` in one transaction on `node`, retrying until it
    /// commits (used before faults start). Returns its id.
    pub async fn commit_initial(&self, node: usize) -> String {
        loop {
            let keys = self.keys.clone();
            let result = self
                .call(node, "init", "", TXN_CALL_TIMEOUT, move |e| async move {
                    let tid = e.start()?.tid.to_string();
                    let writes = keys.iter().map(|k| (k.clone(), value(&tid, k))).collect();
                    e.put(&tid, writes)?;
                    match e.commit(&tid).await? {
                        Outcome::Committed { timestamp } => Ok((tid, timestamp)),
                        Outcome::Aborted { cause } => Err(TxnError::Failed {
                            tid,
                            reason: cause.to_string(),
                        }),
                        Outcome::Unknown { reason } => Err(TxnError::Failed { tid, reason }),
                    }
                })
                .await;
            if let Ok((tid, timestamp)) = result {
                let ops = self
                    .keys
                    .iter()
                    .map(|k| Op::Write { key: k.clone() })
                    .collect();
                self.recorded.lock().history.push(TxnRecord {
                    id: tid.clone(),
                    status: Status::Committed,
                    commit_timestamp: Some(timestamp),
                    commit_window: None,
                    ops,
                });
                return tid;
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// One executor: DAGs until `until`.
    pub async fn executor(self: Arc<Self>, until: Instant) {
        let mut rng = self.world.fork_rng();
        while Instant::now() < until {
            let think = Duration::from_millis(rng.random_range(1..80));
            sleep(think).await;
            self.run_dag(&mut rng).await;
        }
    }

    fn key(&self, rng: &mut StdRng) -> String {
        self.keys[rng.random_range(0..self.keys.len())].clone()
    }

    /// One DAG: picks its shape and nodes, runs its functions, commits (or
    /// aborts, or vanishes), and records what it saw.
    async fn run_dag(&self, rng: &mut StdRng) {
        let world = &self.world;
        let n = world.nodes.len();
        let mut nodes: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            nodes.swap(i, rng.random_range(0..=i));
        }
        nodes.truncate(rng.random_range(1..=n.min(4)));
        let functions = rng.random_range(nodes.len()..=4).max(1);
        let fan = functions >= 3 && rng.random_bool(0.4);
        // (node, upstream functions) of each function.
        let plan: Vec<(usize, Vec<usize>)> = (0..functions)
            .map(|i| {
                let node = nodes[i % nodes.len()];
                let upstream = match (i, fan, functions) {
                    (0, _, _) => vec![],
                    (1, true, _) | (2, true, 4) => vec![0],
                    (2, true, 3) => vec![0, 1],
                    (3, true, 4) => vec![1, 2],
                    (i, _, _) => vec![i - 1],
                };
                (node, upstream)
            })
            .collect();
        let dag_started = Instant::now();
        let Ok(tid) = self
            .call(plan[0].0, "start", "", TXN_CALL_TIMEOUT, |e| async move {
                e.start().map(|s| s.tid.to_string())
            })
            .await
        else {
            return;
        };
        // Which functions each function descends from: a read may only be
        // judged for read-your-writes against writes of its ancestors (a
        // branch running beside it need not see its writes).
        let mut ancestors: Vec<Vec<usize>> = Vec::new();
        for (_, upstream) in &plan {
            let mut mine: Vec<usize> = upstream.clone();
            for up in upstream {
                mine.extend(ancestors[*up].iter().copied());
            }
            mine.sort();
            mine.dedup();
            ancestors.push(mine);
        }
        let mut writers_of: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        let mut ops = Vec::new();
        let mut failed_reads = 0;
        let mut refused_writes = 0;
        let vanishes = world.cfg.faults.vanishing_executors && rng.random_bool(0.05);
        let vanish_at = rng.random_range(0..functions);
        for (i, (node, upstream)) in plan.iter().enumerate() {
            if vanishes && i == vanish_at {
                self.record(&tid, Status::Aborted, None, None, ops, &plan);
                world.trace(format!("executor vanishes in the middle of {tid}"));
                return;
            }
            for up in upstream {
                let up_node = plan[*up].0;
                if up_node != *node {
                    let (t, address) = (tid.clone(), world.nodes[up_node].address.clone());
                    // The sidecar answers a continue even when it fails (the
                    // transaction is then failed there). Without an answer
                    // (the node died with the request) an executor waits
                    // for good: the DAG goes no further.
                    let continued = self
                        .call(
                            *node,
                            "continue",
                            &tid,
                            TXN_CALL_TIMEOUT,
                            move |e| async move { e.continue_from(&t, &address).await },
                        )
                        .await;
                    if let Err(e) = continued {
                        if e.starts_with("node") || e.starts_with("no answer") {
                            self.record(&tid, Status::Aborted, None, None, ops, &plan);
                            return;
                        }
                    }
                }
            }
            for _ in 0..rng.random_range(0..=2) {
                let key = self.key(rng);
                let (t, k) = (tid.clone(), key.clone());
                let read = self
                    .call(*node, "get", &tid, KEY_CALL_TIMEOUT, move |e| async move {
                        e.get(Some(&t), std::slice::from_ref(&k)).await
                    })
                    .await;
                let beside_a_sibling = writers_of
                    .get(&key)
                    .is_some_and(|ws| ws.iter().any(|w| *w != i && !ancestors[i].contains(w)));
                match read {
                    Ok(_) if beside_a_sibling => {}
                    Ok(values) => ops.push(Op::Read {
                        key,
                        writer: writer(values.first().and_then(|v| v.value.as_deref())),
                        returned_at: world.start.elapsed().as_nanos() as u64,
                    }),
                    Err(reason) => {
                        failed_reads += 1;
                        self.recorded.lock().failed_reads.push(FailedRead {
                            tid: tid.clone(),
                            parallel: fan && functions == 4,
                            key,
                            dag_started,
                            at: Instant::now(),
                            reason,
                        });
                    }
                }
            }
            for _ in 0..rng.random_range(0..=2) {
                let key = self.key(rng);
                let (t, k) = (tid.clone(), key.clone());
                let put = self
                    .call(*node, "put", &tid, KEY_CALL_TIMEOUT, move |e| async move {
                        let v = value(&t, &k);
                        e.put(&t, vec![(k, v)])
                    })
                    .await;
                match put {
                    Ok(()) => {
                        writers_of.entry(key.clone()).or_default().push(i);
                        ops.push(Op::Write { key });
                    }
                    // The sidecar refused it: the DAG must not commit. (A put
                    // that got no answer may still have been applied.)
                    Err(e) if !e.starts_with("no answer") && !e.starts_with("node") => {
                        refused_writes += 1
                    }
                    Err(_) => {}
                }
            }
        }
        let sink = plan[plan.len() - 1].0;
        // The other nodes the DAG ran on, as the executor on `at` lists them.
        let others_than = |at: usize| -> Vec<String> {
            let mut others: Vec<String> = plan
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != at)
                .map(|n| world.nodes[n].address.clone())
                .collect();
            others.sort();
            others.dedup();
            others
        };
        if rng.random_bool(0.05) {
            let t = tid.clone();
            let outcome = self
                .call(sink, "abort", &tid, TXN_CALL_TIMEOUT, move |e| async move {
                    Ok(e.abort(&t))
                })
                .await;
            let status = match outcome {
                Ok(Outcome::Aborted { .. }) => Status::Aborted,
                Ok(Outcome::Unknown { .. }) => Status::Unknown,
                Ok(Outcome::Committed { .. }) => {
                    self.problem(format!("abort of {tid} answered COMMITTED"));
                    Status::Unknown
                }
                Err(_) => Status::Unknown,
            };
            self.record(&tid, status, None, None, ops, &plan);
            return;
        }
        let requested = world.start.elapsed().as_nanos() as u64;
        let first = self.commit(sink, &tid, &others_than(sink)).await;
        let acked = world.start.elapsed().as_nanos() as u64;
        // An unknown outcome is no answer: a retry may learn it.
        let mut answer = first
            .clone()
            .ok()
            .filter(|o| !matches!(o, Outcome::Unknown { .. }));
        if rng.random_bool(0.1) {
            // A retried commit, on the sink or another node of the DAG.
            let again_on = plan[rng.random_range(0..plan.len())].0;
            let again = self.commit(again_on, &tid, &others_than(again_on)).await;
            // A DAG that wrote nothing commits with no record: a retry on a
            // node that no longer remembers it may answer ABORTED (nothing
            // of it is visible either way).
            let wrote = ops.iter().any(|op| matches!(op, Op::Write { .. })) || refused_writes > 0;
            match (&answer, again) {
                // ("Unknown" is no answer: storage could not say.)
                (Some(a), Ok(b))
                    if !matches!(b, Outcome::Unknown { .. })
                        && a.is_committed() != b.is_committed()
                        && (wrote || !a.is_committed()) =>
                {
                    self.problem(format!(
                        "retried commit of {tid} changed its answer: {a:?} then {b:?}"
                    ))
                }
                (None, Ok(b)) if !matches!(b, Outcome::Unknown { .. }) => answer = Some(b),
                _ => {}
            }
        }
        let (status, timestamp) = match answer {
            Some(Outcome::Committed { timestamp }) => (Status::Committed, Some(timestamp)),
            Some(Outcome::Aborted { .. }) => (Status::Aborted, None),
            Some(Outcome::Unknown { .. }) | None => (Status::Unknown, None),
        };
        // Without an answer there is no acknowledgement time either.
        let acked = if status == Status::Unknown {
            u64::MAX
        } else {
            acked
        };
        if status == Status::Committed {
            if failed_reads > 0 {
                self.problem(format!(
                    "{tid} committed after {failed_reads} failed read(s) (its executor saw `None`)"
                ));
            }
            if refused_writes > 0 {
                self.problem(format!(
                    "{tid} committed without {refused_writes} refused write(s)"
                ));
            }
            for op in &ops {
                if let Op::Read {
                    key, writer: None, ..
                } = op
                {
                    self.problem(format!(
                        "committed {tid} read `None` for {key}, which has had a committed value since the start"
                    ));
                }
            }
        }
        self.record(
            &tid,
            status,
            timestamp,
            Some((requested, acked)),
            ops,
            &plan,
        );
    }

    async fn commit(&self, node: usize, tid: &str, others: &[String]) -> Result<Outcome, String> {
        let (t, o) = (tid.to_string(), others.to_vec());
        self.call(node, "commit", tid, TXN_CALL_TIMEOUT, move |e| async move {
            e.commit_with(&t, &o).await
        })
        .await
    }

    fn problem(&self, what: String) {
        self.world.trace(format!("VIOLATION: {what}"));
        self.recorded.lock().problems.push(what);
    }

    fn record(
        &self,
        tid: &str,
        status: Status,
        timestamp: Option<u64>,
        window: Option<(u64, u64)>,
        ops: Vec<Op>,
        plan: &[(usize, Vec<usize>)],
    ) {
        self.world.trace(format!("{tid}: {status:?} {ops:?}"));
        let mut recorded = self.recorded.lock();
        recorded.history.push(TxnRecord {
            id: tid.to_string(),
            status,
            commit_timestamp: timestamp,
            commit_window: window,
            ops,
        });
        recorded
            .dag_nodes
            .push((tid.to_string(), plan.iter().map(|(n, _)| *n).collect()));
    }

    /// An outside reader: reads random plain keys straight from the store.
    pub async fn outside_reader(self: Arc<Self>, until: Instant) {
        let mut rng = self.world.fork_rng();
        while Instant::now() < until {
            sleep(Duration::from_millis(rng.random_range(20..300))).await;
            let key = self.key(&mut rng);
            let seen = writer(self.world.peek(key.as_bytes()).as_deref());
            self.recorded
                .lock()
                .outside_reads
                .push((Instant::now(), key, seen));
        }
    }
}
