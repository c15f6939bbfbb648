//! Commit timestamps: wall-clock microseconds, strictly increasing per node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid clock: each timestamp is `max(now, last + 1)` in microseconds
/// since the Unix epoch, so timestamps from one node never repeat or go
/// backwards, and [`HybridClock::observe`] keeps them ahead of timestamps
/// seen from other nodes.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl HybridClock {
    /// A clock starting from the current wall time.
    pub fn new() -> Self {
        HybridClock {
            last: AtomicU64::new(0),
        }
    }

    /// The next timestamp: greater than every timestamp returned or observed before.
    pub fn next(&self) -> u64 {
        let now = now_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Records a timestamp seen elsewhere, so later ones are greater.
    pub fn observe(&self, timestamp: u64) {
        self.last.fetch_max(timestamp, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_ahead_of_observed() {
        let clock = HybridClock::new();
        let a = clock.next();
        let b = clock.next();
        assert!(b > a);
        clock.observe(b + 1_000_000_000);
        assert!(clock.next() > b + 1_000_000_000);
    }
}
