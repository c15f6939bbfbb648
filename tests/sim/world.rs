//! The simulated cluster: N nodes running the real engine, one shared
//! store, a network, per-node clocks, and the seeded randomness that
//! decides every latency and fault. Everything runs on one single-threaded
//! tokio runtime with paused time: time advances only when every task
//! waits, so a run is a pure function of its seed.
//!
//! A node's work (requests it serves, its background tasks, its engine's
//! own tasks) runs in tasks registered to the node: a crash aborts them at
//! whatever await point they are at, drops the engine, and a restart opens
//! a new engine over the same store (recovery).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use aft::failpoint::Failpoints;
use aft::meta::CommitMeta;
use aft::metrics::Metrics;
use aft::peer::membership::Membership;
use aft::storage::StorageError;
use aft::txn::{BackgroundTasks, Engine, EngineConfig, Regression, TxnError};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{sleep, sleep_until, Instant};

use super::clock::SimClock;
use super::net::{self, SimRemote};
use super::store::{Answer, NodeStorage, Op};

/// Timeouts and periods of the simulated deployment (virtual time).
pub mod timing {
    use std::time::Duration;
    pub const STORAGE_TIMEOUT: Duration = Duration::from_secs(1);
    /// A write is applied within this of being sent, or never (the store
    /// model keeps to it unless a run breaks it on purpose).
    pub const WRITE_HORIZON: Duration = Duration::from_secs(3);
    pub const PEER_TIMEOUT: Duration = Duration::from_secs(1);
    pub const PREPARE_TIMEOUT: Duration = Duration::from_millis(2500);
    pub const DECISION_TIMEOUT: Duration = Duration::from_secs(4);
    pub const DEAD_AFTER: Duration = Duration::from_secs(2);
    pub const HEARTBEAT: Duration = Duration::from_millis(300);
    pub const DIGEST_EVERY: Duration = Duration::from_secs(2);
    pub const SCAN_EVERY: Duration = Duration::from_secs(10);
    pub const LEASE: Duration = Duration::from_secs(5);
    pub const PUBLISH_SWEEP: Duration = Duration::from_secs(2);
    pub const ORPHAN_GRACE: Duration = Duration::from_secs(8);
    pub const ORPHAN_SWEEP: Duration = Duration::from_secs(3);
    /// The gossip margin of the cluster watermark (as the binary: 4 × dead_after).
    pub const GC_MARGIN: Duration = Duration::from_secs(8);
}
use timing::*;

/// Which faults a run injects, and how often.
#[derive(Debug, Clone, Default)]
pub struct FaultMix {
    /// Crash (and later restart) random nodes at random moments.
    pub crashes: bool,
    /// Probability that a failpoint kills its node.
    pub crash_at_failpoint: f64,
    /// Probability that a storage or peer call kills its node (before or after it).
    pub crash_at_call: f64,
    /// Pause nodes for longer than every timeout.
    pub pauses: bool,
    /// Cut the network between groups of nodes, then heal.
    pub partitions: bool,
    /// Take storage down for a while.
    pub storage_outages: bool,
    /// Probability that a storage call fails (before or after it applies).
    pub storage_errors: f64,
    /// Probability of a storage call far slower than the storage timeout.
    pub storage_stalls: f64,
    /// Probability that a peer message is lost; another that it is duplicated.
    pub message_loss: f64,
    pub message_dup: f64,
    /// Make node clocks jump.
    pub clock_jumps: bool,
    /// Executors that disappear mid-DAG (lease expiry cleans up).
    pub vanishing_executors: bool,
}

impl FaultMix {
    /// Every kind of fault at once, at rates that leave room for progress.
    pub fn everything() -> Self {
        Self {
            crashes: true,
            crash_at_failpoint: 0.05,
            crash_at_call: 0.002,
            pauses: true,
            partitions: true,
            storage_outages: true,
            storage_errors: 0.005,
            storage_stalls: 0.003,
            message_loss: 0.01,
            message_dup: 0.01,
            clock_jumps: true,
            vanishing_executors: true,
        }
    }
}

/// One run's configuration: everything derived from (seed, nodes, mode).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Anna mode: no conditional writes, no atomic batches, no snapshot reads.
    pub anna: bool,
    pub regression: Option<Regression>,
    pub run: Duration,
    pub settle: Duration,
    pub executors: usize,
    pub keys: usize,
    pub faults: FaultMix,
    /// Largest clock skew between nodes.
    pub skew: Duration,
    /// The longest a stalled storage call takes (a stalled write lands
    /// then, though its caller timed out long before). Within the write
    /// horizon unless a run breaks that assumption on purpose.
    pub late_write_max: Duration,
    /// Participants return buffered writes up to this many bytes in their
    /// votes (0: they persist them themselves); the seed picks either.
    pub ship_values_up_to: usize,
}

impl SimConfig {
    /// The configuration of `seed` on `nodes` nodes: the seed picks the
    /// workload's size and which faults are on.
    pub fn for_seed(seed: u64, nodes: usize, anna: bool) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c0f1_9000_0001);
        let mut on = |p: f64| rng.random_bool(p);
        let crashes = on(0.5);
        let faults = FaultMix {
            crashes,
            crash_at_failpoint: if on(0.5) { 0.05 } else { 0.0 },
            crash_at_call: if on(0.4) { 0.002 } else { 0.0 },
            pauses: nodes > 1 && on(0.3),
            partitions: nodes > 1 && on(0.3),
            storage_outages: on(0.4),
            storage_errors: if on(0.4) { 0.005 } else { 0.0 },
            storage_stalls: if on(0.3) { 0.003 } else { 0.0 },
            message_loss: if nodes > 1 && on(0.3) { 0.01 } else { 0.0 },
            message_dup: if nodes > 1 && on(0.3) { 0.01 } else { 0.0 },
            clock_jumps: on(0.2),
            vanishing_executors: on(0.4),
        };
        SimConfig {
            seed,
            nodes,
            anna,
            regression: None,
            run: Duration::from_millis(rng.random_range(3_000..8_000)),
            settle: Duration::from_secs(40),
            executors: rng.random_range(1..=4usize),
            keys: rng.random_range(3..=8usize),
            faults,
            skew: Duration::from_millis(rng.random_range(0..200)),
            late_write_max: WRITE_HORIZON,
            ship_values_up_to: if rng.random_bool(0.5) { 0 } else { 1 << 20 },
        }
    }

    /// The command that replays this run exactly.
    pub fn replay_command(&self) -> String {
        let mut env = format!("AFT_SIM_SEED={} AFT_SIM_NODES={}", self.seed, self.nodes);
        if self.anna {
            env.push_str(" AFT_SIM_ANNA=1");
        }
        if let Some(r) = self.regression {
            env.push_str(&format!(" AFT_SIM_REGRESSION={r:?}"));
        }
        format!("{env} cargo test --release -p aft-core --test sim -- --exact replay --nocapture")
    }
}

/// Counts of what the run did (for the per-DAG figures).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub storage_calls: u64,
    pub storage_bytes: u64,
    /// Peer messages by kind: (count, bytes).
    pub messages: BTreeMap<&'static str, (u64, u64)>,
    pub crashes: u64,
    pub restarts: u64,
    /// Times a decision key that already held something was overwritten
    /// (only possible without conditional writes).
    pub decision_overwrites: u64,
    /// Of those, times the decision changed (a commit record over an abort
    /// marker, or the other way round).
    pub decision_flips: u64,
    /// Seeded choices made (two runs of a seed make the same number).
    pub draws: u64,
}

/// The fault state of the moment.
#[derive(Debug, Default)]
pub struct FaultState {
    /// Faults are being injected (false once the run heals).
    pub active: bool,
    pub storage_down: bool,
    /// Directed links that are cut: (from, to).
    pub cut: BTreeSet<(usize, usize)>,
}

/// A node that is up.
pub struct Up {
    pub engine: Arc<Engine>,
    pub membership: Arc<Membership>,
    _background: BackgroundTasks,
}

/// A node's state across incarnations.
#[derive(Default)]
pub struct NodeInner {
    pub incarnation: u64,
    pub up: Option<Up>,
    pub booting: bool,
    pub tasks: Vec<AbortHandle>,
    /// When it went down or was paused, and came back: (from, to).
    pub unavailable: Vec<(Instant, Option<Instant>)>,
}

/// One simulated node.
pub struct Node {
    pub id: usize,
    pub address: String,
    pub clock: Arc<SimClock>,
    gate: Gate,
    pub inner: Mutex<NodeInner>,
}

/// Where a paused node's tasks wait. Waiters wake in a fixed order (a
/// `tokio::sync::watch` would wake them in a random one, and the run would
/// not replay).
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Notify,
}

impl Gate {
    fn is_closed(&self) -> bool {
        *self.closed.lock()
    }

    fn close(&self) {
        *self.closed.lock() = true;
    }

    fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_waiters();
    }

    /// Returns at once while the gate is open; otherwise when it opens.
    async fn passed(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.is_closed() {
                return;
            }
            opened.await;
        }
    }
}

/// A line of the trace: virtual milliseconds since the start, and what happened.
pub type TraceLine = (u64, String);

/// The whole simulated cluster.
pub struct World {
    pub cfg: SimConfig,
    pub start: Instant,
    rng: Mutex<StdRng>,
    pub data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    pub nodes: Vec<Node>,
    pub faults: Mutex<FaultState>,
    pub counters: Mutex<Counters>,
    trace: Mutex<Vec<TraceLine>>,
    /// Stretches of time in which a read may legitimately fail for want of
    /// a collected version (a node silent past `dead_after`, a partition, a
    /// clock jump past the gossip margin).
    pub excuses: Mutex<Vec<(Instant, Instant)>>,
    crash_tx: mpsc::UnboundedSender<(usize, u64, &'static str)>,
    me: Weak<World>,
}

/// What the world's own crash handler needs.
pub struct CrashRequests(pub mpsc::UnboundedReceiver<(usize, u64, &'static str)>);

impl World {
    /// A world of `cfg.nodes` nodes (none started yet).
    pub fn new(cfg: SimConfig) -> (Arc<World>, CrashRequests) {
        let start = Instant::now();
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let (crash_tx, crash_rx) = mpsc::unbounded_channel();
        let nodes = (0..cfg.nodes)
            .map(|id| {
                let skew = if cfg.skew.is_zero() {
                    0
                } else {
                    rng.random_range(0..cfg.skew.as_micros() as i64)
                };
                let clock = SimClock::new(start, skew, StdRng::seed_from_u64(rng.random()));
                Node {
                    id,
                    address: format!("10.0.0.{}", id + 1),
                    clock,
                    gate: Gate::default(),
                    inner: Mutex::new(NodeInner::default()),
                }
            })
            .collect();
        let world = Arc::new_cyclic(|me| World {
            cfg,
            start,
            rng: Mutex::new(rng),
            data: Mutex::new(BTreeMap::new()),
            nodes,
            faults: Mutex::new(FaultState::default()),
            counters: Mutex::new(Counters::default()),
            trace: Mutex::new(Vec::new()),
            excuses: Mutex::new(Vec::new()),
            crash_tx,
            me: me.clone(),
        });
        (world, CrashRequests(crash_rx))
    }

    /// This world as an `Arc`.
    pub fn arc(&self) -> Arc<World> {
        self.me.upgrade().expect("the world is alive while it runs")
    }

    /// Virtual milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    /// Records a trace line.
    pub fn trace(&self, line: impl Into<String>) {
        let at = self.now_ms();
        self.trace.lock().push((at, line.into()));
    }

    /// The whole trace.
    pub fn trace_lines(&self) -> Vec<TraceLine> {
        self.trace.lock().clone()
    }

    /// A seeded random draw.
    /// Counts a draw from the seeded generator, and logs where it came
    /// from (at trace level: `AFT_SIM_LOG` shows it).
    fn draw(&self, at: &std::panic::Location<'_>, what: &str) {
        self.counters.lock().draws += 1;
        tracing::trace!(%at, "draw ({what})");
    }

    #[track_caller]
    pub fn roll(&self, p: f64) -> bool {
        self.draw(std::panic::Location::caller(), "roll");
        p > 0.0 && self.rng.lock().random_bool(p.min(1.0))
    }

    /// A seeded duration in `[lo, hi)`.
    #[track_caller]
    pub fn between(&self, lo: Duration, hi: Duration) -> Duration {
        self.draw(std::panic::Location::caller(), "between");
        if hi <= lo {
            return lo;
        }
        let micros = self
            .rng
            .lock()
            .random_range(lo.as_micros() as u64..hi.as_micros() as u64);
        Duration::from_micros(micros)
    }

    /// A seeded index in `0..n`.
    #[track_caller]
    pub fn pick(&self, n: usize) -> usize {
        self.draw(std::panic::Location::caller(), "pick");
        self.rng.lock().random_range(0..n.max(1))
    }

    /// A fresh seeded generator (for a workload task).
    #[track_caller]
    pub fn fork_rng(&self) -> StdRng {
        self.draw(std::panic::Location::caller(), "fork");
        StdRng::seed_from_u64(self.rng.lock().random())
    }

    /// The index of the node at `address`.
    pub fn node_index(&self, address: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.address == address)
    }

    /// The engine of `node` if it is up (with its incarnation).
    pub fn engine(&self, node: usize) -> Option<(Arc<Engine>, u64)> {
        let inner = self.nodes[node].inner.lock();
        inner
            .up
            .as_ref()
            .map(|up| (Arc::clone(&up.engine), inner.incarnation))
    }

    /// The membership view of `node` if it is up.
    pub fn membership(&self, node: usize) -> Option<Arc<Membership>> {
        self.nodes[node]
            .inner
            .lock()
            .up
            .as_ref()
            .map(|up| Arc::clone(&up.membership))
    }

    /// Runs `task` as part of `node`'s current incarnation: a crash aborts it.
    pub fn spawn_on<T: Send + 'static>(
        &self,
        node: usize,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let handle = tokio::spawn(task);
        let mut inner = self.nodes[node].inner.lock();
        inner.tasks.retain(|t| !t.is_finished());
        inner.tasks.push(handle.abort_handle());
        handle
    }

    /// Waits while `node` is paused.
    pub async fn gate(&self, node: usize) {
        self.nodes[node].gate.passed().await;
    }

    /// Pauses `node` for `how_long`: it serves, sends and stores nothing meanwhile.
    pub fn pause(&self, node: usize, how_long: Duration) {
        if self.nodes[node].gate.is_closed() {
            return;
        }
        self.trace(format!("node {} paused for {how_long:?}", node + 1));
        self.nodes[node].gate.close();
        let now = Instant::now();
        self.nodes[node]
            .inner
            .lock()
            .unavailable
            .push((now, Some(now + how_long)));
        self.excuses.lock().push((now, now + how_long + GC_MARGIN));
        let world = self.arc();
        tokio::spawn(async move {
            sleep(how_long).await;
            world.resume(node);
        });
    }

    /// Ends a pause of `node`.
    pub fn resume(&self, node: usize) {
        if self.nodes[node].gate.is_closed() {
            self.trace(format!("node {} resumed", node + 1));
            // A real pause stops the engine's liveness ticker as well.
            let since = self.nodes[node]
                .inner
                .lock()
                .unavailable
                .last()
                .map(|(from, _)| *from);
            if let (Some((engine, _)), Some(since)) = (self.engine(node), since) {
                engine.paused_since(since);
            }
            self.nodes[node].gate.open();
        }
    }

    /// Asks for `node` (incarnation `incarnation`) to crash at `at`. Called
    /// where the node cannot crash itself (a failpoint, a storage call);
    /// the caller then waits forever, and the crash handler tears it down.
    pub fn request_crash(&self, node: usize, incarnation: u64, at: &'static str) {
        let _ = self.crash_tx.send((node, incarnation, at));
    }

    /// Whether a crash should happen here, by the seed's odds; if so, asks for it.
    fn crash_here(&self, node: usize, incarnation: u64, at: &'static str, odds: f64) -> bool {
        if !self.faults.lock().active || !self.roll(odds) {
            return false;
        }
        self.request_crash(node, incarnation, at);
        true
    }

    /// Handles crash requests for the whole run.
    pub async fn serve_crash_requests(self: Arc<Self>, mut requests: CrashRequests) {
        while let Some((node, incarnation, at)) = requests.0.recv().await {
            let current = self.nodes[node].inner.lock().incarnation;
            if current == incarnation {
                self.crash(node, at);
            }
        }
    }

    /// Kills `node` at once (as `kill -9`): every task of it stops where it
    /// is, its engine is dropped. It restarts after a seeded delay.
    pub fn crash(&self, node: usize, at: &str) {
        let (tasks, up) = {
            let mut inner = self.nodes[node].inner.lock();
            if inner.up.is_none() && !inner.booting {
                return;
            }
            inner.booting = false;
            inner.incarnation += 1;
            inner.unavailable.push((Instant::now(), None));
            (std::mem::take(&mut inner.tasks), inner.up.take())
        };
        for task in tasks {
            task.abort();
        }
        if let Some(up) = &up {
            up.engine.stop_tasks();
        }
        drop(up);
        self.counters.lock().crashes += 1;
        self.trace(format!("node {} crashed ({at})", node + 1));
        let delay = if self.faults.lock().active {
            self.between(Duration::from_millis(20), Duration::from_millis(3000))
        } else {
            Duration::ZERO
        };
        let world = self.arc();
        tokio::spawn(async move {
            sleep(delay).await;
            world.boot(node);
        });
    }

    /// Starts `node` (a new incarnation, recovering from storage).
    pub fn boot(&self, node: usize) {
        let incarnation = {
            let mut inner = self.nodes[node].inner.lock();
            if inner.up.is_some() || inner.booting {
                return;
            }
            inner.booting = true;
            inner.incarnation += 1;
            inner.incarnation
        };
        let world = self.arc();
        self.spawn_on(node, async move {
            world.open_node(node, incarnation).await;
        });
    }

    /// The engine configuration of `node`'s incarnation `incarnation`.
    fn engine_config(&self, node: usize, incarnation: u64) -> EngineConfig {
        EngineConfig {
            node_address: self.nodes[node].address.clone(),
            lease: LEASE,
            gc_interval: Duration::from_secs(1),
            orphan_sweep_interval: ORPHAN_SWEEP,
            orphan_grace: ORPHAN_GRACE,
            decision_timeout: DECISION_TIMEOUT,
            storage_timeout: STORAGE_TIMEOUT,
            write_horizon: WRITE_HORIZON,
            retired_record_retention: Duration::from_secs(15),
            publish_sweep_interval: PUBLISH_SWEEP,
            cache_bytes: 64 << 20,
            clustered: self.cfg.nodes > 1,
            clock: Arc::clone(&self.nodes[node].clock) as Arc<dyn aft::meta::Clock>,
            failpoints: Arc::new(SimFailpoints {
                world: self.me.clone(),
                node,
                incarnation,
            }),
            regression: self.cfg.regression,
            ship_values_up_to: self.cfg.ship_values_up_to,
            ..EngineConfig::default()
        }
    }

    async fn open_node(self: Arc<Self>, node: usize, incarnation: u64) {
        let storage = Arc::new(NodeStorage {
            world: self.me.clone(),
            node,
            incarnation,
            anna: self.cfg.anna,
        });
        let remote = Arc::new(SimRemote {
            world: self.me.clone(),
            node,
            incarnation,
        });
        let config = self.engine_config(node, incarnation);
        let engine = loop {
            match Engine::open(
                storage.clone(),
                config.clone(),
                Metrics::new(),
                Some(remote.clone()),
            )
            .await
            {
                Ok(engine) => break engine,
                Err(e) => {
                    self.trace(format!("node {} cannot open: {e}", node + 1));
                    sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != node)
            .map(|n| n.address.clone())
            .collect();
        let membership = Arc::new(Membership::new(
            &self.nodes[node].address,
            &seeds,
            DEAD_AFTER,
        ));
        {
            let membership = Arc::clone(&membership);
            let local = Arc::downgrade(&engine);
            engine.set_global_watermark(Arc::new(move || {
                let mine = local.upgrade()?.local_gc_watermark(GC_MARGIN);
                let theirs = membership.peer_watermark()?;
                Some(theirs.map_or(mine, |t| t.min(mine)))
            }));
        }
        let (feed_tx, feed_rx) = mpsc::unbounded_channel::<CommitMeta>();
        engine.set_commit_feed(feed_tx);
        let background = engine.spawn_background();
        {
            let mut inner = self.nodes[node].inner.lock();
            if inner.incarnation != incarnation {
                return;
            }
            inner.booting = false;
            if let Some((_, end)) = inner.unavailable.last_mut() {
                if end.is_none() {
                    *end = Some(Instant::now());
                }
            }
            inner.up = Some(Up {
                engine: Arc::clone(&engine),
                membership: Arc::clone(&membership),
                _background: background,
            });
        }
        self.counters.lock().restarts += 1;
        self.trace(format!(
            "node {} up (incarnation {incarnation}, {} commits known)",
            node + 1,
            engine.index().size().1
        ));
        if self.cfg.nodes > 1 {
            self.spawn_on(node, net::gossip(self.arc(), node, feed_rx));
            self.spawn_on(node, net::heartbeats(self.arc(), node));
            self.spawn_on(node, net::anti_entropy(self.arc(), node));
        }
    }

    /// Heals every fault and brings every node up.
    pub fn heal(&self) {
        {
            let mut faults = self.faults.lock();
            faults.active = false;
            faults.storage_down = false;
            faults.cut.clear();
        }
        self.trace("faults stop: healing");
        for node in 0..self.nodes.len() {
            self.resume(node);
            self.boot(node);
        }
    }

    /// Whether `node` was unavailable (down or paused) at any time in `[from, to]`.
    pub fn was_unavailable(&self, node: usize, from: Instant, to: Instant) -> bool {
        self.nodes[node]
            .inner
            .lock()
            .unavailable
            .iter()
            .any(|(start, end)| *start <= to && end.is_none_or(|e| e >= from))
    }

    /// Whether a read that failed at `at`, in a transaction started at
    /// `started`, may have failed without a bug.
    pub fn read_failure_excused(&self, started: Instant, at: Instant) -> bool {
        if self.cfg.faults.message_loss > 0.0 {
            return true;
        }
        let from = started.checked_sub(GC_MARGIN).unwrap_or(self.start);
        self.excuses
            .lock()
            .iter()
            .any(|(s, e)| *s <= at && *e >= from)
    }

    /// One storage call of `node`, through the fault model.
    pub async fn storage_call(
        &self,
        node: usize,
        incarnation: u64,
        op: Op,
    ) -> Result<Answer, StorageError> {
        self.gate(node).await;
        let odds = self.cfg.faults.crash_at_call;
        if self.crash_here(node, incarnation, "before a storage call", odds) {
            std::future::pending::<()>().await;
        }
        let name = op.name();
        tracing::trace!(node, incarnation, ?op, "storage call");
        {
            let mut c = self.counters.lock();
            c.storage_calls += 1;
            c.storage_bytes += op.bytes() as u64;
        }
        let f = &self.cfg.faults;
        let stall = self.roll(f.storage_stalls);
        let latency = if stall {
            self.between(Duration::from_millis(500), self.cfg.late_write_max)
        } else if self.roll(0.03) {
            self.between(Duration::from_millis(2), Duration::from_millis(20))
        } else {
            self.between(Duration::from_micros(100), Duration::from_micros(600))
        };
        if self.faults.lock().storage_down {
            sleep(latency.min(STORAGE_TIMEOUT)).await;
            return Err(StorageError::backend(
                name,
                "storage unreachable (simulated outage)",
            ));
        }
        if latency > STORAGE_TIMEOUT {
            sleep(STORAGE_TIMEOUT).await;
            if op.writes() && self.roll(0.5) {
                // The write was already on its way: it lands late.
                let world = self.arc();
                let late = latency - STORAGE_TIMEOUT;
                tokio::spawn(async move {
                    sleep(late).await;
                    if !world.faults.lock().storage_down {
                        world.trace(format!(
                            "a timed-out {name} of node {} lands late",
                            node + 1
                        ));
                        world.apply(op);
                    }
                });
            }
            return Err(StorageError::Timeout {
                op: name,
                timeout: STORAGE_TIMEOUT,
            });
        }
        sleep(latency).await;
        let error = self.roll(f.storage_errors);
        if error && self.roll(0.5) {
            return Err(StorageError::backend(name, "connection reset (simulated)"));
        }
        let answer = self.apply(op);
        if error {
            return Err(StorageError::backend(
                name,
                "connection reset after the call was applied (simulated)",
            ));
        }
        self.gate(node).await;
        if self.crash_here(node, incarnation, "after a storage call", odds) {
            std::future::pending::<()>().await;
        }
        Ok(answer)
    }

    /// Applies an operation to the store (noting overwritten decisions).
    pub fn apply(&self, op: Op) -> Answer {
        let decision_write = match &op {
            Op::Put(k, v) | Op::PutIfAbsent(k, v) if k.starts_with(b"aft/c/") => {
                Some((k.clone(), v.clone()))
            }
            _ => None,
        };
        if let Some((key, value)) = decision_write {
            if !self.data.lock().contains_key(&key) {
                let what = match aft::txn::decode_decision(&key, &value) {
                    Ok(None) => "abort marker",
                    Ok(Some(_)) => "commit record",
                    Err(_) => "unreadable record",
                };
                self.trace(format!(
                    "{what} written at {}",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        if let Op::Put(key, value) = &op {
            let old = self.data.lock().get(key).cloned();
            if let (true, Some(old)) = (key.starts_with(b"aft/c/"), old) {
                let kind = |v: &[u8]| aft::txn::decode_decision(key, v).map(|d| d.is_some()).ok();
                let flipped = kind(&old) != kind(value);
                {
                    let mut c = self.counters.lock();
                    c.decision_overwrites += 1;
                    if flipped {
                        c.decision_flips += 1;
                    }
                }
                self.trace(format!(
                    "decision key {} overwritten{}",
                    String::from_utf8_lossy(key),
                    if flipped {
                        " (the decision changed)"
                    } else {
                        ""
                    }
                ));
            }
        }
        op.apply(&mut self.data.lock())
    }

    /// The current value at a storage key, bypassing every fault (an
    /// outside reader, and the checks).
    pub fn peek(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.data.lock().get(key).cloned()
    }

    /// Marks a stretch of time in which failed reads are excused.
    pub fn excuse(&self, from: Instant, to: Instant) {
        self.excuses.lock().push((from, to));
    }

    /// The one-way latency of a peer message.
    pub fn message_latency(&self) -> Duration {
        if self.roll(0.05) {
            self.between(Duration::from_millis(2), Duration::from_millis(40))
        } else {
            self.between(Duration::from_micros(50), Duration::from_micros(500))
        }
    }

    /// Whether a message from `from` to `to` gets through now.
    pub fn link_up(&self, from: usize, to: usize) -> bool {
        !self.faults.lock().cut.contains(&(from, to))
    }

    /// Whether a peer call should crash its caller here.
    pub fn crash_at_peer_call(&self, node: usize, incarnation: u64, at: &'static str) -> bool {
        self.crash_here(node, incarnation, at, self.cfg.faults.crash_at_call)
    }

    /// Sleeps until `deadline`, then fails like a peer request that timed out.
    pub async fn peer_timeout<T>(
        &self,
        deadline: Instant,
        tid: &str,
        peer: &str,
    ) -> Result<T, TxnError> {
        sleep_until(deadline).await;
        Err(TxnError::Peer {
            tid: tid.to_string(),
            peer: peer.to_string(),
            failure: aft::txn::PeerFailure::Transport("timed out (simulated)".into()),
        })
    }
}

/// Failpoints of one node incarnation: each may kill the node, by the seed's odds.
#[derive(Debug)]
struct SimFailpoints {
    world: Weak<World>,
    node: usize,
    incarnation: u64,
}

impl Failpoints for SimFailpoints {
    fn hit(&self, name: &str) -> bool {
        let Some(world) = self.world.upgrade() else {
            return false;
        };
        let odds = world.cfg.faults.crash_at_failpoint;
        let at: &'static str = aft::failpoint::ALL
            .iter()
            .copied()
            .find(|p| *p == name)
            .unwrap_or("a failpoint");
        world.crash_here(self.node, self.incarnation, at, odds)
    }
}
