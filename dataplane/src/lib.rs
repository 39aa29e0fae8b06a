//! The datapath of the vSwitch.
//!
//! - [`dpdk`]: safe wrappers over DPDK (the only module with `unsafe`).
//! - [`wire`]: zero-copy views of packet headers.
//! - [`mac_table`], [`l2`]: the MAC learning switch stage.
//! - [`pipeline`]: immutable pipeline snapshots and burst processing.
//! - [`worker`]: pinned poll-mode worker threads.
//! - [`config`], [`memory`], [`switch`]: configuration, memory sizing, assembly.
//! - [`pod`]: the config completed from a Kubernetes pod's environment.
//! - [`power`]: wake-up latency limits for the cores of idle workers.
#![deny(unsafe_code)]

pub mod config;
pub mod dpdk;
pub mod flow;
pub mod l2;
pub mod live_trace;
pub mod mac_table;
pub mod memory;
pub mod pipeline;
pub mod pod;
pub mod power;
pub mod stats;
pub mod switch;
pub mod tunnel;
pub mod wire;
pub mod worker;

pub use config::Config;
pub use mac_table::PortIdx;
pub use switch::{StartError, StartPlan, Switch, WorkerChangeError};
