//! AFT's `service Aft` over the engine. Values travel as bare bytes, as in
//! AFT; the front stores each as a Cloudburst `LWWValue` (stamped with this
//! node's clock) so that executors over IPC and Cloudburst's user client
//! read what gRPC clients wrote, and returns the bytes inside on reads.
//! Calls for a transaction another node started run there ([`RoutedTid`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{debug, Instrument};

use super::status::status_of;
use super::tid::RoutedTid;
use crate::metrics::{EndpointLabels, Metrics};
use crate::proto::aft::{
    aft_key_request::KeyPair, AftKeyRequest, TransactionStatus, TransactionTag,
};
use crate::proto::aft_server::Aft;
use crate::proto::anna::LwwValue;
use crate::txn::{ClientCall, ClientEnd, ClientReply, Engine};

/// The service: one per node, sharing the node's engine with the IPC front.
pub struct AftService {
    engine: Arc<Engine>,
    metrics: Metrics,
    /// Most keys one read or write may name.
    max_keys: usize,
}

impl AftService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>, metrics: Metrics, max_keys: usize) -> Self {
        AftService {
            engine,
            metrics,
            max_keys,
        }
    }

    fn observe(&self, method: &str, started: Instant) {
        self.metrics
            .request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: format!("grpc.{method}"),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Splits the client's id, or refuses it.
    fn route(&self, id: &str) -> Result<RoutedTid, Status> {
        RoutedTid::parse(id).ok_or_else(|| {
            self.metrics.reject("bad_transaction_id");
            Status::invalid_argument(format!(
                "`{id}` is not a transaction id of this service (ids come from StartTransaction)"
            ))
        })
    }

    /// Runs `call` for the client's transaction `id` where it lives.
    async fn call(&self, id: &str, call: ClientCall) -> Result<ClientReply, Status> {
        let routed = self.route(id)?;
        let span = tracing::debug_span!("grpc_call", tid = %routed.tid, node = %routed.node);
        self.engine
            .call_at(&routed.node, &routed.tid, call)
            .instrument(span)
            .await
            .map_err(|e| {
                debug!(tid = %id, error = %e, "gRPC call failed");
                status_of(id, &e)
            })
    }

    fn keys_of(&self, request: &AftKeyRequest) -> Result<Vec<String>, Status> {
        if request.pairs.is_empty() || request.pairs.len() > self.max_keys {
            self.metrics.reject("bad_keys");
            return Err(Status::invalid_argument(format!(
                "a request names 1 to {} keys, this one {}",
                self.max_keys,
                request.pairs.len()
            )));
        }
        if request.pairs.iter().any(|p| p.key.is_empty()) {
            self.metrics.reject("bad_keys");
            return Err(Status::invalid_argument("a key is empty"));
        }
        Ok(request.pairs.iter().map(|p| p.key.clone()).collect())
    }

    fn tag(&self, id: &str, status: TransactionStatus) -> TransactionTag {
        TransactionTag {
            id: id.to_string(),
            status: status as i32,
            address: self.engine.config().node_address.clone(),
        }
    }

    async fn end(&self, id: &str, call: ClientCall) -> Result<TransactionTag, Status> {
        match self.call(id, call).await? {
            ClientReply::Ended(ClientEnd::Committed) => {
                Ok(self.tag(id, TransactionStatus::Committed))
            }
            ClientReply::Ended(ClientEnd::Aborted) => Ok(self.tag(id, TransactionStatus::Aborted)),
            ClientReply::Ended(ClientEnd::Unknown) => Err(Status::unavailable(format!(
                "transaction `{id}`: storage failed at the commit point and the outcome is not \
                 known yet; retry CommitTransaction to learn it"
            ))),
            _ => Err(Status::internal("the engine answered another kind of call")),
        }
    }
}

#[tonic::async_trait]
impl Aft for AftService {
    async fn start_transaction(
        &self,
        _request: Request<()>,
    ) -> Result<Response<TransactionTag>, Status> {
        let started = Instant::now();
        let result = match self.engine.start() {
            Ok(txn) => {
                let id = RoutedTid::encode(&txn.tid, &self.engine.config().node_address);
                Ok(Response::new(self.tag(&id, TransactionStatus::Running)))
            }
            Err(e) => Err(status_of("(new)", &e)),
        };
        self.observe("start", started);
        result
    }

    async fn write(
        &self,
        request: Request<AftKeyRequest>,
    ) -> Result<Response<AftKeyRequest>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        self.keys_of(&request)?;
        let timestamp = self.engine.wall_micros();
        let writes = request
            .pairs
            .iter()
            .map(|pair| {
                let lww = LwwValue {
                    timestamp,
                    value: pair.value.clone(),
                };
                (pair.key.clone(), Bytes::from(lww.encode_to_vec()))
            })
            .collect();
        let result = self.call(&request.tid, ClientCall::Write(writes)).await;
        self.observe("write", started);
        match result? {
            ClientReply::Written => Ok(Response::new(AftKeyRequest {
                tid: request.tid,
                pairs: request
                    .pairs
                    .into_iter()
                    .map(|p| KeyPair {
                        key: p.key,
                        value: Vec::new(),
                    })
                    .collect(),
            })),
            _ => Err(Status::internal("the engine answered another kind of call")),
        }
    }

    async fn read(
        &self,
        request: Request<AftKeyRequest>,
    ) -> Result<Response<AftKeyRequest>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let keys = self.keys_of(&request)?;
        let result = self
            .call(&request.tid, ClientCall::Read(keys.clone()))
            .await;
        self.observe("read", started);
        match result? {
            ClientReply::Values(values) => Ok(Response::new(AftKeyRequest {
                tid: request.tid,
                pairs: keys
                    .into_iter()
                    .zip(values)
                    .map(|(key, value)| KeyPair {
                        key,
                        value: value.map(|v| inner_value(&v)).unwrap_or_default(),
                    })
                    .collect(),
            })),
            _ => Err(Status::internal("the engine answered another kind of call")),
        }
    }

    async fn commit_transaction(
        &self,
        request: Request<TransactionTag>,
    ) -> Result<Response<TransactionTag>, Status> {
        let started = Instant::now();
        let id = request.into_inner().id;
        let result = self.end(&id, ClientCall::Commit).await;
        self.observe("commit", started);
        result.map(Response::new)
    }

    async fn abort_transaction(
        &self,
        request: Request<TransactionTag>,
    ) -> Result<Response<TransactionTag>, Status> {
        let started = Instant::now();
        let id = request.into_inner().id;
        let result = self.end(&id, ClientCall::Abort).await;
        self.observe("abort", started);
        result.map(Response::new)
    }
}

/// The bytes a gRPC client reads: the value inside a stored `LWWValue`, or
/// the stored bytes as they are if they are not one.
fn inner_value(stored: &Bytes) -> Vec<u8> {
    match LwwValue::decode(stored.as_ref()) {
        Ok(lww) => lww.value,
        Err(_) => stored.to_vec(),
    }
}
