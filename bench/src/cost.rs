//! What one committed DAG costs a sidecar: CPU time (from the process's own
//! accounting, `/proc/PID/stat` utime + stime, which is what `getrusage`
//! reports), storage calls and bytes, and peer messages and bytes (from the
//! sidecar's `/metrics`). Sampled around every measured slice, summed over
//! every sidecar of the workload (idle ones included: their heartbeats are
//! part of what a cluster costs), divided by the DAGs committed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One sidecar process to sample.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its process id.
    pub pid: u32,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
}

/// Counters of one sidecar (or a sum of several) at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU seconds (user + system) since the process started.
    pub cpu_secs: f64,
    /// Storage calls.
    pub storage_calls: f64,
    /// Bytes sent to and received from storage.
    pub storage_bytes: f64,
    /// Peer messages sent.
    pub peer_messages: f64,
    /// Bytes of peer messages sent.
    pub peer_bytes: f64,
}

impl Sample {
    /// The sum of `probes`' counters now (a probe that cannot be read adds nothing).
    pub fn take(probes: &[Probe]) -> Sample {
        let mut total = Sample::default();
        for probe in probes {
            total.cpu_secs += cpu_secs(probe.pid).unwrap_or(0.0);
            if let Some(text) = scrape(probe.metrics) {
                let get = |name: &str| counter(&text, name).unwrap_or(0.0);
                total.storage_calls += get("aft_storage_calls_total");
                total.storage_bytes +=
                    get("aft_storage_bytes_written_total") + get("aft_storage_bytes_read_total");
                total.peer_messages += get("aft_peer_messages_sent_total");
                total.peer_bytes += get("aft_peer_bytes_sent_total");
            }
        }
        total
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Sample) -> Sample {
        Sample {
            cpu_secs: self.cpu_secs - before.cpu_secs,
            storage_calls: self.storage_calls - before.storage_calls,
            storage_bytes: self.storage_bytes - before.storage_bytes,
            peer_messages: self.peer_messages - before.peer_messages,
            peer_bytes: self.peer_bytes - before.peer_bytes,
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &Sample) {
        self.cpu_secs += other.cpu_secs;
        self.storage_calls += other.storage_calls;
        self.storage_bytes += other.storage_bytes;
        self.peer_messages += other.peer_messages;
        self.peer_bytes += other.peer_bytes;
    }
}

/// Per committed DAG (or request), over every measured slice of a cell.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellCost {
    /// Operations the figures are divided by (committed DAGs, or requests).
    pub ops: u64,
    /// Sidecar CPU time, µs (all sidecars of the workload).
    pub cpu_us: f64,
    /// Storage calls.
    pub storage_calls: f64,
    /// Storage bytes (both directions).
    pub storage_bytes: f64,
    /// Peer messages sent (by all sidecars: every message counted once).
    pub peer_messages: f64,
    /// Peer bytes sent.
    pub peer_bytes: f64,
}

impl CellCost {
    /// `total` spread over `ops` operations (`None` if there were none).
    pub fn per_op(total: &Sample, ops: u64) -> Option<CellCost> {
        if ops == 0 {
            return None;
        }
        let n = ops as f64;
        let r = |x: f64| (x / n * 100.0).round() / 100.0;
        Some(CellCost {
            ops,
            cpu_us: r(total.cpu_secs * 1e6),
            storage_calls: r(total.storage_calls),
            storage_bytes: r(total.storage_bytes),
            peer_messages: r(total.peer_messages),
            peer_bytes: r(total.peer_bytes),
        })
    }
}

/// CPU seconds (utime + stime) of process `pid`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11, 12 here).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / ticks.max(1) as f64)
}

/// Resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The text of `GET /metrics` from `addr`.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the unlabelled metric `name` in a Prometheus text exposition.
pub fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_by_exact_name() {
        let text = "# HELP aft_storage_calls Calls\naft_storage_calls_total 42\naft_storage_calls_total_x 7\n";
        assert_eq!(counter(text, "aft_storage_calls_total"), Some(42.0));
        assert_eq!(counter(text, "aft_missing_total"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_secs(pid).is_some_and(|s| s > 0.0));
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
    }

    #[test]
    fn costs_are_divided_by_operations() {
        let total = Sample {
            cpu_secs: 0.5,
            storage_calls: 1000.0,
            storage_bytes: 4e6,
            peer_messages: 0.0,
            peer_bytes: 0.0,
        };
        let cost = CellCost::per_op(&total, 500).unwrap();
        assert_eq!(cost.cpu_us, 1000.0);
        assert_eq!(cost.storage_calls, 2.0);
        assert!(CellCost::per_op(&total, 0).is_none());
    }
}
