//! Membership and failure detection.
//!
//! Nodes are named by their address. A node is alive while it has been
//! heard from (a heartbeat, its acknowledgement, or any request) within
//! `dead_after`; a node that announced it is leaving is gone at once. Nodes
//! learn about each other from static seeds, DNS discovery, and the member
//! lists carried in heartbeats. A restarted node simply heartbeats again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug, Clone)]
struct Member {
    last_seen: Option<Instant>,
    left: bool,
    gc_watermark: u64,
}

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct Membership {
    me: String,
    members: Mutex<HashMap<String, Member>>,
    dead_after: Duration,
}

impl Membership {
    /// A view with `seeds` as initial (not yet heard from) members.
    pub fn new(me: &str, seeds: &[String], dead_after: Duration) -> Self {
        let membership = Membership {
            me: me.to_string(),
            members: Mutex::new(HashMap::new()),
            dead_after,
        };
        membership.merge(seeds);
        membership
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Adds nodes not known yet (never this node).
    pub fn merge(&self, nodes: &[String]) {
        let mut members = self.members.lock();
        for node in nodes {
            if node != &self.me && !node.is_empty() {
                members.entry(node.clone()).or_insert(Member {
                    last_seen: None,
                    left: false,
                    gc_watermark: 0,
                });
            }
        }
    }

    /// Records that `node` was heard from; returns true if it was not alive
    /// before (it joined, rejoined, or came back from a partition).
    pub fn observe(&self, node: &str, gc_watermark: Option<u64>) -> bool {
        if node == self.me || node.is_empty() {
            return false;
        }
        let mut members = self.members.lock();
        let member = members.entry(node.to_string()).or_insert(Member {
            last_seen: None,
            left: false,
            gc_watermark: 0,
        });
        let was_alive = !member.left
            && member
                .last_seen
                .is_some_and(|t| t.elapsed() < self.dead_after);
        member.last_seen = Some(Instant::now());
        member.left = false;
        if let Some(w) = gc_watermark {
            member.gc_watermark = w;
        }
        !was_alive
    }

    /// Records that `node` left gracefully.
    pub fn mark_left(&self, node: &str) {
        if let Some(member) = self.members.lock().get_mut(node) {
            member.left = true;
        }
    }

    /// Every other node known (alive or not).
    pub fn known(&self) -> Vec<String> {
        self.members.lock().keys().cloned().collect()
    }

    /// Every other node alive now.
    pub fn alive(&self) -> Vec<String> {
        self.members
            .lock()
            .iter()
            .filter(|(_, m)| !m.left && m.last_seen.is_some_and(|t| t.elapsed() < self.dead_after))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether `node` is known to be down: it left, or it was heard from
    /// once and then not within `dead_after`. Never-heard-from nodes are not
    /// "down" (a request to them is attempted and times out).
    pub fn is_down(&self, node: &str) -> bool {
        self.members
            .lock()
            .get(node)
            .is_some_and(|m| m.left || m.last_seen.is_some_and(|t| t.elapsed() >= self.dead_after))
    }

    /// The smallest GC watermark advertised by the alive nodes (`None` if no node is alive).
    pub fn min_alive_watermark(&self) -> Option<u64> {
        self.members
            .lock()
            .values()
            .filter(|m| !m.left && m.last_seen.is_some_and(|t| t.elapsed() < self.dead_after))
            .map(|m| m.gc_watermark)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_die_after_silence_and_come_back() {
        let m = Membership::new("a", &["b".into(), "a".into()], Duration::from_millis(30));
        assert_eq!(m.known(), vec!["b".to_string()]);
        assert!(m.alive().is_empty());
        assert!(!m.is_down("b"), "never heard from is not down");
        assert!(m.observe("b", Some(5)));
        assert!(!m.observe("b", None), "already alive");
        assert_eq!(m.alive(), vec!["b".to_string()]);
        assert_eq!(m.min_alive_watermark(), Some(5));
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.is_down("b"));
        assert!(m.observe("b", None), "came back");
        m.mark_left("b");
        assert!(m.is_down("b"));
        assert!(m.alive().is_empty());
    }
}
