//! Deterministic simulation of an aft-sidecar cluster.
//!
//! N nodes (1 to 50) run the real transaction engine (`src/txn/`) over a
//! simulated store, network and clocks, on one single-threaded tokio
//! runtime with paused time: virtual time advances only when every task
//! waits, so ten minutes of cluster time take seconds, and a run is a pure
//! function of its seed. Each seed picks a workload (DAGs of 1-4 functions
//! over 1-4 nodes) and a fault mix (crashes at failpoints, between storage
//! or peer calls and at random moments; pauses longer than every timeout;
//! partitions; storage outages, errors and stalls; lost and duplicated
//! messages; clock jumps; executors that vanish mid-DAG), then checks what
//! must hold (`sim/checks.rs`).
//!
//! - `cargo test --release -p aft-core --test sim`: the CI run (2,000 seeds
//!   by default; `AFT_SIM_SEEDS=100000` for a longer one, `AFT_SIM_BASE` to
//!   pick the first seed).
//! - A failing seed prints the one command that replays it, with the trace
//!   of events that led to the violation.
//! - `AFT_SIM_LOG=<file>` with `replay` writes the run's log in virtual
//!   time: every engine event and every seeded choice (`sim/log.rs`).
//! - `AFT_SIM_REGRESSION=<bug>` puts a fixed bug back; the `finds_*` tests
//!   show how many seeds the simulation needs to find each one.

#[path = "sim/checks.rs"]
mod checks;
#[path = "sim/clock.rs"]
mod clock;
#[path = "sim/faults.rs"]
mod faults;
#[path = "sim/log.rs"]
mod log;
#[path = "sim/net.rs"]
mod net;
#[path = "sim/store.rs"]
mod store;
#[path = "sim/workload.rs"]
mod workload;
#[path = "sim/world.rs"]
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use aft::txn::Regression;
use parking_lot::Mutex;
use tokio::time::{sleep, sleep_until, Instant};

use workload::{Recorded, Workload};
use world::{Counters, FaultMix, SimConfig, TraceLine, World};

/// What one seed produced.
struct SeedResult {
    cfg: SimConfig,
    violations: Vec<String>,
    trace: Vec<TraceLine>,
    dags: usize,
    committed: usize,
    counters: Counters,
    /// Versions and committed transactions each node's index held at the
    /// end of the run phase (before the final GC), averaged over nodes.
    index_entries: (f64, f64),
    /// A hash of the store's contents at the end.
    store_digest: u64,
}

fn run_seed(cfg: SimConfig) -> SeedResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime for the simulation");
    runtime.block_on(simulate(cfg))
}

async fn simulate(cfg: SimConfig) -> SeedResult {
    let (world, crashes) = World::new(cfg.clone());
    tokio::spawn(Arc::clone(&world).serve_crash_requests(crashes));
    for node in 0..cfg.nodes {
        world.boot(node);
    }
    while (0..cfg.nodes).any(|n| world.engine(n).is_none()) {
        sleep(Duration::from_millis(10)).await;
    }
    let workload = Arc::new(Workload {
        world: Arc::clone(&world),
        keys: (0..cfg.keys).map(|i| format!("k{i}")).collect(),
        recorded: Mutex::new(Recorded::default()),
    });
    workload.commit_initial(0).await;
    // Every node learns the initial commit and every peer's watermark.
    sleep(Duration::from_secs(3)).await;

    let mut violations = Vec::new();
    let until = Instant::now() + cfg.run;
    world.faults.lock().active = true;
    world.trace(format!("run starts: {:?}", cfg.faults));
    let injector = tokio::spawn(faults::inject(Arc::clone(&world), until));
    let executors: Vec<_> = (0..cfg.executors)
        .map(|_| tokio::spawn(Arc::clone(&workload).executor(until)))
        .collect();
    let reader = tokio::spawn(Arc::clone(&workload).outside_reader(until));
    sleep_until(until).await;
    let index_entries = average_index(&world);
    world.heal();
    let _ = injector.await;
    let _ = reader.await;
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    for executor in executors {
        if tokio::time::timeout_at(deadline, executor).await.is_err() {
            violations.push("an executor never got its answers back".to_string());
        }
    }
    // GC waits for every node's clock to pass a superseding commit's
    // timestamp (plus a margin). A timestamp can be as far ahead as any
    // clock ever was (hybrid clocks carry it to every node), and the clocks
    // that must pass it may now be behind: jumps make the wait longer.
    let furthest_ahead = world
        .nodes
        .iter()
        .map(|n| n.clock.max_offset_micros())
        .max()
        .unwrap_or(0)
        .max(0);
    let furthest_behind = world
        .nodes
        .iter()
        .map(|n| n.clock.offset_micros())
        .min()
        .unwrap_or(0)
        .min(0);
    let drift = (furthest_ahead - furthest_behind).unsigned_abs()
        + world::timing::GC_MARGIN.as_micros() as u64;
    let mut recorded = std::mem::take(&mut *workload.recorded.lock());
    checks::resolve_outcomes(&world, &mut recorded, &mut violations);
    world.trace("executors done; settling");
    sleep(cfg.settle + Duration::from_micros(drift)).await;
    violations.extend(checks::check_all(&world, &mut recorded));
    let dags = recorded.history.len();
    let committed = recorded
        .history
        .iter()
        .filter(|t| t.status == aft::history::Status::Committed)
        .count();
    let counters = world.counters.lock().clone();
    let store_digest = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        world.data.lock().hash(&mut hasher);
        hasher.finish()
    };
    SeedResult {
        cfg,
        violations,
        trace: world.trace_lines(),
        dags,
        committed,
        counters,
        index_entries,
        store_digest,
    }
}

fn average_index(world: &World) -> (f64, f64) {
    let mut versions = 0.0;
    let mut txns = 0.0;
    let mut up = 0.0;
    for node in 0..world.nodes.len() {
        if let Some((engine, _)) = world.engine(node) {
            versions += engine.index().size().1 as f64;
            txns += engine.commits_since(0).len() as f64;
            up += 1.0;
        }
    }
    if up == 0.0 {
        return (0.0, 0.0);
    }
    (versions / up, txns / up)
}

/// The failure report of a seed: the replay command, the violations, and
/// the trace around them.
fn report(result: &SeedResult) -> String {
    let mut out = format!(
        "seed {} on {} node(s){} violated {} rule(s)\nreplay: {}\n",
        result.cfg.seed,
        result.cfg.nodes,
        if result.cfg.anna { " (anna mode)" } else { "" },
        result.violations.len(),
        result.cfg.replay_command()
    );
    for v in result.violations.iter().take(10) {
        out.push_str(&format!("  - {v}\n"));
    }
    // Trace lines that mention the transactions in the first violations,
    // then the last lines of the run phase.
    let tids: Vec<&str> = result
        .violations
        .iter()
        .take(3)
        .flat_map(|v| v.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')))
        .filter(|w| w.len() == 36)
        .collect();
    out.push_str("trace (virtual ms):\n");
    let related: Vec<&TraceLine> = result
        .trace
        .iter()
        .filter(|(_, l)| {
            tids.iter().any(|t| l.contains(t))
                || l.contains("crash")
                || l.contains("paused")
                || l.contains("partition")
                || l.contains("storage")
                || l.contains("clock")
                || l.contains("VIOLATION")
                || l.contains(" up ")
        })
        .collect();
    for (at, line) in related.iter().rev().take(120).rev() {
        out.push_str(&format!("  {at:>8} {line}\n"));
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The cluster size and mode of the `i`-th seed of a run: mostly small
/// clusters (where DAGs span every node), some up to 50 nodes.
fn shape_of(i: u64) -> (usize, bool) {
    let nodes = match i % 100 {
        0..=11 => 1,
        12..=39 => 2,
        40..=69 => 3,
        70..=84 => 4,
        85..=93 => 5,
        94..=98 => 8,
        _ if i % 2000 == 1999 => 50,
        _ => 16,
    };
    (nodes, i % 5 == 4)
}

/// What a batch of seeds produced.
#[derive(Default)]
struct Batch {
    failures: Vec<SeedResult>,
    dags: usize,
    committed: usize,
    /// Counters summed over the seeds.
    counters: Counters,
    /// Index entries per node at the end of the run phase, summed over seeds.
    index_entries: (f64, f64),
}

impl Batch {
    fn add(&mut self, result: SeedResult) {
        self.dags += result.dags;
        self.committed += result.committed;
        let c = &mut self.counters;
        c.storage_calls += result.counters.storage_calls;
        c.storage_bytes += result.counters.storage_bytes;
        c.crashes += result.counters.crashes;
        c.restarts += result.counters.restarts;
        c.decision_overwrites += result.counters.decision_overwrites;
        c.decision_flips += result.counters.decision_flips;
        for (kind, (n, bytes)) in &result.counters.messages {
            let entry = c.messages.entry(kind).or_default();
            entry.0 += n;
            entry.1 += bytes;
        }
        self.index_entries.0 += result.index_entries.0;
        self.index_entries.1 += result.index_entries.1;
        if !result.violations.is_empty() {
            self.failures.push(result);
        }
    }
}

/// Runs `count` seeds from `base` on every core.
fn run_many(base: u64, count: u64, configure: impl Fn(u64) -> SimConfig + Sync) -> Batch {
    let next = std::sync::atomic::AtomicU64::new(0);
    let batch = Mutex::new(Batch::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let result = run_seed(configure(base.wrapping_add(i)));
                batch.lock().add(result);
            });
        }
    });
    batch.into_inner()
}

/// The CI run: thousands of seeds across cluster sizes, all rules checked.
#[test]
fn simulated_clusters_keep_every_guarantee_under_seeded_faults() {
    let count = env_u64("AFT_SIM_SEEDS").unwrap_or(2000);
    let base = env_u64("AFT_SIM_BASE").unwrap_or_else(rand::random);
    let started = WallInstant::now();
    let Batch {
        failures,
        dags,
        committed,
        ..
    } = run_many(base, count, |seed| {
        let (nodes, anna) = shape_of(seed.wrapping_sub(base));
        SimConfig::for_seed(seed, nodes, anna)
    });
    let took = started.elapsed();
    println!(
        "simulation: {count} seeds from {base} in {took:.1?} ({:.1} seeds/s), {dags} DAGs ({committed} committed), {} failing",
        count as f64 / took.as_secs_f64(),
        failures.len()
    );
    if let Some(first) = failures.first() {
        // AFT_SIM_SHOW=N prints the first N failing seeds (default 3).
        let show = env_u64("AFT_SIM_SHOW").unwrap_or(3) as usize;
        for failure in failures.iter().take(show) {
            println!("{}", report(failure));
        }
        panic!(
            "{} of {count} seeds failed; first: {}",
            failures.len(),
            first.cfg.replay_command()
        );
    }
}

/// Replays one seed (`AFT_SIM_SEED`, `AFT_SIM_NODES`, `AFT_SIM_ANNA`,
/// `AFT_SIM_REGRESSION`) and prints its whole trace. Does nothing without
/// `AFT_SIM_SEED`.
#[test]
fn replay() {
    let Some(seed) = env_u64("AFT_SIM_SEED") else {
        return;
    };
    let nodes = env_u64("AFT_SIM_NODES").unwrap_or(3) as usize;
    let anna = std::env::var("AFT_SIM_ANNA").is_ok_and(|v| v == "1");
    let mut cfg = SimConfig::for_seed(seed, nodes, anna);
    cfg.regression = std::env::var("AFT_SIM_REGRESSION")
        .ok()
        .and_then(|r| regression_named(&r));
    let result = match std::env::var("AFT_SIM_LOG") {
        Ok(path) => log::logged(&path, || run_seed(cfg)).expect("a log file"),
        Err(_) => run_seed(cfg),
    };
    for (at, line) in &result.trace {
        println!("{at:>8} {line}");
    }
    println!(
        "{} DAGs, {} committed, {:?}",
        result.dags, result.committed, result.counters
    );
    assert!(result.violations.is_empty(), "{}", report(&result));
}

fn regression_named(name: &str) -> Option<Regression> {
    [
        Regression::UnpublishedParticipantWrites,
        Regression::RestartCollectsAlone,
        Regression::FailedReadsCommit,
        Regression::CoordinatorIgnoresDeadline,
    ]
    .into_iter()
    .find(|r| format!("{r:?}") == name)
}

/// The same seed gives the same run: the same events at the same virtual
/// times, the same number of seeded choices, storage calls and messages,
/// and the same store at the end. (Found and fixed this way: a value cache
/// that evicted at random, hash-map iteration orders, and a
/// `tokio::sync::watch` that wakes its waiters in a random order.)
#[test]
fn a_seed_replays_exactly() {
    let seeds = [
        (7, 3, false),
        (11, 4, true),
        (23, 2, false),
        (31, 5, false),
        (47, 3, true),
    ];
    for (seed, nodes, anna) in seeds {
        let mut cfg = SimConfig::for_seed(seed, nodes, anna);
        cfg.faults = FaultMix::everything();
        let first = run_seed(cfg.clone());
        let second = run_seed(cfg);
        assert!(
            first.trace.len() > 20,
            "seed {seed}: a run with too little in it: {:?}",
            first.trace
        );
        if let Some(i) = first_difference(&first.trace, &second.trace) {
            let from = i.saturating_sub(5);
            panic!(
                "seed {seed} did not replay exactly; first difference at trace line {i}:\n{:#?}\nvs\n{:#?}\n\
                 (compare two `AFT_SIM_LOG` logs of `{}` to see where)",
                &first.trace[from..(i + 3).min(first.trace.len())],
                &second.trace[from..(i + 3).min(second.trace.len())],
                first.cfg.replay_command()
            );
        }
        assert_eq!(
            format!("{:?}", first.counters),
            format!("{:?}", second.counters),
            "seed {seed}: same events, different work"
        );
        assert_eq!(
            first.store_digest, second.store_digest,
            "seed {seed}: same events, different store at the end"
        );
    }
}

fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    let shorter = a.len().min(b.len());
    (0..shorter)
        .find(|&i| a[i] != b[i])
        .or((a.len() != b.len()).then_some(shorter))
}

/// Runs seeds with `regression` put back until one fails; returns how many it took.
fn seeds_to_find(
    regression: Regression,
    faults: impl Fn(u64) -> FaultMix,
    max: u64,
) -> Option<u64> {
    for i in 0..max {
        let seed = 1000 + i;
        let nodes = 2 + (i % 3) as usize;
        let mut cfg = SimConfig::for_seed(seed, nodes, false);
        cfg.faults = faults(seed);
        cfg.regression = Some(regression);
        let result = run_seed(cfg);
        if !result.violations.is_empty() {
            println!(
                "{regression:?} found by seed {seed} ({} seeds):\n{}",
                i + 1,
                report(&result)
                    .lines()
                    .take(8)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn finds_the_unpublished_participant_writes_bug() {
    let n = seeds_to_find(
        Regression::UnpublishedParticipantWrites,
        |_| FaultMix::default(),
        50,
    );
    assert!(
        n.is_some(),
        "the simulation did not find the bug in 50 seeds"
    );
}

#[test]
fn finds_the_restart_that_collects_alone_bug() {
    let n = seeds_to_find(
        Regression::RestartCollectsAlone,
        |_| FaultMix {
            crashes: true,
            crash_at_failpoint: 0.05,
            ..FaultMix::default()
        },
        200,
    );
    assert!(
        n.is_some(),
        "the simulation did not find the bug in 200 seeds"
    );
}

#[test]
fn finds_the_failed_reads_that_commit_bug() {
    let n = seeds_to_find(
        Regression::FailedReadsCommit,
        |_| FaultMix {
            storage_outages: true,
            storage_errors: 0.01,
            ..FaultMix::default()
        },
        100,
    );
    assert!(
        n.is_some(),
        "the simulation did not find the bug in 100 seeds"
    );
}

/// Anna has no conditional writes: a late commit record can overwrite an
/// abort marker. Measures how often decisions get overwritten and what that
/// breaks, with writes that land within the write horizon (the engine's
/// rule: no violation) and beyond it (the rule's assumption broken).
#[test]
fn without_conditional_writes_decisions_hold_within_the_write_horizon() {
    let seeds = env_u64("AFT_SIM_ANNA_SEEDS").unwrap_or(150);
    let mix = |_: u64| FaultMix {
        crashes: true,
        crash_at_failpoint: 0.05,
        pauses: true,
        storage_stalls: 0.02,
        ..FaultMix::default()
    };
    let mut lines = Vec::new();
    for (label, late, regression) in [
        ("within the horizon", world::timing::WRITE_HORIZON, None),
        (
            "up to 4 x the horizon",
            world::timing::WRITE_HORIZON * 4,
            None,
        ),
        (
            "within the horizon, coordinators ignore the record deadline",
            world::timing::WRITE_HORIZON,
            Some(Regression::CoordinatorIgnoresDeadline),
        ),
    ] {
        let batch = run_many(40_000, seeds, |seed| {
            let mut cfg = SimConfig::for_seed(seed, 2 + (seed % 3) as usize, true);
            cfg.faults = mix(seed);
            cfg.late_write_max = late;
            cfg.regression = regression;
            cfg
        });
        let failures = &batch.failures;
        let broken: usize = failures.iter().map(|f| f.violations.len()).sum();
        lines.push(format!(
            "{label}: {seeds} seeds, {} DAGs ({} committed), {} decision keys overwritten ({} changing the decision), {} seeds with violations ({broken} violations){}",
            batch.dags,
            batch.committed,
            batch.counters.decision_overwrites,
            batch.counters.decision_flips,
            failures.len(),
            failures
                .first()
                .map(|f| format!("; e.g. {}", f.violations[0]))
                .unwrap_or_default()
        ));
        if label == "within the horizon" {
            assert!(failures.is_empty(), "{}", report(&failures[0]));
        }
    }
    println!("anna decisions:\n  {}", lines.join("\n  "));
}

/// Scale on paper: fault-free runs of 3 to 50 nodes, reporting per
/// committed DAG the peer messages (by kind) and storage calls, heartbeats
/// per node and second, and the metadata each node holds. Prints a table
/// (docs/ARCHITECTURE.md quotes it):
/// `cargo test --release -p aft-core --test sim scale -- --ignored --nocapture`.
#[test]
#[ignore = "minutes long at 50 nodes: run explicitly (see the doc comment)"]
fn scale_on_paper() {
    let mut rows = Vec::new();
    for nodes in [3usize, 5, 10, 20, 50] {
        let seeds = 3;
        let batch = run_many(7_000 + nodes as u64 * 100, seeds, |seed| {
            let mut cfg = SimConfig::for_seed(seed, nodes, false);
            cfg.faults = FaultMix::default();
            cfg.executors = 4;
            cfg.keys = 8;
            cfg.run = Duration::from_secs(5);
            cfg
        });
        assert!(batch.failures.is_empty(), "{}", report(&batch.failures[0]));
        let per_dag = |kinds: &[&str]| -> f64 {
            let n: u64 = kinds
                .iter()
                .filter_map(|k| batch.counters.messages.get(k))
                .map(|(n, _)| *n)
                .sum();
            n as f64 / batch.committed.max(1) as f64
        };
        let bytes_per_dag = |kinds: &[&str]| -> f64 {
            let b: u64 = kinds
                .iter()
                .filter_map(|k| batch.counters.messages.get(k))
                .map(|(_, b)| *b)
                .sum();
            b as f64 / batch.committed.max(1) as f64
        };
        // Heartbeats and acks over every node's whole life (setup, run, settle).
        let life = Duration::from_secs(3) + Duration::from_secs(5) + Duration::from_secs(48);
        let heartbeats = per_dag(&["heartbeat", "heartbeat_ack"]) * batch.committed as f64
            / (nodes as f64 * life.as_secs_f64() * seeds as f64);
        let (versions, txns) = (
            batch.index_entries.0 / seeds as f64,
            batch.index_entries.1 / seeds as f64,
        );
        rows.push(format!(
            "| {nodes} | {:.0} | {:.1} ({:.0} B) | {:.1} | {:.1} | {:.1} ({:.0} B) | {:.1} | {:.1} | {:.0} versions, {:.0} commits |",
            batch.committed as f64 / seeds as f64,
            per_dag(&["gossip"]),
            bytes_per_dag(&["gossip"]),
            per_dag(&["prepare", "decide"]),
            per_dag(&["fetch_transaction", "read_buffered"]),
            per_dag(&["digest_request", "digest_commits"]),
            bytes_per_dag(&["digest_commits"]),
            heartbeats,
            batch.counters.storage_calls as f64 / batch.committed.max(1) as f64,
            versions,
            txns,
        ));
    }
    println!(
        "| nodes | DAGs committed per run | gossip msgs / DAG | prepare+decide / DAG | fetch+remote reads / DAG | anti-entropy msgs / DAG | heartbeats / node / s | storage calls / DAG | index per node |\n|---|---|---|---|---|---|---|---|---|\n{}",
        rows.join("\n")
    );
}
