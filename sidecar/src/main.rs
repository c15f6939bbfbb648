//! `aft-sidecar`: wires configuration, storage, the engine, the IPC front and
//! the operator endpoint together, and shuts down cleanly on SIGINT/SIGTERM.

mod config;
mod http;

use std::process::ExitCode;
use std::sync::Arc;

use aft::grpc::GrpcServer;
use aft::ipc::IpcServer;
use aft::metrics::Metrics;
use aft::peer::PeerNode;
use aft::storage::{open, redact};
use aft::txn::Engine;
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
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or pipe.
        .with_ansi(std::io::stderr().is_terminal());
    if settings.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(mut settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aft-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics = Metrics::new();
    if settings.create_storage {
        runtime
            .block_on(aft::storage::create(
                &settings.storage,
                settings.storage_options.clone(),
            ))
            .with_context(|| format!("cannot create storage `{}`", redact(&settings.storage)))?;
    }
    let storage = runtime
        .block_on(open(&settings.storage, settings.storage_options.clone()))
        .with_context(|| format!("storage `{}` is unavailable", redact(&settings.storage)))?;
    let storage = aft::storage::Metered::wrap(storage, metrics.clone());
    info!(storage = %storage.describe(), node = %settings.engine.node_address, "storage opened");
    let configured = settings.engine.max_value_bytes;
    if let Some(fits) = storage
        .value_limit()
        .and_then(|limit| settings.fit_values_to(limit))
    {
        warn!(
            configured,
            storage_limit = fits,
            "--max-value-bytes is above what this store can hold; larger values are refused with VALUE_TOO_LARGE at the put"
        );
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
    let engine = runtime
        .block_on(Engine::open(
            Arc::clone(&storage),
            settings.engine.clone(),
            metrics.clone(),
            None,
        ))
        .context("recovery from storage failed")?;
    let background = {
        let _guard = runtime.enter();
        engine.spawn_background()
    };
    let peer_node = match settings.peer.clone() {
        None => None,
        Some(config) => {
            let bind = config.bind.clone();
            let node = PeerNode::start(Arc::clone(&engine), config, runtime.handle().clone())
                .context("cannot start the peer layer")?;
            // Tests and launchers read this line.
            println!("peer endpoint on {bind}");
            Some(node)
        }
    };
    let ipc_dir = settings.ipc.ipc_dir.clone();
    let ipc = IpcServer::start(
        Arc::clone(&engine),
        settings.ipc.clone(),
        metrics.clone(),
        runtime.handle().clone(),
    )?;
    let grpc = match settings.grpc.clone() {
        None => None,
        Some(config) => {
            if config.tls.is_none() && config.token.is_some() {
                warn!("the gRPC bearer token travels in clear text: add --grpc-tls-cert and --grpc-tls-key");
            }
            let server = GrpcServer::start(
                Arc::clone(&engine),
                config,
                metrics.clone(),
                runtime.handle().clone(),
            )
            .context("cannot start the gRPC front")?;
            // Tests and launchers read this line to find a port chosen with :0.
            println!("grpc listening on {}", server.local_addr());
            Some(server)
        }
    };
    ready.store(true, std::sync::atomic::Ordering::Release);
    info!(ipc_dir = %ipc_dir.display(), "aft-sidecar ready");
    println!("aft-sidecar ready: ipc dir {}", ipc_dir.display());

    runtime.block_on(wait_for_signal())?;
    info!("shutting down");
    if let Some(grpc) = grpc {
        runtime.block_on(grpc.shutdown(settings.shutdown_grace));
    }
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
