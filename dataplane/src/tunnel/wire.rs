//! Overlay encapsulation on the wire: VXLAN (RFC 7348) and Geneve (RFC 8926) over IPv4/UDP,
//! and the ARP messages (RFC 826) the underlay needs. Pure byte work, tested without DPDK.
//!
//! Outer headers of an encapsulated frame:
//!
//! | bytes | header |
//! |---|---|
//! | 14 | Ethernet: next hop MAC, uplink MAC, 0x0800 |
//! | 20 | IPv4: DF, TTL 64, UDP, local VTEP -> remote VTEP |
//! | 8 | UDP: source port from the inner flow's hash (ECMP/RSS entropy), 4789 or 6081, checksum 0 |
//! | 8 | VXLAN: flags 0x08 (I), VNI; or Geneve: version 0, no options, protocol 0x6558, VNI |
//!
//! So an encapsulated frame is 50 bytes longer than the inner frame, and the inner IP MTU is
//! the uplink MTU minus 50 (14 inner Ethernet + 36 outer IPv4/UDP/VXLAN).

use std::net::Ipv4Addr;

/// Outer header bytes (Ethernet + IPv4 + UDP + 8-byte VXLAN/Geneve header).
pub const ENCAP_LEN: usize = 50;
/// What encapsulation adds to the inner frame's IP packet: inner Ethernet is carried too.
pub const MTU_OVERHEAD: u16 = ENCAP_LEN as u16;

pub const VXLAN_PORT: u16 = 4789;
pub const GENEVE_PORT: u16 = 6081;
/// Geneve protocol type of an Ethernet payload (Transparent Ethernet Bridging).
const GENEVE_PROTO_ETHERNET: u16 = 0x6558;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    Vxlan,
    Geneve,
}

impl TunnelKind {
    pub fn default_port(self) -> u16 {
        match self {
            TunnelKind::Vxlan => VXLAN_PORT,
            TunnelKind::Geneve => GENEVE_PORT,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
        }
    }
}

impl std::str::FromStr for TunnelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(TunnelKind::Vxlan),
            "geneve" => Ok(TunnelKind::Geneve),
            _ => Err(format!("'{s}' is not a tunnel kind (vxlan or geneve)")),
        }
    }
}

/// The outer headers of one tunnel, prepared once; per packet only the next hop, lengths,
/// checksum, UDP source port and VNI are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub bytes: [u8; ENCAP_LEN],
    /// One's-complement sum of the outer IPv4 header's fixed words (all but total length
    /// and destination), so each packet's checksum is four additions.
    ip_partial: u32,
}

impl Template {
    pub fn new(kind: TunnelKind, src_mac: [u8; 6], local: Ipv4Addr, dst_port: u16) -> Template {
        let mut b = [0u8; ENCAP_LEN];
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[6] = 0x40; // DF: encapsulated packets are never fragmented; too large ones are dropped
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&local.octets());
        b[36..38].copy_from_slice(&dst_port.to_be_bytes());
        match kind {
            TunnelKind::Vxlan => b[42] = 0x08,
            TunnelKind::Geneve => b[44..46].copy_from_slice(&GENEVE_PROTO_ETHERNET.to_be_bytes()),
        }
        let ip_partial = b[14..34].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
        Template { bytes: b, ip_partial }
    }

    /// Writes the outer headers into `out` (ENCAP_LEN bytes, in front of an inner frame of
    /// `inner_len` bytes).
    #[inline]
    pub fn write(
        &self,
        out: &mut [u8],
        next_hop: [u8; 6],
        remote: Ipv4Addr,
        vni: u32,
        src_port: u16,
        inner_len: usize,
    ) {
        self.complete(next_hop, remote, vni).write_completed(out, src_port, inner_len);
    }

    /// This template with the fields one destination shares filled in (next hop, remote
    /// address, VNI): a burst to one destination fills them once, then
    /// [`Template::write_completed`] writes each packet.
    #[inline]
    pub fn complete(&self, next_hop: [u8; 6], remote: Ipv4Addr, vni: u32) -> Template {
        let mut t = *self;
        t.bytes[0..6].copy_from_slice(&next_hop);
        let dst = u32::from(remote);
        t.bytes[30..34].copy_from_slice(&dst.to_be_bytes());
        t.ip_partial += (dst >> 16) + (dst & 0xffff);
        let v = (vni & 0x00ff_ffff) << 8;
        t.bytes[46..50].copy_from_slice(&v.to_be_bytes());
        t
    }

    /// Writes the outer headers of a [`Template::complete`]d template into `out`: the
    /// per-packet fields are the lengths, the IPv4 checksum and the UDP source port.
    #[inline(always)]
    pub fn write_completed(&self, out: &mut [u8], src_port: u16, inner_len: usize) {
        let out = &mut out[..ENCAP_LEN];
        out.copy_from_slice(&self.bytes);
        let total = (inner_len + ENCAP_LEN - 14) as u16;
        out[16..18].copy_from_slice(&total.to_be_bytes());
        let mut sum = self.ip_partial + total as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        out[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        out[34..36].copy_from_slice(&src_port.to_be_bytes());
        out[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    }
}

/// A UDP source port in the dynamic range from a hash of the inner flow, so that ECMP and
/// RSS on the underlay spread different inner flows: for IPv4, the addresses, the protocol
/// and, for TCP, UDP and SCTP packets that are not fragments, the ports (so every fragment
/// of a packet, and every ping of a flow, takes one path); otherwise the MACs and EtherType.
/// Two words, one 128-bit multiply folded (as in wyhash): this runs per encapsulated packet.
#[inline]
pub fn entropy_port(inner: &[u8]) -> u16 {
    let word = |at: usize| u64::from_ne_bytes(inner[at..at + 8].try_into().expect("8 bytes"));
    let (a, b) = if inner.len() >= 38 && inner[12..14] == [0x08, 0x00] {
        let proto = inner[23];
        let fragment = u16::from_be_bytes([inner[20], inner[21]]) & 0x3fff != 0;
        let l4 = 14 + (inner[14] & 0x0f) as usize * 4;
        let ports = match (proto, fragment, inner.get(l4..l4 + 4)) {
            (6 | 17 | 132, false, Some(p)) => u32::from_ne_bytes(p.try_into().expect("4 bytes")),
            _ => 0,
        };
        (word(26), (ports as u64) << 8 | proto as u64)
    } else if inner.len() >= 14 {
        (word(0), word(6))
    } else {
        (0, 0)
    };
    let p = (a ^ 0xA076_1D64_78BD_642F) as u128 * (b ^ 0xE703_7ED1_A0B4_28DB) as u128;
    let h = (p as u64) ^ ((p >> 64) as u64);
    49152 + ((h >> 32) as u16 & 0x3fff)
}

/// The outer fields of a well-formed tunnel packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelHeader {
    pub kind: TunnelKind,
    pub vni: u32,
    /// Outer source and destination addresses, `src << 32 | dst`: one word, read and compared
    /// as one (two 32-bit stores read back as one 64-bit load stall store forwarding).
    pub addrs: u64,
    pub dst_port: u16,
    /// Offset of the inner frame.
    pub inner: u16,
}

impl TunnelHeader {
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from((self.addrs >> 32) as u32)
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addrs as u32)
    }
}

/// What a received underlay frame is, as far as tunnels care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// A well-formed tunnel packet.
    Tunnel(TunnelHeader),
    /// An ARP packet (Ethernet/IPv4).
    Arp { op: u16, sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr },
    /// A UDP packet to one of our tunnel ports that is not a valid tunnel packet.
    Bad(TunnelError),
    /// Anything else.
    Other,
}

/// Why a packet addressed to a tunnel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelError {
    /// Outer IPv4/UDP or tunnel header cut short, or lengths that do not add up.
    Truncated,
    /// VXLAN without the I flag (RFC 7348: VNI not valid).
    VxlanFlags,
    /// Geneve version other than 0, options longer than the packet, or a payload that is
    /// not Ethernet.
    GeneveHeader,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Classifies a frame received on an uplink. `is_local` says whether an IPv4 address is one
/// of ours; `tunnel_port` which kind of tunnel (if any) listens on a UDP port. Untagged
/// underlay only.
pub fn classify(
    frame: &[u8],
    is_local: impl Fn(Ipv4Addr) -> bool,
    tunnel_port: impl Fn(u16) -> Option<TunnelKind>,
) -> Underlay {
    if frame.len() < 14 {
        return Underlay::Other;
    }
    match be16(frame, 12) {
        0x0806 => {
            let a = &frame[14..];
            if a.len() < 28 || be16(a, 0) != 1 || be16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
                return Underlay::Other;
            }
            let mut sender_mac = [0u8; 6];
            sender_mac.copy_from_slice(&a[8..14]);
            Underlay::Arp { op: be16(a, 6), sender_mac, sender_ip: ipv4_at(a, 14), target_ip: ipv4_at(a, 24) }
        }
        0x0800 => {
            let ip = &frame[14..];
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
                return Underlay::Other;
            }
            let dst = ipv4_at(ip, 16);
            if !is_local(dst) {
                return Underlay::Other;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            // Fragments never carry a whole tunnel header we could trust.
            if ihl < 20 || ip.len() < ihl + 8 || be16(ip, 6) & 0x3fff != 0 {
                return match ip.len() >= ihl + 4 && ihl >= 20 {
                    true if tunnel_port(be16(ip, ihl + 2)).is_some() => Underlay::Bad(TunnelError::Truncated),
                    _ => Underlay::Other,
                };
            }
            let udp = ihl;
            let dst_port = be16(ip, udp + 2);
            let Some(kind) = tunnel_port(dst_port) else { return Underlay::Other };
            let ip_total = be16(ip, 2) as usize;
            let udp_len = be16(ip, udp + 4) as usize;
            if ip_total > ip.len() || ip_total < ihl + 8 || udp_len < 8 + 8 || udp + udp_len > ip_total {
                return Underlay::Bad(TunnelError::Truncated);
            }
            let th = udp + 8;
            let payload_end = udp + udp_len;
            let inner_off = match kind {
                TunnelKind::Vxlan => {
                    if ip[th] & 0x08 == 0 {
                        return Underlay::Bad(TunnelError::VxlanFlags);
                    }
                    th + 8
                }
                TunnelKind::Geneve => {
                    let ver = ip[th] >> 6;
                    let opt_len = (ip[th] & 0x3f) as usize * 4;
                    if ver != 0 || be16(ip, th + 2) != GENEVE_PROTO_ETHERNET {
                        return Underlay::Bad(TunnelError::GeneveHeader);
                    }
                    if th + 8 + opt_len > payload_end {
                        return Underlay::Bad(TunnelError::GeneveHeader);
                    }
                    th + 8 + opt_len
                }
            };
            // The inner frame needs at least an Ethernet header.
            if inner_off + 14 > payload_end {
                return Underlay::Bad(TunnelError::Truncated);
            }
            let vni = u32::from_be_bytes([0, ip[th + 4], ip[th + 5], ip[th + 6]]);
            let addrs = u64::from_be_bytes(ip[12..20].try_into().expect("8 bytes"));
            Underlay::Tunnel(TunnelHeader { kind, vni, addrs, dst_port, inner: (14 + inner_off) as u16 })
        }
        _ => Underlay::Other,
    }
}

/// Turns an ARP request (Ethernet frame, 42+ bytes) into the reply from `our_mac`, in place.
pub fn arp_reply_in_place(frame: &mut [u8], our_mac: [u8; 6]) {
    let (requester_mac, requester_ip, target_ip) = {
        let a = &frame[14..];
        let mut m = [0u8; 6];
        m.copy_from_slice(&a[8..14]);
        let mut sip = [0u8; 4];
        sip.copy_from_slice(&a[14..18]);
        let mut tip = [0u8; 4];
        tip.copy_from_slice(&a[24..28]);
        (m, sip, tip)
    };
    frame[0..6].copy_from_slice(&requester_mac);
    frame[6..12].copy_from_slice(&our_mac);
    let a = &mut frame[14..];
    a[6..8].copy_from_slice(&2u16.to_be_bytes());
    a[8..14].copy_from_slice(&our_mac);
    a[14..18].copy_from_slice(&target_ip);
    a[18..24].copy_from_slice(&requester_mac);
    a[24..28].copy_from_slice(&requester_ip);
}

/// An ARP request (padded to 60 bytes) asking who has `target`.
pub fn arp_request(our_mac: [u8; 6], our_ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&our_mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let a = &mut f[14..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&1u16.to_be_bytes());
    a[8..14].copy_from_slice(&our_mac);
    a[14..18].copy_from_slice(&our_ip.octets());
    a[24..28].copy_from_slice(&target.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::checksum;

    const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0xaa, 1];
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0xbb, 2];
    const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

    fn inner() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x04, 0xd2, 0x16, 0x2e, 0, 8, 0, 0]);
        f.resize(60, 0);
        f
    }

    fn encap(kind: TunnelKind, vni: u32) -> Vec<u8> {
        let t = Template::new(kind, UPLINK_MAC, LOCAL, kind.default_port());
        let inner = inner();
        let mut out = vec![0u8; ENCAP_LEN];
        t.write(&mut out, PEER_MAC, REMOTE, vni, entropy_port(&inner), inner.len());
        out.extend_from_slice(&inner);
        out
    }

    fn local(ip: Ipv4Addr) -> bool {
        ip == REMOTE
    }

    fn ports(p: u16) -> Option<TunnelKind> {
        match p {
            4789 => Some(TunnelKind::Vxlan),
            6081 => Some(TunnelKind::Geneve),
            _ => None,
        }
    }

    #[test]
    fn vxlan_encap_is_what_decap_reads() {
        let f = encap(TunnelKind::Vxlan, 100);
        assert_eq!(f.len(), 60 + 50);
        assert_eq!(&f[0..6], &PEER_MAC);
        assert_eq!(&f[6..12], &UPLINK_MAC);
        assert_eq!(checksum(&f[14..34]), 0, "outer IPv4 checksum verifies");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 96, "IP total length");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 76, "UDP length");
        assert_eq!(&f[40..42], &[0, 0], "UDP checksum zero (allowed for IPv4)");
        assert_eq!(&f[42..50], &[0x08, 0, 0, 0, 0, 0, 100, 0]);
        match classify(&f, local, ports) {
            Underlay::Tunnel(h) => {
                assert_eq!(
                    (h.kind, h.vni, h.src(), h.dst(), h.dst_port),
                    (TunnelKind::Vxlan, 100, LOCAL, REMOTE, 4789)
                );
                assert_eq!(&f[h.inner as usize..], &inner()[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn geneve_encap_and_options_skipped() {
        let f = encap(TunnelKind::Geneve, 0xabcdef);
        assert_eq!(&f[42..50], &[0, 0, 0x65, 0x58, 0xab, 0xcd, 0xef, 0]);
        assert!(matches!(classify(&f, local, ports), Underlay::Tunnel(TunnelHeader { vni: 0xabcdef, inner: 50, .. })));
        // With 8 bytes of options (opt len 2 words): the inner frame starts 8 bytes later.
        let mut g = f[..50].to_vec();
        g[42] = 2;
        g.extend_from_slice(&[0x01, 0x02, 0x80, 0x01, 0, 0, 0, 0]);
        g.extend_from_slice(&inner());
        let total = (g.len() - 14) as u16;
        g[16..18].copy_from_slice(&total.to_be_bytes());
        g[38..40].copy_from_slice(&(total - 20).to_be_bytes());
        assert!(matches!(classify(&g, local, ports), Underlay::Tunnel(TunnelHeader { inner: 58, .. })));
        // Options claiming more than there is.
        g[42] = 0x3f;
        assert_eq!(classify(&g, local, ports), Underlay::Bad(TunnelError::GeneveHeader));
    }

    #[test]
    fn malformed_tunnel_packets() {
        let f = encap(TunnelKind::Vxlan, 5);
        let mut no_i = f.clone();
        no_i[42] = 0;
        assert_eq!(classify(&no_i, local, ports), Underlay::Bad(TunnelError::VxlanFlags));
        assert_eq!(classify(&f[..60], local, ports), Underlay::Bad(TunnelError::Truncated));
        let mut short_udp = f.clone();
        short_udp[38..40].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(classify(&short_udp, local, ports), Underlay::Bad(TunnelError::Truncated));
        let mut bad_ver = encap(TunnelKind::Geneve, 5);
        bad_ver[42] = 0x40;
        assert_eq!(classify(&bad_ver, local, ports), Underlay::Bad(TunnelError::GeneveHeader));
        // Not for us, or not a tunnel port: not our business.
        assert_eq!(classify(&f, |_| false, ports), Underlay::Other);
        assert_eq!(classify(&f, local, |_| None), Underlay::Other);
    }

    #[test]
    fn entropy_varies_with_the_inner_flow() {
        let mut ports_seen = std::collections::BTreeSet::new();
        for sport in 0..64u16 {
            let mut f = inner();
            f[34..36].copy_from_slice(&(1000 + sport).to_be_bytes());
            let p = entropy_port(&f);
            assert!(p >= 49152);
            ports_seen.insert(p);
        }
        assert!(ports_seen.len() > 50, "{} distinct of 64", ports_seen.len());
        assert_eq!(entropy_port(&inner()), entropy_port(&inner()), "stable per flow");
        // Addresses count as much as ports; 1,024 flows spread over the range.
        let mut spread = std::collections::BTreeSet::new();
        for n in 0..1024u32 {
            let mut f = inner();
            f[30..34].copy_from_slice(&(0x0a00_0000 + n).to_be_bytes());
            spread.insert(entropy_port(&f) >> 8);
        }
        assert_eq!(spread.len(), 64, "all 64 blocks of 256 ports used");
        // Address and port bits that line up must not cancel: destination .i with port
        // 8*i, for 32 flows, gives (nearly) 32 ports.
        let mut lockstep = std::collections::BTreeSet::new();
        for i in 0..32u8 {
            let mut f = inner();
            f[33] = i;
            f[36..38].copy_from_slice(&(8 * i as u16).to_be_bytes());
            lockstep.insert(entropy_port(&f));
        }
        assert!(lockstep.len() >= 30, "{} distinct of 32", lockstep.len());
        // Fragments of one packet and pings of one flow keep one port.
        let mut frag = inner();
        frag[20] = 0x20; // more fragments
        let mut later = frag.clone();
        later[21] = 0x10; // offset 16: bytes 34.. are payload, not ports
        later[34..38].copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(entropy_port(&frag), entropy_port(&later));
        let mut ping = inner();
        ping[23] = 1;
        let mut ping2 = ping.clone();
        ping2[34..38].copy_from_slice(&[0, 0, 0x12, 0x34]); // type, code, checksum
        assert_eq!(entropy_port(&ping), entropy_port(&ping2));
    }

    #[test]
    fn arp_request_and_reply() {
        let req = arp_request(PEER_MAC, REMOTE, LOCAL);
        match classify(&req, local, ports) {
            Underlay::Arp { op, sender_mac, sender_ip, target_ip } => {
                assert_eq!((op, sender_mac, sender_ip, target_ip), (1, PEER_MAC, REMOTE, LOCAL));
            }
            other => panic!("{other:?}"),
        }
        let mut rep = req;
        arp_reply_in_place(&mut rep, UPLINK_MAC);
        assert_eq!(&rep[0..6], &PEER_MAC);
        match classify(&rep, local, ports) {
            Underlay::Arp { op, sender_mac, sender_ip, target_ip } => {
                assert_eq!((op, sender_mac, sender_ip, target_ip), (2, UPLINK_MAC, LOCAL, REMOTE));
            }
            other => panic!("{other:?}"),
        }
    }
}
