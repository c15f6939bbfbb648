//! Simulated wall clocks: one per node, driven by the runtime's paused
//! (virtual) time, each with its own skew, which faults can make jump.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aft::meta::Clock;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::RngExt;
use tokio::time::Instant;

/// Virtual wall time starts here (microseconds since the Unix epoch), so
/// transaction ids and timestamps are the same in every replay.
pub const EPOCH_MICROS: u64 = 1_800_000_000_000_000;

/// A node's clock: the virtual time since the run started, plus this
/// node's offset (skew, then any jumps).
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    offset_micros: AtomicI64,
    /// The largest offset this clock ever had.
    max_offset_micros: AtomicI64,
    entropy: Mutex<StdRng>,
}

impl SimClock {
    /// A clock `skew_micros` off the others, drawing id entropy from `rng`.
    pub fn new(start: Instant, skew_micros: i64, rng: StdRng) -> Arc<SimClock> {
        Arc::new(SimClock {
            start,
            offset_micros: AtomicI64::new(skew_micros),
            max_offset_micros: AtomicI64::new(skew_micros),
            entropy: Mutex::new(rng),
        })
    }

    /// Moves this clock by `micros` (a jump; negative goes back).
    pub fn jump(&self, micros: i64) {
        let now = self.offset_micros.fetch_add(micros, Ordering::Relaxed) + micros;
        self.max_offset_micros.fetch_max(now, Ordering::Relaxed);
    }

    /// The largest offset this clock ever had: how far ahead of virtual
    /// time the timestamps it issued can be.
    pub fn max_offset_micros(&self) -> i64 {
        self.max_offset_micros.load(Ordering::Relaxed)
    }

    /// The current offset from virtual time.
    pub fn offset_micros(&self) -> i64 {
        self.offset_micros.load(Ordering::Relaxed)
    }
}

impl Clock for SimClock {
    fn now_micros(&self) -> u64 {
        let elapsed = Instant::now().duration_since(self.start).as_micros() as i64;
        let now = EPOCH_MICROS as i64 + elapsed + self.offset_micros.load(Ordering::Relaxed);
        now.max(0) as u64
    }

    fn entropy(&self) -> u128 {
        self.entropy.lock().random()
    }
}
