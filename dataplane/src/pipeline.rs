//! The packet pipeline: an immutable snapshot of everything workers need to decide what
//! happens to a packet, and the per-burst processing that applies it.
//!
//! Two ways through: with no flows and table 0 missing to `normal` (the default), a burst
//! goes straight to the L2 learning switch; otherwise every packet's flow key is extracted,
//! its path through the flow tables comes from the worker's exact-match cache or the
//! classifier, and the path's actions run on the packet.
//!
//! Thread-safety: a [`Pipeline`] never changes after it is built. The control plane builds a
//! new one and publishes it through [`PipelineCell`] (one atomic pointer swap); each worker
//! picks it up between bursts and reports the generation it runs, which tells the control
//! plane when an old snapshot can be freed (RCU with quiescent states) and when a change is
//! live everywhere. Shared mutable state reachable from a snapshot (the MAC table, counter
//! banks) documents its own rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dpdk::{Mbuf, MbufBurst, BURST};
use crate::flow::classifier::BATCH;
use crate::flow::compiled::{FlowTables, MissAction, Op, Path, NO_PORT, SIMPLE};
use crate::flow::direct::{DirectTable, Probe};
use crate::flow::edit;
use crate::flow::emc::ExactMatchCache;
use crate::flow::key::{extract_key, slot, Depth, ExtractError, FlowKey, Layout};
use crate::l2::{self, L2Decision, L2Settings};
use crate::mac_table::{MacTable, PortIdx};
use crate::stats::{bump, DropReason, FlowCounterBanks, WorkerBank, WorkerStats};
use crate::tunnel::neighbor::NeighborTable;
use crate::tunnel::{TunMeta, TunnelMap};
use crate::wire::MacAddr;

/// Where the pipeline sends packets: the worker's tx buffers, or a test double.
pub trait Egress {
    /// Queues `m` for transmission on `port`.
    fn output(&mut self, port: PortIdx, m: Mbuf);
    /// Queues every packet of `burst` (`bytes` long in all) for `port`, leaving it empty.
    #[inline]
    fn output_burst(&mut self, port: PortIdx, burst: &mut MbufBurst, _bytes: u64) {
        for m in burst.drain() {
            self.output(port, m);
        }
    }
    /// Drops `m`, counting it under `reason` on `port`.
    fn drop(&mut self, m: Mbuf, port: PortIdx, reason: DropReason);
    /// An empty mbuf for a packet the switch makes itself (an ARP request).
    fn alloc(&mut self) -> Option<Mbuf>;
}

/// A port as the pipeline's port map sees it.
#[derive(Debug, Clone, Copy)]
pub struct PortEntry {
    pub idx: PortIdx,
    pub number: u32,
    /// Floods go to it (not to uplinks, nor to tunnels without a fixed remote).
    pub floods: bool,
    pub tunnel: bool,
}

/// The ports as the pipeline knows them.
#[derive(Debug, Clone, Default)]
pub struct PortMap {
    /// For each ingress port index, the ports a flood goes to.
    flood: Vec<Box<[PortIdx]>>,
    /// Port number (what `in_port` matches) of each port index.
    numbers: Box<[u16]>,
}

impl PortMap {
    /// The map of `ports`. A flood goes to every flooding port but the ingress port, and,
    /// from a tunnel, to no other tunnel (split horizon: the remote VTEPs flood their own).
    pub fn new(ports: &[PortEntry]) -> PortMap {
        let max = ports.iter().map(|p| p.idx as usize + 1).max().unwrap_or(0);
        let ingress_is_tunnel = |i: usize| ports.iter().any(|p| p.idx as usize == i && p.tunnel);
        let flood = (0..max)
            .map(|i| {
                let from_tunnel = ingress_is_tunnel(i);
                ports
                    .iter()
                    .filter(|p| p.floods && p.idx as usize != i && !(from_tunnel && p.tunnel))
                    .map(|p| p.idx)
                    .collect()
            })
            .collect();
        let mut numbers = vec![0u16; max];
        for p in ports {
            numbers[p.idx as usize] = p.number as u16;
        }
        PortMap { flood, numbers: numbers.into_boxed_slice() }
    }

    /// The port index of a port number.
    pub fn index_of(&self, number: u32) -> Option<PortIdx> {
        self.numbers.iter().position(|&n| n as u32 == number && n != 0).map(|i| i as PortIdx)
    }

    #[inline(always)]
    pub fn number(&self, idx: PortIdx) -> u16 {
        self.numbers.get(idx as usize).copied().unwrap_or(0)
    }

    pub fn flood_ports(&self, in_port: PortIdx) -> &[PortIdx] {
        self.flood.get(in_port as usize).map_or(&[], |f| f)
    }
}

/// One immutable version of the pipeline.
#[derive(Clone)]
pub struct Pipeline {
    pub generation: u64,
    pub mac_table: Arc<MacTable>,
    pub l2: L2Settings,
    pub ports: Arc<PortMap>,
    pub flows: Arc<FlowTables>,
    /// Per-worker flow counter banks (chunks shared with earlier snapshots).
    pub counters: FlowCounterBanks,
    /// Uplinks and tunnel ports.
    pub tunnels: Arc<TunnelMap>,
    /// Underlay next hops (shared by every snapshot, like the MAC table).
    pub neighbors: Arc<NeighborTable>,
}

/// Turns the exact-match cache off while it does not pay: with more active flows than
/// entries (64k flows cycling through 4k entries) it misses every time and its lookups and
/// inserts only add cost. While off it still runs on one burst in 16, so a return to few
/// flows is seen and it turns back on. Hysteresis: off below 25% hits, on above 50%.
#[derive(Debug, Default)]
struct EmcGate {
    off: bool,
    bursts: u32,
    lookups: u32,
    hits: u32,
}

impl EmcGate {
    const WINDOW: u32 = 8192;

    #[inline(always)]
    fn use_now(&mut self) -> bool {
        if !self.off {
            return true;
        }
        // Sample pseudo-randomly (xorshift): a fixed stride could alias with periodic
        // traffic and see the same few bursts every time.
        let mut x = self.bursts | 1;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.bursts = x;
        x.is_multiple_of(16)
    }

    #[inline(always)]
    fn record(&mut self, lookups: u32, hits: u32) {
        self.lookups += lookups;
        self.hits += hits;
        if self.lookups >= Self::WINDOW {
            let pct = self.hits * 100 / self.lookups;
            self.off = if self.off { pct < 50 } else { pct < 25 };
            self.lookups = 0;
            self.hits = 0;
        }
    }
}

/// Backs off the direct table's whole-burst path while bursts keep falling back from it (a
/// miss or a malformed packet in each), since those pay for their parse twice: after each
/// fallback, the next 1, 2, 4... 64 bursts go straight to the general path. One per ingress
/// port (direct-mapped), so a port whose traffic misses does not undo another's.
#[derive(Debug, Default)]
struct DirectGate {
    skip: u8,
    backoff: u8,
}

impl DirectGate {
    #[inline]
    fn use_now(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    #[inline]
    fn record(&mut self, done: bool) {
        self.backoff = if done { 0 } else { (self.backoff * 2).clamp(1, 64) };
        self.skip = self.backoff;
    }
}

/// A worker's private state for the flow path: its index (for its counter bank), the
/// exact-match cache, and scratch arrays reused by every burst.
pub struct FlowScratch {
    pub worker: usize,
    emc: Option<ExactMatchCache>,
    emc_gate: EmcGate,
    direct_gates: [DirectGate; PORT_SLOTS],
    keys: [FlowKey; BATCH],
    work: [FlowKey; BATCH],
    hashes: [u32; BATCH],
    layouts: [Layout; BATCH],
    paths: [Path; BATCH],
    /// For each packet, the packet whose path it takes (itself, or an earlier one of the
    /// burst with the same key).
    path_of: [u8; BATCH],
    reasons: [DropReason; BATCH],
    /// Tunnel metadata of the packets of a decapsulated burst; all zero otherwise.
    pub(crate) tun_in: [TunMeta; BATCH],
    /// The decapsulated packets of an uplink burst.
    pub(crate) decapped: MbufBurst,
    /// Paths of in_port-only pipelines by ingress port (direct-mapped), tagged with the
    /// generation and port they were found for.
    meta_paths: [(u64, PortIdx, Path, PathPlan); PORT_SLOTS],
}

/// Per-ingress-port state is kept direct-mapped in this many slots.
const PORT_SLOTS: usize = 8;

impl FlowScratch {
    /// Scratch for worker `worker` with an exact-match cache of `emc_entries` (0: none).
    pub fn new(worker: usize, emc_entries: usize) -> Box<FlowScratch> {
        Box::new(FlowScratch {
            worker,
            emc: (emc_entries > 0).then(|| ExactMatchCache::new(emc_entries)),
            emc_gate: EmcGate::default(),
            direct_gates: Default::default(),
            keys: [FlowKey::ZERO; BATCH],
            work: [FlowKey::ZERO; BATCH],
            hashes: [0; BATCH],
            layouts: [Layout::default(); BATCH],
            paths: [Path::default(); BATCH],
            path_of: [0; BATCH],
            reasons: [DropReason::FrameTooShort; BATCH],
            tun_in: [TunMeta::NONE; BATCH],
            decapped: MbufBurst::new(),
            meta_paths: [(0, 0, Path::default(), PathPlan::default()); PORT_SLOTS],
        })
    }
}

fn extract_drop_reason(e: ExtractError) -> DropReason {
    match e {
        ExtractError::FrameTooShort => DropReason::FrameTooShort,
        ExtractError::VlanTruncated => DropReason::VlanTruncated,
        ExtractError::L3Malformed => DropReason::L3Malformed,
    }
}

const _: () = assert!(BATCH == BURST, "a burst is classified as one batch");

/// Positions (op counts along a path) of its last output and last packet change.
#[derive(Debug, Clone, Copy, Default)]
struct PathPlan {
    last_out: Option<usize>,
    last_mod: Option<usize>,
    /// The path is one rule that only outputs to this port.
    simple_output: Option<PortIdx>,
}

impl Pipeline {
    /// The default pipeline: the L2 learning switch over `ports`, no flows.
    pub fn new(
        generation: u64,
        ports: PortMap,
        mac_table: Arc<MacTable>,
        l2: L2Settings,
        workers: usize,
        tunnels: TunnelMap,
        neighbors: Arc<NeighborTable>,
    ) -> Pipeline {
        Pipeline {
            generation,
            mac_table,
            l2,
            ports: Arc::new(ports),
            flows: Arc::new(FlowTables::default()),
            counters: FlowCounterBanks::new(workers),
            tunnels: Arc::new(tunnels),
            neighbors,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn mac_table(&self) -> &Arc<MacTable> {
        &self.mac_table
    }

    /// Ports a flood from `in_port` reaches.
    pub fn flood_ports(&self, in_port: PortIdx) -> &[PortIdx] {
        self.ports.flood_ports(in_port)
    }

    /// The L2 decision for one frame (learning its source as a side effect).
    #[inline]
    pub fn decide(&self, in_port: PortIdx, frame: &[u8], now: u32, stats: &WorkerStats) -> L2Decision {
        l2::decide(&self.mac_table, &self.l2, in_port, frame, now, stats)
    }

    /// Runs a burst that arrived on `in_port` (`bytes` long in all) through the pipeline,
    /// handing every packet to `out` (sent or dropped). Leaves the burst empty.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn process_burst<E: Egress>(
        &self,
        scratch: &mut FlowScratch,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        if let Some(up) = self.tunnels.uplink(in_port) {
            self.process_underlay(up, scratch, in_port, burst, now, stats, out);
        } else {
            self.process_overlay(scratch, in_port, burst, bytes, now, stats, out);
        }
    }

    /// A burst of frames from a switch port (physical, or a tunnel after decap).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn process_overlay<E: Egress>(
        &self,
        scratch: &mut FlowScratch,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        if self.flows.l2_only {
            self.process_l2(in_port, burst, &scratch.tun_in, now, stats, out);
        } else {
            self.process_flows(scratch, in_port, burst, bytes, now, stats, out);
        }
    }

    /// The plain L2 switch. Three passes, so memory latency overlaps instead of adding up:
    /// fetch every frame's header, then parse each and fetch its MAC table slot, then decide
    /// and send.
    #[inline]
    fn process_l2<E: Egress>(
        &self,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        tun: &[TunMeta; BATCH],
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
        for ((m, hdr), tun) in burst.drain().zip(&parsed).zip(tun) {
            let decision = match *hdr {
                Ok(h) => {
                    let learn = last_learned != Some((h.vlan, h.src));
                    last_learned = Some((h.vlan, h.src));
                    l2::decide_parsed(&self.mac_table, &self.l2, in_port, &h, learn, now, stats)
                }
                Err(reason) => L2Decision::Drop(reason),
            };
            self.apply_l2(decision, in_port, m, tun, now, stats, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn apply_l2<E: Egress>(
        &self,
        decision: L2Decision,
        in_port: PortIdx,
        m: Mbuf,
        tun: &TunMeta,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        match decision {
            L2Decision::Unicast(port) => self.send(port, m, tun, now, stats, out),
            L2Decision::Flood => self.flood(in_port, m, tun, now, stats, out),
            L2Decision::Drop(reason) => out.drop(m, in_port, reason),
        }
    }

    /// The flow tables: extract keys, find paths (cache, then classifier), run them.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process_flows<E: Egress>(
        &self,
        s: &mut FlowScratch,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        burst_bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let depth = self.flows.depth;
        let in_no = self.ports.number(in_port);
        if depth == Depth::Meta && !(self.flows.matches_tunnel && self.tunnels.is_tunnel(in_port)) {
            // No table looks past in_port (a cross-connect, as `in_port=1,actions=output:2`):
            // the whole burst has one key, so it is classified once and its packets are
            // never read. Decapsulated packets differ only by tunnel metadata, which no table
            // looks at here.
            let cached = &mut s.meta_paths[in_port as usize % PORT_SLOTS];
            let plan = if cached.0 == self.generation && cached.1 == in_port {
                s.paths[0] = cached.2;
                cached.3
            } else {
                let mut key = FlowKey::ZERO;
                slot::IN_PORT.set(&mut key, in_no as u64);
                s.keys[0] = key;
                self.flows.classify_batch(&mut s.keys, 1, &mut s.paths);
                let plan = self.plan(&s.paths[0]);
                *cached = (self.generation, in_port, s.paths[0], plan);
                plan
            };
            if !matches!(plan.simple_output, Some(port) if port != in_port) {
                // Actions run per packet: give them what extraction would have (no header parsed).
                s.layouts[..burst.len()].fill(Layout::default());
            }
            self.run_burst_on_path(s, 0, plan, in_port, burst, burst_bytes, now, stats, out);
            return;
        }
        let emc = if self.flows.use_emc && s.emc.is_some() && s.emc_gate.use_now() { s.emc.as_mut() } else { None };
        if let Some(direct) = self.flows.direct() {
            let gate = &mut s.direct_gates[in_port as usize % PORT_SLOTS];
            if emc.is_none() && !burst.is_empty() && !self.tunnels.is_tunnel(in_port) && gate.use_now() {
                let done =
                    self.direct_burst(direct, s.worker, &s.tun_in, in_port, in_no, burst, burst_bytes, now, stats, out);
                gate.record(done);
                if done {
                    return;
                }
            }
        }
        let mut bad = 0u32;
        let mut todo = 0u32;
        // A packet with the key of the packet before it takes that packet's path: bursts are
        // mostly runs of one flow, and a key compare is cheaper than any lookup.
        let mut last: Option<usize> = None;
        let mut last_key = FlowKey::ZERO;
        for (i, m) in burst.as_slice().iter().enumerate() {
            match extract_key(m.data(), in_no, depth) {
                Ok((mut key, l)) => {
                    // Tunnel metadata (zero unless decapsulated) is part of the key.
                    key.0[9] = s.tun_in[i].id;
                    key.0[10] = s.tun_in[i].addrs;
                    s.layouts[i] = l;
                    match last {
                        Some(j) if last_key == key => s.path_of[i] = s.path_of[j],
                        _ => {
                            s.path_of[i] = i as u8;
                            last = Some(i);
                            last_key = key;
                            s.keys[i] = key;
                            if let Some(emc) = &emc {
                                s.hashes[i] = ExactMatchCache::hash(&key);
                                emc.prefetch(s.hashes[i]);
                            }
                            todo |= 1 << i;
                        }
                    }
                }
                Err(e) => {
                    s.reasons[i] = extract_drop_reason(e);
                    bad |= 1 << i;
                }
            }
        }
        // Packets that start a run of one key: the burst is one flow when there is one run,
        // whether its path comes from the cache or the classifier (`todo` loses cache hits).
        let runs = todo;
        if let Some(emc) = &emc {
            let mut live = todo;
            let mut hits = 0;
            while live != 0 {
                let i = live.trailing_zeros() as usize;
                live &= live - 1;
                if let Some(p) = emc.get(&s.keys[i], s.hashes[i], self.generation) {
                    s.paths[i] = *p;
                    todo &= !(1 << i);
                    hits += 1;
                }
            }
            bump(&stats.emc_hits, hits);
            bump(&stats.emc_misses, todo.count_ones() as u64);
            s.emc_gate.record(hits as u32 + todo.count_ones(), hits as u32);
        }
        if todo != 0 {
            // Classifying changes keys as actions change packets; the cache needs the keys
            // as they arrived, so it gets copies.
            let keys = if emc.is_some() {
                let mut live = todo;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    s.work[i] = s.keys[i];
                }
                &mut s.work
            } else {
                &mut s.keys
            };
            self.flows.classify_batch(keys, todo, &mut s.paths);
            if let Some(emc) = emc {
                let mut live = todo;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    emc.insert(&s.keys[i], s.hashes[i], self.generation, &s.paths[i]);
                }
            }
        }
        // The whole burst is one flow (one key): plan once, count once, and send a rule's
        // single output without the per-packet machinery.
        if bad == 0 && runs.count_ones() == 1 {
            let first = runs.trailing_zeros() as usize;
            let plan = self.plan(&s.paths[first]);
            self.run_burst_on_path(s, first, plan, in_port, burst, burst_bytes, now, stats, out);
            return;
        }
        let bank = self.counters.bank(s.worker);
        // Every packet hit a rule that only sends to one port (exact MAC or address rules):
        // count each on its flow and send, the burst whole when all go to one port.
        if bad == 0 && !burst.is_empty() {
            let n = burst.len();
            let mut hits = [(NO_PORT, 0u32); BATCH];
            let mut all_simple = true;
            for (hit, &p) in hits[..n].iter_mut().zip(&s.path_of[..n]) {
                let path = &s.paths[p as usize];
                all_simple &= path.simple_port != NO_PORT;
                if path.simple_port != NO_PORT {
                    // Start loading the flow's counters: they are written in send_hits.
                    bank.prefetch(path.simple_id);
                }
                *hit = (path.simple_port, path.simple_id);
            }
            if all_simple {
                self.send_hits(&bank, &s.tun_in, in_port, &hits, burst, burst_bytes, now, stats, out);
                return;
            }
        }
        // Consecutive packets of one path (the usual case: a burst of one flow) share their
        // plan and are counted once, as a group.
        let mut group: Option<usize> = None;
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut plan = PathPlan::default();
        let (paths, layouts, tun_in) = (&s.paths, &mut s.layouts, &s.tun_in);
        let mut simple_hits = 0u64;
        for (i, m) in burst.drain().enumerate() {
            if bad & (1 << i) != 0 {
                out.drop(m, in_port, s.reasons[i]);
                continue;
            }
            let path = &paths[s.path_of[i] as usize];
            // One rule, one output: count and send, nothing else to work out.
            if path.simple_port != NO_PORT && path.simple_port != in_port {
                bank.bump(path.simple_id, 1, m.pkt_len() as u64);
                simple_hits += 1;
                self.send(path.simple_port, m, &tun_in[i], now, stats, out);
                continue;
            }
            if group.is_none_or(|g| !path.same_as(&paths[g])) {
                if let Some(g) = group {
                    self.count_path(s.worker, &paths[g], packets, bytes, stats);
                }
                group = Some(s.path_of[i] as usize);
                (packets, bytes) = (0, 0);
                plan = self.plan(path);
            }
            packets += 1;
            bytes += m.pkt_len() as u64;
            match plan.simple_output {
                Some(port) if port != in_port => self.send(port, m, &tun_in[i], now, stats, out),
                _ => self.run_path(&plan, in_port, m, &mut layouts[i], path, tun_in[i], now, stats, out),
            }
        }
        if let Some(g) = group {
            self.count_path(s.worker, &paths[g], packets, bytes, stats);
        }
        bump(&stats.tables[0].matched, simple_hits);
    }

    /// A burst on a pipeline whose table 0 runs as a direct table, when every packet parses
    /// and hits it: sent by [`Pipeline::send_hits`] straight from the probes, with no key,
    /// path or layout kept per packet (with 1k flows, a quarter off the time per packet).
    /// Returns false, having changed nothing, when a packet is malformed or misses: the
    /// general path then takes the burst.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn direct_burst<E: Egress>(
        &self,
        direct: &DirectTable,
        worker: usize,
        tun_in: &[TunMeta; BATCH],
        in_port: PortIdx,
        in_no: u16,
        burst: &mut MbufBurst,
        burst_bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) -> bool {
        let n = burst.len();
        let mut probes = [Probe::default(); BATCH];
        for (probe, m) in probes.iter_mut().zip(burst.as_slice()) {
            let Ok((key, _)) = extract_key(m.data(), in_no, self.flows.depth) else { return false };
            *probe = direct.start(&key);
        }
        let bank = self.counters.bank(worker);
        let mut hits = [(0 as PortIdx, 0u32); BATCH];
        for (hit, probe) in hits[..n].iter_mut().zip(&probes) {
            let Some(h) = direct.finish(probe) else { return false };
            *hit = h;
            bank.prefetch(h.1);
        }
        self.send_hits(&bank, tun_in, in_port, &hits, burst, burst_bytes, now, stats, out);
        true
    }

    /// Counts and sends a burst whose every packet hit a rule that only sends to one port:
    /// `hits[i]` is packet i's (port, flow id), its counters prefetched. The burst leaves
    /// whole when all go to one port (encapsulated as one when that is a tunnel and the
    /// packets share their metadata, not being decapsulated); a rule back out the ingress
    /// port drops, as an output op does.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn send_hits<E: Egress>(
        &self,
        bank: &WorkerBank<'_>,
        tun_in: &[TunMeta; BATCH],
        in_port: PortIdx,
        hits: &[(PortIdx, u32); BATCH],
        burst: &mut MbufBurst,
        burst_bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let n = burst.len();
        for (m, &(_, id)) in burst.as_slice().iter().zip(hits) {
            bank.bump(id, 1, m.pkt_len() as u64);
        }
        bump(&stats.tables[0].matched, n as u64);
        let port = hits[0].0;
        let one_port = hits[..n].iter().all(|h| h.0 == port) && port != in_port;
        if one_port && !self.tunnels.is_tunnel(port) {
            out.output_burst(port, burst, burst_bytes);
        } else if one_port && !self.tunnels.is_tunnel(in_port) {
            // Route and neighbour looked up once for the burst.
            self.encap_burst(port, burst, &tun_in[0], now, stats, out);
        } else {
            for ((m, &(port, _)), tun) in burst.drain().zip(hits).zip(tun_in) {
                if port == in_port {
                    out.drop(m, in_port, DropReason::DestinationOnIngressPort);
                } else {
                    self.send(port, m, tun, now, stats, out);
                }
            }
        }
    }

    /// Sends a burst whose packets all have one key, that of packet `first`, along its path
    /// `s.paths[first]` (planned as `plan`): counted once, a single output without per-packet
    /// work.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn run_burst_on_path<E: Egress>(
        &self,
        s: &mut FlowScratch,
        first: usize,
        plan: PathPlan,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        burst_bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        self.count_path(s.worker, &s.paths[first], burst.len() as u64, burst_bytes, stats);
        match plan.simple_output {
            // Decapsulated packets may differ in tunnel metadata that the key leaves out (no
            // table matches it): each is encapsulated with its own.
            Some(port) if port != in_port && self.tunnels.is_tunnel(port) && self.tunnels.is_tunnel(in_port) => {
                for (i, m) in burst.drain().enumerate() {
                    self.send(port, m, &s.tun_in[i], now, stats, out);
                }
            }
            // From a port: one set of tunnel metadata (none) for the whole burst.
            Some(port) if port != in_port && self.tunnels.is_tunnel(port) => {
                self.encap_burst(port, burst, &s.tun_in[first], now, stats, out);
            }
            Some(port) if port != in_port => out.output_burst(port, burst, burst_bytes),
            _ => {
                let path = s.paths[first];
                for (i, m) in burst.drain().enumerate() {
                    let tun = s.tun_in[i];
                    self.run_path(&plan, in_port, m, &mut s.layouts[i], &path, tun, now, stats, out);
                }
            }
        }
    }

    /// Where in a path the last output and the last packet change are.
    fn plan(&self, path: &Path) -> PathPlan {
        let flows = &*self.flows;
        let mut plan = PathPlan::default();
        if let [step] = path.steps() {
            plan.simple_output = flows.hot(*step).filter(|h| h.flags & SIMPLE != 0).map(|h| h.port);
            if plan.simple_output.is_some() {
                return plan;
            }
        }
        let mut pos = 0;
        for step in path.steps() {
            match flows.rule(*step) {
                Some(rule) => {
                    for op in rule.ops.iter() {
                        if op.outputs() {
                            plan.last_out = Some(pos);
                        } else if op.modifies_packet() {
                            plan.last_mod = Some(pos);
                        }
                        pos += 1;
                    }
                }
                None => {
                    if flows.miss(step.table()) == MissAction::Normal {
                        plan.last_out = Some(pos);
                        pos += 1;
                    }
                }
            }
        }
        plan
    }

    /// Table and flow counters for `packets` packets that took `path`.
    #[inline]
    fn count_path(&self, worker: usize, path: &Path, packets: u64, bytes: u64, stats: &WorkerStats) {
        for step in path.steps() {
            let tc = &stats.tables[step.table() as usize];
            match self.flows.hot(*step) {
                Some(hot) => {
                    bump(&tc.matched, packets);
                    self.counters.bump(worker, hot.id, packets, bytes);
                }
                None => bump(&tc.missed, packets),
            }
        }
    }

    /// Runs a packet's path: each matched rule's actions in order, then miss actions. An
    /// output shares the buffer (or copies it when a later action changes the packet); the
    /// last output takes the buffer itself.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn run_path<E: Egress>(
        &self,
        plan: &PathPlan,
        in_port: PortIdx,
        m: Mbuf,
        layout: &mut Layout,
        path: &Path,
        mut tun: TunMeta,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let flows = &*self.flows;
        let mut pkt = Some(m);
        let mut sent = false;
        let mut pos = 0;
        for step in path.steps() {
            match flows.rule(*step) {
                Some(rule) => {
                    for op in rule.ops.iter() {
                        let here = pos;
                        pos += 1;
                        if let Op::Counter(c) = op {
                            bump(&stats.named[*c as usize], 1);
                        } else if let Op::SetTunnelId(v) = op {
                            tun.id = *v;
                        } else if let Op::SetTunDst(a) = op {
                            tun.set_dst(*a);
                        } else if op.outputs() {
                            let Some(p) = pkt.as_ref() else { continue };
                            let copy = if plan.last_out == Some(here) {
                                pkt.take()
                            } else if plan.last_mod.is_some_and(|lm| lm > here) {
                                let c = p.deep_copy();
                                if c.is_none() {
                                    stats.ports[in_port as usize].drop(DropReason::MbufExhausted, 1);
                                }
                                c
                            } else {
                                Some(p.share())
                            };
                            if let Some(c) = copy {
                                self.emit(op, in_port, c, &tun, now, stats, out);
                                sent = true;
                            }
                        } else if let Some(p) = pkt.as_mut() {
                            if let Err(reason) = edit::apply(p, layout, op) {
                                out.drop(pkt.take().expect("present"), in_port, reason);
                                return;
                            }
                        }
                    }
                }
                None => match flows.miss(step.table()) {
                    MissAction::Goto(_) => {}
                    MissAction::Normal => {
                        pos += 1;
                        if let Some(p) = pkt.take() {
                            self.emit(&Op::Normal, in_port, p, &tun, now, stats, out);
                            sent = true;
                        }
                    }
                    MissAction::Drop => {
                        if let Some(p) = pkt.take() {
                            out.drop(p, in_port, DropReason::TableMiss);
                        }
                        return;
                    }
                },
            }
        }
        if let Some(p) = pkt.take() {
            if path.too_deep {
                out.drop(p, in_port, DropReason::PipelineTooDeep);
            } else if !sent {
                out.drop(p, in_port, DropReason::FlowDrop);
            }
            // Otherwise copies went out and this handle is simply released.
        }
    }

    /// Sends `m` as an output-type op says.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn emit<E: Egress>(
        &self,
        op: &Op,
        in_port: PortIdx,
        m: Mbuf,
        tun: &TunMeta,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        match *op {
            Op::Output(p) if p == in_port => out.drop(m, in_port, DropReason::DestinationOnIngressPort),
            Op::Output(p) => self.send(p, m, tun, now, stats, out),
            Op::InPort => self.send(in_port, m, tun, now, stats, out),
            Op::Flood => self.flood(in_port, m, tun, now, stats, out),
            Op::Normal => {
                let d = self.decide(in_port, m.data(), now, stats);
                self.apply_l2(d, in_port, m, tun, now, stats, out);
            }
            _ => out.drop(m, in_port, DropReason::FlowDrop),
        }
    }

    #[inline]
    fn flood<E: Egress>(&self, in_port: PortIdx, m: Mbuf, tun: &TunMeta, now: u32, stats: &WorkerStats, out: &mut E) {
        match self.flood_ports(in_port) {
            [] => out.drop(m, in_port, DropReason::NoEgressPort),
            [rest @ .., last] => {
                for &p in rest {
                    self.send(p, m.share(), tun, now, stats, out);
                }
                self.send(*last, m, tun, now, stats, out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emc_gate_turns_off_on_misses_and_back_on_hits() {
        let mut g = EmcGate::default();
        assert!(g.use_now(), "on at start");
        g.record(EmcGate::WINDOW, EmcGate::WINDOW / 10);
        assert!(g.off, "10% hits: off");
        let sampled = (0..1600).filter(|_| g.use_now()).count();
        assert!((50..200).contains(&sampled), "about one burst in 16 still looks: {sampled}");
        g.record(EmcGate::WINDOW, EmcGate::WINDOW * 2 / 5);
        assert!(g.off, "40% hits is not enough to come back");
        g.record(EmcGate::WINDOW, EmcGate::WINDOW * 3 / 5);
        assert!(!g.off, "60% hits: on again");
        g.record(EmcGate::WINDOW, EmcGate::WINDOW * 3 / 10);
        assert!(!g.off, "30% hits keeps it on (hysteresis)");
    }

    #[test]
    fn direct_gate_backs_off_on_fallbacks_and_resets_on_success() {
        let mut g = DirectGate::default();
        let tried = |g: &mut DirectGate, bursts: usize, done: bool| {
            (0..bursts)
                .filter(|_| {
                    let used = g.use_now();
                    if used {
                        g.record(done);
                    }
                    used
                })
                .count()
        };
        assert_eq!(tried(&mut g, 10, true), 10, "every burst while it works");
        // Fallbacks: tried at bursts 0, 2, 5, 10, 19, 36, 69, then every 65th.
        assert_eq!(tried(&mut g, 69, false), 6);
        assert_eq!(tried(&mut g, 650, false), 10);
        (0..65).position(|_| g.use_now()).expect("tried again within 65 bursts");
        g.record(true);
        assert_eq!(tried(&mut g, 10, true), 10, "one success: every burst again");
    }
}
