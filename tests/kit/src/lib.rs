//! The one test and launch kit of aft-sidecar: what the integration tests,
//! `aft-bench` and `aft-demo` share, so each piece exists once.
//!
//! - [`ports`]: free loopback ports (one, or one free on several addresses).
//! - [`process`]: a child process that dies with its parent, logs to a file
//!   and is killed on drop; the base of every server below.
//! - [`server`]: a server with its directory, killed, restarted and
//!   dropped the same way whatever it is.
//! - [`sidecar`]: the real `aft-sidecar` binary, started and waited for.
//! - [`redis`], [`aws`]: `redis-server` (single and cluster), moto
//!   (DynamoDB) and SeaweedFS (S3) on free loopback ports.
//! - [`cluster`]: several sidecars on 127.0.0.x sharing one store.
//! - [`tagged`]: LWW values that name their writer, and reading the writer back.
//! - [`dag`]: a DAG run through `IpcClient` and recorded for the history checker.
//! - [`compat`]: a gRPC client generated from AFT's interface in the shape of AFT's own file.
//! - [`grpc`]: a blocking client of the gRPC front (AFT's `service Aft`).
//! - [`outside`]: a reader of the plain keys, as Cloudburst's user client reads.
//! - [`faulty`]: a storage wrapper that fails on demand.
//! - [`conformance`]: the storage conformance suite every backend passes.
//! - [`workload`]: driving the engine in-process and recording its history.
//!
//! Everything here panics with a message on failure: it serves tests and
//! tools, where a failed set-up must stop the run.

pub mod aws;
pub mod cluster;
pub mod compat;
pub mod conformance;
pub mod dag;
pub mod faulty;
pub mod grpc;
pub mod outside;
pub mod ports;
pub mod process;
pub mod redis;
pub mod seeded;
pub mod server;
pub mod sidecar;
pub mod tagged;
pub mod workload;

use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns
/// its last answer.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
