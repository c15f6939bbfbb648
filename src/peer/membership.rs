//! Membership and failure detection.
//!
//! Nodes are named by their address. A node is alive while it has been
//! heard from (a heartbeat, its acknowledgement, or any request) within
//! `dead_after`; a node that announced it is leaving is gone at once. Nodes
//! learn about each other from static seeds, DNS discovery, and the member
//! lists carried in heartbeats. A restarted node simply heartbeats again.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;

#[derive(Debug, Clone)]
struct Member {
    last_seen: Option<Instant>,
    left: bool,
    /// The GC watermark from its latest heartbeat (`None` before the first).
    gc_watermark: Option<u64>,
}

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct Membership {
    me: String,
    /// By address (ordered: every listing comes in the same order).
    members: Mutex<BTreeMap<String, Member>>,
    dead_after: Duration,
    started: Instant,
}

impl Membership {
    /// A view with `seeds` as initial (not yet heard from) members.
    pub fn new(me: &str, seeds: &[String], dead_after: Duration) -> Self {
        let membership = Membership {
            me: me.to_string(),
            members: Mutex::new(BTreeMap::new()),
            dead_after,
            started: Instant::now(),
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
                    gc_watermark: None,
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
            gc_watermark: None,
        });
        let was_alive = !member.left
            && member
                .last_seen
                .is_some_and(|t| t.elapsed() < self.dead_after);
        member.last_seen = Some(Instant::now());
        member.left = false;
        if let Some(w) = gc_watermark {
            member.gc_watermark = Some(w);
        }
        !was_alive
    }

    /// Records that `node` left gracefully.
    pub fn mark_left(&self, node: &str) {
        if let Some(member) = self.members.lock().get_mut(node) {
            member.left = true;
        }
    }

    /// Whether `node` is this node or one this node has heard of.
    pub fn is_member(&self, node: &str) -> bool {
        node == self.me() || self.members.lock().contains_key(node)
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

    /// The smallest GC watermark of the other nodes, if this node knows it:
    /// `Some(None)` when no other node is alive, `None` while some node's
    /// watermark is unknown: an alive node that has not sent a heartbeat
    /// yet, or a seed not heard from since this node started (for less than
    /// `dead_after`: after that it is presumed down). A node silent for
    /// `dead_after` or gone is left out: its running transactions may lose
    /// versions they need and abort (never read wrong values).
    pub fn peer_watermark(&self) -> Option<Option<u64>> {
        let starting = self.started.elapsed() < self.dead_after;
        let mut lowest: Option<u64> = None;
        for member in self.members.lock().values() {
            if member.left {
                continue;
            }
            match member.last_seen {
                Some(seen) if seen.elapsed() < self.dead_after => {
                    let w = member.gc_watermark?;
                    lowest = Some(lowest.map_or(w, |l| l.min(w)));
                }
                Some(_) => {}
                None if starting => return None,
                None => {}
            }
        }
        Some(lowest)
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
        assert_eq!(m.peer_watermark(), Some(Some(5)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.is_down("b"));
        assert!(m.observe("b", None), "came back");
        m.mark_left("b");
        assert!(m.is_down("b"));
        assert!(m.alive().is_empty());
    }

    #[test]
    fn the_watermark_is_unknown_until_every_peer_has_spoken_or_is_presumed_down() {
        let m = Membership::new("a", &["b".into(), "c".into()], Duration::from_millis(40));
        assert_eq!(m.peer_watermark(), None, "b and c not heard from yet");
        m.observe("b", None);
        assert_eq!(m.peer_watermark(), None, "b alive, but no heartbeat yet");
        m.observe("b", Some(7));
        assert_eq!(m.peer_watermark(), None, "c not heard from yet");
        m.observe("c", Some(9));
        assert_eq!(m.peer_watermark(), Some(Some(7)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(m.peer_watermark(), Some(None), "both silent: presumed down");
        let late = Membership::new("a", &["never".into()], Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(
            late.peer_watermark(),
            Some(None),
            "a seed that never answers is presumed down"
        );
    }
}
