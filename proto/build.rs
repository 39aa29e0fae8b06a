//! Compiles the API's .proto files with protoc (Debian's protobuf-compiler) into Rust, and a
//! file descriptor set for gRPC server reflection.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=vswitch");
    tonic_prost_build::configure()
        // JSON output of vswitchctl --json.
        .type_attribute(".vswitch.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("vswitch_descriptor.bin"))
        .compile_protos(&["vswitch/v1/vswitch.proto"], &["."])
        .expect("protoc failed on the API (is protobuf-compiler installed?)");
}
