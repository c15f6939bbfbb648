//! # anna-client
//!
//! An async ([tokio]) client for [Anna KVS]: key-address resolution through
//! routing nodes, GET and PUT of LWW and SET lattices, multi-key requests,
//! retries, and a value envelope that gives Anna what it lacks for a
//! general key-value store (0-byte values, deletes).
//!
//! The wire protocol (documented in the workspace's `docs/PROTOCOL.md`,
//! section 6) is ZeroMQ PUSH/PULL with single-frame protobuf messages:
//!
//! 1. the client asks a routing node (TCP port `6450 + thread`) which KVS
//!    threads own a key with a `KeyAddressRequest` (one key per request)
//!    and caches the answer;
//! 2. it sends a `KeyRequest` (GET or PUT, several keys) to one of those
//!    threads (port `6200 + thread`) and collects `KeyResponse`s matched
//!    by request id (a batch may come back in several responses);
//! 3. answers name errors per key: `KEY_DNE` (absent), `WRONG_THREAD`
//!    (re-resolve and resend), `NO_SERVERS` (retry later), and the
//!    `invalidate` flag (drop the key's cached addresses).
//!
//! Both response sockets are bound once per client (`tcp://ip:port`), so
//! Anna sees one stable response address per client.
//!
//! ZeroMQ sockets are not thread-safe; they live on two dedicated OS
//! threads per client and the async API talks to them over channels (see
//! the `transport` module's docs).
//!
//! ## Values
//!
//! - [`AnnaClient::get`] / [`put`](AnnaClient::put) /
//!   [`delete`](AnnaClient::delete): byte values in the [`Envelope`]
//!   (stored as LWW lattices; deletes are tombstones).
//! - [`AnnaClient::get_lww`] / [`put_lww`](AnnaClient::put_lww): raw
//!   `LWWValue`s, as Cloudburst stores them.
//! - [`AnnaClient::get_set`] / [`add_to_set`](AnnaClient::add_to_set):
//!   SET lattices.
//! - [`AnnaClient::get_values`] / [`put_values`](AnnaClient::put_values):
//!   any lattice, many keys, one round trip per KVS thread.
//!
//! ## Example
//!
//! ```no_run
//! use anna_client::{AnnaClient, ClientConfig};
//!
//! # async fn demo() -> anna_client::Result<()> {
//! let client = AnnaClient::connect(ClientConfig::new("10.0.0.7")).await?;
//! client.put("empty", b"").await?;
//! assert_eq!(client.get("empty").await?, Some(Vec::new())); // not "missing"
//! # Ok(())
//! # }
//! ```
//!
//! ## Testing without Anna
//!
//! With the `test-server` feature, [`test_server::TestServer`] runs a
//! protocol-faithful Anna (routing and KVS threads over real ZeroMQ TCP on
//! 127.0.0.1) that reproduces Anna's measured quirks and can inject
//! faults.
//!
//! [tokio]: https://tokio.rs
//! [Anna KVS]: https://github.com/hydro-project/anna

#![warn(missing_docs)]

mod client;
mod config;
mod envelope;
mod error;
pub mod proto;
mod transport;
mod value;

#[cfg(feature = "test-server")]
pub mod test_server;

pub use client::AnnaClient;
pub use config::{ClientConfig, KVS_BASE_PORT, ROUTING_BASE_PORT};
pub use envelope::{
    Envelope, EnvelopeError, ENVELOPE_HEADER_LEN, ENVELOPE_MAGIC, KIND_TOMBSTONE_V1, KIND_VALUE_V1,
};
pub use error::{Error, Result};
pub use value::{LwwValue, Value};
