//! `aft-sidecar`: wires configuration, storage, the engine, the IPC front and
//! the operator endpoint together, and shuts down cleanly on SIGINT/SIGTERM.

mod config;
mod http;

use std::process::ExitCode;
use std::sync::Arc;

use aft::ipc::{IpcConfig, IpcServer};
use aft::metrics::Metrics;
use aft::peer::{PeerConfig, PeerNode};
use aft::storage::{open, redact, StorageOptions};
use aft::txn::{Engine, EngineConfig};
use anyhow::Context as _;
use clap::Parser;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use config::{Cli, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.generate_peer_key {
        println!("# aft-sidecar peer key (XChaCha20-Poly1305). Keep this file private.");
        println!("{}", aft::peer::PeerKey::generate_hex());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::resolve(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aft-sidecar: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aft-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aft-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics = Metrics::new();
    let storage_options = StorageOptions {
        max_value_bytes: settings.max_value_bytes.max(1) * 2,
        call_timeout: settings.storage_timeout,
        connect_timeout: settings.storage_timeout,
    };
    if settings.create_storage {
        runtime
            .block_on(aft::storage::create(
                &settings.storage,
                storage_options.clone(),
            ))
            .with_context(|| format!("cannot create storage `{}`", redact(&settings.storage)))?;
    }
    let storage = runtime
        .block_on(open(&settings.storage, storage_options))
        .with_context(|| format!("storage `{}` is unavailable", redact(&settings.storage)))?;
    let storage = aft::storage::Metered::wrap(storage, metrics.clone());
    info!(storage = %storage.describe(), node = %settings.node_address, "storage opened");
    let mut settings = settings;
    if let Some(limit) = storage.value_limit() {
        // Leave room for the one byte a first write's saved base adds.
        let fits = limit.saturating_sub(1);
        if settings.max_value_bytes > fits {
            warn!(
                configured = settings.max_value_bytes,
                storage_limit = fits,
                "--max-value-bytes is above what this store can hold; larger values are refused with VALUE_TOO_LARGE at the put"
            );
            settings.max_value_bytes = fits;
        }
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(addr) = &settings.metrics_addr {
        let bound = runtime.block_on(http::serve(
            addr,
            metrics.clone(),
            Arc::clone(&storage),
            Arc::clone(&ready),
        ))?;
        // Tests and launchers read this line to find a port chosen with :0.
        println!("metrics listening on http://{bound}");
    }
    let engine_config = EngineConfig {
        node_address: settings.node_address.clone(),
        max_value_bytes: settings.max_value_bytes,
        max_txn_write_bytes: settings.max_txn_bytes,
        max_open_txns: settings.max_open_txns,
        lease: settings.txn_lease,
        cache_bytes: settings.cache_bytes,
        decision_timeout: settings.decision_timeout,
        ship_values_up_to: settings.peer_ship_values_bytes,
        orphan_grace: settings.orphan_grace,
        orphan_sweep_interval: settings.orphan_sweep,
        publish_sweep_interval: settings.publish_sweep,
        outcome_retention: settings.outcome_retention,
        storage_timeout: settings.storage_timeout,
        write_horizon: settings.write_horizon,
        client_timeout: settings.client_timeout,
        retired_record_retention: settings.retired_record_retention,
        clustered: settings.peers.is_some(),
        ..EngineConfig::default()
    };
    let engine = runtime
        .block_on(Engine::open(
            Arc::clone(&storage),
            engine_config,
            metrics.clone(),
            None,
        ))
        .context("recovery from storage failed")?;
    let background = {
        let _guard = runtime.enter();
        engine.spawn_background()
    };
    let peer_node = match &settings.peers {
        None => None,
        Some(peers) => {
            let config = PeerConfig {
                node_address: settings.node_address.clone(),
                bind: peers.bind.clone(),
                peer_port: peers.port,
                seeds: peers.seeds.clone(),
                discovery_dns: peers.discovery_dns.clone(),
                request_timeout: peers.timeout,
                prepare_timeout: settings.storage_timeout * 2 + peers.timeout,
                dead_after: peers.dead_after,
                key: peers.key.clone(),
                ..PeerConfig::default()
            };
            let node = PeerNode::start(Arc::clone(&engine), config, runtime.handle().clone())
                .context("cannot start the peer layer")?;
            // Tests and launchers read this line.
            println!("peer endpoint on {}", peers.bind);
            Some(node)
        }
    };
    let ipc = IpcServer::start(
        Arc::clone(&engine),
        IpcConfig {
            ipc_dir: settings.ipc_dir.clone(),
            client_ipc_dir: settings.client_ipc_dir.clone(),
            allow_tcp_replies: settings.allow_tcp_replies,
            max_pending_per_client: settings.max_pending_per_client,
            max_request_bytes: settings.max_value_bytes.saturating_mul(4).max(1 << 20),
            socket_mode: settings.socket_mode,
            socket_group: settings.socket_group,
            allow_world_writable_dir: settings.allow_world_writable_ipc_dir,
            ..IpcConfig::default()
        },
        metrics,
        runtime.handle().clone(),
    )?;
    ready.store(true, std::sync::atomic::Ordering::Release);
    info!(ipc_dir = %settings.ipc_dir.display(), "aft-sidecar ready");
    println!("aft-sidecar ready: ipc dir {}", settings.ipc_dir.display());

    runtime.block_on(wait_for_signal())?;
    info!("shutting down");
    ipc.shutdown(settings.shutdown_grace);
    if let Some(peer_node) = peer_node {
        runtime.block_on(peer_node.shutdown());
    }
    drop(background);
    info!(
        open_transactions = engine.open_transactions(),
        "stopped; open transactions are abandoned (their commits will answer ABORTED)"
    );
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
