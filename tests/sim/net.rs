//! The simulated network between nodes: the engine's `Remote` over it, and
//! the peer layer's background traffic (commit gossip, heartbeats with GC
//! watermarks, anti-entropy). Messages take seeded latencies (so they
//! reorder), may be lost or duplicated, and do not cross cut links; a
//! request to a node that is down or cut off times out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use aft::meta::CommitMeta;
use aft::peer::codec::{commit_to_proto, state_to_proto};
use aft::txn::{
    Engine, PeerFailure, PrepareRequest, PreparedVote, Remote, TxnError, UpstreamState,
};
use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout_at, Instant};

use super::world::timing::*;
use super::world::World;

/// The engine's view of other nodes, for one node incarnation.
#[derive(Debug)]
pub struct SimRemote {
    pub world: Weak<World>,
    pub node: usize,
    pub incarnation: u64,
}

fn peer_error(tid: &str, peer: &str, failure: PeerFailure) -> TxnError {
    TxnError::Peer {
        tid: tid.to_string(),
        peer: peer.to_string(),
        failure,
    }
}

impl SimRemote {
    /// A request from this node to `to_addr`, answered by `handler` on the
    /// target's engine.
    async fn call<T, F, Fut>(
        &self,
        to_addr: &str,
        kind: &'static str,
        bytes: usize,
        timeout: Duration,
        tid: &str,
        handler: F,
    ) -> Result<T, TxnError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Engine>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T, TxnError>> + Send + 'static,
    {
        let Some(world) = self.world.upgrade() else {
            return Err(peer_error(
                tid,
                to_addr,
                PeerFailure::Transport("the simulation is over".into()),
            ));
        };
        let Some(to) = world.node_index(to_addr) else {
            return Err(peer_error(
                tid,
                to_addr,
                PeerFailure::Transport("unknown node".into()),
            ));
        };
        let from = self.node;
        world.gate(from).await;
        if world.crash_at_peer_call(from, self.incarnation, "before a peer call") {
            std::future::pending::<()>().await;
        }
        if world.membership(from).is_some_and(|m| m.is_down(to_addr)) {
            return Err(peer_error(tid, to_addr, PeerFailure::Down));
        }
        let deadline = Instant::now() + timeout;
        count(&world, kind, bytes);
        let lost = world.roll(world.cfg.faults.message_loss);
        if lost || !world.link_up(from, to) {
            return world.peer_timeout(deadline, tid, to_addr).await;
        }
        sleep(world.message_latency()).await;
        let copies = if world.roll(world.cfg.faults.message_dup) {
            2
        } else {
            1
        };
        let mut answer = None;
        for copy in 0..copies {
            let (w, handler) = (Arc::clone(&world), handler.clone());
            let sender = world.nodes[from].address.clone();
            let handle = world.spawn_on(to, async move {
                w.gate(to).await;
                let (engine, _) = w.engine(to)?;
                if let Some(m) = w.membership(to) {
                    m.observe(&sender, None);
                }
                Some(handler(engine).await)
            });
            if copy == 0 {
                answer = Some(handle);
            }
        }
        let Some(answer) = answer else {
            return world.peer_timeout(deadline, tid, to_addr).await;
        };
        let result = match timeout_at(deadline, answer).await {
            Ok(Ok(Some(result))) => result,
            // The target is down, crashed while answering, or too slow.
            _ => return world.peer_timeout(deadline, tid, to_addr).await,
        };
        count(&world, "reply", 16);
        let lost = world.roll(world.cfg.faults.message_loss);
        if lost || !world.link_up(to, from) {
            return world.peer_timeout(deadline, tid, to_addr).await;
        }
        let back = world.message_latency();
        if Instant::now() + back > deadline {
            return world.peer_timeout(deadline, tid, to_addr).await;
        }
        sleep(back).await;
        world.gate(from).await;
        if world.crash_at_peer_call(from, self.incarnation, "after a peer call") {
            std::future::pending::<()>().await;
        }
        result.map_err(|e| peer_error(tid, to_addr, PeerFailure::Transport(e.to_string())))
    }
}

fn count(world: &World, kind: &'static str, bytes: usize) {
    let mut c = world.counters.lock();
    let entry = c.messages.entry(kind).or_default();
    entry.0 += 1;
    entry.1 += bytes as u64;
}

#[async_trait]
impl Remote for SimRemote {
    async fn fetch_transaction(
        &self,
        node: &str,
        tid: &str,
        incarnation: u64,
    ) -> Result<UpstreamState, TxnError> {
        let t = tid.to_string();
        let me = self
            .world
            .upgrade()
            .map(|w| w.nodes[self.node].address.clone())
            .unwrap_or_default();
        let state = self
            .call(
                node,
                "fetch_transaction",
                tid.len() + 16,
                PEER_TIMEOUT,
                tid,
                move |e| {
                    let (t, me) = (t.clone(), me.clone());
                    async move { e.export_state(&t, Some((me, incarnation))) }
                },
            )
            .await?;
        if let Some(world) = self.world.upgrade() {
            count(
                &world,
                "transaction_state",
                state_to_proto(tid, &state).encoded_len(),
            );
        }
        Ok(state)
    }

    async fn read_buffered(
        &self,
        node: &str,
        tid: &str,
        key: &str,
    ) -> Result<Option<Bytes>, TxnError> {
        let (t, k) = (tid.to_string(), key.to_string());
        self.call(
            node,
            "read_buffered",
            tid.len() + key.len() + 8,
            PEER_TIMEOUT,
            tid,
            move |e| {
                let (t, k) = (t.clone(), k.clone());
                async move { e.read_buffered(&t, &k) }
            },
        )
        .await
    }

    async fn prepare(
        &self,
        node: &str,
        tid: &str,
        request: &PrepareRequest,
    ) -> Result<PreparedVote, TxnError> {
        let (t, r) = (tid.to_string(), request.clone());
        let bytes = tid.len()
            + 24
            + request.exclude.iter().map(String::len).sum::<usize>()
            + request
                .coordinator_values
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        self.call(node, "prepare", bytes, PREPARE_TIMEOUT, tid, move |e| {
            let (t, r) = (t.clone(), r.clone());
            async move { e.prepare(&t, r).await }
        })
        .await
    }

    async fn decide(
        &self,
        node: &str,
        tid: &str,
        commit: Option<&CommitMeta>,
    ) -> Result<(), TxnError> {
        let (t, c) = (tid.to_string(), commit.cloned());
        let bytes = tid.len() + commit.map_or(0, |m| commit_to_proto(m).encoded_len());
        self.call(node, "decide", bytes, PEER_TIMEOUT, tid, move |e| {
            let (t, c) = (t.clone(), c.clone());
            async move {
                e.decide(&t, c).await;
                Ok(())
            }
        })
        .await
    }
}

/// Sends a one-way message from `from` to `to`; `deliver` runs on the
/// target if it arrives.
fn send<F, Fut>(
    world: &Arc<World>,
    from: usize,
    to: usize,
    kind: &'static str,
    bytes: usize,
    deliver: F,
) where
    F: FnOnce(Arc<World>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    count(world, kind, bytes);
    if world.roll(world.cfg.faults.message_loss) || !world.link_up(from, to) {
        return;
    }
    let copies = if world.roll(world.cfg.faults.message_dup) {
        2
    } else {
        1
    };
    for _ in 0..copies {
        let latency = world.message_latency();
        let (w, deliver) = (Arc::clone(world), deliver.clone());
        // One task per message: its handlers are instant (no await that a
        // crash of the target could cut in two), so it need not be the
        // target's task.
        tokio::spawn(async move {
            sleep(latency).await;
            w.gate(to).await;
            if w.engine(to).is_some() {
                deliver(w).await;
            }
        });
    }
}

/// Pushes every commit made on `node` to every alive peer (batched).
pub async fn gossip(world: Arc<World>, node: usize, mut feed: mpsc::UnboundedReceiver<CommitMeta>) {
    while let Some(first) = feed.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = feed.try_recv() {
            batch.push(more);
        }
        world.gate(node).await;
        let Some(membership) = world.membership(node) else {
            return;
        };
        let bytes: usize = batch.iter().map(|m| commit_to_proto(m).encoded_len()).sum();
        for peer in membership.alive() {
            let Some(to) = world.node_index(&peer) else {
                continue;
            };
            let batch = batch.clone();
            send(&world, node, to, "gossip", bytes, move |w| async move {
                if let Some((engine, _)) = w.engine(to) {
                    engine.learn_commits(&batch);
                }
            });
        }
    }
}

/// Heartbeats: every period, each node tells every peer it knows that it
/// is alive, with its GC watermark; the peer acknowledges.
pub async fn heartbeats(world: Arc<World>, node: usize) {
    loop {
        sleep(HEARTBEAT).await;
        world.gate(node).await;
        let (Some((engine, _)), Some(membership)) = (world.engine(node), world.membership(node))
        else {
            return;
        };
        let watermark = engine.local_gc_watermark(GC_MARGIN);
        drop(engine);
        let me = world.nodes[node].address.clone();
        for peer in membership.known() {
            let Some(to) = world.node_index(&peer) else {
                continue;
            };
            let me = me.clone();
            send(&world, node, to, "heartbeat", 24, move |w| async move {
                // As the peer service: a node heard from anew is asked for
                // every commit it has (it joined, restarted or came back).
                let newly_alive = w
                    .membership(to)
                    .is_some_and(|m| m.observe(&me, Some(watermark)));
                if newly_alive {
                    exchange_digest(&w, to, node, 0).await;
                }
                let peer = w.nodes[to].address.clone();
                send(&w, to, node, "heartbeat_ack", 16, move |w| async move {
                    let newly_alive = w.membership(node).is_some_and(|m| m.observe(&peer, None));
                    if newly_alive {
                        exchange_digest(&w, node, to, 0).await;
                    }
                });
            });
        }
    }
}

/// Anti-entropy: every period, ask one random alive peer for the commits
/// this node may have missed; and a periodic scan of the commit records.
pub async fn anti_entropy(world: Arc<World>, node: usize) {
    let mut progress: HashMap<usize, u64> = HashMap::new();
    let mut since_scan = Duration::ZERO;
    loop {
        sleep(DIGEST_EVERY).await;
        world.gate(node).await;
        let Some(membership) = world.membership(node) else {
            return;
        };
        let alive = membership.alive();
        if !alive.is_empty() {
            let peer = &alive[world.pick(alive.len())];
            if let Some(to) = world.node_index(peer) {
                let since = progress
                    .get(&to)
                    .map_or(0, |ts| ts.saturating_sub(10_000_000));
                if let Some(newest) = exchange_digest(&world, node, to, since).await {
                    progress.insert(to, newest.max(since));
                }
            }
        }
        since_scan += DIGEST_EVERY;
        if since_scan >= SCAN_EVERY {
            since_scan = Duration::ZERO;
            if let Some((engine, _)) = world.engine(node) {
                let _ = engine.learn_from_storage().await;
            }
        }
    }
}

/// Asks `to` for its commits newer than `since` and installs them on
/// `node`; returns the newest timestamp received.
async fn exchange_digest(world: &Arc<World>, node: usize, to: usize, since: u64) -> Option<u64> {
    let incarnation = world.nodes[node].inner.lock().incarnation;
    let remote = SimRemote {
        world: Arc::downgrade(world),
        node,
        incarnation,
    };
    let address = world.nodes[to].address.clone();
    let commits = remote
        .call(
            &address,
            "digest_request",
            16,
            PEER_TIMEOUT,
            "",
            move |e| async move { Ok(e.commits_since(since)) },
        )
        .await
        .ok()?;
    let bytes: usize = commits
        .iter()
        .map(|m| commit_to_proto(m).encoded_len())
        .sum();
    count(world, "digest_commits", bytes);
    let newest = commits.iter().map(|m| m.timestamp).max();
    if let Some((engine, _)) = world.engine(node) {
        engine.learn_commits(&commits);
    }
    Some(newest.unwrap_or(since))
}
