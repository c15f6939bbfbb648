//! Shared test support: real server processes and the storage conformance suite.
#![allow(dead_code)]

pub mod aws;
pub mod cluster;
pub mod conformance;
pub mod faulty;
pub mod outside;
pub mod redis;
pub mod sidecar;
pub mod workload;
