//! Generated protobuf types (the one leaf module that holds generated code).
//!
//! - [`anna`]: Anna / Cloudburst cache messages (`proto/anna.proto`).
//! - [`aft`]: AFT transaction messages seen by executors (`proto/aft.proto`).
//! - [`records`]: what the sidecar stores in the storage engine.
//! - [`peer`]: the sidecar-to-sidecar protocol.
//! - [`aft_server`], [`aft_client`]: AFT's gRPC `service Aft` (`proto/aft_service.proto`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Anna / Cloudburst cache messages. Upstream's file has no `package` line.
/// Generated once, by `anna-client`; these are its types, so values pass
/// between the IPC front and the Anna backend without conversion.
pub mod anna {
    pub use anna_client::proto::*;
}

/// AFT transaction messages (`package aft`).
pub mod aft {
    include!(concat!(env!("OUT_DIR"), "/aft.rs"));
}

// AFT's gRPC service (`service Aft`, no package, as in AFT's own file):
// `aft_server` (what the gRPC front implements) and `aft_client`.
include!(concat!(env!("OUT_DIR"), "/_.rs"));

/// Storage records (`package aft.records.v1`).
pub mod records {
    include!(concat!(env!("OUT_DIR"), "/aft.records.v1.rs"));
}

/// Peer protocol (`package aft.peer.v1`).
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/aft.peer.v1.rs"));

    /// The peer protocol version this build speaks.
    pub const PROTOCOL_VERSION: u32 = 1;
}
