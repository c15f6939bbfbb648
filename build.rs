//! Compiles `proto/*.proto` with `protox` (pure Rust, no system `protoc`)
//! and generates the Rust types with `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/anna.proto",
        "proto/aft.proto",
        "proto/records.proto",
        "proto/peer.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
