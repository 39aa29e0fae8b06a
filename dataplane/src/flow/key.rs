//! The flow key: every header field a flow can match, packed into 11 words so that masking,
//! hashing and comparing are a few word operations.
//!
//! Layout (bit 63 is the top of a word):
//!
//! | word | bits 63..48 | 47..32 | 31..16 | 15..8 | 7..0 |
//! |---|---|---|---|---|---|
//! | 0 | in_port | vlan_tci | eth_type | ip_proto | ip_tos (dscp:6, ecn:2) |
//! | 1 | eth_dst (48) ||| ip_ttl | ip_frag |
//! | 2 | eth_src (48) ||| arp_op (16) ||
//! | 3 | nw_src (IPv4 / ARP spa, 32) || nw_dst (IPv4 / ARP tpa, 32) |||
//! | 4 | tp_src | tp_dst | (reserved) |||
//! | 5, 6 | ipv6_src (128) |||||
//! | 7, 8 | ipv6_dst (128) |||||
//! | 9 | tun_id (64) |||||
//! | 10 | tun_src (32) || tun_dst (32) |||
//!
//! As in OVS: `vlan_tci` carries PCP (3 bits), a "tag present" bit where 802.1Q has DEI, and
//! the VID; `eth_type` is the payload type behind VLAN tags; ICMP type and code live in
//! `tp_src` and `tp_dst`.

use std::fmt;

pub const KEY_WORDS: usize = 11;

/// A packet's flow key, or a mask over one.
#[derive(Clone, Copy, Eq, Default, PartialOrd, Ord)]
#[repr(C, align(8))]
pub struct FlowKey(pub [u64; KEY_WORDS]);

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialEq for FlowKey {
    /// Branch-free word compare: the derived one calls memcmp, which costs more than the
    /// eleven words themselves on the per-packet path.
    #[inline(always)]
    fn eq(&self, other: &FlowKey) -> bool {
        let mut diff = 0u64;
        for i in 0..KEY_WORDS {
            diff |= self.0[i] ^ other.0[i];
        }
        diff == 0
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowKey[")?;
        for (i, w) in self.0.iter().enumerate() {
            if *w != 0 {
                write!(f, " {i}:{w:016x}")?;
            }
        }
        write!(f, " ]")
    }
}

/// Where a field lives in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub word: usize,
    pub shift: u32,
    pub bits: u32,
}

impl Slot {
    const fn new(word: usize, shift: u32, bits: u32) -> Slot {
        Slot { word, shift, bits }
    }

    /// All-ones over the field's bits, unshifted.
    pub const fn full(self) -> u64 {
        if self.bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }
    }

    #[inline(always)]
    pub fn get(self, key: &FlowKey) -> u64 {
        (key.0[self.word] >> self.shift) & self.full()
    }

    #[inline(always)]
    pub fn set(self, key: &mut FlowKey, value: u64) {
        let m = self.full() << self.shift;
        key.0[self.word] = (key.0[self.word] & !m) | ((value << self.shift) & m);
    }
}

pub mod slot {
    use super::Slot;
    pub const IN_PORT: Slot = Slot::new(0, 48, 16);
    pub const VLAN_TCI: Slot = Slot::new(0, 32, 16);
    pub const ETH_TYPE: Slot = Slot::new(0, 16, 16);
    pub const IP_PROTO: Slot = Slot::new(0, 8, 8);
    pub const IP_TOS: Slot = Slot::new(0, 0, 8);
    pub const ETH_DST: Slot = Slot::new(1, 16, 48);
    pub const IP_TTL: Slot = Slot::new(1, 8, 8);
    pub const IP_FRAG: Slot = Slot::new(1, 0, 8);
    pub const ETH_SRC: Slot = Slot::new(2, 16, 48);
    pub const ARP_OP: Slot = Slot::new(2, 0, 16);
    pub const NW_SRC: Slot = Slot::new(3, 32, 32);
    pub const NW_DST: Slot = Slot::new(3, 0, 32);
    pub const TP_SRC: Slot = Slot::new(4, 48, 16);
    pub const TP_DST: Slot = Slot::new(4, 32, 16);
    pub const IPV6_SRC_HI: Slot = Slot::new(5, 0, 64);
    pub const IPV6_SRC_LO: Slot = Slot::new(6, 0, 64);
    pub const IPV6_DST_HI: Slot = Slot::new(7, 0, 64);
    pub const IPV6_DST_LO: Slot = Slot::new(8, 0, 64);
    pub const TUN_ID: Slot = Slot::new(9, 0, 64);
    pub const TUN_SRC: Slot = Slot::new(10, 32, 32);
    pub const TUN_DST: Slot = Slot::new(10, 0, 32);
}

/// VLAN TCI bit that says "a tag is present" (in place of DEI, as OVS does).
pub const VLAN_PRESENT: u16 = 0x1000;
pub const VLAN_VID_MASK: u16 = 0x0fff;
pub const VLAN_PCP_MASK: u16 = 0xe000;

/// `ip_frag` bits.
pub const FRAG_ANY: u8 = 1;
pub const FRAG_LATER: u8 = 2;

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
    pub const ICMPV6: u8 = 58;
}

impl FlowKey {
    pub const ZERO: FlowKey = FlowKey([0; KEY_WORDS]);

    #[inline(always)]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::ZERO;
        for i in 0..KEY_WORDS {
            out.0[i] = self.0[i] & mask.0[i];
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn in_port(&self) -> u16 {
        slot::IN_PORT.get(self) as u16
    }
    pub fn vlan_tci(&self) -> u16 {
        slot::VLAN_TCI.get(self) as u16
    }
    pub fn eth_type(&self) -> u16 {
        slot::ETH_TYPE.get(self) as u16
    }
    pub fn ip_proto(&self) -> u8 {
        slot::IP_PROTO.get(self) as u8
    }
}

/// How deep packet parsing must go for a pipeline's rules (see [`extract`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Depth {
    /// Only metadata (in_port, tunnel).
    #[default]
    Meta,
    /// Ethernet and VLAN.
    L2,
    /// IPv4 / IPv6 / ARP headers.
    L3,
    /// TCP / UDP / SCTP ports, ICMP type and code.
    L4,
}

impl Depth {
    /// The parse depth needed to fill the fields `mask` covers.
    pub fn for_mask(mask: &FlowKey) -> Depth {
        let m = &mask.0;
        let l4 = slot::TP_SRC.get(mask) != 0 || slot::TP_DST.get(mask) != 0;
        let l3 = (m[0] & 0xffff) != 0
            || (m[1] & 0xffff) != 0
            || slot::ARP_OP.get(mask) != 0
            || m[3] != 0
            || m[5..9].iter().any(|w| *w != 0);
        let l2 = slot::VLAN_TCI.get(mask) != 0
            || slot::ETH_TYPE.get(mask) != 0
            || slot::ETH_DST.get(mask) != 0
            || slot::ETH_SRC.get(mask) != 0;
        if l4 {
            Depth::L4
        } else if l3 {
            Depth::L3
        } else if l2 {
            Depth::L2
        } else {
            Depth::Meta
        }
    }
}

/// Why a packet could not be parsed as deep as the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Shorter than an Ethernet header.
    FrameTooShort,
    /// Ends inside a VLAN tag.
    VlanTruncated,
    /// IPv4/IPv6/ARP header shorter than it says or than its minimum.
    L3Malformed,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Offsets of the headers found while extracting: what actions need to edit the packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the L3 header (after Ethernet and VLAN tags), 0 if not parsed.
    pub l3: u16,
    /// Offset of the L4 header, 0 if none (or a later fragment).
    pub l4: u16,
}

/// Fills `key` from `frame` (arrived on `in_port`) down to `depth`. Fields below the depth
/// stay zero. A frame that is shorter than its headers claim is an error, so the pipeline
/// can drop it with a reason; a packet whose L4 header is missing (a later fragment, or a
/// truncated datagram) simply has no L4 fields.
#[inline]
pub fn extract(frame: &[u8], in_port: u16, depth: Depth, key: &mut FlowKey) -> Result<Layout, ExtractError> {
    let (k, layout) = extract_key(frame, in_port, depth)?;
    *key = k;
    Ok(layout)
}

/// [`extract`] returning the key by value. The datapath uses this one: the key is built in
/// registers and can be compared before it is stored (a load of a key just stored word by
/// word with wider loads would stall on store forwarding).
#[inline(always)]
pub fn extract_key(frame: &[u8], in_port: u16, depth: Depth) -> Result<(FlowKey, Layout), ExtractError> {
    let mut k = FlowKey::ZERO;
    let layout = extract_into(frame, in_port, depth, &mut k)?;
    Ok((k, layout))
}

#[inline(always)]
fn extract_into(frame: &[u8], in_port: u16, depth: Depth, key: &mut FlowKey) -> Result<Layout, ExtractError> {
    slot::IN_PORT.set(key, in_port as u64);
    let mut layout = Layout::default();
    if depth == Depth::Meta {
        return Ok(layout);
    }
    if frame.len() < 14 {
        return Err(ExtractError::FrameTooShort);
    }
    key.0[1] = be64(frame, 0) & !0xffff; // eth_dst into the top 48 bits
    key.0[2] = be64(frame, 6) & !0xffff; // eth_src
    let mut off = 12;
    let mut ethertype = be16(frame, off);
    if ethertype == ethertype::VLAN || ethertype == ethertype::QINQ {
        if frame.len() < 18 {
            return Err(ExtractError::VlanTruncated);
        }
        let tci = be16(frame, 14);
        slot::VLAN_TCI.set(key, ((tci & !VLAN_PRESENT) | VLAN_PRESENT) as u64);
        off = 16;
        ethertype = be16(frame, off);
        // Skip an inner tag (QinQ): matching sees the outer tag and the payload type.
        if ethertype == ethertype::VLAN {
            if frame.len() < 22 {
                return Err(ExtractError::VlanTruncated);
            }
            off = 20;
            ethertype = be16(frame, off);
        }
    }
    off += 2;
    slot::ETH_TYPE.set(key, ethertype as u64);
    layout.l3 = off as u16;
    if depth == Depth::L2 {
        return Ok(layout);
    }
    let l3 = &frame[off..];
    let (proto, l4_off) = match ethertype {
        ethertype::IPV4 => {
            if l3.len() < 20 || l3[0] >> 4 != 4 {
                return Err(ExtractError::L3Malformed);
            }
            let ihl = (l3[0] & 0x0f) as usize * 4;
            let total = be16(l3, 2) as usize;
            if ihl < 20 || l3.len() < ihl || total < ihl {
                return Err(ExtractError::L3Malformed);
            }
            let proto = l3[9];
            slot::IP_TOS.set(key, l3[1] as u64);
            slot::IP_PROTO.set(key, proto as u64);
            slot::IP_TTL.set(key, l3[8] as u64);
            key.0[3] = be64(l3, 12);
            let frag = be16(l3, 6);
            let mut f = 0u8;
            if frag & 0x3fff != 0 {
                f |= FRAG_ANY;
            }
            if frag & 0x1fff != 0 {
                f |= FRAG_LATER;
            }
            slot::IP_FRAG.set(key, f as u64);
            (proto, if f & FRAG_LATER != 0 { None } else { Some(ihl) })
        }
        ethertype::IPV6 => {
            if l3.len() < 40 || l3[0] >> 4 != 6 {
                return Err(ExtractError::L3Malformed);
            }
            let tc = ((be16(l3, 0) >> 4) & 0xff) as u8;
            slot::IP_TOS.set(key, tc as u64);
            slot::IP_TTL.set(key, l3[7] as u64);
            key.0[5] = be64(l3, 8);
            key.0[6] = be64(l3, 16);
            key.0[7] = be64(l3, 24);
            key.0[8] = be64(l3, 32);
            // Walk the usual extension headers to the upper-layer protocol.
            let mut next = l3[6];
            let mut at = 40usize;
            let mut later = false;
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        if l3.len() < at + 8 {
                            break;
                        }
                        next = l3[at];
                        at += (l3[at + 1] as usize + 1) * 8;
                    }
                    44 => {
                        if l3.len() < at + 8 {
                            break;
                        }
                        let fo = be16(l3, at + 2);
                        let mut f = FRAG_ANY;
                        if fo & 0xfff8 != 0 {
                            f |= FRAG_LATER;
                            later = true;
                        }
                        slot::IP_FRAG.set(key, f as u64);
                        next = l3[at];
                        at += 8;
                    }
                    _ => break,
                }
            }
            slot::IP_PROTO.set(key, next as u64);
            (next, if later { None } else { Some(at) })
        }
        ethertype::ARP => {
            // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
            if l3.len() < 28 {
                return Err(ExtractError::L3Malformed);
            }
            if be16(l3, 0) == 1 && be16(l3, 2) == 0x0800 && l3[4] == 6 && l3[5] == 4 {
                slot::ARP_OP.set(key, be16(l3, 6) as u64);
                slot::NW_SRC.set(key, be32(l3, 14) as u64);
                slot::NW_DST.set(key, be32(l3, 24) as u64);
            }
            return Ok(layout);
        }
        _ => return Ok(layout),
    };
    if depth == Depth::L3 {
        return Ok(layout);
    }
    let Some(l4_off) = l4_off else { return Ok(layout) };
    let l4 = &l3[l4_off.min(l3.len())..];
    match proto {
        ipproto::TCP | ipproto::UDP | ipproto::SCTP if l4.len() >= 4 => {
            slot::TP_SRC.set(key, be16(l4, 0) as u64);
            slot::TP_DST.set(key, be16(l4, 2) as u64);
            layout.l4 = (off + l4_off) as u16;
        }
        ipproto::ICMP | ipproto::ICMPV6 if l4.len() >= 2 => {
            slot::TP_SRC.set(key, l4[0] as u64);
            slot::TP_DST.set(key, l4[1] as u64);
            layout.l4 = (off + l4_off) as u16;
        }
        _ => {}
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet / IPv4 / TCP 10.0.0.1:1234 -> 10.0.0.2:80, TTL 64, DSCP 46 (EF).
    pub fn tcp_frame() -> Vec<u8> {
        let mut f = vec![
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
            0x45, 0xb8, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0,
            2, // IPv4, DF
            0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP SYN
        ];
        f.resize(60, 0);
        f
    }

    #[test]
    fn extracts_tcp_over_ipv4() {
        let mut k = FlowKey::ZERO;
        let layout = extract(&tcp_frame(), 3, Depth::L4, &mut k).unwrap();
        assert_eq!(k.in_port(), 3);
        assert_eq!(slot::ETH_DST.get(&k), 0x0200_0000_0002);
        assert_eq!(slot::ETH_SRC.get(&k), 0x0200_0000_0001);
        assert_eq!(k.eth_type(), 0x0800);
        assert_eq!(k.ip_proto(), 6);
        assert_eq!(slot::IP_TOS.get(&k), 0xb8);
        assert_eq!(slot::IP_TTL.get(&k), 64);
        assert_eq!(slot::IP_FRAG.get(&k), 0, "DF is not a fragment");
        assert_eq!(slot::NW_SRC.get(&k), 0x0a00_0001);
        assert_eq!(slot::NW_DST.get(&k), 0x0a00_0002);
        assert_eq!((slot::TP_SRC.get(&k), slot::TP_DST.get(&k)), (1234, 80));
        assert_eq!(slot::VLAN_TCI.get(&k), 0);
        assert_eq!(layout, Layout { l3: 14, l4: 34 });
    }

    #[test]
    fn depth_limits_what_is_read() {
        let mut k = FlowKey::ZERO;
        extract(&tcp_frame(), 3, Depth::L2, &mut k).unwrap();
        assert_eq!(k.eth_type(), 0x0800);
        assert_eq!(k.ip_proto(), 0);
        extract(&tcp_frame(), 3, Depth::Meta, &mut k).unwrap();
        assert_eq!(k.eth_type(), 0);
        assert_eq!(k.in_port(), 3);
        // A runt is fine when nothing past metadata is needed.
        assert!(extract(&[0u8; 4], 1, Depth::Meta, &mut k).is_ok());
    }

    #[test]
    fn vlan_tag_is_in_tci_and_payload_type_in_eth_type() {
        let mut f = tcp_frame();
        f.splice(12..12, [0x81, 0x00, 0xa0, 0x64]); // PCP 5, VID 100
        let mut k = FlowKey::ZERO;
        let layout = extract(&f, 1, Depth::L4, &mut k).unwrap();
        assert_eq!(slot::VLAN_TCI.get(&k), 0xa000 | 0x1000 | 100);
        assert_eq!(k.eth_type(), 0x0800);
        assert_eq!(slot::TP_DST.get(&k), 80);
        assert_eq!(layout.l3, 18);
    }

    #[test]
    fn fragments_have_no_ports() {
        let mut f = tcp_frame();
        f[20] = 0x20; // MF, offset 0: first fragment keeps its ports
        let mut k = FlowKey::ZERO;
        extract(&f, 1, Depth::L4, &mut k).unwrap();
        assert_eq!(slot::IP_FRAG.get(&k), FRAG_ANY as u64);
        assert_eq!(slot::TP_DST.get(&k), 80);
        f[20] = 0x00;
        f[21] = 0x10; // offset 16 * 8
        extract(&f, 1, Depth::L4, &mut k).unwrap();
        assert_eq!(slot::IP_FRAG.get(&k), (FRAG_ANY | FRAG_LATER) as u64);
        assert_eq!(slot::TP_DST.get(&k), 0);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut k = FlowKey::ZERO;
        assert_eq!(extract(&tcp_frame()[..13], 1, Depth::L2, &mut k), Err(ExtractError::FrameTooShort));
        let mut f = tcp_frame();
        f[14] = 0x44; // IHL 4: shorter than the minimum
        assert_eq!(extract(&f, 1, Depth::L3, &mut k), Err(ExtractError::L3Malformed));
        assert_eq!(extract(&tcp_frame()[..30], 1, Depth::L3, &mut k), Err(ExtractError::L3Malformed));
        let mut v = tcp_frame();
        v.splice(12..12, [0x81, 0x00]);
        assert_eq!(extract(&v[..15], 1, Depth::L2, &mut k), Err(ExtractError::VlanTruncated));
    }

    #[test]
    fn ipv6_udp_and_arp() {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0x00, 0x00, 0x00, 0x00, 0x08, 17, 255]);
        f.extend((0..16).map(|i| if i == 0 { 0x20 } else { i as u8 }));
        f.extend((0..16).map(|i| if i == 0 { 0xfd } else { 0x10 + i as u8 }));
        f.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 8, 0, 0]);
        let mut k = FlowKey::ZERO;
        extract(&f, 2, Depth::L4, &mut k).unwrap();
        assert_eq!(k.eth_type(), 0x86dd);
        assert_eq!(k.ip_proto(), 17);
        assert_eq!(slot::IP_TTL.get(&k), 255);
        assert_eq!(k.0[5] >> 56, 0x20);
        assert_eq!(k.0[7] >> 56, 0xfd);
        assert_eq!((slot::TP_SRC.get(&k), slot::TP_DST.get(&k)), (5000, 53));

        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9]);
        extract(&arp, 1, Depth::L4, &mut k).unwrap();
        assert_eq!(slot::ARP_OP.get(&k), 1);
        assert_eq!(slot::NW_SRC.get(&k), 0x0a00_0001);
        assert_eq!(slot::NW_DST.get(&k), 0x0a00_0009);
    }

    #[test]
    fn depth_for_masks() {
        let mut m = FlowKey::ZERO;
        assert_eq!(Depth::for_mask(&m), Depth::Meta);
        slot::IN_PORT.set(&mut m, 0xffff);
        assert_eq!(Depth::for_mask(&m), Depth::Meta);
        slot::ETH_DST.set(&mut m, u64::MAX);
        assert_eq!(Depth::for_mask(&m), Depth::L2);
        slot::NW_DST.set(&mut m, u64::MAX);
        assert_eq!(Depth::for_mask(&m), Depth::L3);
        slot::TP_DST.set(&mut m, u64::MAX);
        assert_eq!(Depth::for_mask(&m), Depth::L4);
    }
}
