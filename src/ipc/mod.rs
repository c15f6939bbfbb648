//! The IPC front: Cloudburst's cache protocol plus AFT's transaction
//! endpoints (docs/PROTOCOL.md), served to the executors of this node over
//! ZeroMQ's wire protocol on Unix sockets.
//!
//! Executors keep using libzmq (PUSH requests to the six endpoints, PULL
//! for replies); this side speaks ZMTP itself (`zmtp.rs`) on the tokio
//! runtime: a task per executor connection reads a request, runs its
//! handler (`handlers/`) once inline, and queues the reply on the
//! connection to the executor's reply address (`reply.rs`). Handlers that
//! must wait continue as tasks of their own (`front.rs`).

mod address;
mod error;
mod front;
mod handlers;
mod reply;
pub mod request;
mod zmtp;

pub use address::{AddressError, AddressPolicy};
pub use error::IpcError;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::txn::Engine;
use front::Front;
use handlers::Context;
use reply::{PendingReplies, ReplyLinks};
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
    /// Most outbound reply connections kept open (least recently used are closed).
    pub max_reply_sockets: usize,
    /// Most replies owed to one client at once; more requests are refused.
    pub max_pending_per_client: usize,
    /// Largest request frame accepted (a bigger one closes its connection).
    pub max_request_bytes: usize,
    /// Permission bits of the socket files (e.g. 0o660).
    pub socket_mode: u32,
    /// Group (numeric id) given to the socket files, so executors running
    /// as another user in that group can connect; `None` keeps the default.
    pub socket_group: Option<u32>,
    /// Serve even if the directory is world-writable.
    pub allow_world_writable_dir: bool,
}

impl IpcConfig {
    /// The largest request frame worth reading when values may be up to
    /// `max_value_bytes`: four times that (a put carries the value with its
    /// key and envelope), and at least 1 MiB.
    pub fn request_bytes_for(max_value_bytes: usize) -> usize {
        max_value_bytes.saturating_mul(4).max(1 << 20)
    }
}

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig {
            ipc_dir: PathBuf::from("/requests"),
            client_ipc_dir: "/requests".into(),
            allow_tcp_replies: false,
            max_reply_sockets: 1024,
            max_pending_per_client: 1024,
            max_request_bytes: IpcConfig::request_bytes_for(
                crate::storage::DEFAULT_MAX_VALUE_BYTES,
            ),
            socket_mode: 0o660,
            socket_group: None,
            allow_world_writable_dir: false,
        }
    }
}

/// A running IPC front. [`IpcServer::shutdown`] stops it gracefully.
pub struct IpcServer {
    stop: CancellationToken,
    pending: Arc<PendingReplies>,
    links: Arc<ReplyLinks>,
    socket_files: Vec<PathBuf>,
}

impl IpcServer {
    /// Binds every endpoint in `config.ipc_dir` and starts serving on `runtime`.
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
        let _runtime = runtime.enter();
        let mut listeners = Vec::new();
        let mut socket_files = Vec::new();
        for endpoint in Endpoint::ALL {
            let path = dir.join(endpoint.name());
            ensure_not_in_use(&path)?;
            let bind_error = |e: std::io::Error| IpcError::Bind {
                path: path.clone(),
                source: e,
            };
            let listener = std::os::unix::net::UnixListener::bind(&path).map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            let listener = tokio::net::UnixListener::from_std(listener).map_err(bind_error)?;
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
            listeners.push((endpoint, listener));
        }
        let stop = CancellationToken::new();
        let pending = PendingReplies::new(config.max_pending_per_client);
        let links = ReplyLinks::new(config.max_reply_sockets, metrics.clone());
        let front = Arc::new(Front {
            policy: AddressPolicy {
                ipc_dir: dir.display().to_string(),
                client_ipc_dir: config.client_ipc_dir.clone(),
                allow_tcp: config.allow_tcp_replies,
            },
            pending: Arc::clone(&pending),
            ctx: Arc::new(Context::new(engine, metrics)),
            links: Arc::clone(&links),
            max_request_bytes: config.max_request_bytes,
            stop: stop.clone(),
        });
        for (endpoint, listener) in listeners {
            runtime.spawn(Arc::clone(&front).serve_endpoint(endpoint, listener));
        }
        info!(dir = %dir.display(), "IPC endpoints bound");
        Ok(IpcServer {
            stop,
            pending,
            links,
            socket_files,
        })
    }

    /// The socket files this server created.
    pub fn socket_files(&self) -> &[PathBuf] {
        &self.socket_files
    }

    /// Stops accepting requests, lets in-flight requests finish (up to
    /// `grace`), flushes their replies, and removes the socket files.
    /// Call it from outside the runtime (it waits).
    pub fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let deadline = Instant::now() + grace;
        while self.pending.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Every reply is queued now: let the connections write them out.
        let flushing = self.links.close_all();
        let flushed_by = Instant::now() + Duration::from_millis(500);
        while flushing.iter().any(|t| !t.is_finished()) && Instant::now() < flushed_by {
            std::thread::sleep(Duration::from_millis(2));
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
