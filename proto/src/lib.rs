//! The `vswitch.v1` gRPC API, generated from `proto/vswitch/v1/*.proto`.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("vswitch.v1");
}

/// Encoded file descriptors of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vswitch_descriptor");
