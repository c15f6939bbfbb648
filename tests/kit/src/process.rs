//! A child process owned by a test or a tool: its output goes to a log
//! file, it receives SIGKILL if its parent dies (a crashed or interrupted
//! run leaves nothing behind), and it is stopped when its handle drops.
//! Start-up waits for a ready line on standard output or for a listening
//! port, and a process that does not get there is stopped and reported
//! with the tail of its log.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its log file could not be created.
    #[error("cannot create the log {path}: {source}")]
    Log {
        /// The log's path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The program could not be run (missing, not executable).
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// What was started.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It ran, but did not become ready in time (or exited first).
    #[error(
        "{name} did not {awaited} within {timeout:?} (exit status: {status}); its log:\n{log}"
    )]
    NotReady {
        /// What was started.
        name: String,
        /// What it was waited for to do.
        awaited: String,
        /// How long it was given.
        timeout: Duration,
        /// Its exit status, or "still running".
        status: String,
        /// The last lines of its log.
        log: String,
    },
}

/// A running child process; stopped (SIGTERM, then SIGKILL after the
/// grace period) when dropped.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
    startup: Vec<String>,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// Makes the kernel send SIGKILL to the child when its parent dies.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
}

impl ChildProcess {
    fn launch(name: &str, mut command: Command, log: &Path) -> Result<ChildProcess, StartError> {
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|source| StartError::Spawn {
            name: name.to_string(),
            source,
        })?;
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace: Duration::from_secs(3),
            startup: Vec::new(),
        })
    }

    /// The log file, emptied first unless `AFT_TEST_KEEP` is set (then a
    /// restarted process appends to what its earlier run wrote).
    fn log_file(log: &Path) -> Result<std::fs::File, StartError> {
        let keep = std::env::var_os("AFT_TEST_KEEP").is_some();
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(keep)
            .truncate(!keep)
            .open(log)
            .map_err(|source| StartError::Log {
                path: log.to_path_buf(),
                source,
            })
    }

    fn not_ready(mut self, awaited: String, timeout: Duration) -> StartError {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "still running".to_string(),
        };
        let log = self.log_tail();
        self.stop();
        StartError::NotReady {
            name: self.name.clone(),
            awaited,
            timeout,
            status,
            log,
        }
    }

    /// Spawns `command` with stderr to `log` and stdout piped; waits until
    /// a stdout line starts with `ready` (within `timeout`). Returns the
    /// process and that line; the lines before it stay available
    /// ([`ChildProcess::startup_lines`]).
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        ready: &str,
        timeout: Duration,
    ) -> Result<(ChildProcess, String), StartError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Self::log_file(log)?);
        let mut process = Self::launch(name, command, log)?;
        let Some(stdout) = process.child.stdout.take() else {
            return Err(process.not_ready("open its standard output".into(), timeout));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining after nobody listens, so the child never blocks.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.starts_with(ready) => return Ok((process, line)),
                Ok(line) => process.startup.push(line),
                Err(_) => return Err(process.not_ready(format!("print `{ready}`"), timeout)),
            }
        }
    }

    /// Spawns `command` with stdout and stderr to `log`; waits until it
    /// accepts TCP connections on 127.0.0.1:`port` (for servers that
    /// announce nothing on stdout).
    pub fn spawn_listening(
        name: &str,
        mut command: Command,
        log: &Path,
        port: u16,
        timeout: Duration,
    ) -> Result<ChildProcess, StartError> {
        let out = Self::log_file(log)?;
        let err = out.try_clone().map_err(|source| StartError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut process = Self::launch(name, command, log)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(process);
            }
            if !process.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(process.not_ready(format!("listen on port {port}"), timeout))
    }

    /// The stdout lines it printed before its ready line.
    pub fn startup_lines(&self) -> &[String] {
        &self.startup
    }

    /// The address of a sidecar's operator endpoint, from its
    /// `metrics listening on http://ADDR` start-up line.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.startup.iter().find_map(|line| {
            line.strip_prefix("metrics listening on http://")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How long [`ChildProcess::stop`] waits after SIGTERM (default 3 s).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Sends `signal` (a `libc::SIG*` number). After SIGSTOP it returns
    /// only once every thread is stopped: delivery is asynchronous, and a
    /// thread still running could answer a request sent right after.
    pub fn signal(&self, signal: i32) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, signal);
        }
        if signal == libc::SIGSTOP {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !all_threads_stopped(self.child.id()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within the grace period.
    /// Returns its exit status if it exited by itself.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        None
    }

    /// SIGKILL (a crash), and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for it to exit by itself; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A handle that owns a child process (a server of the kit, or the process
/// itself): lets a tool keep servers of different kinds in one list, ask
/// whether each still runs, and stop them in order.
pub trait OwnsProcess: Send {
    /// The process, while it runs under this handle.
    fn process_mut(&mut self) -> Option<&mut ChildProcess>;
}

impl OwnsProcess for ChildProcess {
    fn process_mut(&mut self) -> Option<&mut ChildProcess> {
        Some(self)
    }
}

impl<T: OwnsProcess + ?Sized> OwnsProcess for Box<T> {
    fn process_mut(&mut self) -> Option<&mut ChildProcess> {
        (**self).process_mut()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether every thread of process `pid` is stopped (state `T` or `t`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}
