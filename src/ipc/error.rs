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
    /// An endpoint's socket could not be bound.
    #[error("cannot bind IPC socket `{path}`: {source}")]
    Bind {
        /// The socket file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
