//! Generates, from `proto/aft_compat.proto` (AFT's interface in the shape of
//! AFT's own file), the gRPC client the compatibility tests use. Pure Rust
//! (`protox`), no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/aft_compat.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
