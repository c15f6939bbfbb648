//! # aft-bench
//!
//! The load generator of aft-sidecar and the baselines it is compared with,
//! all measured in one run, interleaved (A B A B, the order alternating each
//! round), so that machine noise hits every workload alike:
//!
//! - a raw ZeroMQ IPC echo server speaking the executor protocol with no work
//!   behind it (the floor for one request, and for a DAG of requests);
//! - the same DAG IO pattern straight against Redis with no atomicity (plain
//!   GET/SET), on loopback and behind a simulated network hop;
//! - real `aft-sidecar` processes over Redis (loopback and behind the hop) and
//!   over the embedded store, driven through the real IPC protocol by
//!   [`aft::client::IpcClient`]s, one OS thread per client;
//! - several sidecars sharing one Redis with DAGs spread across them.
//!
//! Every DAG workload records a history that [`aft::history::check`] checks
//! for read-atomicity anomalies. Results go to a JSON file, SVG plots and a
//! Markdown report (`docs/benchmarks.md`).
//!
//! The binary is `aft-bench` (see `aft-bench --help`); its helper processes
//! (`aft-bench echo-server`, `aft-bench delay-proxy`) are subcommands of it.

#![warn(missing_docs)]

pub mod aws;
pub mod cli;
pub mod cost;
pub mod echo;
pub mod harness;
pub mod machine;
pub mod memory;
pub mod plots;
pub mod procs;
pub mod proxy;
pub mod ratios;
pub mod report;
pub mod resp;
pub mod results;
pub mod runner;
pub mod session;
pub mod staleness;
pub mod workload;
