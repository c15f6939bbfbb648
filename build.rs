//! Compiles the sidecar's own `proto/*.proto` with `protox` (pure Rust, no
//! system `protoc`) and generates the Rust types with `prost-build` and the
//! gRPC service with `tonic-prost-build`.
//! `proto/anna.proto` is compiled once, by the `anna-client` crate, whose
//! types `aft::proto::anna` re-exports.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/aft.proto",
        "proto/aft_service.proto",
        "proto/records.proto",
        "proto/peer.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Messages with prost; the gRPC service (server and client) with tonic.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
