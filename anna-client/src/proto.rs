//! Anna's wire messages, generated at build time from the workspace's
//! `proto/anna.proto` (the file has no `package` line, so these are
//! top-level names, as Anna and Cloudburst expect).
//!
//! Enum-typed fields are stored as `i32` by prost; use the generated
//! getters (`tuple.error()`, `tuple.lattice_type()`) to read them, which
//! map unknown numbers to the enum's default.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));
