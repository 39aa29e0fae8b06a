//! The control plane: the gRPC API over a running switch, its server, and the client side
//! used by `vswitchctl`.

/// Connecting to the API; in `vswitch-proto` so that vswitch-cni, which runs on the node,
/// links none of the switch (nor DPDK).
pub use vswitch_proto::client;
pub mod convert;
pub mod metrics;
pub mod server;
pub mod service;
pub mod tunnels;
pub mod uds_authority;
