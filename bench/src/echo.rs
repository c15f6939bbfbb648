//! The raw ZeroMQ baseline: an echo server that speaks the executor
//! protocol exactly as the sidecar does on the wire (PUSH/PULL both ways,
//! single frames, the same six endpoints) and does no work behind it.
//!
//! It binds PULL on the six request endpoints; one thread polls them,
//! decodes each request with the sidecar's own decoder, and answers at once
//! over a PUSH socket connected to the request's reply address (cached per
//! address): a `get` gets every key back with a fixed LWW payload of
//! `reply_bytes`, a `put` gets `NO_ERROR` per key, `start` a fresh id,
//! `commit` COMMITTED, `abort` ABORTED, `continue` an empty frame. So a `get`
//! against it costs what one request/reply costs (the floor of a cached
//! read), and a whole DAG against it costs what its round trips cost (an
//! ideal sidecar that does no work).

use std::collections::HashMap;
use std::path::Path;

use aft::ipc::request::{decode, Endpoint, Request};
use aft::proto::aft::{TransactionStatus, TransactionTag};
use aft::proto::anna::{AnnaError, KeyResponse, KeyTuple, LatticeType, RequestType};
use anyhow::Context as _;
use prost::Message;

use aft_testkit::tagged::tagged_of_size;

/// Settings of the echo server.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Bytes of the value in each `get` reply (the LWW payload wraps it).
    pub reply_bytes: usize,
    /// The node address `start` answers with.
    pub node_address: String,
}

/// Binds the endpoints in `ipc_dir` and serves until the process is killed
/// (or its parent dies: `on_idle` returning `false` stops the loop).
pub fn serve(
    ipc_dir: &Path,
    config: &EchoConfig,
    mut on_idle: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(ipc_dir)
        .with_context(|| format!("cannot create {}", ipc_dir.display()))?;
    let context = zmq::Context::new();
    let mut sockets = Vec::new();
    for endpoint in Endpoint::ALL {
        let socket = context.socket(zmq::PULL)?;
        socket.set_linger(0)?;
        socket.set_rcvhwm(10_000)?;
        let address = format!("ipc://{}/{}", ipc_dir.display(), endpoint.name());
        socket
            .bind(&address)
            .with_context(|| format!("cannot bind {address}"))?;
        sockets.push((endpoint, socket));
    }
    let payload = tagged_of_size("echo", "echo", config.reply_bytes);
    let mut replies: HashMap<String, zmq::Socket> = HashMap::new();
    let mut next_tid: u64 = 0;
    println!("echo-server ready: ipc dir {}", ipc_dir.display());
    loop {
        let mut items: Vec<zmq::PollItem<'_>> = sockets
            .iter()
            .map(|(_, s)| s.as_poll_item(zmq::POLLIN))
            .collect();
        let ready = zmq::poll(&mut items, 200)?;
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        if ready == 0 {
            if !on_idle() {
                return Ok(());
            }
            continue;
        }
        for ((endpoint, socket), readable) in sockets.iter().zip(readable) {
            if !readable {
                continue;
            }
            while let Ok(frame) = socket.recv_bytes(zmq::DONTWAIT) {
                let Ok(request) = decode(*endpoint, &frame) else {
                    continue;
                };
                let reply = answer(&request, &payload, &config.node_address, &mut next_tid);
                let address = request.reply_address();
                if !replies.contains_key(address) {
                    let push = context.socket(zmq::PUSH)?;
                    push.set_linger(0)?;
                    push.connect(address)?;
                    replies.insert(address.to_string(), push);
                }
                if let Some(push) = replies.get(address) {
                    // A client that went away must not stall the server.
                    let _ = push.send(reply, zmq::DONTWAIT);
                }
            }
        }
    }
}

fn tag(id: String, status: TransactionStatus, address: &str) -> Vec<u8> {
    TransactionTag {
        id,
        status: status as i32,
        address: address.to_string(),
    }
    .encode_to_vec()
}

/// The reply the protocol expects, with no work behind it.
fn answer(request: &Request, payload: &[u8], node: &str, next_tid: &mut u64) -> Vec<u8> {
    match request {
        Request::Get {
            request_id, keys, ..
        } => KeyResponse {
            r#type: RequestType::Get as i32,
            tuples: keys
                .iter()
                .map(|key| KeyTuple {
                    key: key.clone(),
                    lattice_type: LatticeType::Lww as i32,
                    payload: payload.to_vec(),
                    ..Default::default()
                })
                .collect(),
            response_id: request_id.clone(),
            error: AnnaError::NoError as i32,
        }
        .encode_to_vec(),
        Request::Put {
            request_id, tuples, ..
        } => KeyResponse {
            r#type: RequestType::Put as i32,
            tuples: tuples
                .iter()
                .map(|t| KeyTuple {
                    key: t.key.clone(),
                    error: AnnaError::NoError as i32,
                    ..Default::default()
                })
                .collect(),
            response_id: request_id.clone(),
            error: AnnaError::NoError as i32,
        }
        .encode_to_vec(),
        Request::Start { .. } => {
            *next_tid += 1;
            tag(
                format!("echo-{}-{next_tid}", std::process::id()),
                TransactionStatus::Running,
                node,
            )
        }
        Request::Commit { tid, .. } => tag(tid.clone(), TransactionStatus::Committed, node),
        Request::Abort { tid, .. } => tag(tid.clone(), TransactionStatus::Aborted, node),
        Request::Continue { .. } => Vec::new(),
    }
}
