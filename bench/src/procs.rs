//! The processes a run starts: `redis-server`, `aft-sidecar`s, the echo
//! server and the delay proxy. Each is killed when its handle drops, and
//! also when this process dies (parent-death signal), so a crashed or
//! interrupted run leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::resp::RespClient;

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
    /// The stdout lines it printed before its ready line.
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

impl ChildProcess {
    /// Spawns `command` with stderr to `log`, stdout piped, and a
    /// parent-death signal; waits until a stdout line starts with `ready`
    /// (within `timeout`) and returns the process and that line.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        ready: &str,
        timeout: Duration,
    ) -> anyhow::Result<(ChildProcess, String)> {
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("cannot create log {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut process = ChildProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace: Duration::from_secs(3),
            startup: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the child never blocks.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.starts_with(ready) => return Ok((process, line)),
                Ok(line) => process.startup.push(line),
                Err(_) => {
                    let status = process.child.try_wait().ok().flatten();
                    let log = process.log_tail();
                    process.stop();
                    bail!(
                        "{name} did not print `{ready}` within {timeout:?} (exit status: {status:?}); its log:\n{log}"
                    );
                }
            }
        }
    }

    /// Spawns `command` with stdout and stderr to `log` and a parent-death
    /// signal; waits until it accepts TCP connections on 127.0.0.1:`port`
    /// (for servers that announce nothing on stdout).
    pub fn spawn_listening(
        name: &str,
        mut command: Command,
        log: &Path,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<ChildProcess> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create log {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut process = ChildProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace: Duration::from_secs(3),
            startup: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(process);
            }
            if !process.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = process.log_tail();
        process.stop();
        bail!("{name} did not listen on port {port} within {timeout:?}; its log:\n{log}")
    }

    /// The address of the metrics endpoint it announced at start-up, if any.
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

    /// The last lines of its stderr log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How long [`ChildProcess::stop`] lets it exit after SIGTERM (default
    /// 3 s; longer under a profiler, which writes its output at exit).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Stops it: SIGTERM, up to the grace period to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: sends a signal to our own child, whose pid we hold
            // and have not reaped (so it cannot have been reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes the child of `command` receive SIGKILL when this process dies, so
/// no server outlives an interrupted benchmark.
fn die_with_parent(command: &mut Command) {
    // SAFETY: runs in the child between fork and exec; prctl is
    // async-signal-safe and touches no memory of the parent.
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A `redis-server` on a free loopback port (no persistence unless asked:
/// both the direct baseline and the sidecar use the same server).
pub struct RedisProcess {
    /// The process.
    pub process: ChildProcess,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RedisProcess {
    /// Starts `binary` in `dir`; `aof` turns on `appendfsync always`.
    pub fn start(binary: &str, dir: &Path, aof: bool) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--loglevel", "notice", "--logfile", ""])
            .arg("--dir")
            .arg(dir);
        if aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let (process, _) = ChildProcess::spawn(
            "redis-server",
            command,
            &dir.join("redis.stderr.log"),
            // redis-server logs to stdout with --logfile "".
            "",
            Duration::from_secs(10),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr).is_ok() {
                let mut client = RespClient::connect(addr, Duration::from_secs(2))?;
                if client.ping().is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server on {addr} did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisProcess { process, addr })
    }
}

/// How one sidecar process is started.
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    /// The `aft-sidecar` binary.
    pub binary: PathBuf,
    /// Its IPC directory.
    pub ipc_dir: PathBuf,
    /// Its storage URL.
    pub storage: String,
    /// More flags (node address, peers, ...).
    pub extra_args: Vec<String>,
    /// A command to wrap it in (e.g. `valgrind --tool=callgrind`), empty for none.
    pub wrapper: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// Starts a sidecar and waits for its ready line.
pub fn start_sidecar(spec: &SidecarSpec, timeout: Duration) -> anyhow::Result<ChildProcess> {
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
        .arg("--storage")
        .arg(&spec.storage)
        // Metrics on a port of its own choosing: the benchmark reads each
        // sidecar's storage and peer counters from it.
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(&spec.extra_args)
        .env("AFT_LOG", "warn")
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (mut process, _) = ChildProcess::spawn(
        &format!("aft-sidecar ({})", spec.ipc_dir.display()),
        command,
        &spec.log,
        "aft-sidecar ready",
        timeout,
    )?;
    if !spec.wrapper.is_empty() {
        process.set_grace(Duration::from_secs(120));
    }
    Ok(process)
}

/// Starts `aft-bench echo-server` (this binary) in `ipc_dir`.
pub fn start_echo(
    bench_exe: &Path,
    ipc_dir: &Path,
    reply_bytes: usize,
    log: &Path,
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(bench_exe);
    command
        .arg("echo-server")
        .arg("--ipc-dir")
        .arg(ipc_dir)
        .arg("--reply-bytes")
        .arg(reply_bytes.to_string());
    let (process, _) = ChildProcess::spawn(
        "echo-server",
        command,
        log,
        "echo-server ready",
        Duration::from_secs(20),
    )?;
    Ok(process)
}

/// Starts `aft-bench delay-proxy` in front of `target`; returns the process
/// and the address it listens on.
pub fn start_proxy(
    bench_exe: &Path,
    target: SocketAddr,
    delay: Duration,
    spin: Duration,
    log: &Path,
) -> anyhow::Result<(ChildProcess, SocketAddr)> {
    let mut command = Command::new(bench_exe);
    command
        .arg("delay-proxy")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--target")
        .arg(target.to_string())
        .arg("--delay-us")
        .arg(delay.as_micros().to_string())
        .arg("--spin-us")
        .arg(spin.as_micros().to_string());
    let (process, line) = ChildProcess::spawn(
        "delay-proxy",
        command,
        log,
        "delay-proxy listening on ",
        Duration::from_secs(20),
    )?;
    let addr = line
        .trim_start_matches("delay-proxy listening on ")
        .trim()
        .parse()
        .with_context(|| format!("delay-proxy printed an unusable address: `{line}`"))?;
    Ok((process, addr))
}
