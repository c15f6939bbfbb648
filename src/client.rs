//! A blocking Rust client of the sidecar's IPC protocol, speaking exactly
//! what a Cloudburst executor thread speaks (docs/PROTOCOL.md). Used by the
//! demo, the benchmarks and the integration tests; usable by Rust programs.
//!
//! One client = one executor thread: it binds its six reply sockets
//! `<ipc_dir>/<endpoint>_<thread_id>` and connects to the six request
//! endpoints. Every wait has a timeout (unlike Cloudburst's client).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;

use crate::ipc::request::{Endpoint, TRANSACTION_ID_KEY};
use crate::proto::aft::{CommitRequest, MetadataRequest, TransactionStatus, TransactionTag};
use crate::proto::anna::{AnnaError, KeyRequest, KeyResponse, KeyTuple, LatticeType, LwwValue};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply within the timeout (no sidecar, or it is stuck).
    #[error("no reply from the sidecar on `{endpoint}` within {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The reply could not be decoded.
    #[error("undecodable reply on `{endpoint}`: {reason}")]
    Protocol {
        /// The endpoint.
        endpoint: &'static str,
        /// Why.
        reason: String,
    },
    /// The sidecar refused the request (error code and its reason text).
    #[error("sidecar refused `{endpoint}` ({code:?}): {reason}")]
    Refused {
        /// The endpoint.
        endpoint: &'static str,
        /// The Anna error code.
        code: AnnaError,
        /// The sidecar's explanation.
        reason: String,
    },
    /// A ZeroMQ call failed.
    #[error("ZeroMQ error: {0}")]
    Zmq(#[from] zmq::Error),
}

/// A transaction tag as the sidecar returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Transaction id.
    pub id: String,
    /// Its status.
    pub status: TransactionStatus,
    /// The node that answered.
    pub address: String,
}

/// One executor thread's connection to its node's sidecar.
pub struct IpcClient {
    ipc_dir: PathBuf,
    thread_id: u32,
    timeout: Duration,
    requests: Vec<zmq::Socket>,
    replies: Vec<zmq::Socket>,
    next_request: AtomicU64,
    _context: zmq::Context,
}

impl IpcClient {
    /// Binds this thread's reply sockets and connects to the sidecar in `ipc_dir`.
    pub fn connect(ipc_dir: &Path, thread_id: u32, timeout: Duration) -> Result<Self, ClientError> {
        let context = zmq::Context::new();
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for endpoint in Endpoint::ALL {
            let push = context.socket(zmq::PUSH)?;
            push.set_linger(0)?;
            push.set_sndtimeo(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))?;
            push.connect(&format!("ipc://{}/{}", ipc_dir.display(), endpoint.name()))?;
            requests.push(push);
            let pull = context.socket(zmq::PULL)?;
            pull.set_linger(0)?;
            pull.set_rcvtimeo(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))?;
            pull.bind(&format!(
                "ipc://{}/{}_{thread_id}",
                ipc_dir.display(),
                endpoint.name()
            ))?;
            replies.push(pull);
        }
        Ok(IpcClient {
            ipc_dir: ipc_dir.to_path_buf(),
            thread_id,
            timeout,
            requests,
            replies,
            next_request: AtomicU64::new(1),
            _context: context,
        })
    }

    /// The reply address of `endpoint` for this client.
    pub fn reply_address(&self, endpoint: Endpoint) -> String {
        format!(
            "ipc://{}/{}_{}",
            self.ipc_dir.display(),
            endpoint.name(),
            self.thread_id
        )
    }

    /// Sends a raw frame to `endpoint` (for tests of bad input).
    pub fn send_raw(&self, endpoint: Endpoint, frame: &[u8]) -> Result<(), ClientError> {
        self.requests[endpoint.index()]
            .send(frame, 0)
            .map_err(|e| match e {
                zmq::Error::EAGAIN => ClientError::Timeout {
                    endpoint: endpoint.name(),
                    timeout: self.timeout,
                },
                other => ClientError::Zmq(other),
            })
    }

    /// Waits for one raw reply on `endpoint`'s reply socket.
    pub fn recv_raw(&self, endpoint: Endpoint) -> Result<Vec<u8>, ClientError> {
        self.replies[endpoint.index()]
            .recv_bytes(0)
            .map_err(|e| match e {
                zmq::Error::EAGAIN => ClientError::Timeout {
                    endpoint: endpoint.name(),
                    timeout: self.timeout,
                },
                other => ClientError::Zmq(other),
            })
    }

    fn call(&self, endpoint: Endpoint, frame: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.send_raw(endpoint, frame)?;
        self.recv_raw(endpoint)
    }

    fn tag(endpoint: Endpoint, bytes: &[u8]) -> Result<Tag, ClientError> {
        let tag = TransactionTag::decode(bytes).map_err(|e| ClientError::Protocol {
            endpoint: endpoint.name(),
            reason: e.to_string(),
        })?;
        Ok(Tag {
            status: TransactionStatus::try_from(tag.status).unwrap_or(TransactionStatus::Aborted),
            id: tag.id,
            address: tag.address,
        })
    }

    /// Starts a transaction.
    pub fn start(&self) -> Result<Tag, ClientError> {
        let reply = self.call(
            Endpoint::Start,
            self.reply_address(Endpoint::Start).as_bytes(),
        )?;
        Self::tag(Endpoint::Start, &reply)
    }

    /// Reads keys (in `tid`, or plain). Returns each key's `LWWValue` payload,
    /// `None` for missing keys.
    pub fn get(
        &self,
        tid: Option<&str>,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let tuples: Vec<KeyTuple> = keys
            .iter()
            .map(|k| KeyTuple {
                key: k.to_string(),
                ..Default::default()
            })
            .collect();
        let response = self.key_call(Endpoint::Get, tuples, tid)?;
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> = Default::default();
        for tuple in response.tuples {
            let value = (tuple.error == AnnaError::NoError as i32
                && tuple.lattice_type == LatticeType::Lww as i32)
                .then_some(tuple.payload);
            by_key.insert(tuple.key, value);
        }
        Ok(keys.iter().map(|k| by_key.remove(*k).flatten()).collect())
    }

    /// Writes `(key, LWWValue payload)` pairs (in `tid`, or plain).
    pub fn put(&self, tid: Option<&str>, writes: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        let tuples: Vec<KeyTuple> = writes
            .iter()
            .map(|(k, v)| KeyTuple {
                key: k.to_string(),
                lattice_type: LatticeType::Lww as i32,
                payload: v.clone(),
                ..Default::default()
            })
            .collect();
        let response = self.key_call(Endpoint::Put, tuples, tid)?;
        for tuple in &response.tuples {
            if tuple.error != AnnaError::NoError as i32 {
                return Err(ClientError::Refused {
                    endpoint: "put",
                    code: AnnaError::try_from(tuple.error).unwrap_or(AnnaError::Timeout),
                    reason: String::from_utf8_lossy(&tuple.payload).into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Sends a `KeyRequest` of `tuples` (plus the transaction id tuple, if
    /// any) and checks that the answer is for it.
    fn key_call(
        &self,
        endpoint: Endpoint,
        mut tuples: Vec<KeyTuple>,
        tid: Option<&str>,
    ) -> Result<KeyResponse, ClientError> {
        if let Some(tid) = tid {
            tuples.push(tid_tuple(tid));
        }
        let request_id = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let request = KeyRequest {
            tuples,
            response_address: self.reply_address(endpoint),
            request_id: request_id.clone(),
            ..Default::default()
        };
        let reply = self.call(endpoint, &request.encode_to_vec())?;
        let response =
            KeyResponse::decode(reply.as_slice()).map_err(|e| ClientError::Protocol {
                endpoint: endpoint.name(),
                reason: e.to_string(),
            })?;
        if response.response_id != request_id {
            return Err(ClientError::Protocol {
                endpoint: endpoint.name(),
                reason: format!(
                    "response id `{}` for request `{request_id}`",
                    response.response_id
                ),
            });
        }
        if response.error != AnnaError::NoError as i32 && endpoint == Endpoint::Get {
            return Err(ClientError::Refused {
                endpoint: endpoint.name(),
                code: AnnaError::try_from(response.error).unwrap_or(AnnaError::Timeout),
                reason: response
                    .tuples
                    .first()
                    .map(|t| String::from_utf8_lossy(&t.payload).into_owned())
                    .unwrap_or_default(),
            });
        }
        Ok(response)
    }

    /// Commits `tid`; `other_nodes` are the other nodes the DAG ran on.
    pub fn commit(&self, tid: &str, other_nodes: &[String]) -> Result<Tag, ClientError> {
        let request = CommitRequest {
            tid: tid.to_string(),
            response_address: self.reply_address(Endpoint::Commit),
            addresses: other_nodes.to_vec(),
        };
        let reply = self.call(Endpoint::Commit, &request.encode_to_vec())?;
        Self::tag(Endpoint::Commit, &reply)
    }

    /// Aborts `tid`.
    pub fn abort(&self, tid: &str) -> Result<Tag, ClientError> {
        let body = format!("{tid}~{}", self.reply_address(Endpoint::Abort));
        let reply = self.call(Endpoint::Abort, body.as_bytes())?;
        Self::tag(Endpoint::Abort, &reply)
    }

    /// Continues `tid` on this node, coming from node `upstream`.
    pub fn continue_from(&self, tid: &str, upstream: &str) -> Result<(), ClientError> {
        let request = MetadataRequest {
            tid: tid.to_string(),
            response_address: self.reply_address(Endpoint::Continue),
            address: upstream.to_string(),
        };
        self.call(Endpoint::Continue, &request.encode_to_vec())
            .map(|_| ())
    }
}

fn tid_tuple(tid: &str) -> KeyTuple {
    KeyTuple {
        key: TRANSACTION_ID_KEY.to_string(),
        payload: tid.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A serialized `LWWValue` holding `value` at `timestamp`.
pub fn lww_payload(timestamp: u64, value: &[u8]) -> Vec<u8> {
    LwwValue {
        timestamp,
        value: value.to_vec(),
    }
    .encode_to_vec()
}

/// The value inside a serialized `LWWValue` (`None` if it is not one).
pub fn lww_inner(payload: &[u8]) -> Option<Vec<u8>> {
    LwwValue::decode(payload).ok().map(|v| v.value)
}
