//! A gRPC client generated from AFT's interface in the shape of AFT's own
//! `aft.proto` (no package; `tests/kit/proto/aft_compat.proto`): what the
//! compatibility tests drive the sidecar with, so they fail if the sidecar's
//! service stops answering clients generated from AFT's file.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));
