//! `aft-bench`: runs the benchmark (default), or one of its helper
//! processes (`echo-server`, `delay-proxy`). See the crate docs and
//! `docs/benchmarks.md`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aft_bench::cli::{Cli, Command, EchoArgs, MemoryArgs, ProxyArgs, RunArgs, StalenessArgs};
use aft_bench::echo::{self, EchoConfig};
use aft_bench::proxy::{self, ProxyConfig};
use aft_bench::results::Results;
use aft_bench::{harness, plots, report};
use anyhow::{bail, Context as _};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::EchoServer(args)) => echo_server(&args),
        Some(Command::DelayProxy(args)) => delay_proxy(&args),
        Some(Command::Staleness(args)) => staleness(&args),
        Some(Command::Memory(args)) => memory(&args),
        None => run(&cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aft-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The sidecar binary: the one given, or the one next to this binary.
fn sidecar_binary(given: Option<&std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("aft-sidecar")),
    }
}

fn staleness(args: &StalenessArgs) -> anyhow::Result<()> {
    let binary = sidecar_binary(args.sidecar.as_ref())?;
    let dir = tempfile::tempdir()?;
    let s = aft_bench::staleness::measure(&binary, &args.redis_server, args.samples, dir.path())?;
    println!(
        "staleness (commit acknowledged on node 1 -> first transaction on node 2 that sees it), {} samples: p50 {} µs, p99 {} µs, max {} µs",
        s.samples, s.p50_us, s.p99_us, s.max_us
    );
    Ok(())
}

fn memory(args: &MemoryArgs) -> anyhow::Result<()> {
    let binary = sidecar_binary(args.sidecar.as_ref())?;
    println!("| committed keys | keys per commit | RSS idle | RSS loaded | value cache | index versions | index bytes / key | load time |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for &keys in &args.keys {
        let dir = tempfile::tempdir()?;
        let m = aft_bench::memory::measure(
            &binary,
            &args.redis_server,
            keys,
            args.keys_per_commit,
            args.cache_bytes,
            dir.path(),
        )?;
        println!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {:.0} | {:.1} s |",
            m.keys,
            m.keys_per_commit,
            mib(m.rss_idle),
            mib(m.rss_loaded),
            mib(m.cache_bytes),
            m.index_versions,
            m.index_bytes_per_key(),
            m.load_secs
        );
    }
    Ok(())
}

fn echo_server(args: &EchoArgs) -> anyhow::Result<()> {
    let config = EchoConfig {
        reply_bytes: args.reply_bytes,
        node_address: args.node_address.clone(),
    };
    echo::serve(&args.ipc_dir, &config, || true)
}

fn loopback_only(addr: &SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{what} {addr} is not a loopback address: the delay proxy only serves this machine");
    }
    Ok(())
}

fn delay_proxy(args: &ProxyArgs) -> anyhow::Result<()> {
    let listen: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen `{}` is not ip:port", args.listen))?;
    let target: SocketAddr = args
        .target
        .parse()
        .with_context(|| format!("--target `{}` is not ip:port", args.target))?;
    loopback_only(&listen, "--listen")?;
    loopback_only(&target, "--target")?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    println!("delay-proxy listening on {}", listener.local_addr()?);
    proxy::serve(
        listener,
        target,
        ProxyConfig {
            delay: Duration::from_micros(args.delay_us),
            spin: Duration::from_micros(args.spin_us),
        },
    )
}

/// Writes JSON, plots and the report of `results`.
fn publish(args: &RunArgs, results: &Results, json_path: &Path) -> anyhow::Result<()> {
    let plot_dir = args.out_dir.join("plots");
    let drawn = plots::draw_all(results, &plot_dir)?;
    for plot in &drawn {
        eprintln!("aft-bench: plot {}", plot.path.display());
    }
    if args.report != "off" {
        let report_path = PathBuf::from(&args.report);
        let report_dir = report_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let section = report::section(results, &drawn, &report_dir, json_path);
        report::write(&report_path, &section)?;
        eprintln!("aft-bench: report {}", report_path.display());
    }
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(json) = &args.render {
        // Re-render plots and report from saved results.
        let text = std::fs::read_to_string(json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not aft-bench results", json.display()))?;
        let args = RunArgs {
            name: Some(results.name.clone()),
            ..args.clone()
        };
        return publish(&args, &results, json);
    }
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let results = harness::run(args, &exe)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let json_path = args.out_dir.join(format!("{}.json", results.name));
    std::fs::write(&json_path, aft_bench::results::to_json(&results)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    eprintln!("aft-bench: results {}", json_path.display());
    publish(args, &results, &json_path)?;
    println!("{}", summary(&results));
    Ok(())
}

/// A short text summary for the terminal.
fn summary(results: &Results) -> String {
    let mut lines = vec![format!(
        "aft-bench `{}`: {} cells, {:.0} s",
        results.name,
        results.cells.len(),
        results.duration_secs
    )];
    for r in &results.ratios {
        let value = r.value.map_or("—".into(), |v| format!("{v:.2}x"));
        let goal = if r.goal.is_empty() {
            String::new()
        } else {
            format!(" (goal {})", r.goal)
        };
        lines.push(format!(
            "  {:<26} {value:>8}{goal}  {} / {}",
            r.id, r.numerator, r.denominator
        ));
    }
    for a in &results.anomalies {
        lines.push(format!(
            "  anomalies in `{}` ({}): {}",
            a.key_space,
            if a.through_sidecar {
                "sidecar"
            } else {
                "direct"
            },
            a.total
        ));
    }
    if results.multi_node.status != "ran" {
        lines.push(format!(
            "  multi-node: {} {}",
            results.multi_node.status,
            results.multi_node.reason.clone().unwrap_or_default()
        ));
    }
    lines.join("\n")
}
