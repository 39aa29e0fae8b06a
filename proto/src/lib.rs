//! The `vswitch.v1` gRPC API, generated from `proto/vswitch/v1/*.proto`.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("vswitch.v1");
}

pub mod client;

/// Where vswitchd serves the API unless `control.socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";

/// Encoded file descriptors of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vswitch_descriptor");
