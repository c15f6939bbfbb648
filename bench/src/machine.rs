//! Facts about the machine a run measured on.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What the report states about the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub cores: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// 1/5/15-minute load averages when the run started (other work on the machine).
    pub load_average_at_start: String,
    /// Same, at the end.
    pub load_average_at_end: String,
    /// `rustc --version`, if available.
    pub rustc: String,
    /// `redis-server --version`, if available.
    pub redis: String,
    /// Git commit of the work tree (with `-dirty` if it has changes).
    pub git_commit: String,
    /// Whether the sidecar binary is a release build (judged by its path).
    pub sidecar_build: String,
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The current load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    /// Collects the facts.
    pub fn collect(sidecar: &Path, redis_server: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        let dirty = Command::new("git")
            .args(["status", "--porcelain"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let mut git_commit = first_line("git", &["rev-parse", "--short", "HEAD"]);
        if dirty && !git_commit.is_empty() {
            git_commit.push_str("-dirty");
        }
        let path = sidecar.display().to_string();
        let sidecar_build = if path.contains("/release/") {
            "release"
        } else if path.contains("/debug/") {
            "debug"
        } else {
            "unknown"
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            load_average_at_start: load_average(),
            load_average_at_end: String::new(),
            rustc: first_line("rustc", &["--version"]),
            redis: first_line(redis_server, &["--version"]),
            git_commit,
            sidecar_build: sidecar_build.into(),
        }
    }
}
