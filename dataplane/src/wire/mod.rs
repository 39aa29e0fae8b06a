//! Typed, zero-copy views of packet headers. Parsing never panics: `new_checked` verifies the
//! length once, after which every accessor is in bounds. These views work on any byte slice,
//! so they are tested and fuzzed without DPDK.

pub mod checksum;
pub mod ethernet;

pub use ethernet::{EtherType, EthernetFrame, MacAddr, VlanTag};

/// Why a view could not be made over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{layer} header needs {needed} bytes, frame has {actual}")]
    Truncated { layer: &'static str, needed: usize, actual: usize },
}
