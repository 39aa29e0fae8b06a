//! The control plane: the gRPC API over a running switch, its server, and the client side
//! used by `vswitchctl`.

pub mod client;
pub mod convert;
pub mod metrics;
pub mod server;
pub mod service;
pub mod tunnels;
pub mod uds_authority;
