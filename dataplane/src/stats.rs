//! Counters of the datapath and the reasons a packet is dropped.
//!
//! Thread-safety: each worker owns one [`WorkerStats`] and is its only writer. It updates a
//! counter with a relaxed load and store (no atomic read-modify-write, so no locked
//! instruction and no cache-line ping-pong); the control plane reads with relaxed loads and
//! sums over workers. Counts are exact; a reader may see one counter a burst ahead of another.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Adds to a counter that only the calling thread writes.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Declares the drop reasons once, expanding into the enum, its names and its stages (so
/// `vswitchctl`, gRPC and metrics show the same words).
macro_rules! drop_reasons {
    ($($variant:ident => ($stage:literal, $name:literal, $doc:literal),)*) => {
        /// Why the datapath dropped a packet. Every drop is counted under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, as shown by the API, the CLI and metrics.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// The pipeline stage that drops for this reason.
            pub fn stage(self) -> &'static str {
                match self { $(DropReason::$variant => $stage,)* }
            }

            /// One line that explains the reason to an operator.
            pub fn description(self) -> &'static str {
                match self { $(DropReason::$variant => $doc,)* }
            }
        }
    };
}

drop_reasons! {
    FrameTooShort => ("parse", "frame_too_short", "frame shorter than an Ethernet header (14 bytes)"),
    VlanTruncated => ("parse", "vlan_truncated", "frame ends inside its VLAN tag"),
    InvalidSourceMac => ("l2", "invalid_source_mac", "source MAC is multicast, broadcast or zero"),
    LinkLocalDestination => ("l2", "link_local_destination", "destination is a reserved 802.1D link-local group (01:80:c2:00:00:0x)"),
    DestinationOnIngressPort => ("l2", "destination_on_ingress_port", "destination MAC was learned on the port the frame came in on"),
    NoEgressPort => ("l2", "no_egress_port", "flood with no other port to send to"),
    TxQueueFull => ("tx", "tx_queue_full", "the egress port's transmit queue did not take the packet"),
}

/// Counters of one port as seen by one worker. Drops are counted on the port where the
/// decision was taken: the ingress port for pipeline drops, the egress port for tx drops.
#[repr(align(64))]
#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl PortCounters {
    #[inline(always)]
    pub fn drop(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
    }
}

/// Most ports a switch can have (DPDK's own build limit is lower: RTE_MAX_ETHPORTS = 32 in
/// Debian's 22.11; the headroom is for later kinds of ports that are not ethdevs).
pub const MAX_PORTS: usize = 256;

/// The counters of one worker. Cache-line aligned so two workers never share a line.
#[repr(align(64))]
pub struct WorkerStats {
    /// Iterations of the poll loop.
    pub polls: AtomicU64,
    /// Iterations that received at least one packet.
    pub busy_polls: AtomicU64,
    /// TSC cycles spent in iterations that received packets, and in those that did not.
    pub busy_cycles: AtomicU64,
    pub idle_cycles: AtomicU64,
    /// MAC learning: new entries, station moves, and learns refused because the table was full.
    pub mac_learned: AtomicU64,
    pub mac_moved: AtomicU64,
    pub mac_learn_failed: AtomicU64,
    /// Generation of the pipeline snapshot this worker runs (RCU quiescent-state report).
    pub generation: AtomicU64,
    pub ports: Box<[PortCounters]>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            polls: AtomicU64::new(0),
            busy_polls: AtomicU64::new(0),
            busy_cycles: AtomicU64::new(0),
            idle_cycles: AtomicU64::new(0),
            mac_learned: AtomicU64::new(0),
            mac_moved: AtomicU64::new(0),
            mac_learn_failed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
        }
    }
}

/// A plain-number copy of port counters, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl PortTotals {
    pub fn add(&mut self, c: &PortCounters) {
        self.rx_packets += c.rx_packets.load(Relaxed);
        self.rx_bytes += c.rx_bytes.load(Relaxed);
        self.tx_packets += c.tx_packets.load(Relaxed);
        self.tx_bytes += c.tx_bytes.load(Relaxed);
        for (t, d) in self.drops.iter_mut().zip(&c.drops) {
            *t += d.load(Relaxed);
        }
    }

    /// Packets this port dropped on the transmit side.
    pub fn tx_dropped(&self) -> u64 {
        self.drops[DropReason::TxQueueFull as usize]
    }

    /// Packets dropped by the pipeline after arriving on this port.
    pub fn rx_dropped(&self) -> u64 {
        self.drops.iter().sum::<u64>() - self.tx_dropped()
    }
}

/// A plain-number copy of one worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    pub polls: u64,
    pub busy_polls: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub mac_learned: u64,
    pub mac_moved: u64,
    pub mac_learn_failed: u64,
    pub generation: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl WorkerStats {
    pub fn totals(&self) -> WorkerTotals {
        let mut ports = PortTotals::default();
        for p in self.ports.iter() {
            ports.add(p);
        }
        WorkerTotals {
            polls: self.polls.load(Relaxed),
            busy_polls: self.busy_polls.load(Relaxed),
            busy_cycles: self.busy_cycles.load(Relaxed),
            idle_cycles: self.idle_cycles.load(Relaxed),
            mac_learned: self.mac_learned.load(Relaxed),
            mac_moved: self.mac_moved.load(Relaxed),
            mac_learn_failed: self.mac_learn_failed.load(Relaxed),
            generation: self.generation.load(Relaxed),
            rx_packets: ports.rx_packets,
            rx_bytes: ports.rx_bytes,
            tx_packets: ports.tx_packets,
            tx_bytes: ports.tx_bytes,
            drops: ports.drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::ALL[DropReason::TxQueueFull as usize], DropReason::TxQueueFull);
    }

    #[test]
    fn totals_sum_ports() {
        let w = WorkerStats::default();
        bump(&w.ports[0].rx_packets, 3);
        bump(&w.ports[5].rx_packets, 4);
        w.ports[5].drop(DropReason::FrameTooShort, 2);
        w.ports[1].drop(DropReason::TxQueueFull, 1);
        let t = w.totals();
        assert_eq!(t.rx_packets, 7);
        assert_eq!(t.drops[DropReason::FrameTooShort as usize], 2);
        let mut p = PortTotals::default();
        p.add(&w.ports[1]);
        assert_eq!((p.tx_dropped(), p.rx_dropped()), (1, 0));
    }
}
