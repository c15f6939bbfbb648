//! Time for the engine: the wall clock it reads, and commit timestamps.
//!
//! The engine reads wall time and draws randomness only through [`Clock`],
//! so a simulation can give every node its own clock (with skew and jumps)
//! and replay a run exactly. Monotonic time (leases, timeouts) comes from
//! `tokio::time`, which a simulation drives with a paused runtime.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The engine's source of wall time and of the random bits in transaction ids.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> u64;

    /// Random bits for a new transaction id (80 bits are used).
    fn entropy(&self) -> u128 {
        rand::random()
    }
}

/// The operating system's clock and random numbers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        now_micros()
    }
}

/// Microseconds since the Unix epoch, from the operating system.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A hybrid clock: each timestamp is `max(now, last + 1)` in microseconds
/// since the Unix epoch, so timestamps from one node never repeat or go
/// backwards, and [`HybridClock::observe`] keeps them ahead of timestamps
/// seen from other nodes.
#[derive(Debug)]
pub struct HybridClock {
    source: Arc<dyn Clock>,
    last: AtomicU64,
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HybridClock {
    /// A clock over the operating system's wall clock.
    pub fn new() -> Self {
        Self::with_source(Arc::new(SystemClock))
    }

    /// A clock over `source`.
    pub fn with_source(source: Arc<dyn Clock>) -> Self {
        HybridClock {
            source,
            last: AtomicU64::new(0),
        }
    }

    /// The underlying wall clock.
    pub fn source(&self) -> &Arc<dyn Clock> {
        &self.source
    }

    /// Wall time now (microseconds), without advancing the hybrid clock.
    pub fn wall_micros(&self) -> u64 {
        self.source.now_micros()
    }

    /// The next timestamp: greater than every timestamp returned or observed before.
    pub fn next(&self) -> u64 {
        let now = self.source.now_micros();
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

    /// A new transaction id: a UUID v7 (its time from this clock, so ids
    /// sort by start time and reveal their age; the rest random).
    pub fn new_tid(&self) -> String {
        let millis = self.source.now_micros() / 1000;
        let random = self.source.entropy().to_le_bytes();
        let mut bits = [0u8; 10];
        bits.copy_from_slice(&random[..10]);
        uuid::Builder::from_unix_timestamp_millis(millis, &bits)
            .into_uuid()
            .to_string()
    }

    /// The start time (microseconds) a transaction id of [`HybridClock::new_tid`]
    /// carries; `None` for ids that are not UUID v7.
    pub fn tid_time_micros(tid: &str) -> Option<u64> {
        let (secs, nanos) = uuid::Uuid::parse_str(tid).ok()?.get_timestamp()?.to_unix();
        Some(secs.saturating_mul(1_000_000) + u64::from(nanos) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_micros(&self) -> u64 {
            self.0
        }
        fn entropy(&self) -> u128 {
            7
        }
    }

    #[test]
    fn strictly_increasing_and_ahead_of_observed() {
        let clock = HybridClock::new();
        let a = clock.next();
        let b = clock.next();
        assert!(b > a);
        clock.observe(b + 1_000_000_000);
        assert!(clock.next() > b + 1_000_000_000);
    }

    #[test]
    fn ids_carry_the_clock_time_and_are_reproducible() {
        let clock = HybridClock::with_source(Arc::new(Fixed(1_700_000_000_123_456)));
        let tid = clock.new_tid();
        assert_eq!(tid, clock.new_tid(), "same clock and entropy, same id");
        assert_eq!(
            HybridClock::tid_time_micros(&tid),
            Some(1_700_000_000_123_000)
        );
        assert_eq!(HybridClock::tid_time_micros("not-a-uuid"), None);
    }
}
