//! A server the kit runs for a test or the bench (Redis, moto, SeaweedFS):
//! its files in a temporary directory that outlives restarts, its process
//! killed on drop. What differs between servers is only how the process is
//! started ([`Launch`]); killing, restarting and owning it live here once.

use std::path::Path;

use crate::process::{ChildProcess, OwnsProcess, StartError};

/// How one kind of server is started.
pub trait Launch: Send {
    /// The server's name, for messages.
    const NAME: &'static str;

    /// Starts the process, its files in `dir`, and waits until it serves.
    fn launch(&self, dir: &Path) -> Result<ChildProcess, StartError>;
}

/// A running server of kind `L`; dropped, it is killed (SIGKILL).
pub struct Server<L: Launch> {
    launcher: L,
    dir: tempfile::TempDir,
    process: Option<ChildProcess>,
}

impl<L: Launch> Server<L> {
    /// Starts a server that `launcher` describes, in a new temporary directory.
    pub fn launch_with(launcher: L) -> Result<Self, StartError> {
        let dir = tempfile::tempdir().map_err(|source| StartError::Log {
            path: std::env::temp_dir(),
            source,
        })?;
        let process = launcher.launch(dir.path())?;
        Ok(Server {
            launcher,
            dir,
            process: Some(process),
        })
    }

    /// How it was started (its ports, options).
    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    /// Its directory (data and log), kept across restarts.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running process (`None` after [`Server::kill`]).
    pub fn process(&self) -> Option<&ChildProcess> {
        self.process.as_ref()
    }

    /// Kills it with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again, on the same ports and directory; panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        match self.launcher.launch(self.dir.path()) {
            Ok(process) => self.process = Some(process),
            Err(e) => panic!("{} did not restart: {e}", L::NAME),
        }
    }
}

impl<L: Launch> OwnsProcess for Server<L> {
    fn process_mut(&mut self) -> Option<&mut ChildProcess> {
        self.process.as_mut()
    }
}

impl<L: Launch> Drop for Server<L> {
    fn drop(&mut self) {
        self.kill();
    }
}
