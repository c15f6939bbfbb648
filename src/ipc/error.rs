//! Errors of the IPC front's set-up (request-level problems are answered,
//! not raised).

use std::path::PathBuf;

/// Why the IPC front could not start.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The IPC directory does not exist and cannot be created, or is not writable.
    #[error("IPC directory `{path}` is not usable: {reason}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory is writable by everyone and that was not explicitly allowed.
    #[error("IPC directory `{path}` is world-writable; refusing to serve there (pass --allow-world-writable-ipc-dir to override)")]
    WorldWritable {
        /// The directory.
        path: PathBuf,
    },
    /// Another live process already listens on one of the endpoints.
    #[error("IPC socket `{path}` is already bound by another process (another sidecar running?)")]
    AlreadyBound {
        /// The socket file.
        path: PathBuf,
    },
    /// A ZeroMQ call failed.
    #[error("ZeroMQ error on `{endpoint}`: {source}")]
    Zmq {
        /// The endpoint involved.
        endpoint: String,
        /// The ZeroMQ error.
        #[source]
        source: zmq::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn the {name} thread: {source}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
