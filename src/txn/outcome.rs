//! Outcomes of finished transactions, remembered so retried commits and
//! aborts get the same answer (idempotence).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::TxnError;

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
        cause: AbortCause,
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

/// Why a transaction aborted. Kept typed from where it happens to whoever
/// answers the client, so a front can answer precisely (an unknown
/// transaction is not a storage failure) and a log line names the cause.
#[derive(Debug, Clone)]
pub enum AbortCause {
    /// The client asked for the abort.
    Requested,
    /// No transaction with this id is known here, and none committed.
    UnknownTransaction,
    /// An abort arrived while the transaction's commit was under way (the
    /// commit's outcome stands; this answer only says the abort did not).
    CommitInProgress,
    /// The coordinator of a cross-node commit decided to abort.
    ByCoordinator,
    /// No request came for this long (the lease), so it was abandoned.
    LeaseExpired(Duration),
    /// A read or write of it could not be answered truthfully (the
    /// transaction was doomed then; the text says which and why).
    Doomed(String),
    /// A participant voted no or could not be reached.
    Participant(Arc<TxnError>),
    /// Storage failed before the commit point.
    Storage(Arc<TxnError>),
    /// A participant (or a sweep) gave up waiting and claimed the decision
    /// key with an abort marker first.
    Fenced,
    /// The commit took so long before its commit point that participants
    /// may give up on it; it aborted rather than race them.
    TooSlow(Duration),
    /// The reads of the DAG's branches are not read-atomic together.
    Inconsistent(String),
}

impl AbortCause {
    /// A participant's refusal or failure.
    pub fn participant(error: TxnError) -> Self {
        AbortCause::Participant(Arc::new(error))
    }

    /// A storage failure.
    pub fn storage(error: TxnError) -> Self {
        AbortCause::Storage(Arc::new(error))
    }
}

impl fmt::Display for AbortCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortCause::Requested => write!(f, "aborted by the client"),
            AbortCause::UnknownTransaction => write!(f, "unknown transaction"),
            AbortCause::CommitInProgress => write!(f, "its commit is in progress"),
            AbortCause::ByCoordinator => write!(f, "aborted by the coordinator"),
            AbortCause::LeaseExpired(lease) => write!(f, "lease of {lease:?} expired"),
            AbortCause::Doomed(why) | AbortCause::Inconsistent(why) => write!(f, "{why}"),
            AbortCause::Participant(e) | AbortCause::Storage(e) => write!(f, "{e}"),
            AbortCause::Fenced => {
                write!(f, "a participant gave up waiting and aborted the commit")
            }
            AbortCause::TooSlow(took) => write!(
                f,
                "the commit took {took:?} before its commit point; aborted rather than race participants"
            ),
        }
    }
}

/// Causes compare by kind and text (errors inside are not comparable).
impl PartialEq for AbortCause {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for AbortCause {}

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
        let again = log.record(
            "a".into(),
            Outcome::Aborted {
                cause: AbortCause::Doomed("x".into()),
            },
        );
        assert_eq!(again, Outcome::Committed { timestamp: 1 });
        log.record(
            "b".into(),
            Outcome::Aborted {
                cause: AbortCause::Doomed("y".into()),
            },
        );
        log.record(
            "c".into(),
            Outcome::Aborted {
                cause: AbortCause::Doomed("z".into()),
            },
        );
        assert_eq!(log.get("a"), None);
        assert!(log.get("b").is_some() && log.get("c").is_some());
    }
}
