//! The real `aft-sidecar` binary, started as tests, `aft-bench` and
//! `aft-demo` start it: on an IPC directory, waited for until it prints
//! `aft-sidecar ready`, its stderr in a log file, killed when the handle
//! drops (also when the test panics or the tool dies).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildProcess, StartError};

/// The line a sidecar prints on standard output once it serves.
pub const READY_LINE: &str = "aft-sidecar ready";

/// How to start a sidecar: everything [`launch`] needs.
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    /// The `aft-sidecar` binary.
    pub binary: PathBuf,
    /// Its `--ipc-dir`.
    pub ipc_dir: PathBuf,
    /// More flags (storage, node address, peers, ...).
    pub args: Vec<String>,
    /// More environment (`AFT_FAILPOINTS`, AWS credentials, ...). `AFT_LOG`
    /// is `warn` unless given here.
    pub env: Vec<(String, String)>,
    /// A program the binary runs under (e.g. `valgrind --tool=callgrind`):
    /// the first element is run with the rest, then the binary and its flags.
    pub wrapper: Vec<String>,
    /// Where its standard error goes.
    pub log: PathBuf,
    /// How long it may take to print its ready line.
    pub timeout: Duration,
}

impl SidecarSpec {
    /// A sidecar of `binary` on `ipc_dir`, logging next to it
    /// (`<ipc_dir>.stderr.log`), given 20 s to start.
    pub fn new(binary: &Path, ipc_dir: &Path) -> Self {
        SidecarSpec {
            binary: binary.to_path_buf(),
            ipc_dir: ipc_dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            log: ipc_dir.with_extension("stderr.log"),
            timeout: Duration::from_secs(20),
        }
    }

    /// Adds flags.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Adds environment variables.
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, env: &[(K, V)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())),
        );
        self
    }
}

/// Starts the sidecar `spec` describes and waits for its ready line. Under
/// a wrapper (a profiler) it is given two minutes to stop.
pub fn launch(spec: &SidecarSpec) -> Result<ChildProcess, StartError> {
    let mut command = match spec.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&spec.binary);
            c
        }
        None => Command::new(&spec.binary),
    };
    command
        .arg("--ipc-dir")
        .arg(&spec.ipc_dir)
        .args(&spec.args)
        .env(
            "AFT_LOG",
            std::env::var("AFT_TEST_SIDECAR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (mut process, _) = ChildProcess::spawn(
        &format!("aft-sidecar ({})", spec.ipc_dir.display()),
        command,
        &spec.log,
        READY_LINE,
        spec.timeout,
    )?;
    if !spec.wrapper.is_empty() {
        process.set_grace(Duration::from_secs(120));
    }
    Ok(process)
}

/// The address of a started sidecar's gRPC front, from its
/// `grpc listening on ADDR` start-up line.
pub fn grpc_addr_of(process: &ChildProcess) -> Option<std::net::SocketAddr> {
    process
        .startup_lines()
        .iter()
        .find_map(|line| line.strip_prefix("grpc listening on ")?.trim().parse().ok())
}

/// A sidecar a test owns: it can be killed, signalled and started again
/// with the same flags. Dropping it kills it (SIGKILL).
pub struct Sidecar {
    process: Option<ChildProcess>,
    /// How it is started; change `args` or `env` before [`Sidecar::spawn`]
    /// to restart it differently.
    pub spec: SidecarSpec,
    /// Its IPC directory.
    pub ipc_dir: PathBuf,
    /// `http://ADDR` of its operator endpoint, if it has one.
    pub metrics_url: Option<String>,
}

impl Sidecar {
    /// Starts `binary` with `--ipc-dir ipc_dir` plus `args` and waits until
    /// it is ready; panics with its stderr if it does not start.
    pub fn start(binary: &Path, ipc_dir: &Path, args: &[&str]) -> Sidecar {
        Self::start_with_env(binary, ipc_dir, args, &[])
    }

    /// [`Sidecar::start`] with extra environment variables.
    pub fn start_with_env(
        binary: &Path,
        ipc_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Sidecar {
        Self::start_spec(SidecarSpec::new(binary, ipc_dir).args(args).envs(env))
    }

    /// Starts the sidecar `spec` describes; panics if it does not start.
    pub fn start_spec(spec: SidecarSpec) -> Sidecar {
        let mut sidecar = Sidecar {
            process: None,
            ipc_dir: spec.ipc_dir.clone(),
            spec,
            metrics_url: None,
        };
        if let Err(e) = sidecar.spawn() {
            panic!("sidecar did not start: {e}");
        }
        sidecar
    }

    /// Starts the process (again) and waits for its ready line.
    pub fn spawn(&mut self) -> Result<(), StartError> {
        let process = launch(&self.spec)?;
        self.metrics_url = process.metrics_addr().map(|a| format!("http://{a}"));
        self.process = Some(process);
        Ok(())
    }

    /// The address of its gRPC front, from its `grpc listening on ADDR` line.
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        grpc_addr_of(self.process.as_ref()?)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The running process (`None` once killed or stopped).
    pub fn process(&self) -> Option<&ChildProcess> {
        self.process.as_ref()
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ChildProcess::pid)
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, ...). `STOP` returns
    /// once every thread is stopped.
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "KILL" => libc::SIGKILL,
            "HUP" => libc::SIGHUP,
            other => panic!("unknown signal name {other}"),
        };
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }

    /// SIGTERM, then waits up to 5 s for it to exit; returns whether it
    /// exited successfully by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut process) = self.process.take() else {
            return false;
        };
        process.set_grace(Duration::from_secs(5));
        process.stop().is_some_and(|status| status.success())
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Waits up to `timeout` for it to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let status = self.process.as_mut()?.wait_exit(timeout)?;
        self.process = None;
        status.code()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}
