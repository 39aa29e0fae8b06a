//! Overlay tunnels: VXLAN and Geneve ports over an IPv4 underlay.
//!
//! A port with an `ip` is an *uplink*: it carries the underlay and nothing else. Frames that
//! arrive on it for one of its VTEP addresses at a tunnel's UDP port are checked, stripped
//! of their outer headers and enter the pipeline on the tunnel port, with `tun_id`,
//! `tun_src` and `tun_dst` in their flow key. ARP for the VTEP addresses is answered; ARP
//! from neighbors fills the [`neighbor::NeighborTable`]. Anything else arriving on an uplink
//! is dropped and counted (`not_for_vtep`): underlay traffic never leaks into the overlay,
//! and uplinks are never flooded to, so overlay frames never leak onto the underlay bare.
//!
//! A *tunnel port* is a switch port (it has a number, flows match `in_port` on it and output
//! to it, the learning switch learns MACs behind it). Output to it encapsulates: outer
//! headers from the tunnel's [`wire::Template`] go into the mbuf's headroom, the remote VTEP
//! is the tunnel's `remote_ip` or the packet's `tun_dst` (set per flow), the VNI the tunnel's
//! `vni` or the packet's `tun_id`, and the next hop's MAC comes from the neighbor table.
//!
//! - [`wire`]: header formats, parsing and building (pure, unit-tested).
//! - [`neighbor`]: the lock-free IPv4 → MAC table.
//! - [`datapath`]: the per-packet work (decap stage, encap on output).

pub mod datapath;
pub mod neighbor;
pub mod wire;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use wire::Template;
pub use wire::TunnelKind;

use crate::mac_table::PortIdx;

/// Tunnels a switch may have.
pub const MAX_TUNNELS: usize = 128;

/// A tunnel as configured (TOML `[[tunnel]]`) or added through the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Name used by the API and the CLI (shares the namespace of port names).
    pub name: String,
    /// Port number flows use for it (shares the namespace of port numbers).
    pub number: u32,
    pub kind: TunnelKind,
    /// Name of the uplink port (a port with an `ip`) encapsulated packets leave through.
    pub uplink: String,
    /// Local VTEP address; the uplink's address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<Ipv4Addr>,
    /// Remote VTEP; when absent, each packet's `tun_dst` (set by a flow) says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<Ipv4Addr>,
    /// VNI (24 bits); when absent, each packet's `tun_id` (set by a flow) says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// UDP destination port; 4789 (VXLAN) or 6081 (Geneve) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
}

impl TunnelConfig {
    pub fn dst_port(&self) -> u16 {
        self.dst_port.unwrap_or_else(|| self.kind.default_port())
    }
}

/// A static underlay neighbor (TOML `[[neighbor]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// An uplink's underlay address: `192.168.50.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("'{s}' is not ADDRESS/PREFIX (e.g. 192.168.50.1/24)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("prefix '{p}' must be 0 to 32"))?;
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(format!("{addr} cannot be an interface address"));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An uplink as the tunnel checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkInfo {
    pub name: String,
    pub port: PortIdx,
    pub net: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// What is wrong with a tunnel: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelProblem {
    pub field: &'static str,
    pub message: String,
}

/// Checks a new tunnel against the uplinks, the tunnels already there and the taken port
/// names and numbers.
pub fn check_tunnel(
    t: &TunnelConfig,
    uplinks: &[UplinkInfo],
    others: &[TunnelConfig],
    port_taken: &dyn Fn(&str, u32) -> (bool, bool),
) -> Vec<TunnelProblem> {
    let mut p = Vec::new();
    let mut bad = |field: &'static str, message: String| p.push(TunnelProblem { field, message });
    let n = &t.name;
    if n.is_empty() || n.len() > 32 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        bad("name", format!("tunnel name '{n}' must be 1 to 32 letters, digits, '_', '-' or '.'"));
    }
    let (name_taken, number_taken) = port_taken(n, t.number);
    if name_taken || others.iter().any(|o| &o.name == n) {
        bad("name", format!("tunnel '{n}': the name is taken by another port or tunnel"));
    }
    if t.number == 0 || t.number > crate::config::MAX_PORT_NUMBER {
        bad("number", format!("tunnel '{n}': number {} must be 1 to {}", t.number, crate::config::MAX_PORT_NUMBER));
    } else if number_taken || others.iter().any(|o| o.number == t.number) {
        bad("number", format!("tunnel '{n}': number {} is taken by another port or tunnel", t.number));
    }
    if let Some(v) = t.vni {
        if v > 0x00ff_ffff {
            bad("vni", format!("tunnel '{n}': vni {v} must be 0 to 16777215 (24 bits)"));
        }
    }
    if t.dst_port == Some(0) {
        bad("dst_port", format!("tunnel '{n}': dst_port must be 1 to 65535"));
    }
    if let Some(r) = t.remote_ip {
        if r.is_unspecified() || r.is_multicast() || r.is_broadcast() || r.is_loopback() {
            bad("remote_ip", format!("tunnel '{n}': remote_ip {r} must be a unicast address"));
        }
    }
    if let Some(l) = t.local_ip {
        if l.is_unspecified() || l.is_multicast() || l.is_broadcast() || l.is_loopback() {
            bad("local_ip", format!("tunnel '{n}': local_ip {l} must be a unicast address"));
        }
    }
    let Some(up) = uplinks.iter().find(|u| u.name == t.uplink) else {
        let names: Vec<_> = uplinks.iter().map(|u| u.name.as_str()).collect();
        bad(
            "uplink",
            format!(
                "tunnel '{n}': uplink '{}' is not a port with an ip (uplinks: {})",
                t.uplink,
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
        );
        return p;
    };
    if let Some(r) = t.remote_ip {
        if !up.net.contains(r) && up.gateway.is_none() {
            bad(
                "remote_ip",
                format!("tunnel '{n}': remote_ip {r} is not on {}'s subnet {} and it has no gateway", up.name, up.net),
            );
        }
    }
    if (up.mtu as usize) < wire::ENCAP_LEN + 68 {
        bad("uplink", format!("tunnel '{n}': uplink mtu {} leaves no room for encapsulation", up.mtu));
    }
    let local = t.local_ip.unwrap_or(up.net.addr);
    for o in others.iter().filter(|o| o.uplink == t.uplink) {
        let o_local = o.local_ip.unwrap_or(up.net.addr);
        if o.dst_port() == t.dst_port() && o_local == local {
            if o.kind != t.kind {
                bad(
                    "dst_port",
                    format!(
                        "tunnel '{n}': UDP port {} on {local} is {} tunnel '{}'",
                        t.dst_port(),
                        o.kind.name(),
                        o.name
                    ),
                );
            } else if o.remote_ip == t.remote_ip && o.vni == t.vni {
                bad(
                    "vni",
                    format!(
                        "tunnel '{n}': tunnel '{}' already receives the same traffic (same local, remote, VNI and port)",
                        o.name
                    ),
                );
            }
        }
    }
    p
}

/// Tunnel metadata of a packet: what decap found, and what flows set for encap. Two words,
/// laid out as key words 9 and 10 (`tun_id`; `tun_src << 32 | tun_dst`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunMeta {
    pub id: u64,
    pub addrs: u64,
}

impl TunMeta {
    pub const NONE: TunMeta = TunMeta { id: 0, addrs: 0 };

    pub fn new(vni: u32, src: Ipv4Addr, dst: Ipv4Addr) -> TunMeta {
        TunMeta { id: vni as u64, addrs: (u32::from(src) as u64) << 32 | u32::from(dst) as u64 }
    }

    /// The metadata of a decapsulated packet.
    #[inline(always)]
    pub fn of(h: &wire::TunnelHeader) -> TunMeta {
        TunMeta { id: h.vni as u64, addrs: h.addrs }
    }

    #[inline(always)]
    pub fn dst(&self) -> u32 {
        self.addrs as u32
    }

    #[inline(always)]
    pub fn set_dst(&mut self, ip: u32) {
        self.addrs = (self.addrs & !0xffff_ffff) | ip as u64;
    }
}

/// A tunnel as the datapath uses it.
#[derive(Debug, Clone)]
pub struct TunnelRt {
    pub idx: PortIdx,
    pub config: TunnelConfig,
    pub template: Template,
    pub local: Ipv4Addr,
    pub dst_port: u16,
    /// Index into [`TunnelMap::uplinks`].
    pub uplink: usize,
}

impl TunnelRt {
    /// Whether this tunnel receives a packet with these outer fields.
    #[inline]
    fn accepts(&self, h: &wire::TunnelHeader) -> bool {
        self.dst_port == h.dst_port
            && u32::from(self.local) == h.addrs as u32
            && self.config.vni.is_none_or(|v| v == h.vni)
            && self.config.remote_ip.is_none_or(|r| u32::from(r) == (h.addrs >> 32) as u32)
    }

    /// More specific tunnels are tried first: fixed remote and VNI before "per flow".
    fn specificity(&self) -> u8 {
        self.config.remote_ip.is_some() as u8 * 2 + self.config.vni.is_some() as u8
    }
}

/// An uplink as the datapath uses it.
#[derive(Debug, Clone)]
pub struct UplinkRt {
    pub info: UplinkInfo,
    /// Addresses this uplink answers ARP for and decapsulates to.
    pub locals: Vec<Ipv4Addr>,
    /// UDP ports tunnels listen on, and their kind.
    pub udp_ports: Vec<(u16, TunnelKind)>,
    /// Tunnels on this uplink (indices into [`TunnelMap::tunnels`]), most specific first.
    pub decap: Vec<usize>,
}

impl UplinkRt {
    #[inline]
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.locals.contains(&ip)
    }

    #[inline]
    pub fn kind_of_port(&self, port: u16) -> Option<TunnelKind> {
        self.udp_ports.iter().find(|p| p.0 == port).map(|p| p.1)
    }

    /// The next hop towards `remote`: itself on the uplink's subnet, else the gateway.
    #[inline]
    pub fn next_hop(&self, remote: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.info.net.contains(remote) {
            Some(remote)
        } else {
            self.info.gateway
        }
    }
}

/// Every uplink and tunnel, indexed for the datapath. Tunnel ports take port indices from
/// `first` up (physical ports come before them).
#[derive(Debug, Clone, Default)]
pub struct TunnelMap {
    pub first: PortIdx,
    /// Tunnel of port index `first + i`.
    pub tunnels: Vec<Option<TunnelRt>>,
    pub uplinks: Vec<UplinkRt>,
    /// For each port index, its uplink (index into `uplinks`) or `NO_UPLINK`.
    uplink_of: Vec<u8>,
}

const NO_UPLINK: u8 = u8::MAX;

impl TunnelMap {
    /// The map for physical ports `0..first`, `uplinks` among them, and `tunnels` (their port
    /// index and configuration; checked with [`check_tunnel`]).
    pub fn new(first: PortIdx, uplinks: &[UplinkInfo], tunnels: &[(PortIdx, TunnelConfig)]) -> TunnelMap {
        let mut uplink_rts: Vec<UplinkRt> = uplinks
            .iter()
            .map(|u| UplinkRt { info: u.clone(), locals: vec![u.net.addr], udp_ports: Vec::new(), decap: Vec::new() })
            .collect();
        let slots = tunnels.iter().map(|t| (t.0 - first) as usize + 1).max().unwrap_or(0);
        let mut rts: Vec<Option<TunnelRt>> = vec![None; slots];
        for (idx, c) in tunnels {
            let Some(u) = uplink_rts.iter().position(|u| u.info.name == c.uplink) else { continue };
            let up = &mut uplink_rts[u];
            let local = c.local_ip.unwrap_or(up.info.net.addr);
            if !up.locals.contains(&local) {
                up.locals.push(local);
            }
            if up.kind_of_port(c.dst_port()).is_none() {
                up.udp_ports.push((c.dst_port(), c.kind));
            }
            let template = Template::new(c.kind, up.info.mac, local, c.dst_port());
            rts[(idx - first) as usize] =
                Some(TunnelRt { idx: *idx, config: c.clone(), template, local, dst_port: c.dst_port(), uplink: u });
        }
        for (u, up) in uplink_rts.iter_mut().enumerate() {
            let mut decap: Vec<usize> =
                (0..rts.len()).filter(|&i| rts[i].as_ref().is_some_and(|t| t.uplink == u)).collect();
            decap.sort_by_key(|&i| std::cmp::Reverse(rts[i].as_ref().map_or(0, |t| t.specificity())));
            up.decap = decap;
        }
        let mut uplink_of = vec![NO_UPLINK; first as usize];
        for (i, u) in uplinks.iter().enumerate() {
            uplink_of[u.port as usize] = i as u8;
        }
        TunnelMap { first, tunnels: rts, uplinks: uplink_rts, uplink_of }
    }

    /// The uplink a port index is, if it is one.
    #[inline(always)]
    pub fn uplink(&self, port: PortIdx) -> Option<&UplinkRt> {
        match self.uplink_of.get(port as usize) {
            Some(&u) if u != NO_UPLINK => Some(&self.uplinks[u as usize]),
            _ => None,
        }
    }

    /// Whether port index `port` is a tunnel (ports added at run time may take indices
    /// above `first` that no tunnel holds).
    #[inline(always)]
    pub fn is_tunnel(&self, port: PortIdx) -> bool {
        self.tunnel(port).is_some()
    }

    #[inline(always)]
    pub fn tunnel(&self, port: PortIdx) -> Option<&TunnelRt> {
        self.tunnels.get(port.wrapping_sub(self.first) as usize)?.as_ref()
    }

    /// The tunnel that receives a packet with these outer fields on `uplink`.
    #[inline]
    pub fn decap_tunnel(&self, uplink: &UplinkRt, h: &wire::TunnelHeader) -> Option<&TunnelRt> {
        uplink.decap.iter().filter_map(|&i| self.tunnels[i].as_ref()).find(|t| t.accepts(h))
    }

    pub fn iter(&self) -> impl Iterator<Item = &TunnelRt> {
        self.tunnels.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink() -> UplinkInfo {
        UplinkInfo {
            name: "up".into(),
            port: 1,
            net: "192.168.50.1/24".parse().unwrap(),
            gateway: None,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
        }
    }

    fn tunnel(name: &str, number: u32) -> TunnelConfig {
        TunnelConfig {
            name: name.into(),
            number,
            kind: TunnelKind::Vxlan,
            uplink: "up".into(),
            local_ip: None,
            remote_ip: Some(Ipv4Addr::new(192, 168, 50, 2)),
            vni: Some(100),
            dst_port: None,
        }
    }

    fn free(_: &str, _: u32) -> (bool, bool) {
        (false, false)
    }

    #[test]
    fn net_parses_and_contains() {
        let n: Ipv4Net = "10.1.2.3/16".parse().unwrap();
        assert!(n.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!("10.1.2.3".parse::<Ipv4Net>().unwrap_err().contains("ADDRESS/PREFIX"));
        assert!("10.1.2.3/33".parse::<Ipv4Net>().unwrap_err().contains("0 to 32"));
        assert!("0.0.0.0/0".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn checks_name_each_field() {
        let ups = [uplink()];
        assert!(check_tunnel(&tunnel("t1", 10), &ups, &[], &free).is_empty());
        let fields = |t: &TunnelConfig, others: &[TunnelConfig]| -> Vec<&'static str> {
            check_tunnel(t, &ups, others, &|n, _| (n == "p1", false)).into_iter().map(|p| p.field).collect()
        };
        assert_eq!(fields(&TunnelConfig { vni: Some(1 << 24), ..tunnel("t", 10) }, &[]), ["vni"]);
        assert_eq!(fields(&TunnelConfig { uplink: "nope".into(), ..tunnel("t", 10) }, &[]), ["uplink"]);
        assert_eq!(fields(&tunnel("p1", 10), &[]), ["name"]);
        assert_eq!(fields(&tunnel("t2", 10), &[tunnel("t1", 10)]), ["number", "vni"]);
        let off_subnet = TunnelConfig { remote_ip: Some(Ipv4Addr::new(10, 0, 0, 1)), ..tunnel("t", 10) };
        assert_eq!(fields(&off_subnet, &[]), ["remote_ip"]);
        let geneve_same_port = TunnelConfig { kind: TunnelKind::Geneve, dst_port: Some(4789), ..tunnel("g", 11) };
        assert_eq!(fields(&geneve_same_port, &[tunnel("t1", 10)]), ["dst_port"]);
    }

    #[test]
    fn decap_prefers_the_most_specific_tunnel() {
        let ups = [uplink()];
        let any = TunnelConfig { remote_ip: None, vni: None, ..tunnel("any", 11) };
        let fixed = tunnel("fixed", 10);
        let map = TunnelMap::new(2, &ups, &[(2, any), (3, fixed)]);
        let up = map.uplink(1).expect("uplink");
        assert!(map.uplink(0).is_none());
        let local = Ipv4Addr::new(192, 168, 50, 1);
        let peer = Ipv4Addr::new(192, 168, 50, 2);
        let other = Ipv4Addr::new(192, 168, 50, 3);
        let header = |dst_port: u16, vni: u32, src: Ipv4Addr| wire::TunnelHeader {
            kind: TunnelKind::Vxlan,
            vni,
            addrs: (u32::from(src) as u64) << 32 | u32::from(local) as u64,
            dst_port,
            inner: 50,
        };
        let found = |h: wire::TunnelHeader| map.decap_tunnel(up, &h).map(|t| t.idx);
        assert_eq!(found(header(4789, 100, peer)), Some(3));
        assert_eq!(found(header(4789, 101, peer)), Some(2));
        assert_eq!(found(header(4789, 100, other)), Some(2));
        assert_eq!(found(header(6081, 100, peer)), None);
        assert!(map.is_tunnel(2) && !map.is_tunnel(1));
        assert_eq!(map.tunnel(3).map(|t| t.config.name.as_str()), Some("fixed"));
        assert!(map.tunnel(9).is_none());
    }
}
