//! The rig of one run: the processes it started, the client pools that
//! drive them, and how those pools' clients connect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use aft::client::IpcClient;
use anyhow::Context as _;

use crate::cost::Probe;
use aft_testkit::grpc::GrpcClient;

use crate::procs::{ChildProcess, OwnsProcess};
use crate::resp::RespClient;
use crate::runner::{Connector, Pool};
use crate::session::{Conn, Worker};
use crate::workload::WorkloadParams;

/// Processes and pools of one run (dropped at its end: pools first, so the
/// client threads end before the servers they talk to; then processes in
/// reverse order of start, so sidecars stop before the Redis they use).
pub(super) struct Rig {
    /// Client pools, by index (a workload names its pool by index).
    pub pools: Vec<Pool>,
    /// Every process started, with the label the run's notes give it.
    pub processes: Vec<(String, Box<dyn OwnsProcess>)>,
    /// The sidecars behind each pool (by pool index), for the cost figures.
    probes: HashMap<usize, Vec<Probe>>,
    /// Client ids, unique over all pools.
    ids: AtomicU32,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.pools.clear();
        // Sidecars before the Redis they use.
        while let Some((_, mut owner)) = self.processes.pop() {
            if let Some(process) = owner.process_mut() {
                process.stop();
            }
        }
    }
}

impl Rig {
    /// An empty rig.
    pub fn new() -> Rig {
        Rig {
            pools: Vec::new(),
            processes: Vec::new(),
            probes: HashMap::new(),
            ids: AtomicU32::new(0),
        }
    }

    /// Keeps `process` (labelled `label`) until the rig drops.
    pub fn add_process(&mut self, label: impl Into<String>, process: impl OwnsProcess + 'static) {
        self.processes.push((label.into(), Box::new(process)));
    }

    /// Keeps sidecar `process` and samples its costs for pool `pool` (if it
    /// announced a metrics endpoint).
    pub fn add_sidecar(&mut self, pool: usize, label: impl Into<String>, process: ChildProcess) {
        self.probes
            .entry(pool)
            .or_default()
            .extend(probe_of(&process));
        self.add_process(label, process);
    }

    /// The index the next pool will get.
    pub fn next_pool(&self) -> usize {
        self.pools.len()
    }

    /// Spawns a pool of `size` client threads connecting with `connect`;
    /// returns its index.
    pub fn spawn_pool(
        &mut self,
        name: &str,
        size: usize,
        connect: Connector,
    ) -> anyhow::Result<usize> {
        let pool = Pool::spawn(name, size, &self.ids, connect)?;
        self.pools.push(pool);
        Ok(self.pools.len() - 1)
    }

    /// How to sample the costs of the sidecars behind pool `pool` (empty
    /// for pools without sidecars).
    pub fn probes(&self, pool: usize) -> &[Probe] {
        self.probes.get(&pool).map_or(&[][..], Vec::as_slice)
    }
}

/// How to sample a sidecar's costs (`None` if it announced no metrics endpoint).
fn probe_of(process: &ChildProcess) -> Option<Probe> {
    Some(Probe {
        pid: process.pid(),
        metrics: process.metrics_addr()?,
    })
}

/// Clients speaking the IPC protocol to one server per directory of `dirs`
/// (`addresses` are those servers' node addresses, in the same order).
pub(super) fn ipc_connector(
    dirs: Vec<PathBuf>,
    addresses: Vec<String>,
    params: Arc<WorkloadParams>,
    seed: u64,
    timeout: Duration,
) -> Connector {
    Arc::new(move |id| {
        let clients = dirs
            .iter()
            .map(|d| {
                IpcClient::connect(d, id, timeout)
                    .with_context(|| format!("IPC client {id} on {}", d.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Worker::new(
            id,
            Conn::Ipc {
                clients,
                addresses: addresses.clone(),
            },
            Arc::clone(&params),
            seed,
        )
    })
}

/// Clients of the gRPC front at `addr` (AFT's `service Aft`).
pub(super) fn grpc_connector(
    addr: SocketAddr,
    params: Arc<WorkloadParams>,
    seed: u64,
) -> Connector {
    Arc::new(move |id| {
        let client = GrpcClient::connect(addr, None)
            .with_context(|| format!("gRPC client {id} of {addr}"))?;
        Worker::new(id, Conn::Grpc(client), Arc::clone(&params), seed)
    })
}

/// Clients speaking RESP straight to the Redis server at `addr`.
pub(super) fn redis_connector(
    addr: SocketAddr,
    params: Arc<WorkloadParams>,
    seed: u64,
    timeout: Duration,
) -> Connector {
    Arc::new(move |id| {
        let redis = RespClient::connect(addr, timeout)?;
        Worker::new(id, Conn::Redis(redis), Arc::clone(&params), seed)
    })
}
