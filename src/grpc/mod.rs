//! The gRPC front: AFT's `service Aft` (as `cmd/aft` serves it), for
//! platforms whose functions share no node or IPC directory with a sidecar
//! (AWS Lambda, Knative, a service on another host). It is the third front
//! beside `ipc/` and `peer/`, on the same engine: a transaction started here
//! is read-atomic with DAGs running over IPC on the same cluster.
//!
//! Behind a load balancer the calls of one transaction may reach any node.
//! The id a client gets names the node that holds the transaction
//! ([`tid::RoutedTid`]); another node forwards the call there through the
//! peer layer ([`crate::txn::Engine::call_at`]), so a transaction's state is
//! never split.
//!
//! Security is chosen, never defaulted: a bearer token on every call, mutual
//! TLS, or both; serving without either must be asked for explicitly.

mod auth;
mod service;
mod status;
pub mod tid;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::proto::aft_server::AftServer;
use crate::txn::Engine;
use auth::BearerToken;
pub use service::AftService;

/// PEM files of the gRPC port's TLS.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// The server's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// The server's private key (PEM).
    pub key_pem: Vec<u8>,
    /// CA certificates (PEM) that client certificates must chain to; with
    /// it, TLS is mutual and a client without such a certificate is refused.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Settings of the gRPC front.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Bearer token every call must carry (`None`: no token is checked).
    pub token: Option<String>,
    /// TLS; `None` serves plaintext HTTP/2.
    pub tls: Option<GrpcTls>,
    /// Largest request message, bytes.
    pub max_message_bytes: usize,
    /// Most keys one read or write may name.
    pub max_keys: usize,
}

/// Why the gRPC front could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The address could not be bound.
    #[error("cannot bind the gRPC address `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS settings are unusable (bad PEM, key not matching).
    #[error("the gRPC TLS settings are unusable: {0}")]
    Tls(String),
}

/// Selects rustls's `ring` provider for this process, if none is selected
/// yet (TLS needs one, and the AWS SDK links a second candidate, so rustls
/// cannot pick by itself). Harmless to call more than once.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running gRPC front; [`GrpcServer::shutdown`] stops it gracefully.
pub struct GrpcServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Binds `config.addr` and serves AFT's service over `engine` on `runtime`.
    pub fn start(
        engine: Arc<Engine>,
        config: GrpcConfig,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<GrpcServer, GrpcError> {
        let listener =
            std::net::TcpListener::bind(config.addr).map_err(|source| GrpcError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GrpcError::Bind {
            addr: config.addr,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| GrpcError::Bind { addr, source })?;
        let mut builder = Server::builder();
        if let Some(tls) = &config.tls {
            ensure_crypto_provider();
            let mut tls_config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                tls_config = tls_config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(tls_config)
                .map_err(|e| GrpcError::Tls(e.to_string()))?;
        }
        let server = AftServer::new(AftService::new(engine, metrics.clone(), config.max_keys))
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes.saturating_mul(2));
        let service = tonic::service::interceptor::InterceptedService::new(
            server,
            BearerToken::new(config.token.as_deref(), metrics),
        );
        // One connection cannot hold more calls in flight than this (the
        // others wait), so a single client cannot take every worker.
        let router = builder
            .concurrency_limit_per_connection(256)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service);
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = runtime.spawn(async move {
            let incoming = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
                }
                Err(e) => {
                    warn!(error = %e, "the gRPC listener could not join the runtime");
                    return;
                }
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
            {
                warn!(error = %e, "the gRPC front stopped with an error");
            }
        });
        info!(%addr, tls = config.tls.is_some(), token = config.token.is_some(), "gRPC front listening");
        Ok(GrpcServer { addr, stop, task })
    }

    /// The address it listens on (the port chosen, if `:0` was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls and lets those in flight finish for up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
            warn!("gRPC calls still in flight after the grace period were dropped");
        }
    }
}
