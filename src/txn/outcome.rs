//! Outcomes of finished transactions, remembered so retried commits and
//! aborts get the same answer (idempotence).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed at this timestamp (its commit record is durable).
    Committed {
        /// Commit timestamp.
        timestamp: u64,
    },
    /// Aborted; nothing of it is or will become visible.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Not known yet: storage failed at the commit point, so it is not
    /// known whether the commit record landed. The node keeps settling it
    /// (committed if the record landed, otherwise fenced with an abort
    /// marker); a retried commit learns the result. Never recorded.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Whether this is a commit.
    pub fn is_committed(&self) -> bool {
        matches!(self, Outcome::Committed { .. })
    }
}

/// A bounded log of outcomes: the oldest are forgotten first.
#[derive(Debug)]
pub struct OutcomeLog {
    map: BTreeMap<Arc<str>, Outcome>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl OutcomeLog {
    /// A log remembering at most `capacity` outcomes.
    pub fn new(capacity: usize) -> Self {
        OutcomeLog {
            map: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The remembered outcome of `tid`.
    pub fn get(&self, tid: &str) -> Option<Outcome> {
        self.map.get(tid).cloned()
    }

    /// Remembers an outcome (the first one recorded for a tid wins; an
    /// unknown outcome is not remembered).
    pub fn record(&mut self, tid: Arc<str>, outcome: Outcome) -> Outcome {
        if let Some(existing) = self.map.get(&tid) {
            return existing.clone();
        }
        if matches!(outcome, Outcome::Unknown { .. }) {
            return outcome;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(Arc::clone(&tid));
        self.map.insert(tid, outcome.clone());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outcome_wins_and_oldest_is_forgotten() {
        let mut log = OutcomeLog::new(2);
        log.record("a".into(), Outcome::Committed { timestamp: 1 });
        let again = log.record("a".into(), Outcome::Aborted { reason: "x".into() });
        assert_eq!(again, Outcome::Committed { timestamp: 1 });
        log.record("b".into(), Outcome::Aborted { reason: "y".into() });
        log.record("c".into(), Outcome::Aborted { reason: "z".into() });
        assert_eq!(log.get("a"), None);
        assert!(log.get("b").is_some() && log.get("c").is_some());
    }
}
