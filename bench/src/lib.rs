//! Benchmark helpers: synthetic traffic written as pcap files for DPDK's pcap PMD.

pub mod pcap;
