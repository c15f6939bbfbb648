//! # aft-core
//!
//! The engine behind `aft-sidecar`: read-atomic transactions for serverless
//! DAGs over a pluggable key-value store. See `README.md` and `docs/`.

#![warn(missing_docs)]

pub mod client;
pub mod failpoint;
pub mod grpc;
pub mod history;
pub mod ipc;
pub mod meta;
pub mod metrics;
pub mod peer;
pub mod proto;
pub mod storage;
pub mod txn;
