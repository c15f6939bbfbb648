//! Running the real `aft-sidecar` binary in tests: on a temporary IPC
//! directory, killed when the handle drops (also when the test panics).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running sidecar process.
pub struct Sidecar {
    child: Option<Child>,
    pub ipc_dir: PathBuf,
    pub metrics_url: Option<String>,
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Extra environment (e.g. `AFT_FAILPOINTS`).
    pub env: Vec<(String, String)>,
    stderr_log: PathBuf,
}

impl Sidecar {
    /// Starts `binary` with `--ipc-dir ipc_dir` plus `args` and waits until it is ready.
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
        let mut sidecar = Sidecar {
            child: None,
            ipc_dir: ipc_dir.to_path_buf(),
            metrics_url: None,
            binary: binary.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            stderr_log: ipc_dir.with_extension("stderr.log"),
        };
        sidecar.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Err(stderr) = sidecar.spawn() {
            panic!("sidecar did not start: {stderr}");
        }
        sidecar
    }

    /// Spawns the process and waits for its ready line; `Err` holds its stderr.
    pub fn spawn(&mut self) -> Result<(), String> {
        let stderr = std::fs::File::create(&self.stderr_log).expect("stderr log");
        let mut child = Command::new(&self.binary)
            .arg("--ipc-dir")
            .arg(&self.ipc_dir)
            .args(&self.args)
            .env("AFT_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("cannot spawn aft-sidecar");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut metrics_url = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.starts_with("metrics listening on ") => {
                    metrics_url =
                        Some(line.trim_start_matches("metrics listening on ").to_string());
                }
                Ok(line) if line.starts_with("aft-sidecar ready") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.stderr());
                }
            }
        }
        self.metrics_url = metrics_url;
        self.child = Some(child);
        Ok(())
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal with `kill -SIG`.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
        if sig == "STOP" {
            // The signal is delivered asynchronously: a thread already
            // running may still answer a request sent right after `kill`
            // returns. Wait until every thread is stopped.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !all_threads_stopped(self.pid()) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// SIGTERM, then waits for exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.signal("TERM");
        let Some(mut child) = self.child.take() else {
            return false;
        };
        for _ in 0..500 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
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
