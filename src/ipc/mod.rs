//! The ZeroMQ IPC front: Cloudburst's cache protocol plus AFT's transaction
//! endpoints (docs/PROTOCOL.md), served to the executors of this node.
//!
//! One IPC thread owns every socket (libzmq sockets are not thread-safe):
//! the six PULL endpoints and the outbound PUSH sockets (`front.rs`,
//! `reply.rs`). It runs each request's handler (`handlers/`) once inline;
//! handlers that must wait continue on the tokio runtime and send their
//! reply back to the IPC thread over a channel.

mod address;
mod error;
mod front;
mod handlers;
mod reply;
pub mod request;

pub use address::{AddressError, AddressPolicy};
pub use error::IpcError;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::info;

use crate::metrics::Metrics;
use crate::txn::Engine;
use front::Front;
use handlers::Context;
use reply::{reply_channel, PendingReplies, ReplySockets};
use request::Endpoint;

/// Settings of the IPC front.
#[derive(Debug, Clone)]
pub struct IpcConfig {
    /// Directory holding the endpoint sockets (`/requests` in Cloudburst containers).
    pub ipc_dir: PathBuf,
    /// The same directory as clients name it in reply addresses.
    pub client_ipc_dir: String,
    /// Whether `tcp://` reply addresses are accepted.
    pub allow_tcp_replies: bool,
    /// Most outbound reply sockets kept open (least recently used are closed).
    pub max_reply_sockets: usize,
    /// Most replies owed to one client at once; more requests are refused.
    pub max_pending_per_client: usize,
    /// Largest request frame accepted (bigger ones are dropped by ZeroMQ).
    pub max_request_bytes: usize,
    /// Permission bits of the socket files (e.g. 0o660).
    pub socket_mode: u32,
    /// Group (numeric id) given to the socket files, so executors running
    /// as another user in that group can connect; `None` keeps the default.
    pub socket_group: Option<u32>,
    /// Serve even if the directory is world-writable.
    pub allow_world_writable_dir: bool,
}

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig {
            ipc_dir: PathBuf::from("/requests"),
            client_ipc_dir: "/requests".into(),
            allow_tcp_replies: false,
            max_reply_sockets: 1024,
            max_pending_per_client: 1024,
            max_request_bytes: 80 * 1024 * 1024,
            socket_mode: 0o660,
            socket_group: None,
            allow_world_writable_dir: false,
        }
    }
}

/// A running IPC front. [`IpcServer::shutdown`] stops it gracefully.
pub struct IpcServer {
    stop: Arc<AtomicBool>,
    grace_ms: Arc<AtomicU64>,
    front: Option<JoinHandle<()>>,
    socket_files: Vec<PathBuf>,
}

impl IpcServer {
    /// Binds every endpoint in `config.ipc_dir` and starts serving.
    ///
    /// Fails with one clear error when the directory is unusable, is
    /// world-writable (unless allowed), or another live process already
    /// listens on an endpoint.
    pub fn start(
        engine: Arc<Engine>,
        config: IpcConfig,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<IpcServer, IpcError> {
        let dir = &config.ipc_dir;
        prepare_directory(dir, config.allow_world_writable_dir)?;
        let context = zmq::Context::new();
        let mut sockets = Vec::new();
        let mut socket_files = Vec::new();
        for endpoint in Endpoint::ALL {
            let path = dir.join(endpoint.name());
            ensure_not_in_use(&path)?;
            let address = format!("ipc://{}", path.display());
            let zmq_err = |source| IpcError::Zmq {
                endpoint: address.clone(),
                source,
            };
            let socket = context.socket(zmq::PULL).map_err(zmq_err)?;
            socket
                .set_maxmsgsize(i64::try_from(config.max_request_bytes).unwrap_or(i64::MAX))
                .map_err(zmq_err)?;
            socket.set_rcvhwm(10_000).map_err(zmq_err)?;
            socket.set_linger(0).map_err(zmq_err)?;
            socket.bind(&address).map_err(zmq_err)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.socket_mode))
                .map_err(|e| IpcError::Directory {
                    path: path.clone(),
                    reason: format!("cannot set socket permissions: {e}"),
                })?;
            if let Some(gid) = config.socket_group {
                std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| {
                    IpcError::Directory {
                        path: path.clone(),
                        reason: format!("cannot give the socket to group {gid}: {e}"),
                    }
                })?;
            }
            socket_files.push(path);
            sockets.push((endpoint, socket));
        }
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let wake_address = format!(
            "inproc://aft-ipc-wake-{}",
            SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        let zmq_err = |source| IpcError::Zmq {
            endpoint: wake_address.clone(),
            source,
        };
        let wake = context.socket(zmq::PULL).map_err(zmq_err)?;
        wake.bind(&wake_address).map_err(zmq_err)?;
        let waker = context.socket(zmq::PUSH).map_err(zmq_err)?;
        waker.connect(&wake_address).map_err(zmq_err)?;
        let (replies, reply_rx) = reply_channel(waker);
        let pending = PendingReplies::new(config.max_pending_per_client);
        let stop = Arc::new(AtomicBool::new(false));
        let grace_ms = Arc::new(AtomicU64::new(0));
        let front = Front {
            sockets,
            wake,
            replies: reply_rx,
            reply_sockets: ReplySockets::new(
                context.clone(),
                config.max_reply_sockets,
                metrics.clone(),
            ),
            policy: AddressPolicy {
                ipc_dir: dir.display().to_string(),
                client_ipc_dir: config.client_ipc_dir.clone(),
                allow_tcp: config.allow_tcp_replies,
            },
            pending,
            ctx: Arc::new(Context::new(engine, replies, metrics)),
            runtime,
            stop: Arc::clone(&stop),
            grace_ms: Arc::clone(&grace_ms),
        };
        let front = std::thread::Builder::new()
            .name("aft-ipc".into())
            .spawn(move || front.run())
            .map_err(|source| IpcError::Thread {
                name: "IPC",
                source,
            })?;
        info!(dir = %dir.display(), "IPC endpoints bound");
        Ok(IpcServer {
            stop,
            grace_ms,
            front: Some(front),
            socket_files,
        })
    }

    /// The socket files this server created.
    pub fn socket_files(&self) -> &[PathBuf] {
        &self.socket_files
    }

    /// Stops accepting requests, lets in-flight requests finish (up to
    /// `grace`), flushes their replies, and removes the socket files.
    pub fn shutdown(mut self, grace: Duration) {
        self.grace_ms.store(
            u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.stop.store(true, Ordering::Release);
        if let Some(front) = self.front.take() {
            let _ = front.join();
        }
        for path in &self.socket_files {
            let _ = std::fs::remove_file(path);
        }
        info!("IPC front stopped");
    }
}

/// Creates the directory if needed and checks it is writable and, unless
/// allowed, not world-writable.
fn prepare_directory(dir: &Path, allow_world_writable: bool) -> Result<(), IpcError> {
    let fail = |reason: String| IpcError::Directory {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky && !allow_world_writable {
        return Err(IpcError::WorldWritable {
            path: dir.to_path_buf(),
        });
    }
    let probe = dir.join(format!(".aft-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| fail(format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Fails if a live process listens on the socket file; removes a stale one.
fn ensure_not_in_use(path: &Path) -> Result<(), IpcError> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(IpcError::AlreadyBound {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|e| IpcError::Directory {
        path: path.to_path_buf(),
        reason: format!("cannot remove stale socket: {e}"),
    })
}
