//! Counters of the datapath and the reasons a packet is dropped.
//!
//! Thread-safety: each worker owns one [`WorkerStats`] and is its only writer. It updates a
//! counter with a relaxed load and store (no atomic read-modify-write, so no locked
//! instruction and no cache-line ping-pong); the control plane reads with relaxed loads and
//! sums over workers. Counts are exact; a reader may see one counter a burst ahead of another.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::dpdk::{AtomicPair, ZeroedPairs, BURST};
use crate::flow::MAX_TABLES;

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
    DestinationOnIngressPort => ("l2", "destination_on_ingress_port", "the destination is the port the frame came in on (learned there, or output to it)"),
    NoEgressPort => ("l2", "no_egress_port", "flood with no other port to send to"),
    L3Malformed => ("parse", "l3_malformed", "IPv4, IPv6 or ARP header shorter than its minimum or than it says"),
    TableMiss => ("flow", "table_miss", "no flow matched and the table's miss action is drop"),
    FlowDrop => ("flow", "flow_drop", "the matching flows sent the packet nowhere (actions=drop)"),
    PipelineTooDeep => ("flow", "pipeline_too_deep", "the packet went through more tables than a path may hold"),
    TtlExceeded => ("action", "ttl_exceeded", "dec_ttl on a packet whose TTL or hop limit was 1 or 0"),
    NoHeadroom => ("action", "no_headroom", "no room in front of the frame to push a VLAN tag"),
    MbufExhausted => ("action", "mbuf_exhausted", "no mbuf for a copy of a packet sent out before being changed"),
    BufferShared => ("action", "buffer_shared", "a shared packet buffer could not be changed (internal error)"),
    TxQueueFull => ("tx", "tx_queue_full", "the egress port's transmit queue did not take the packet"),
    TunnelTruncated => ("tunnel", "tunnel_truncated", "tunnel packet with outer IPv4/UDP or tunnel header cut short, fragmented, or lengths that do not add up"),
    VxlanBadFlags => ("tunnel", "vxlan_bad_flags", "VXLAN header without the I flag (RFC 7348: no valid VNI)"),
    GeneveBadHeader => ("tunnel", "geneve_bad_header", "Geneve version not 0, options longer than the packet, or a payload that is not Ethernet"),
    TunnelUnknownVni => ("tunnel", "tunnel_unknown_vni", "no tunnel receives this VNI from this remote VTEP on this UDP port"),
    NotForVtep => ("tunnel", "not_for_vtep", "a frame on an uplink that is neither a tunnel packet nor ARP for a local VTEP address"),
    TunnelMtuExceeded => ("tunnel", "tunnel_mtu_exceeded", "encapsulated, the packet would exceed the uplink MTU (inner IP MTU = uplink MTU - 50)"),
    TunnelNoRemote => ("tunnel", "tunnel_no_remote", "output to a tunnel without remote_ip, and no flow set tun_dst"),
    TunnelNoRoute => ("tunnel", "tunnel_no_route", "the remote VTEP is off the uplink's subnet and the uplink has no gateway"),
    NeighborUnresolved => ("tunnel", "neighbor_unresolved", "the MAC of the next hop to the remote VTEP is not known yet (an ARP request went out)"),
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
    /// Zeroes every counter (by the owning worker, when a port index is reused).
    pub fn reset(&self) {
        for c in [&self.rx_packets, &self.rx_bytes, &self.tx_packets, &self.tx_bytes].into_iter().chain(&self.drops) {
            c.store(0, Relaxed);
        }
    }

    #[inline(always)]
    pub fn drop(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
    }
}

/// Most ports a switch can have (DPDK's own build limit is lower: RTE_MAX_ETHPORTS = 32 in
/// Debian's 22.11; the headroom is for later kinds of ports that are not ethdevs).
pub const MAX_PORTS: usize = 256;

/// Most rx queues one worker counts apart (more are polled, and counted per port only).
pub const MAX_RX_QUEUES_PER_WORKER: usize = 64;

/// Lookups of one flow table by one worker (lookups = matched + missed).
#[derive(Default)]
pub struct TableCounters {
    pub matched: AtomicU64,
    pub missed: AtomicU64,
}

/// Most named counters (`counter:NAME` actions).
pub const MAX_NAMED_COUNTERS: usize = 1024;

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
    /// Exact-match cache results of packets that went through flow tables.
    pub emc_hits: AtomicU64,
    pub emc_misses: AtomicU64,
    /// Received bursts by size: `rx_bursts[n]` counts polls of one queue that returned n
    /// packets (n >= 1).
    pub rx_bursts: [AtomicU64; BURST + 1],
    /// Idle back-off: where the worker is now ([`IdleState`] as a number), the sleeps it took
    /// and the TSC cycles it slept.
    pub idle_state: AtomicU64,
    pub sleeps: AtomicU64,
    pub sleep_cycles: AtomicU64,
    /// Whether the worker backs off when idle (else it busy-polls), as it last applied it.
    pub idle_backoff: AtomicBool,
    /// Of `sleeps`, the waits for an rx interrupt.
    pub interrupt_waits: AtomicU64,
    /// Of `interrupt_waits`, those a queue's interrupt or the control plane's doorbell ended
    /// (the others timed out).
    pub interrupt_wakes: AtomicU64,
    /// Of the timed sleeps (`sleeps` less `interrupt_waits`), those the control plane's
    /// doorbell ended (a ring that came while the worker polled ends the next one at once).
    pub sleep_wakes: AtomicU64,
    /// Packets and bytes received per rx queue, by the queue's place in the worker's list
    /// (`WorkerRuntime::rx`).
    pub rx_queue_packets: Box<[AtomicU64]>,
    pub rx_queue_bytes: Box<[AtomicU64]>,
    pub ports: Box<[PortCounters]>,
    pub tables: Box<[TableCounters]>,
    pub named: Box<[AtomicU64]>,
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
            emc_hits: AtomicU64::new(0),
            emc_misses: AtomicU64::new(0),
            rx_bursts: std::array::from_fn(|_| AtomicU64::new(0)),
            idle_state: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            sleep_cycles: AtomicU64::new(0),
            idle_backoff: AtomicBool::new(false),
            interrupt_waits: AtomicU64::new(0),
            interrupt_wakes: AtomicU64::new(0),
            sleep_wakes: AtomicU64::new(0),
            rx_queue_packets: (0..MAX_RX_QUEUES_PER_WORKER).map(|_| AtomicU64::new(0)).collect(),
            rx_queue_bytes: (0..MAX_RX_QUEUES_PER_WORKER).map(|_| AtomicU64::new(0)).collect(),
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            tables: (0..MAX_TABLES).map(|_| TableCounters::default()).collect(),
            named: (0..MAX_NAMED_COUNTERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What an idle worker does between polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum IdleState {
    /// Packets came recently (or back-off is off): poll without pause.
    #[default]
    Polling = 0,
    /// Queues stayed empty for a while: short sleeps between polls.
    Sleeping = 1,
    /// Idle for long: blocked until an rx interrupt (or the control plane) wakes it.
    Interrupt = 2,
}

impl IdleState {
    pub fn from_number(n: u64) -> IdleState {
        match n {
            1 => IdleState::Sleeping,
            2 => IdleState::Interrupt,
            _ => IdleState::Polling,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IdleState::Polling => "polling",
            IdleState::Sleeping => "sleeping",
            IdleState::Interrupt => "interrupt",
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

    /// Takes away what `baseline` had counted (a port slot used before).
    pub fn subtract(&mut self, baseline: &PortTotals) {
        self.rx_packets = self.rx_packets.saturating_sub(baseline.rx_packets);
        self.rx_bytes = self.rx_bytes.saturating_sub(baseline.rx_bytes);
        self.tx_packets = self.tx_packets.saturating_sub(baseline.tx_packets);
        self.tx_bytes = self.tx_bytes.saturating_sub(baseline.tx_bytes);
        for (t, b) in self.drops.iter_mut().zip(&baseline.drops) {
            *t = t.saturating_sub(*b);
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
    pub emc_hits: u64,
    pub emc_misses: u64,
    /// Received bursts by size (index = packets in the burst).
    pub rx_bursts: Vec<u64>,
    pub idle_state: IdleState,
    pub idle_backoff: bool,
    pub sleeps: u64,
    pub sleep_cycles: u64,
    pub interrupt_waits: u64,
    pub interrupt_wakes: u64,
    pub sleep_wakes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl WorkerStats {
    /// Zeroes the per-queue counters of rx list slot `slot` (by the owning worker, when a
    /// slot is reused).
    pub fn reset_rx_queue(&self, slot: usize) {
        for v in [&self.rx_queue_packets, &self.rx_queue_bytes] {
            if let Some(c) = v.get(slot) {
                c.store(0, Relaxed);
            }
        }
    }

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
            emc_hits: self.emc_hits.load(Relaxed),
            emc_misses: self.emc_misses.load(Relaxed),
            rx_bursts: self.rx_bursts.iter().map(|b| b.load(Relaxed)).collect(),
            idle_state: IdleState::from_number(self.idle_state.load(Relaxed)),
            idle_backoff: self.idle_backoff.load(Relaxed),
            sleeps: self.sleeps.load(Relaxed),
            sleep_cycles: self.sleep_cycles.load(Relaxed),
            interrupt_waits: self.interrupt_waits.load(Relaxed),
            interrupt_wakes: self.interrupt_wakes.load(Relaxed),
            sleep_wakes: self.sleep_wakes.load(Relaxed),
            rx_packets: ports.rx_packets,
            rx_bytes: ports.rx_bytes,
            tx_packets: ports.tx_packets,
            tx_bytes: ports.tx_bytes,
            drops: ports.drops,
        }
    }
}

/// One worker's flow counters, with the first chunk (ids below FLOW_CHUNK, the usual
/// case) at hand.
#[derive(Clone, Copy)]
pub struct WorkerBank<'a> {
    first: &'a [AtomicPair],
    chunks: &'a [Arc<ZeroedPairs>],
}

impl WorkerBank<'_> {
    /// The counters of flow `id` (None beyond the capacity: cannot happen, a snapshot's
    /// banks cover its flows).
    #[inline(always)]
    pub fn slot(&self, id: u32) -> Option<&AtomicPair> {
        let id = id as usize;
        match self.first.get(id) {
            Some(slot) => Some(slot),
            None => self.chunks.get(id / FLOW_CHUNK).and_then(|c| c.get(id % FLOW_CHUNK)),
        }
    }

    /// Starts loading the counters of flow `id`, about to be written.
    #[inline(always)]
    pub fn prefetch(&self, id: u32) {
        if let Some(slot) = self.slot(id) {
            crate::dpdk::prefetch(slot);
        }
    }

    #[inline(always)]
    pub fn bump(&self, id: u32, packets: u64, bytes: u64) {
        if let Some(slot) = self.slot(id) {
            bump(&slot.0, packets);
            bump(&slot.1, bytes);
        }
    }
}

/// Flow counter slots per chunk: chunks are added as flow ids grow, never moved.
pub const FLOW_CHUNK: usize = 4096;

/// Packet and byte counters of flow ids, one bank per worker (each its only writer), in
/// chunks shared between pipeline snapshots so counts survive every publication.
#[derive(Clone, Default)]
pub struct FlowCounterBanks {
    per_worker: Vec<Vec<Arc<ZeroedPairs>>>,
}

impl FlowCounterBanks {
    pub fn new(workers: usize) -> FlowCounterBanks {
        FlowCounterBanks { per_worker: vec![Vec::new(); workers] }
    }

    /// Slots available.
    pub fn capacity(&self) -> usize {
        self.per_worker.first().map_or(0, |b| b.len() * FLOW_CHUNK)
    }

    /// These banks with room for at least `ids` flow ids (existing chunks shared).
    pub fn with_capacity(&self, ids: usize) -> FlowCounterBanks {
        let mut b = self.clone();
        while b.capacity() < ids {
            for w in b.per_worker.iter_mut() {
                w.push(Arc::new(ZeroedPairs::new(FLOW_CHUNK)));
            }
        }
        b
    }

    /// `worker`'s bank: a burst fetches it once, not once per packet.
    #[inline(always)]
    pub fn bank(&self, worker: usize) -> WorkerBank<'_> {
        let chunks = self.per_worker.get(worker).map_or(&[][..], |b| &b[..]);
        WorkerBank { first: chunks.first().map_or(&[][..], |c| &c[..]), chunks }
    }

    /// Counts `packets` packets of `bytes` bytes in all for flow `id` on `worker`. Ids beyond
    /// the capacity are not counted (cannot happen: a snapshot's banks cover its flows).
    #[inline(always)]
    pub fn bump(&self, worker: usize, id: u32, packets: u64, bytes: u64) {
        self.bank(worker).bump(id, packets, bytes);
    }

    /// (packets, bytes) of flow slot `id`, summed over workers.
    pub fn read(&self, id: u32) -> (u64, u64) {
        let id = id as usize;
        let mut t = (0, 0);
        for b in &self.per_worker {
            if let Some(chunk) = b.get(id / FLOW_CHUNK) {
                let slot = &chunk[id % FLOW_CHUNK];
                t.0 += slot.0.load(Relaxed);
                t.1 += slot.1.load(Relaxed);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{n}");
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::ALL[DropReason::TxQueueFull as usize], DropReason::TxQueueFull);
    }

    #[test]
    fn flow_banks_grow_without_losing_counts() {
        let b = FlowCounterBanks::new(2).with_capacity(10);
        assert_eq!(b.capacity(), FLOW_CHUNK);
        b.bump(0, 7, 1, 100);
        b.bump(1, 7, 1, 50);
        let grown = b.with_capacity(FLOW_CHUNK + 1);
        assert_eq!(grown.capacity(), 2 * FLOW_CHUNK);
        // The old snapshot's banks and the new share the first chunk.
        b.bump(0, 7, 1, 10);
        grown.bump(1, FLOW_CHUNK as u32 + 3, 1, 60);
        assert_eq!(grown.read(7), (3, 160));
        assert_eq!(grown.read(FLOW_CHUNK as u32 + 3), (1, 60));
        assert_eq!(b.read(FLOW_CHUNK as u32 + 3), (0, 0));
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
