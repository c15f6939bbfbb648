//! The fault schedule of a run: seeded, aimed at whatever is in flight.
//! Crashes at failpoints and between storage or peer calls are decided
//! where they happen (see `world.rs`); this task adds crashes at random
//! moments, pauses longer than every timeout, partitions that heal,
//! storage outages and clock jumps.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::world::timing::*;
use super::world::World;

/// Injects faults until `until`; the caller heals afterwards.
pub async fn inject(world: Arc<World>, until: Instant) {
    let mix = world.cfg.faults.clone();
    let mut kinds: Vec<&'static str> = Vec::new();
    if mix.crashes {
        kinds.push("crash");
    }
    if mix.pauses {
        kinds.push("pause");
    }
    if mix.partitions {
        kinds.push("partition");
    }
    if mix.storage_outages {
        kinds.push("storage outage");
    }
    if mix.clock_jumps {
        kinds.push("clock jump");
    }
    if kinds.is_empty() {
        return;
    }
    let n = world.nodes.len();
    while Instant::now() < until {
        sleep(world.between(Duration::from_millis(100), Duration::from_millis(1500))).await;
        if Instant::now() >= until {
            break;
        }
        match kinds[world.pick(kinds.len())] {
            "crash" => {
                let node = world.pick(n);
                world.crash(node, "at a random moment");
            }
            "pause" => {
                let node = world.pick(n);
                let how_long = world.between(DEAD_AFTER, DECISION_TIMEOUT * 3);
                world.pause(node, how_long);
            }
            "partition" => {
                let isolated: Vec<usize> = (0..n).filter(|_| world.roll(0.4)).collect();
                if isolated.is_empty() || isolated.len() == n {
                    continue;
                }
                let how_long = world.between(Duration::from_millis(300), Duration::from_secs(6));
                let links: Vec<(usize, usize)> = isolated
                    .iter()
                    .flat_map(|a| {
                        (0..n)
                            .filter(|b| !isolated.contains(b))
                            .flat_map(move |b| [(*a, b), (b, *a)])
                    })
                    .collect();
                world.trace(format!(
                    "partition: nodes {:?} cut off for {how_long:?}",
                    isolated.iter().map(|i| i + 1).collect::<Vec<_>>()
                ));
                world.faults.lock().cut.extend(links.iter().copied());
                let now = Instant::now();
                world.excuse(now, now + how_long + GC_MARGIN);
                let w = Arc::clone(&world);
                tokio::spawn(async move {
                    sleep(how_long).await;
                    let mut faults = w.faults.lock();
                    for link in &links {
                        faults.cut.remove(link);
                    }
                    drop(faults);
                    w.trace("partition healed");
                });
            }
            "storage outage" => {
                let how_long = world.between(Duration::from_millis(200), Duration::from_secs(3));
                world.trace(format!("storage down for {how_long:?}"));
                world.faults.lock().storage_down = true;
                let w = Arc::clone(&world);
                tokio::spawn(async move {
                    sleep(how_long).await;
                    w.faults.lock().storage_down = false;
                    w.trace("storage back");
                });
            }
            _ => {
                let node = world.pick(n);
                let forward = world.roll(0.7);
                let by = world.between(Duration::from_millis(100), Duration::from_secs(20));
                let micros = by.as_micros() as i64;
                world.nodes[node]
                    .clock
                    .jump(if forward { micros } else { -micros });
                world.trace(format!(
                    "node {} clock jumps {}{by:?}",
                    node + 1,
                    if forward { "+" } else { "-" }
                ));
                let now = Instant::now();
                world.excuse(now.checked_sub(by).unwrap_or(now), now + by + GC_MARGIN);
            }
        }
    }
}
