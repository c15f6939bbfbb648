//! The processes a run starts: `redis-server`, `aft-sidecar`s, the echo
//! server and the delay proxy. The process machinery (start-up, logs,
//! parent-death signal, stop on drop) and the servers are the test kit's
//! (`aft-testkit`), so the bench starts them exactly as the tests do; what
//! is here is what only the bench runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

pub use aft_testkit::process::{ChildProcess, OwnsProcess};
pub use aft_testkit::redis::{RedisOptions, RedisServer};
pub use aft_testkit::sidecar::{launch as start_sidecar, SidecarSpec};

/// A sidecar of `binary` on `ipc_dir` and `storage`, logging to `log`,
/// with its operator endpoint on a free port (the bench samples its CPU
/// and storage counters there).
pub fn sidecar_spec(binary: &Path, ipc_dir: &Path, storage: &str, log: &Path) -> SidecarSpec {
    let mut spec = SidecarSpec::new(binary, ipc_dir).args(&[
        "--storage",
        storage,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    spec.log = log.to_path_buf();
    spec
}

/// A `redis-server` (`binary`) on a free loopback port; `aof` turns on the
/// append-only file with `appendfsync always`.
pub fn start_redis(binary: &str, aof: bool) -> anyhow::Result<RedisServer> {
    Ok(RedisServer::launch(RedisOptions {
        binary: PathBuf::from(binary),
        aof,
        extra_args: Vec::new(),
    })?)
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
