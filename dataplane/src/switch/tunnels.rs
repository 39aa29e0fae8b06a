//! Tunnel ports and underlay neighbors of a running switch.
//!
//! Thread-safety: tunnel changes take the flow mutex first (flows check and compile port
//! numbers against the published port map, and a tunnel in use by flows must not vanish
//! under them), then the tunnel mutex; each change is one published snapshot.

use std::net::Ipv4Addr;

use super::Switch;
use crate::mac_table::{FlushFilter, PortIdx};
use crate::pipeline::{Pipeline, PortEntry, PortMap};
use crate::stats::{DropReason, PortTotals, MAX_PORTS};
use crate::tunnel::neighbor::Neighbor;
use crate::tunnel::{check_tunnel, TunnelConfig, TunnelMap, TunnelProblem, UplinkInfo, MAX_TUNNELS};
use crate::wire::MacAddr;

pub(super) struct TunnelState {
    /// Physical ports: (index, name, number, uplink).
    ports: Vec<(PortIdx, String, u32, bool)>,
    uplinks: Vec<UplinkInfo>,
    /// Tunnel port indices start here.
    first: PortIdx,
    /// By slot (port index - first): the tunnel and its counters when it took the slot.
    slots: Vec<Option<(TunnelConfig, PortTotals)>>,
}

impl TunnelState {
    /// Number and name of port `idx`, physical or tunnel.
    pub(super) fn port_label(&self, idx: PortIdx) -> Option<(u32, String)> {
        if let Some(p) = self.ports.iter().find(|p| p.0 == idx) {
            return Some((p.2, p.1.clone()));
        }
        let (config, _) = self.slots.get(idx.checked_sub(self.first)? as usize)?.as_ref()?;
        Some((config.number, config.name.clone()))
    }

    pub(super) fn new(ports: Vec<(PortIdx, String, u32, bool)>, uplinks: Vec<UplinkInfo>) -> TunnelState {
        let first = ports.len() as PortIdx;
        TunnelState { ports, uplinks, first, slots: Vec::new() }
    }

    fn configs(&self) -> Vec<TunnelConfig> {
        self.slots.iter().flatten().map(|s| s.0.clone()).collect()
    }

    fn placed(&self) -> Vec<(PortIdx, TunnelConfig)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((self.first + i as PortIdx, s.as_ref()?.0.clone())))
            .collect()
    }

    /// The port map and tunnel map of the current state.
    pub(super) fn maps(&self) -> (PortMap, TunnelMap) {
        let mut entries: Vec<PortEntry> = self
            .ports
            .iter()
            .map(|(idx, _, number, uplink)| PortEntry { idx: *idx, number: *number, floods: !uplink, tunnel: false })
            .collect();
        for (idx, t) in self.placed() {
            // Flooding needs to know where and with which VNI: fixed remote and VNI only.
            let floods = t.remote_ip.is_some() && t.vni.is_some();
            entries.push(PortEntry { idx, number: t.number, floods, tunnel: true });
        }
        (PortMap::new(&entries), TunnelMap::new(self.first, &self.uplinks, &self.placed()))
    }

    fn check(&self, t: &TunnelConfig) -> Vec<TunnelProblem> {
        let port_taken = |name: &str, number: u32| {
            (self.ports.iter().any(|p| p.1 == name), self.ports.iter().any(|p| p.2 == number))
        };
        check_tunnel(t, &self.uplinks, &self.configs(), &port_taken)
    }

    fn port_has(&self, idx: PortIdx) -> bool {
        self.ports.iter().any(|p| p.0 == idx)
    }

    pub(super) fn name_taken(&self, name: &str) -> bool {
        self.ports.iter().any(|p| p.1 == name) || self.slots.iter().flatten().any(|s| s.0.name == name)
    }

    pub(super) fn number_taken(&self, number: u32) -> bool {
        self.ports.iter().any(|p| p.2 == number) || self.slots.iter().flatten().any(|s| s.0.number == number)
    }

    /// The lowest port index neither a port nor a tunnel holds.
    pub(super) fn free_port_index(&self) -> Option<PortIdx> {
        (0..MAX_PORTS).map(|i| i as PortIdx).find(|&i| {
            let tunnel =
                i.checked_sub(self.first).and_then(|s| self.slots.get(s as usize)).is_some_and(Option::is_some);
            !tunnel && !self.port_has(i)
        })
    }

    /// A port added at run time (an access port: not an uplink).
    pub(super) fn add_port(&mut self, idx: PortIdx, name: String, number: u32) {
        self.ports.push((idx, name, number, false));
    }

    pub(super) fn remove_port(&mut self, idx: PortIdx) {
        self.ports.retain(|p| p.0 != idx);
    }

    /// Places a checked tunnel in the first free slot (one whose index no port took).
    fn place(&mut self, t: TunnelConfig, counters: impl Fn(PortIdx) -> PortTotals) -> Option<PortIdx> {
        let free =
            (0..self.slots.len()).find(|&s| self.slots[s].is_none() && !self.port_has(self.first + s as PortIdx));
        let slot = match free {
            Some(s) => s,
            None => loop {
                if self.slots.len() >= MAX_TUNNELS || self.first as usize + self.slots.len() >= MAX_PORTS {
                    return None;
                }
                self.slots.push(None);
                let s = self.slots.len() - 1;
                if !self.port_has(self.first + s as PortIdx) {
                    break s;
                }
            },
        };
        let idx = self.first + slot as PortIdx;
        self.slots[slot] = Some((t, counters(idx)));
        Some(idx)
    }
}

/// Why a tunnel change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelChangeError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{field}: {message}")]
    Exists { field: &'static str, message: String },
    #[error("no tunnel named '{0}'")]
    NotFound(String),
    #[error("tunnel '{name}' is used by {} flow(s), e.g. {}; delete them first", flows.len(), flows.first().map(String::as_str).unwrap_or(""))]
    InUse { name: String, flows: Vec<String> },
    #[error("no room for another tunnel (at most {MAX_TUNNELS}, and {MAX_PORTS} ports and tunnels together)")]
    Full,
}

impl From<TunnelProblem> for TunnelChangeError {
    fn from(p: TunnelProblem) -> Self {
        if p.message.contains("is taken") || p.message.contains("already receives") {
            TunnelChangeError::Exists { field: p.field, message: p.message }
        } else {
            TunnelChangeError::Invalid { field: p.field, message: p.message }
        }
    }
}

/// A tunnel with its counters, for the API.
#[derive(Debug, Clone)]
pub struct TunnelView {
    pub idx: PortIdx,
    pub config: TunnelConfig,
    pub local_ip: Ipv4Addr,
    pub dst_port: u16,
    /// rx: decapsulated packets (inner bytes); tx: encapsulated packets (inner bytes);
    /// drops: tunnel drop reasons of outputs to it, and of the pipeline for its packets.
    pub counters: PortTotals,
}

impl Switch {
    /// Loads the `[[tunnel]]` and `[[neighbor]]` sections of the config (at start).
    pub(super) fn load_config_tunnels(&self) -> Result<(), String> {
        for n in &self.plan.config.neighbors {
            let mac: MacAddr = n.mac.parse().map_err(|e| format!("neighbor {}: {e}", n.ip))?;
            if !self.add_neighbor(n.ip, mac) {
                return Err(format!("neighbor {}: no room in the neighbor table", n.ip));
            }
        }
        for t in &self.plan.config.tunnels {
            self.add_tunnel(t.clone()).map_err(|e| format!("tunnel '{}': {e}", t.name))?;
        }
        Ok(())
    }

    fn port_totals(&self, idx: PortIdx) -> PortTotals {
        let mut t = PortTotals::default();
        for w in &self.workers {
            t.add(&w.stats.ports[idx as usize]);
        }
        t
    }

    /// Drops by reason over every port and tunnel.
    pub fn drop_totals(&self) -> [u64; DropReason::COUNT] {
        let mut counts = [0u64; DropReason::COUNT];
        let ports = self.ports().into_iter().map(|p| p.counters);
        for totals in ports.chain(self.tunnels().into_iter().map(|t| t.counters)) {
            for (c, d) in counts.iter_mut().zip(totals.drops) {
                *c += d;
            }
        }
        counts
    }

    /// Every tunnel with its counters, by port number.
    pub fn tunnels(&self) -> Vec<TunnelView> {
        let ts = self.tunnels.lock().unwrap();
        let map = TunnelMap::new(ts.first, &ts.uplinks, &ts.placed());
        let mut v: Vec<TunnelView> = ts
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (config, baseline) = s.as_ref()?;
                let idx = ts.first + i as PortIdx;
                let rt = map.tunnel(idx)?;
                let mut counters = self.port_totals(idx);
                counters.subtract(baseline);
                Some(TunnelView { idx, config: config.clone(), local_ip: rt.local, dst_port: rt.dst_port, counters })
            })
            .collect();
        v.sort_by_key(|t| t.config.number);
        v
    }

    /// The uplinks (ports with an ip).
    pub fn uplinks(&self) -> Vec<UplinkInfo> {
        self.tunnels.lock().unwrap().uplinks.clone()
    }

    /// Publishes the port and tunnel maps of `ts` (after a port or tunnel change) as the next
    /// generation; returns it.
    pub(super) fn publish_port_maps(&self, ts: &TunnelState) -> u64 {
        let (ports, tunnels) = ts.maps();
        self.publish(|p, g| Pipeline { generation: g, ports: ports.into(), tunnels: tunnels.into(), ..p.clone() })
    }

    /// Adds a tunnel port: checked, then live in one snapshot.
    pub fn add_tunnel(&self, t: TunnelConfig) -> Result<TunnelView, TunnelChangeError> {
        let _flows = self.flows.lock().unwrap();
        let mut ts = self.tunnels.lock().unwrap();
        if let Some(p) = ts.check(&t).into_iter().next() {
            return Err(p.into());
        }
        let name = t.name.clone();
        let idx = ts.place(t, |idx| self.port_totals(idx)).ok_or(TunnelChangeError::Full)?;
        self.publish_port_maps(&ts);
        drop(ts);
        tracing::info!(tunnel = %name, port_index = idx, "tunnel added");
        Ok(self.tunnels().into_iter().find(|v| v.idx == idx).expect("just added"))
    }

    /// Removes a tunnel port no flow refers to; MAC entries learned on it go with it.
    pub fn remove_tunnel(&self, name: &str) -> Result<(), TunnelChangeError> {
        let fs = self.flows.lock().unwrap();
        let mut ts = self.tunnels.lock().unwrap();
        let Some(slot) = ts.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.0.name == name)) else {
            return Err(TunnelChangeError::NotFound(name.into()));
        };
        let number = ts.slots[slot].as_ref().expect("found").0.number;
        let users = fs.flows_using_port(number);
        if !users.is_empty() {
            return Err(TunnelChangeError::InUse { name: name.into(), flows: users });
        }
        ts.slots[slot] = None;
        let idx = ts.first + slot as PortIdx;
        self.publish_port_maps(&ts);
        drop(ts);
        drop(fs);
        self.mac_table().flush(&FlushFilter { port: Some(idx), include_static: true, ..Default::default() });
        tracing::info!(tunnel = %name, "tunnel removed");
        Ok(())
    }

    /// The neighbor table: resolved, being resolved, static.
    pub fn neighbors(&self) -> Vec<Neighbor> {
        self.shared.pipeline.load().neighbors.entries()
    }

    /// Adds or replaces a static neighbor; false when the table is full.
    pub fn add_neighbor(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        self.shared.pipeline.load().neighbors.insert_static(ip, mac.0)
    }

    /// Removes a neighbor entry (static or learned); false if there was none.
    pub fn remove_neighbor(&self, ip: Ipv4Addr) -> bool {
        self.shared.pipeline.load().neighbors.remove(ip)
    }
}
