//! The ZeroMQ IPC front: Cloudburst's cache protocol plus AFT's transaction
//! endpoints (docs/PROTOCOL.md), served to the executors of this node.
//!
//! Threads (libzmq sockets are not thread-safe, so each socket lives on
//! exactly one thread):
//! - the receive thread owns the six PULL sockets (`front.rs`) and spawns one
//!   tokio task per request (`handlers/`);
//! - the reply thread owns every outbound PUSH socket (`reply.rs`) and gets
//!   finished replies over a channel.

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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::info;

use crate::metrics::Metrics;
use crate::txn::Engine;
use front::Front;
use handlers::Context;
use reply::{spawn_reply_thread, PendingReplies, ReplySender};
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
            allow_world_writable_dir: false,
        }
    }
}

/// A running IPC front. [`IpcServer::shutdown`] stops it gracefully.
pub struct IpcServer {
    stop: Arc<AtomicBool>,
    front: Option<JoinHandle<()>>,
    reply: Option<JoinHandle<()>>,
    replies: ReplySender,
    pending: Arc<PendingReplies>,
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
            socket_files.push(path);
            sockets.push((endpoint, socket));
        }
        let (replies, reply) =
            spawn_reply_thread(context.clone(), config.max_reply_sockets, metrics.clone())?;
        let pending = PendingReplies::new(config.max_pending_per_client);
        let stop = Arc::new(AtomicBool::new(false));
        let front = Front {
            sockets,
            policy: AddressPolicy {
                ipc_dir: dir.display().to_string(),
                client_ipc_dir: config.client_ipc_dir.clone(),
                allow_tcp: config.allow_tcp_replies,
            },
            pending: Arc::clone(&pending),
            ctx: Arc::new(Context {
                engine,
                replies: replies.clone(),
                metrics,
            }),
            runtime,
            stop: Arc::clone(&stop),
        };
        let front = std::thread::Builder::new()
            .name("aft-ipc-front".into())
            .spawn(move || front.run())
            .map_err(|source| IpcError::Thread {
                name: "receive",
                source,
            })?;
        info!(dir = %dir.display(), "IPC endpoints bound");
        Ok(IpcServer {
            stop,
            front: Some(front),
            reply: Some(reply),
            replies,
            pending,
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
        self.stop.store(true, Ordering::Release);
        if let Some(front) = self.front.take() {
            let _ = front.join();
        }
        let deadline = Instant::now() + grace;
        while self.pending.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.replies.stop();
        if let Some(reply) = self.reply.take() {
            let _ = reply.join();
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
