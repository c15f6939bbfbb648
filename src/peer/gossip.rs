//! Commit-metadata gossip and anti-entropy.
//!
//! - Push: every commit made on this node is sent to every alive peer as
//!   soon as the gossip task sees it; commits that arrive together go in one
//!   batch (`GossipCommits`). Best effort: a lost batch is repaired below.
//! - Pull (anti-entropy): every `digest_interval`, and at once when a node
//!   joins or comes back, this node asks a peer for every commit newer than
//!   what it last got from that peer (minus a margin for clock skew). A node
//!   that was partitioned or restarted therefore misses no commit for good.
//! - Storage: every `storage_scan_interval` the commit records in storage are
//!   scanned for commits no peer told us about (e.g. coordinator died right
//!   after its commit point).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::debug;

use super::codec::{commit_from_proto, commit_to_proto};
use super::membership::Membership;
use super::transport::Transport;
use crate::meta::{now_micros, CommitMeta};
use crate::proto::peer::{peer_envelope::Body, DigestRequest, GossipCommits};
use crate::txn::Engine;

/// Most commits in one gossip message.
const BATCH: usize = 512;
/// Digest requests look this far back before the last commit seen (clock skew).
const SKEW_MARGIN_MICROS: u64 = 10_000_000;

/// Pushes this node's commits to every alive peer.
pub async fn push_commits(
    transport: Transport,
    membership: Arc<Membership>,
    mut feed: UnboundedReceiver<CommitMeta>,
) {
    while let Some(first) = feed.recv().await {
        let mut batch = vec![commit_to_proto(&first)];
        while batch.len() < BATCH {
            match feed.try_recv() {
                Ok(meta) => batch.push(commit_to_proto(&meta)),
                Err(_) => break,
            }
        }
        for node in membership.alive() {
            let body = Body::GossipCommits(GossipCommits {
                commits: batch.clone(),
            });
            if let Err(e) = transport.notify(&node, body) {
                debug!(peer = %node, error = %e, "gossip not sent");
            }
        }
    }
}

/// Per-peer anti-entropy progress: the newest commit timestamp received from each.
#[derive(Default)]
pub struct DigestProgress {
    seen: Mutex<BTreeMap<String, u64>>,
}

impl DigestProgress {
    /// Forgets a peer's progress (it restarted: ask it for everything).
    pub fn reset(&self, node: &str) {
        self.seen.lock().remove(node);
    }
}

/// Asks `node` for the commits this node may have missed, and installs them.
pub async fn exchange_digest(
    engine: &Engine,
    transport: &Transport,
    progress: &DigestProgress,
    node: &str,
    timeout: Duration,
) -> usize {
    let since = progress
        .seen
        .lock()
        .get(node)
        .map_or(0, |ts| ts.saturating_sub(SKEW_MARGIN_MICROS));
    let body = Body::DigestRequest(DigestRequest {
        since_timestamp: since,
    });
    let Ok(Body::GossipCommits(batch)) = transport.request(node, body, timeout).await else {
        return 0;
    };
    let metas: Vec<CommitMeta> = batch.commits.iter().filter_map(commit_from_proto).collect();
    let newest = metas
        .iter()
        .map(|m| m.timestamp)
        .max()
        .unwrap_or(since)
        .max(since);
    let learned = engine.learn_commits(&metas);
    // Never move the mark past "now - margin": commits of concurrent
    // transactions may still be arriving with older timestamps.
    let mark = newest.min(now_micros());
    progress.seen.lock().insert(node.to_string(), mark);
    if learned > 0 {
        debug!(peer = %node, learned, "anti-entropy installed missed commits");
    }
    learned
}
