//! Sidecar-to-sidecar cooperation: the peer transport, membership and
//! failure detection, commit-metadata gossip with anti-entropy, and the
//! peer service that lets a DAG continue, read upstream writes and commit
//! atomically across nodes. Messages: `proto/peer.proto`.

mod client;
pub mod codec;
mod error;
pub mod framing;
mod gossip;
pub mod membership;
mod seal;
mod service;
pub mod transport;

pub use client::PeerClient;
pub use error::PeerError;
pub use membership::Membership;
pub use seal::PeerKey;
pub use transport::{Transport, TransportConfig};

use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::proto::peer::{peer_envelope::Body, Heartbeat};
use crate::txn::Engine;
use gossip::{exchange_digest, push_commits, DigestProgress};
use service::Service;

/// Settings of the peer layer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This node's address (a bare IP, as executors name nodes).
    pub node_address: String,
    /// Address the peer endpoint binds (ip:port).
    pub bind: String,
    /// The peer port of every node.
    pub peer_port: u16,
    /// Seed nodes.
    pub seeds: Vec<String>,
    /// A DNS name whose addresses are peers (e.g. a Kubernetes headless Service).
    pub discovery_dns: Option<String>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is dead.
    pub dead_after: Duration,
    /// Timeout of one peer request.
    pub request_timeout: Duration,
    /// Timeout of a prepare (the participant writes to storage).
    pub prepare_timeout: Duration,
    /// Timeout of a client's commit forwarded to the node holding the
    /// transaction: as long as that node may take to decide it.
    pub client_commit_timeout: Duration,
    /// Anti-entropy period.
    pub digest_interval: Duration,
    /// Period of the storage scan for commits no peer reported.
    pub storage_scan_interval: Duration,
    /// Largest peer message.
    pub max_message_bytes: usize,
    /// The cluster key sealing peer traffic; `None` = plaintext.
    pub key: Option<PeerKey>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            node_address: "127.0.0.1".into(),
            bind: "127.0.0.1:7150".into(),
            peer_port: 7150,
            seeds: Vec::new(),
            discovery_dns: None,
            heartbeat_interval: Duration::from_millis(300),
            dead_after: Duration::from_secs(2),
            request_timeout: Duration::from_millis(1500),
            prepare_timeout: Duration::from_secs(3),
            client_commit_timeout: Duration::from_secs(15),
            digest_interval: Duration::from_secs(2),
            storage_scan_interval: Duration::from_secs(30),
            max_message_bytes: 64 * 1024 * 1024,
            key: None,
        }
    }
}

/// A running peer layer. [`PeerNode::shutdown`] leaves the cluster gracefully.
pub struct PeerNode {
    transport: Transport,
    membership: Arc<Membership>,
    tasks: Vec<JoinHandle<()>>,
    engine: Arc<Engine>,
}

impl PeerNode {
    /// Starts the peer layer for `engine`: binds the peer endpoint, connects
    /// the engine to its peers, and starts heartbeats, gossip and anti-entropy.
    pub fn start(
        engine: Arc<Engine>,
        config: PeerConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<PeerNode, PeerError> {
        let membership = Arc::new(Membership::new(
            &config.node_address,
            &config.seeds,
            config.dead_after,
        ));
        let progress = Arc::new(DigestProgress::default());
        // The transport's handler needs the service, whose rejoin hook needs
        // the transport: break the cycle with a late-bound cell.
        let transport_cell: Arc<std::sync::OnceLock<Transport>> = Arc::default();
        let service = {
            let (engine, cell, progress, runtime, timeout) = (
                Arc::clone(&engine),
                Arc::clone(&transport_cell),
                Arc::clone(&progress),
                runtime.clone(),
                config.request_timeout,
            );
            let hook_engine = Arc::clone(&engine);
            Arc::new(Service {
                engine,
                membership: Arc::clone(&membership),
                on_rejoin: Box::new(move |node: String| {
                    let (engine, cell, progress) = (
                        Arc::clone(&hook_engine),
                        Arc::clone(&cell),
                        Arc::clone(&progress),
                    );
                    progress.reset(&node);
                    runtime.spawn(async move {
                        if let Some(transport) = cell.get() {
                            exchange_digest(&engine, transport, &progress, &node, timeout).await;
                        }
                    });
                }),
            })
        };
        let handler: transport::Handler = {
            let service = Arc::clone(&service);
            Arc::new(move |sender, body| {
                let service = Arc::clone(&service);
                Box::pin(async move { service.handle(sender, body).await })
            })
        };
        let transport = Transport::start(
            TransportConfig {
                node_address: config.node_address.clone(),
                bind: config.bind.clone(),
                peer_port: config.peer_port,
                max_message_bytes: config.max_message_bytes,
                key: config.key.clone(),
            },
            handler,
            engine.metrics().clone(),
            runtime.clone(),
        )?;
        let _ = transport_cell.set(transport.clone());

        engine.set_remote(Arc::new(PeerClient {
            transport: transport.clone(),
            membership: Arc::clone(&membership),
            timeout: config.request_timeout,
            prepare_timeout: config.prepare_timeout,
            client_commit_timeout: config.client_commit_timeout,
        }));
        {
            let membership = Arc::clone(&membership);
            // Weak: the engine holds this closure.
            let local = Arc::downgrade(&engine);
            let margin = config.dead_after * 4;
            engine.set_global_watermark(Arc::new(move || {
                let mine = local.upgrade()?.local_gc_watermark(margin);
                let theirs = membership.peer_watermark()?;
                Some(theirs.map_or(mine, |theirs| theirs.min(mine)))
            }));
        }
        let (feed_tx, feed_rx) = tokio::sync::mpsc::unbounded_channel();
        engine.set_commit_feed(feed_tx);

        let mut tasks = Vec::new();
        tasks.push(runtime.spawn(push_commits(
            transport.clone(),
            Arc::clone(&membership),
            feed_rx,
        )));
        tasks.push(runtime.spawn(heartbeats(
            Arc::clone(&engine),
            transport.clone(),
            Arc::clone(&membership),
            Arc::clone(&progress),
            config.clone(),
        )));
        tasks.push(runtime.spawn(anti_entropy(
            Arc::clone(&engine),
            transport.clone(),
            Arc::clone(&membership),
            Arc::clone(&progress),
            config.clone(),
        )));
        if let Some(name) = config.discovery_dns.clone() {
            tasks.push(runtime.spawn(discover(
                name,
                config.peer_port,
                config.node_address.clone(),
                Arc::clone(&membership),
            )));
        }
        info!(bind = %config.bind, seeds = ?config.seeds, "peer layer started");
        Ok(PeerNode {
            transport,
            membership,
            tasks,
            engine,
        })
    }

    /// The cluster view.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// Tells every alive peer this node is leaving, then stops.
    pub async fn shutdown(self) {
        let watermark = self.engine.local_gc_watermark(Duration::ZERO);
        for node in self.membership.alive() {
            let body = Body::Heartbeat(Heartbeat {
                members: Vec::new(),
                gc_watermark: watermark,
                leaving: true,
            });
            let _ = self
                .transport
                .request(&node, body, Duration::from_millis(300))
                .await;
        }
        for task in &self.tasks {
            task.abort();
        }
        let transport = self.transport.clone();
        let _ = tokio::task::spawn_blocking(move || transport.stop()).await;
        info!("peer layer stopped");
    }
}

async fn heartbeats(
    engine: Arc<Engine>,
    transport: Transport,
    membership: Arc<Membership>,
    progress: Arc<DigestProgress>,
    config: PeerConfig,
) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    loop {
        tick.tick().await;
        let watermark = engine.local_gc_watermark(config.dead_after * 4);
        let mut members = membership.alive();
        members.push(membership.me().to_string());
        for node in membership.known() {
            let (transport, membership, engine, progress) = (
                transport.clone(),
                Arc::clone(&membership),
                Arc::clone(&engine),
                Arc::clone(&progress),
            );
            let body = Body::Heartbeat(Heartbeat {
                members: members.clone(),
                gc_watermark: watermark,
                leaving: false,
            });
            let timeout = config.heartbeat_interval * 2;
            let request_timeout = config.request_timeout;
            tokio::spawn(async move {
                if let Ok(Body::HeartbeatAck(ack)) = transport.request(&node, body, timeout).await {
                    membership.merge(&ack.members);
                    if membership.observe(&node, None) {
                        debug!(peer = %node, "peer is alive");
                        progress.reset(&node);
                        exchange_digest(&engine, &transport, &progress, &node, request_timeout)
                            .await;
                    }
                }
            });
        }
    }
}

async fn anti_entropy(
    engine: Arc<Engine>,
    transport: Transport,
    membership: Arc<Membership>,
    progress: Arc<DigestProgress>,
    config: PeerConfig,
) {
    let mut digest = tokio::time::interval(config.digest_interval);
    let mut scan = tokio::time::interval(config.storage_scan_interval);
    loop {
        tokio::select! {
            _ = digest.tick() => {
                let alive = membership.alive();
                let node = alive.choose(&mut rand::rng()).cloned();
                if let Some(node) = node {
                    exchange_digest(&engine, &transport, &progress, &node, config.request_timeout).await;
                }
            }
            _ = scan.tick() => {
                match engine.learn_from_storage().await {
                    Ok(0) => {}
                    Ok(n) => info!(commits = n, "learned commits from storage that no peer reported"),
                    Err(e) => warn!(error = %e, "storage scan for commits failed"),
                }
            }
        }
    }
}

async fn discover(name: String, port: u16, me: String, membership: Arc<Membership>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(addrs) => {
                let nodes: Vec<String> = addrs
                    .map(|a| a.ip().to_string())
                    .filter(|ip| *ip != me)
                    .collect();
                membership.merge(&nodes);
            }
            Err(e) => debug!(name = %name, error = %e, "peer discovery lookup failed"),
        }
    }
}
