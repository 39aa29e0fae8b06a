//! Benchmark helpers: synthetic traffic written as pcap files for DPDK's pcap PMD, and the
//! stamped frames of the traffic generator.

pub mod pcap;
pub mod traffic;
