//! Decoding requests from the six endpoints into typed requests.
//!
//! Wire facts (docs/PROTOCOL.md): `get`/`put` carry a `KeyRequest` whose
//! last tuple, if keyed `TRANSACTION_ID`, names the transaction; `start`'s
//! body is the raw reply address; `commit` is a `CommitRequest`; `abort` is
//! `"<tid>~<reply address>"`; `continue` is a `MetadataRequest`.

use prost::Message;

use crate::proto::aft::{CommitRequest, MetadataRequest};
use crate::proto::anna::{KeyRequest, KeyTuple};

/// The key of the tuple that carries a transaction id.
pub const TRANSACTION_ID_KEY: &str = "TRANSACTION_ID";

/// The six request endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Reads.
    Get,
    /// Writes.
    Put,
    /// Transaction start.
    Start,
    /// Transaction commit.
    Commit,
    /// Transaction abort.
    Abort,
    /// DAG hand-off to this node.
    Continue,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Get,
        Endpoint::Put,
        Endpoint::Start,
        Endpoint::Commit,
        Endpoint::Abort,
        Endpoint::Continue,
    ];

    /// Its position in [`Endpoint::ALL`] (for per-endpoint tables).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its socket name in the IPC directory.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Get => "get",
            Endpoint::Put => "put",
            Endpoint::Start => "start",
            Endpoint::Commit => "commit",
            Endpoint::Abort => "abort",
            Endpoint::Continue => "continue",
        }
    }
}

/// Which transaction a read or write belongs to, as its request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRef {
    /// No transaction-id tuple: a plain read or write, outside any transaction.
    Plain,
    /// A well-formed transaction id (see [`valid_tid`]).
    Txn(String),
    /// A transaction-id tuple that is not a valid id (not UTF-8, empty,
    /// too long, odd characters), as text for the error reply.
    Malformed(String),
}

/// A decoded request. `reply` is the client's reply address, unchecked.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A read of `keys`, in transaction `tid` or plain.
    Get {
        /// Reply address.
        reply: String,
        /// Echoed as `response_id`.
        request_id: String,
        /// The transaction it belongs to, if any.
        tid: TxnRef,
        /// Keys to read.
        keys: Vec<String>,
    },
    /// A write of `tuples`, in transaction `tid` or plain.
    Put {
        /// Reply address.
        reply: String,
        /// Echoed as `response_id`.
        request_id: String,
        /// The transaction it belongs to, if any.
        tid: TxnRef,
        /// Tuples to write (without the transaction id tuple).
        tuples: Vec<KeyTuple>,
    },
    /// Start a transaction.
    Start {
        /// Reply address.
        reply: String,
    },
    /// Commit `tid`; `addresses` are the DAG's other nodes.
    Commit {
        /// Reply address.
        reply: String,
        /// Transaction id.
        tid: String,
        /// Other nodes the DAG ran on.
        addresses: Vec<String>,
    },
    /// Abort `tid`.
    Abort {
        /// Reply address.
        reply: String,
        /// Transaction id.
        tid: String,
    },
    /// Continue `tid` here, coming from node `upstream`.
    Continue {
        /// Reply address.
        reply: String,
        /// Transaction id.
        tid: String,
        /// The upstream node's address.
        upstream: String,
    },
}

impl Request {
    /// The client's reply address.
    pub fn reply_address(&self) -> &str {
        match self {
            Request::Get { reply, .. }
            | Request::Put { reply, .. }
            | Request::Start { reply }
            | Request::Commit { reply, .. }
            | Request::Abort { reply, .. }
            | Request::Continue { reply, .. } => reply,
        }
    }
}

/// Why a frame could not be decoded far enough to find a reply address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {endpoint} request: {reason}")]
pub struct Undecodable {
    /// Which endpoint.
    pub endpoint: &'static str,
    /// Why.
    pub reason: String,
}

/// Decodes one frame received on `endpoint`.
pub fn decode(endpoint: Endpoint, frame: &[u8]) -> Result<Request, Undecodable> {
    let fail = |reason: String| Undecodable {
        endpoint: endpoint.name(),
        reason,
    };
    match endpoint {
        Endpoint::Get | Endpoint::Put => {
            let request = KeyRequest::decode(frame).map_err(|e| fail(e.to_string()))?;
            let KeyRequest {
                mut tuples,
                response_address,
                request_id,
                ..
            } = request;
            let tid = match tuples.last() {
                Some(t) if t.key == TRANSACTION_ID_KEY => {
                    let tuple = tuples.pop().unwrap_or_default();
                    match String::from_utf8(tuple.payload) {
                        Ok(tid) if valid_tid(&tid) => TxnRef::Txn(tid),
                        Ok(bad) => TxnRef::Malformed(bad),
                        Err(_) => TxnRef::Malformed("(not UTF-8)".into()),
                    }
                }
                _ => TxnRef::Plain,
            };
            Ok(if endpoint == Endpoint::Get {
                Request::Get {
                    reply: response_address,
                    request_id,
                    tid,
                    keys: tuples.into_iter().map(|t| t.key).collect(),
                }
            } else {
                Request::Put {
                    reply: response_address,
                    request_id,
                    tid,
                    tuples,
                }
            })
        }
        Endpoint::Start => {
            let reply = std::str::from_utf8(frame)
                .map_err(|_| fail("reply address is not UTF-8".into()))?;
            Ok(Request::Start {
                reply: reply.to_string(),
            })
        }
        Endpoint::Commit => {
            let request = CommitRequest::decode(frame).map_err(|e| fail(e.to_string()))?;
            Ok(Request::Commit {
                reply: request.response_address,
                tid: request.tid,
                addresses: request.addresses,
            })
        }
        Endpoint::Abort => {
            let body = std::str::from_utf8(frame).map_err(|_| fail("body is not UTF-8".into()))?;
            let (tid, reply) = body
                .split_once('~')
                .ok_or_else(|| fail("expected `<tid>~<reply address>`".into()))?;
            Ok(Request::Abort {
                reply: reply.to_string(),
                tid: tid.to_string(),
            })
        }
        Endpoint::Continue => {
            let request = MetadataRequest::decode(frame).map_err(|e| fail(e.to_string()))?;
            Ok(Request::Continue {
                reply: request.response_address,
                tid: request.tid,
                upstream: request.address,
            })
        }
    }
}

pub use crate::txn::keys::valid_tid;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::anna::LatticeType;

    #[test]
    fn the_last_transaction_id_tuple_makes_a_request_transactional() {
        let req = KeyRequest {
            tuples: vec![
                KeyTuple {
                    key: "a".into(),
                    ..Default::default()
                },
                KeyTuple {
                    key: TRANSACTION_ID_KEY.into(),
                    payload: b"t1".to_vec(),
                    ..Default::default()
                },
            ],
            response_address: "ipc:///r/get_0".into(),
            request_id: "7".into(),
            ..Default::default()
        };
        let decoded = decode(Endpoint::Get, &req.encode_to_vec()).unwrap();
        assert_eq!(
            decoded,
            Request::Get {
                reply: "ipc:///r/get_0".into(),
                request_id: "7".into(),
                tid: TxnRef::Txn("t1".into()),
                keys: vec!["a".into()],
            }
        );
        let plain = KeyRequest {
            tuples: vec![KeyTuple {
                key: "a".into(),
                lattice_type: LatticeType::Lww as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            decode(Endpoint::Put, &plain.encode_to_vec()).unwrap(),
            Request::Put {
                tid: TxnRef::Plain,
                ..
            }
        ));
    }

    #[test]
    fn raw_string_bodies() {
        assert_eq!(
            decode(Endpoint::Abort, b"t1~ipc:///r/abort_0").unwrap(),
            Request::Abort {
                reply: "ipc:///r/abort_0".into(),
                tid: "t1".into()
            }
        );
        assert!(decode(Endpoint::Abort, b"no separator").is_err());
        assert!(decode(Endpoint::Start, &[0xff, 0xfe]).is_err());
        assert!(decode(Endpoint::Get, &[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn endpoint_index_is_its_position_in_all() {
        for (i, endpoint) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(endpoint.index(), i, "{endpoint:?}");
        }
    }

    #[test]
    fn transaction_ids_are_checked() {
        assert!(valid_tid("0190f3a2-7b1c-7def-8000-0123456789ab"));
        for bad in ["", "a/b", "a b", "x~y", &"a".repeat(129)] {
            assert!(!valid_tid(bad), "{bad}");
        }
    }
}
