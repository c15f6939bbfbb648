//! The Markdown report. `aft-bench` rewrites only the section between the
//! markers below in `docs/benchmarks.md`; everything around it (the
//! micro-benchmark figures, the profile) is written by hand and kept.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::plots::Plot;
use crate::results::{Ratio, Results};

/// Start of the generated section.
pub const BEGIN: &str =
    "<!-- BEGIN aft-bench GENERATED SECTION: rewritten by `aft-bench`, do not edit by hand -->";
/// End of the generated section.
pub const END: &str = "<!-- END aft-bench GENERATED SECTION -->";

fn absolute(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `target` as a relative link from a file in directory `from_dir`.
pub fn relative_link(from_dir: &Path, target: &Path) -> String {
    let from = absolute(from_dir);
    let to = absolute(target);
    let from_parts: Vec<_> = from.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from_parts
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut link = PathBuf::new();
    for _ in common..from_parts.len() {
        link.push("..");
    }
    for part in &to_parts[common..] {
        link.push(part.as_os_str());
    }
    link.display().to_string()
}

fn fmt_ratio(r: &Ratio) -> String {
    match r.value {
        Some(v) => format!("**{v:.2}×**"),
        None => "—".into(),
    }
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

fn spread(values: &[f64]) -> String {
    if values.len() < 2 {
        return "—".into();
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted[sorted.len() / 2];
    if mid <= 0.0 {
        return "—".into();
    }
    format!("±{:.0}%", (hi - lo) / 2.0 / mid * 100.0)
}

/// The generated section for `results` (links relative to `report_dir`).
pub fn section(results: &Results, plots: &[Plot], report_dir: &Path, json_path: &Path) -> String {
    let mut s = String::new();
    let m = &results.machine;
    let c = &results.config;
    let p = &c.params;
    let _ = writeln!(s, "{BEGIN}\n");
    let _ = writeln!(s, "## Results `{}`\n", results.name);
    let _ = writeln!(
        s,
        "Produced by (from the workspace root, after `cargo build --release -p aft-sidecar -p aft-bench`):\n\n```sh\ntarget/release/{}\n```\n",
        results.command
    );
    let _ = writeln!(
        s,
        "Raw results: [`{}`]({}).\n",
        json_path.display(),
        relative_link(report_dir, json_path)
    );
    let _ = writeln!(s, "**Machine.** {} cores ({}), {} GiB, Linux {}; load average {} at the start and {} at the end \
        (other work on the machine competes with the benchmark). Sidecar: {} build, `{}`; commit `{}`; {}; {}.\n",
        m.cores, m.cpu_model, m.memory_gib, m.kernel, m.load_average_at_start, m.load_average_at_end,
        m.sidecar_build, workspace_relative(&c.sidecar), m.git_commit, m.rustc, m.redis);
    let _ = writeln!(s, "**Run.** {} of {} rounds{}, each running every (workload, clients) cell for {:.1} s, \
        in alternating order (A B …, then … B A); a {:.1} s unrecorded warm-up per workload first. \
        Clients: {:?} (one OS thread and one `IpcClient` or Redis connection each). {:.0} s in all.\n",
        c.rounds_completed, c.rounds, if results.truncated { " (cut by the time limit)" } else { "" },
        c.slice_secs, c.warmup_secs, c.clients, results.duration_secs);
    let _ = writeln!(s, "**Workload.** {} keys per key space, Zipf {}, {} B values; DAG = {} functions × ({} reads + {} write{}) \
        = {} IPC round trips through a sidecar{} and {} Redis round trips direct. Redis: {}. Network hop: +{} µs each way; {}.\n",
        p.keys, p.zipf, p.value_bytes, p.functions, p.reads_per_function, p.writes_per_function,
        if p.writes_per_function == 1 { "" } else { "s" },
        p.ipc_round_trips,
        if p.continue_same_node { " (start, reads, put, continue on the same node, reads, put, commit)" } else { "" },
        p.redis_round_trips,
        if c.redis_aof { "AOF, appendfsync always" } else { "in memory, no persistence (same server for direct and sidecar)" },
        c.delay_us, c.network);

    let _ = writeln!(s, "### Headline ratios\n");
    let _ = writeln!(
        s,
        "Latency ratios at {} client(s), throughput ratios at {} clients. Ratios, not pass/fail: \
        see the discussion below for what bounds each one.\n",
        results.latency_clients(),
        results.throughput_clients()
    );
    let _ = writeln!(s, "| ratio | value | goal | measured | against |");
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for r in &results.ratios {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.description,
            fmt_ratio(r),
            if r.goal.is_empty() { "—" } else { &r.goal },
            r.numerator,
            r.denominator
        );
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "### Latency ratios at every client count\n");
    let ids = [
        "cached_read_p50",
        "net_dag_p50",
        "net_dag_p99",
        "loopback_dag_vs_echo_dag",
        "cross_node_2_p50",
        "cross_node_3_p50",
        "loopback_dag_p50",
        "throughput_vs_echo",
    ];
    let _ = write!(s, "| clients |");
    for id in ids {
        let _ = write!(s, " {id} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|{}", " --- |".repeat(ids.len() + 1));
    for &n in &c.clients {
        let ratios = results.ratios_at(n, n);
        let _ = write!(s, "| {n} |");
        for id in ids {
            let v = ratios
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| r.value)
                .map_or("—".into(), |v| format!("{v:.2}"));
            let _ = write!(s, " {v} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);

    if let Some(px) = &results.proxy {
        let _ = writeln!(s, "### The simulated network hop, measured by itself\n");
        let _ = writeln!(s, "Redis PING straight: p50 {}; through the delay proxy: p50 {}, p99 {}. \
            The proxy adds **{}** per round trip at p50 (configured: 2 × {} µs = {} µs; the rest is the proxy's own \
            two extra loopback hops and wake-up latency).\n",
            us(px.direct_ping_p50_us), us(px.proxied_ping_p50_us), us(px.proxied_ping_p99_us),
            us(px.added_rtt_p50_us), px.delay_us_each_way, 2 * px.delay_us_each_way);
    }

    if !results.anomalies.is_empty() {
        let _ = writeln!(
            s,
            "### Read-atomicity anomalies (history checker, real-time commit order)\n"
        );
        let _ = writeln!(s, "| key space | workloads | through sidecar | transactions | anomalies | fractured | aborted reads | uncommitted reads | read-your-writes | by reader's client count |");
        let _ = writeln!(
            s,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for a in &results.anomalies {
            let by: Vec<String> = a
                .by_clients
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | **{}** | {} | {} | {} | {} | {} |",
                a.key_space,
                a.workloads.join(", "),
                if a.through_sidecar { "yes" } else { "no" },
                a.transactions,
                a.total,
                a.fractured_reads,
                a.aborted_reads,
                a.uncommitted_reads,
                a.read_your_writes,
                if by.is_empty() {
                    "—".into()
                } else {
                    by.join(", ")
                }
            );
        }
        let _ = writeln!(s);
        for a in results.anomalies.iter().filter(|a| !a.examples.is_empty()) {
            let _ = writeln!(s, "Example from `{}`: `{}`\n", a.key_space, a.examples[0]);
        }
    }

    let _ = writeln!(s, "### Every cell\n");
    let _ = writeln!(s, "Latency per operation (a request, a DAG or a PING); throughput = operations over the measured wall time \
        of all rounds (min–max over rounds); noise = half the spread of the per-round p50s around their median.\n");
    let _ = writeln!(s, "| workload | clients | ops | p50 | p90 | p99 | p99.9 | max | throughput /s | noise (p50) | errors | aborts |");
    let _ = writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for cell in &results.cells {
        let l = &cell.latency_us;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({:.0}–{:.0}) | {} | {} | {} |",
            cell.workload,
            cell.clients,
            cell.ops,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            cell.throughput.mean,
            cell.throughput.min,
            cell.throughput.max,
            spread(&cell.round_p50_us),
            cell.errors,
            cell.aborts
        );
    }
    let _ = writeln!(s);
    let failures: Vec<_> = results
        .cells
        .iter()
        .filter_map(|c| c.first_error.as_ref().map(|e| (c, e)))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "First error of each cell that had one:\n");
        for (cell, e) in failures {
            let _ = writeln!(
                s,
                "- {} × {}: `{}`",
                cell.workload,
                cell.clients,
                e.replace('`', "'")
            );
        }
        let _ = writeln!(s);
    }

    let lat = results.latency_clients();
    let step_cells: Vec<_> = results
        .cells
        .iter()
        .filter(|c| c.clients == lat && !c.steps_us.is_empty())
        .collect();
    if !step_cells.is_empty() {
        let _ = writeln!(
            s,
            "### Where a DAG's time goes ({lat} client(s)): p50 / p99 of each request\n"
        );
        let steps = ["start", "get", "put", "continue", "commit", "set"];
        let _ = write!(s, "| workload |");
        for st in steps {
            let _ = write!(s, " {st} |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|{}", " --- |".repeat(steps.len() + 1));
        for cell in step_cells {
            let _ = write!(s, "| {} |", cell.workload);
            for st in steps {
                match cell.steps_us.get(st) {
                    Some(sum) => {
                        let _ = write!(s, " {} / {} |", us(sum.p50), us(sum.p99));
                    }
                    None => {
                        let _ = write!(s, " — |");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }

    cost_section(&mut s, results);

    if !plots.is_empty() {
        let _ = writeln!(s, "### Plots\n");
        for plot in plots {
            let _ = writeln!(
                s,
                "![{}]({})\n",
                plot.caption,
                relative_link(report_dir, &plot.path)
            );
        }
    }

    let _ = writeln!(s, "### Multi-node\n");
    match results.multi_node.status.as_str() {
        "ran" => {
            let placement = if results.multi_node.placement == "local" {
                "each DAG runs on node (client + DAG) mod k: whole DAGs spread over the nodes"
            } else {
                "function f of a DAG runs on node (client + DAG + f) mod k: with k >= 2 every DAG crosses nodes (continue fetches its state from the upstream node, commit runs the cross-node protocol)"
            };
            let _ = writeln!(s, "Ran with {:?} sidecars (all started, each on its own `127.0.0.X` node address with peers in plaintext mode, \
                sharing one Redis); placement `{}`: {placement}.\n", results.multi_node.nodes, results.multi_node.placement);
        }
        other => {
            let _ = writeln!(
                s,
                "**{}.** {}\n",
                other,
                results.multi_node.reason.clone().unwrap_or_default()
            );
        }
    }

    let _ = writeln!(s, "### Workloads\n");
    for w in &results.workloads {
        let _ = writeln!(s, "- `{}` (per {}): {}", w.name, w.unit, w.title);
    }
    let _ = writeln!(s);
    if !results.notes.is_empty() {
        let _ = writeln!(s, "### Notes of this run\n");
        for n in &results.notes {
            let _ = writeln!(s, "- {}", n.replace('\n', "\n  "));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{END}");
    s
}

/// A new report: the generated section between hand-written placeholders.
/// `path` relative to the working directory (the workspace root) when it
/// lies inside it: the report names no machine's own paths.
fn workspace_relative(path: &str) -> String {
    let Ok(cwd) = std::env::current_dir() else {
        return path.to_string();
    };
    Path::new(path)
        .strip_prefix(&cwd)
        .map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

/// Per committed DAG: what the sidecars spent, and what that projects to.
fn cost_section(s: &mut String, results: &Results) {
    let cells: Vec<_> = results
        .cells
        .iter()
        .filter_map(|c| c.cost.as_ref().map(|cost| (c, cost)))
        .collect();
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(s, "### What one committed operation costs the sidecars\n");
    let _ = writeln!(
        s,
        "Sampled around every measured slice and summed over the workload's sidecars (for `multi-node-k`, all \
        three sidecars of the cluster, so gossip to every peer is included): CPU time from each process's own \
        accounting (`/proc/PID/stat` utime + stime, what `getrusage` reports), storage calls and bytes (both \
        directions) and peer messages and bytes sent, from the sidecars' `/metrics`; divided by the operations \
        committed in those slices (DAGs, or single requests for `sidecar-get`).\n"
    );
    let _ = writeln!(
        s,
        "| workload | clients | ops counted | CPU µs / op | storage calls / op | storage KB / op | peer msgs / op | peer KB / op |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (cell, cost) in &cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} |",
            cell.workload,
            cell.clients,
            cost.ops,
            cost.cpu_us,
            cost.storage_calls,
            cost.storage_bytes / 1024.0,
            cost.peer_messages,
            cost.peer_bytes / 1024.0
        );
    }
    let _ = writeln!(s);
    // Projection from the busiest cell of each workload (costs per DAG fall
    // as load batches work, so the busiest cell is the fairest estimate).
    let busiest = |name: &str| {
        cells
            .iter()
            .filter(|(c, _)| c.workload == name)
            .max_by_key(|(c, _)| c.clients)
            .map(|(c, cost)| (c.clients, *cost))
    };
    let mut lines = Vec::new();
    for (name, nodes) in [
        ("sidecar-redis-dag", 1usize),
        ("sidecar-file-dag", 1),
        ("multi-node-1", 1),
        ("multi-node-2", 2),
        ("multi-node-3", 3),
    ] {
        if let Some((clients, cost)) = busiest(name) {
            if cost.cpu_us <= 0.0 {
                continue;
            }
            let per_node_cpu = cost.cpu_us / nodes as f64;
            let node_rate = 8.0 * 1e6 / per_node_cpu;
            lines.push(format!(
                "- `{name}` ({clients} clients): {:.0} µs of sidecar CPU per DAG over {nodes} node(s) → one 8-core node \
                sustains about **{:.0} DAGs/s** of this shape, issuing {:.0} storage calls/s ({:.1} MB/s) and sending {:.0} peer \
                messages/s ({:.1} MB/s).",
                cost.cpu_us,
                node_rate,
                node_rate * cost.storage_calls / nodes as f64,
                node_rate * cost.storage_bytes / nodes as f64 / 1e6,
                node_rate * cost.peer_messages / nodes as f64,
                node_rate * cost.peer_bytes / nodes as f64 / 1e6,
            ));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            s,
            "**Projection to one 8-core node**, from the busiest cell of each workload:\n"
        );
        for line in lines {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "\nAssumptions: the sidecar gets 8 cores of its own (executors and storage elsewhere) and stays CPU-bound, \
            its CPU per DAG does not grow with load (it falls here as load batches replies and gossip), storage and the \
            network absorb the calls and bytes above, and the IPC front, a single thread, keeps up (it is not the \
            bottleneck below about 1 core's worth of request handling: see the profile in this file). A cross-node \
            DAG's CPU is spread over the nodes it visits; in an N-node cluster each commit is gossiped to N - 1 peers, \
            so the per-DAG peer messages above grow by one per added node (see \"Scale on paper\" in ARCHITECTURE.md \
            for the simulated 3-50 node figures).\n"
        );
    }
}

fn skeleton(section: &str) -> String {
    format!(
        "# Benchmarks\n\nHow aft-sidecar performs against its baselines, measured by `aft-bench` (see `bench/`).\n\n{section}\n"
    )
}

/// Writes `section` into the report at `path`: replaces the text between
/// the markers, or creates the file.
pub fn write(path: &Path, section: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(existing) => match (existing.find(BEGIN), existing.find(END)) {
            (Some(b), Some(e)) if b < e => {
                let after = e + END.len();
                let rest = existing[after..]
                    .strip_prefix('\n')
                    .unwrap_or(&existing[after..]);
                format!("{}{section}{rest}", &existing[..b])
            }
            _ => format!("{}\n{section}", existing.trim_end()),
        },
        Err(_) => skeleton(section),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative() {
        assert_eq!(
            relative_link(Path::new("/w/docs"), Path::new("/w/bench/results/a.svg")),
            "../bench/results/a.svg"
        );
    }

    #[test]
    fn rewrites_only_the_generated_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.md");
        std::fs::write(
            &path,
            format!("# T\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Profile\nkept\n"),
        )
        .expect("write");
        write(&path, &format!("{BEGIN}\nnew\n{END}\n")).expect("rewrite");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("intro") && text.contains("new") && text.contains("kept"));
        assert!(!text.contains("old"));
    }
}
