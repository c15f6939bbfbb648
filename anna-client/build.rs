//! Generates the Anna wire types from the workspace's single copy of
//! `proto/anna.proto` with `protox` (pure Rust, no system `protoc`) and
//! `prost-build`. The file has no `package` line, so the output is `_.rs`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("..").join("proto");
    let file = proto_dir.join("anna.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&proto_dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
