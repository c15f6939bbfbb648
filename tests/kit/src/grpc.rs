//! A blocking client of the gRPC front (AFT's `service Aft`), generated
//! from the same service definition AFT's clients are: what tests and
//! `aft-bench` use to drive gRPC transactions, with a bearer token and,
//! optionally, TLS.

use std::net::SocketAddr;

use aft::proto::aft::{aft_key_request::KeyPair, AftKeyRequest, TransactionStatus, TransactionTag};
use aft::proto::aft_client::AftClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// TLS of a client: the CA that signed the server's certificate, and the
/// client's own certificate and key for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA certificate (PEM) the server's certificate chains to.
    pub ca_pem: Vec<u8>,
    /// The name the server's certificate is for.
    pub domain: String,
    /// The client's certificate and key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// One connection to a gRPC front; every call blocks until answered.
pub struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    client: AftClient<Channel>,
    token: Option<String>,
}

impl GrpcClient {
    /// Connects to `addr` in plaintext, sending `token` with every call.
    pub fn connect(addr: SocketAddr, token: Option<&str>) -> Result<Self, tonic::transport::Error> {
        Self::connect_with(addr, token, None)
    }

    /// Connects to `addr` in plaintext; every call gives up after
    /// `deadline` (`DEADLINE_EXCEEDED` or `CANCELLED` on this side), as a
    /// client with a deadline does.
    pub fn connect_with_deadline(
        addr: SocketAddr,
        token: Option<&str>,
        deadline: std::time::Duration,
    ) -> Result<Self, tonic::transport::Error> {
        Self::connect_inner(addr, token, None, Some(deadline))
    }

    /// Connects to `addr`, over TLS if `tls` is given.
    pub fn connect_with(
        addr: SocketAddr,
        token: Option<&str>,
        tls: Option<ClientTls>,
    ) -> Result<Self, tonic::transport::Error> {
        Self::connect_inner(addr, token, tls, None)
    }

    fn connect_inner(
        addr: SocketAddr,
        token: Option<&str>,
        tls: Option<ClientTls>,
        deadline: Option<std::time::Duration>,
    ) -> Result<Self, tonic::transport::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a runtime: {e}"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        if let Some(deadline) = deadline {
            endpoint = endpoint.timeout(deadline).connect_timeout(deadline);
        }
        if let Some(tls) = tls {
            aft::grpc::ensure_crypto_provider();
            let mut config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(tls.ca_pem))
                .domain_name(tls.domain);
            if let Some((cert, key)) = tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config)?;
        }
        let channel = runtime.block_on(endpoint.connect())?;
        Ok(GrpcClient {
            runtime,
            client: AftClient::new(channel),
            token: token.map(str::to_string),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }

    /// `StartTransaction`: the new transaction's tag.
    pub fn start(&mut self) -> Result<TransactionTag, Status> {
        let request = self.request(());
        let call = self.client.start_transaction(request);
        self.runtime.block_on(call).map(|r| r.into_inner())
    }

    /// `Write` of `pairs` in transaction `tid`.
    pub fn write(&mut self, tid: &str, pairs: &[(&str, Vec<u8>)]) -> Result<(), Status> {
        let request = self.request(AftKeyRequest {
            tid: tid.to_string(),
            pairs: pairs
                .iter()
                .map(|(key, value)| KeyPair {
                    key: key.to_string(),
                    value: value.clone(),
                })
                .collect(),
        });
        let call = self.client.write(request);
        self.runtime.block_on(call).map(|_| ())
    }

    /// `Read` of `keys` in transaction `tid`: their values, in order (empty
    /// for a key without one, as in AFT).
    pub fn read(&mut self, tid: &str, keys: &[&str]) -> Result<Vec<Vec<u8>>, Status> {
        let request = self.request(AftKeyRequest {
            tid: tid.to_string(),
            pairs: keys
                .iter()
                .map(|key| KeyPair {
                    key: key.to_string(),
                    value: Vec::new(),
                })
                .collect(),
        });
        let call = self.client.read(request);
        let reply = self.runtime.block_on(call)?.into_inner();
        Ok(reply.pairs.into_iter().map(|p| p.value).collect())
    }

    /// `CommitTransaction` of `tid`: the status it ended with.
    pub fn commit(&mut self, tid: &str) -> Result<TransactionStatus, Status> {
        let request = self.request(TransactionTag {
            id: tid.to_string(),
            ..Default::default()
        });
        let call = self.client.commit_transaction(request);
        let tag = self.runtime.block_on(call)?.into_inner();
        Ok(tag.status())
    }

    /// `AbortTransaction` of `tid`: the status it ended with.
    pub fn abort(&mut self, tid: &str) -> Result<TransactionStatus, Status> {
        let request = self.request(TransactionTag {
            id: tid.to_string(),
            ..Default::default()
        });
        let call = self.client.abort_transaction(request);
        let tag = self.runtime.block_on(call)?.into_inner();
        Ok(tag.status())
    }
}
