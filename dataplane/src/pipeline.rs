//! The packet pipeline: an immutable snapshot of everything workers need to decide what
//! happens to a packet, and the per-burst processing that applies it.
//!
//! Thread-safety: a [`Pipeline`] never changes after it is built. The control plane builds a
//! new one and publishes it through [`PipelineCell`] (one atomic pointer swap); each worker
//! picks it up between bursts and reports the generation it runs, which tells the control
//! plane when an old snapshot can be freed (RCU with quiescent states) and when a change is
//! live everywhere. Shared mutable state reachable from a snapshot (the MAC table) documents
//! its own rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dpdk::{Mbuf, MbufBurst, BURST};
use crate::l2::{self, L2Decision, L2Settings};
use crate::mac_table::{MacTable, PortIdx};
use crate::stats::{DropReason, WorkerStats};
use crate::wire::MacAddr;

/// Where the pipeline sends packets: the worker's tx buffers, or a test double.
pub trait Egress {
    /// Queues `m` for transmission on `port`.
    fn output(&mut self, port: PortIdx, m: Mbuf);
    /// Drops `m`, counting it under `reason` on `port`.
    fn drop(&mut self, m: Mbuf, port: PortIdx, reason: DropReason);
}

/// One immutable version of the pipeline.
pub struct Pipeline {
    generation: u64,
    mac_table: Arc<MacTable>,
    l2: L2Settings,
    /// For each ingress port index, the ports a flood goes to.
    flood: Vec<Box<[PortIdx]>>,
}

impl Pipeline {
    /// A pipeline switching among `ports` (port indices that are up for forwarding).
    pub fn new(generation: u64, ports: &[PortIdx], mac_table: Arc<MacTable>, l2: L2Settings) -> Pipeline {
        let max = ports.iter().copied().max().map_or(0, |m| m as usize + 1);
        let flood = (0..max).map(|i| ports.iter().copied().filter(|&p| p as usize != i).collect()).collect();
        Pipeline { generation, mac_table, l2, flood }
    }

    /// The same pipeline under a new generation, with another MAC table.
    pub fn with_mac_table(&self, generation: u64, mac_table: Arc<MacTable>) -> Pipeline {
        Pipeline { generation, mac_table, l2: self.l2, flood: self.flood.clone() }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn mac_table(&self) -> &Arc<MacTable> {
        &self.mac_table
    }

    /// Ports a flood from `in_port` reaches.
    pub fn flood_ports(&self, in_port: PortIdx) -> &[PortIdx] {
        self.flood.get(in_port as usize).map_or(&[], |f| f)
    }

    /// The decision for one frame (learning its source as a side effect).
    #[inline]
    pub fn decide(&self, in_port: PortIdx, frame: &[u8], now: u32, stats: &WorkerStats) -> L2Decision {
        l2::decide(&self.mac_table, &self.l2, in_port, frame, now, stats)
    }

    /// Runs a burst that arrived on `in_port` through the pipeline, handing every packet to
    /// `out` (sent or dropped). Leaves the burst empty.
    ///
    /// Three passes, so memory latency overlaps instead of adding up: fetch every frame's
    /// header, then parse each and fetch its MAC table slot, then decide and send.
    #[inline]
    pub fn process_burst<E: Egress>(
        &self,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let pkts = burst.as_slice();
        for m in pkts {
            m.prefetch();
        }
        let mut parsed = [Err(DropReason::FrameTooShort); BURST];
        for (slot, m) in parsed.iter_mut().zip(pkts) {
            *slot = l2::parse(m.data());
            if let Ok(h) = slot {
                if !MacAddr::u64_is_multicast(h.dst) {
                    self.mac_table.prefetch(h.vlan, h.dst);
                }
            }
        }
        // A burst usually carries many frames of one sender: learn it once.
        let mut last_learned: Option<(u16, u64)> = None;
        for (m, hdr) in burst.drain().zip(&parsed) {
            let decision = match *hdr {
                Ok(h) => {
                    let learn = last_learned != Some((h.vlan, h.src));
                    last_learned = Some((h.vlan, h.src));
                    l2::decide_parsed(&self.mac_table, &self.l2, in_port, &h, learn, now, stats)
                }
                Err(reason) => L2Decision::Drop(reason),
            };
            match decision {
                L2Decision::Unicast(port) => out.output(port, m),
                L2Decision::Flood => self.flood(in_port, m, out),
                L2Decision::Drop(reason) => out.drop(m, in_port, reason),
            }
        }
    }

    #[inline]
    fn flood<E: Egress>(&self, in_port: PortIdx, m: Mbuf, out: &mut E) {
        match self.flood_ports(in_port) {
            [] => out.drop(m, in_port, DropReason::NoEgressPort),
            [rest @ .., last] => {
                for &p in rest {
                    out.output(p, m.share());
                }
                out.output(*last, m);
            }
        }
    }
}

/// The published pipeline and its generation counter.
pub struct PipelineCell {
    current: ArcSwap<Pipeline>,
    generation: AtomicU64,
}

impl PipelineCell {
    pub fn new(p: Pipeline) -> PipelineCell {
        let generation = AtomicU64::new(p.generation);
        PipelineCell { current: ArcSwap::from_pointee(p), generation }
    }

    /// The generation most recently published.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<Pipeline> {
        self.current.load_full()
    }

    /// Publishes `p` and returns the snapshot it replaces. The caller keeps the old one until
    /// every worker has moved past it, so that no worker frees a snapshot on its own core.
    pub fn publish(&self, p: Pipeline) -> Arc<Pipeline> {
        let generation = p.generation;
        let old = self.current.swap(Arc::new(p));
        self.generation.store(generation, Ordering::Release);
        old
    }
}

/// A worker's cached reference to the published pipeline.
pub struct PipelineReader {
    cached: Arc<Pipeline>,
}

impl PipelineReader {
    pub fn new(cell: &PipelineCell) -> PipelineReader {
        PipelineReader { cached: cell.load() }
    }

    /// Picks up a newer snapshot if one was published; true if it did. One atomic load when
    /// nothing changed.
    #[inline(always)]
    pub fn refresh(&mut self, cell: &PipelineCell) -> bool {
        if cell.generation() == self.cached.generation {
            return false;
        }
        self.cached = cell.load();
        true
    }

    #[inline(always)]
    pub fn get(&self) -> &Pipeline {
        &self.cached
    }
}
