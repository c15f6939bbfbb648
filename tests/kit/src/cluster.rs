//! A local multi-node cluster for tests: one shared store (a real
//! `redis-server`, Anna through anna-client's protocol-faithful test
//! server, DynamoDB on moto or S3 on SeaweedFS) and N real `aft-sidecar` processes on loopback addresses
//! 127.0.0.1..N (same peer port, distinct IPC directories), as
//! `cluster/local/launch.sh` runs them.

use std::path::{Path, PathBuf};

use anna_client::test_server::{TestServer, TestServerConfig};

use crate::aws::{MotoServer, SeaweedFs};
use crate::outside::OutsideReader;
use crate::ports::free_port_on_all;
use crate::redis::RedisServer;
use crate::sidecar::{Sidecar, SidecarSpec};

/// The store every node of the cluster shares.
pub enum ClusterStore {
    /// A real `redis-server`.
    Redis(RedisServer),
    /// Anna, through the protocol-faithful test server (one KVS thread).
    Anna(TestServer),
    /// DynamoDB, on moto (its table created).
    DynamoDb(MotoServer),
    /// S3, on SeaweedFS (its bucket created).
    S3(SeaweedFs),
}

/// The table or bucket every cluster on an AWS store uses.
const AWS_NAME: &str = "aft-cluster";

fn create_aws_store(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(crate::aws::prepare_store(url));
}

impl ClusterStore {
    /// A fresh `redis-server`.
    pub fn redis() -> ClusterStore {
        ClusterStore::Redis(RedisServer::start())
    }

    /// A fresh Anna test server.
    pub fn anna() -> ClusterStore {
        ClusterStore::Anna(
            TestServer::start(TestServerConfig::with_kvs_threads(1)).expect("anna test server"),
        )
    }

    /// A fresh moto server with the cluster's table.
    pub fn dynamodb() -> ClusterStore {
        let store = ClusterStore::DynamoDb(MotoServer::start());
        create_aws_store(&store.url());
        store
    }

    /// A fresh SeaweedFS with the cluster's bucket.
    pub fn s3() -> ClusterStore {
        let store = ClusterStore::S3(SeaweedFs::start());
        create_aws_store(&store.url());
        store
    }

    /// The storage URL the sidecars use.
    pub fn url(&self) -> String {
        match self {
            ClusterStore::Redis(r) => r.url(),
            ClusterStore::Anna(a) => format!("anna://{}", a.routing_host_port()),
            ClusterStore::DynamoDb(m) => m.url(AWS_NAME),
            ClusterStore::S3(w) => w.url(AWS_NAME),
        }
    }

    /// Takes the store down (`true`: unreachable, nothing applied) or
    /// brings it back. Redis is killed and restarted on the same port and
    /// data; the Anna test server ignores every request meanwhile.
    pub fn set_outage(&mut self, down: bool) {
        match self {
            ClusterStore::Redis(r) if down => r.kill(),
            ClusterStore::Redis(r) => r.restart(),
            ClusterStore::Anna(a) => a.set_outage(down),
            // SeaweedFS keeps its data across the restart.
            ClusterStore::S3(w) if down => w.kill(),
            ClusterStore::S3(w) => w.restart(),
            ClusterStore::DynamoDb(_) => {
                panic!("moto keeps nothing across a restart: no outages on DynamoDB")
            }
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            ClusterStore::Redis(_) => "redis",
            ClusterStore::Anna(_) => "anna",
            ClusterStore::DynamoDb(_) => "dynamodb",
            ClusterStore::S3(_) => "s3",
        }
    }

    /// The Redis server (panics on another store).
    pub fn redis_server(&mut self) -> &mut RedisServer {
        match self {
            ClusterStore::Redis(r) => r,
            _ => panic!("this cluster runs on {}, not Redis", self.name()),
        }
    }
}

/// One node of the cluster.
pub struct ClusterNode {
    /// Its address (`127.0.0.N`), as executors and peers name it.
    pub address: String,
    /// Its IPC directory.
    pub ipc: PathBuf,
    /// The process.
    pub sidecar: Sidecar,
}

/// A running cluster; everything is killed on drop.
pub struct LocalCluster {
    pub store: ClusterStore,
    pub nodes: Vec<ClusterNode>,
    pub peer_port: u16,
    _dir: tempfile::TempDir,
}

/// The address of node `i` (from 0) of a local cluster: `127.0.0.{i+1}`.
pub fn node_address(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// The flags that make a sidecar node `i` of `n` of a local cluster, as
/// `cluster/local/launch.sh` passes them: every node binds the same peer
/// port on its own loopback address, as nodes of a real cluster do on
/// their own IPs, and has every node as a seed peer.
pub fn node_args(i: usize, n: usize, peer_port: u16) -> Vec<String> {
    let peers: Vec<String> = (0..n).map(node_address).collect();
    vec![
        "--node-address".into(),
        node_address(i),
        "--peer-mode".into(),
        "plaintext".into(),
        "--peer-port".into(),
        peer_port.to_string(),
        "--peers".into(),
        peers.join(","),
    ]
}

/// A port free on the addresses of nodes `0..n` (the peer port).
pub fn free_peer_port(n: usize) -> u16 {
    let addresses: Vec<String> = (0..n).map(node_address).collect();
    free_port_on_all(&addresses)
}

impl LocalCluster {
    /// Starts `n` nodes over a fresh Redis; `extra` args go to every node.
    pub fn start(binary: &Path, n: usize, extra: &[&str]) -> LocalCluster {
        Self::start_with(binary, n, extra, |_| Vec::new())
    }

    /// Starts `n` nodes over a fresh Redis; `env_of(i)` gives node i's extra environment.
    pub fn start_with(
        binary: &Path,
        n: usize,
        extra: &[&str],
        env_of: impl Fn(usize) -> Vec<(String, String)>,
    ) -> LocalCluster {
        Self::start_on(ClusterStore::redis(), binary, n, extra, env_of)
    }

    /// Starts `n` nodes over `store`.
    pub fn start_on(
        store: ClusterStore,
        binary: &Path,
        n: usize,
        extra: &[&str],
        env_of: impl Fn(usize) -> Vec<(String, String)>,
    ) -> LocalCluster {
        let mut dir = tempfile::tempdir().expect("cluster dir");
        if std::env::var_os("AFT_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            println!("cluster directory (kept): {}", dir.path().display());
        }
        let peer_port = free_peer_port(n.max(3));
        let mut cluster = LocalCluster {
            store,
            nodes: Vec::new(),
            peer_port,
            _dir: dir,
        };
        for i in 0..n {
            let node = cluster.spawn_node(binary, i, n, extra, &env_of(i));
            cluster.nodes.push(node);
        }
        cluster
    }

    fn spawn_node(
        &self,
        binary: &Path,
        i: usize,
        n: usize,
        extra: &[&str],
        env: &[(String, String)],
    ) -> ClusterNode {
        let address = node_address(i);
        let ipc = self._dir.path().join(format!("node{}", i + 1));
        let spec = SidecarSpec::new(binary, &ipc)
            .args(&["--storage".to_string(), self.store.url()])
            .args(&node_args(i, n, self.peer_port))
            .args(&["--metrics-addr", "off"])
            .args(extra)
            .envs(env);
        ClusterNode {
            address,
            ipc,
            sidecar: Sidecar::start_spec(spec),
        }
    }

    /// Adds node number `len + 1` later (a late joiner).
    pub fn add_node(&mut self, binary: &Path, extra: &[&str]) {
        let n = self.nodes.len() + 1;
        let node = self.spawn_node(binary, n - 1, n, extra, &[]);
        self.nodes.push(node);
    }

    /// An IPC client of node `i` (thread id `thread`), waiting up to
    /// `timeout` for each reply; panics if it cannot connect.
    pub fn client(
        &self,
        i: usize,
        thread: u32,
        timeout: std::time::Duration,
    ) -> aft::client::IpcClient {
        aft::client::IpcClient::connect(&self.nodes[i].ipc, thread, timeout)
            .unwrap_or_else(|e| panic!("cannot connect to node {}: {e}", i + 1))
    }

    /// The addresses of every node except `i`.
    pub fn others(&self, i: usize) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.address.clone())
            .collect()
    }

    /// A reader of the shared store that bypasses every sidecar, as
    /// Cloudburst's user client reads it.
    pub fn outside_reader(&self) -> OutsideReader {
        OutsideReader::open(&self.store.url())
    }
}
