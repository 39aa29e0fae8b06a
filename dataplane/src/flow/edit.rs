//! Header changes made by flow actions, on any frame buffer (an mbuf in the datapath, a
//! vector in tests). Checksums are kept right: IPv4 header checksums and TCP/UDP checksums
//! are updated incrementally (a UDP checksum of zero, "none", stays zero).

use super::compiled::Op;
use super::key::{ethertype, extract_key, ipproto, slot, Depth, Layout};
use crate::stats::DropReason;
use crate::wire::checksum::{complete_partial, update16, update32};

/// A frame that can grow and shrink at the front.
pub trait FrameBuf {
    /// The frame's bytes; `None` if it may not be changed (shared).
    fn bytes_mut(&mut self) -> Option<&mut [u8]>;
    fn push_front(&mut self, n: u16) -> bool;
    fn pull_front(&mut self, n: u16) -> bool;
}

impl FrameBuf for crate::dpdk::Mbuf {
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        self.data_mut()
    }
    fn push_front(&mut self, n: u16) -> bool {
        crate::dpdk::Mbuf::push_front(self, n)
    }
    fn pull_front(&mut self, n: u16) -> bool {
        crate::dpdk::Mbuf::pull_front(self, n)
    }
}

impl FrameBuf for Vec<u8> {
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        Some(self.as_mut_slice())
    }
    fn push_front(&mut self, n: u16) -> bool {
        self.splice(0..0, std::iter::repeat_n(0u8, n as usize));
        true
    }
    fn pull_front(&mut self, n: u16) -> bool {
        if self.len() < n as usize {
            return false;
        }
        self.drain(..n as usize);
        true
    }
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn is_vlan(tpid: u16) -> bool {
    tpid == ethertype::VLAN || tpid == ethertype::QINQ
}

/// Where the L4 checksum of the packet is, if it has one to keep right.
fn l4_checksum_at(b: &[u8], layout: &Layout) -> Option<usize> {
    if layout.l4 == 0 {
        return None;
    }
    let l3 = layout.l3 as usize;
    let proto = match get16(b, l3 - 2) {
        ethertype::IPV4 => b[l3 + 9],
        ethertype::IPV6 => b[l3 + 6],
        _ => return None,
    };
    let l4 = layout.l4 as usize;
    match proto {
        6 if b.len() >= l4 + 18 => Some(l4 + 16),
        17 if b.len() >= l4 + 8 && get16(b, l4 + 6) != 0 => Some(l4 + 6),
        _ => None,
    }
}

/// Fills in the TCP or UDP checksum a sender left to offload (Linux's CHECKSUM_PARTIAL, as
/// a veth with tx checksumming hands frames on: the field holds the pseudo-header's sum),
/// finding the L4 header as the flow key does (up to two VLAN tags, IPv4, or IPv6 and its
/// extension headers) and summing to the end of the IP packet, not of Ethernet padding.
/// Other protocols (SCTP, whose offloaded checksum is a CRC) are left as they are. False,
/// changing nothing, if the headers do not parse or the IP length points past the frame.
pub fn complete_offloaded_checksum(frame: &mut [u8]) -> bool {
    let Ok((key, layout)) = extract_key(frame, 0, Depth::L4) else { return false };
    let offset = match slot::IP_PROTO.get(&key) as u8 {
        ipproto::TCP => 16,
        ipproto::UDP => 6,
        _ => return true,
    };
    if layout.l4 == 0 {
        return true; // a later fragment: the checksum is in the first
    }
    let l3 = layout.l3 as usize;
    let end = match slot::ETH_TYPE.get(&key) as u16 {
        ethertype::IPV4 => l3 + get16(frame, l3 + 2) as usize,
        _ => l3 + 40 + get16(frame, l3 + 4) as usize, // IPv6: the fixed header, then its payload
    };
    end <= frame.len() && complete_partial(&mut frame[..end], layout.l4 as usize, offset)
}

fn fix_l4(b: &mut [u8], at: Option<usize>, old: u32, new: u32, width32: bool) {
    if let Some(at) = at {
        let c = get16(b, at);
        let n = if width32 { update32(c, old, new) } else { update16(c, old as u16, new as u16) };
        // In UDP a zero field means "no checksum", so a computed zero goes out as all ones
        // (the other representation of zero; valid for TCP too).
        put16(b, at, if n == 0 { 0xffff } else { n });
    }
}

/// Applies one header-changing op. `layout` is kept in step when a tag is pushed or popped.
/// An error is the reason to drop the packet.
pub fn apply<F: FrameBuf>(f: &mut F, layout: &mut Layout, op: &Op) -> Result<(), DropReason> {
    match *op {
        Op::PushVlan(tpid) => return push_vlan(f, layout, tpid, 0),
        Op::PopVlan => {
            let b = f.bytes_mut().ok_or(DropReason::BufferShared)?;
            if b.len() >= 18 && is_vlan(get16(b, 12)) {
                b.copy_within(0..12, 4);
                if !f.pull_front(4) {
                    return Err(DropReason::BufferShared);
                }
                shift(layout, -4);
            }
            return Ok(());
        }
        // On an untagged frame, setting VID or PCP pushes a tag (OVS's mod_vlan_vid).
        Op::SetVlanVid(_) | Op::SetVlanPcp(_)
            if f.bytes_mut().is_some_and(|b| b.len() < 18 || !is_vlan(get16(b, 12))) =>
        {
            let tci = match *op {
                Op::SetVlanPcp(p) => (p as u16) << 13,
                Op::SetVlanVid(v) => v & 0x0fff,
                _ => unreachable!("matched above"),
            };
            return push_vlan(f, layout, ethertype::VLAN, tci);
        }
        _ => {}
    }
    let b = f.bytes_mut().ok_or(DropReason::BufferShared)?;
    let l3 = layout.l3 as usize;
    match *op {
        Op::SetVlanVid(vid) => {
            let tci = get16(b, 14);
            put16(b, 14, (tci & 0xf000) | (vid & 0x0fff));
        }
        Op::SetVlanPcp(pcp) => {
            let tci = get16(b, 14);
            put16(b, 14, (tci & 0x1fff) | ((pcp as u16) << 13));
        }
        Op::SetEthSrc(m) => b[6..12].copy_from_slice(&m.to_be_bytes()[2..]),
        Op::SetEthDst(m) => b[0..6].copy_from_slice(&m.to_be_bytes()[2..]),
        Op::SetIpv4Src(a) | Op::SetIpv4Dst(a) => {
            if l3 == 0 || get16(b, l3 - 2) != ethertype::IPV4 || b.len() < l3 + 20 {
                return Ok(());
            }
            let at = l3 + if matches!(op, Op::SetIpv4Src(_)) { 12 } else { 16 };
            let old = u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
            b[at..at + 4].copy_from_slice(&a.to_be_bytes());
            let c = update32(get16(b, l3 + 10), old, a);
            put16(b, l3 + 10, c);
            // The addresses are in the TCP/UDP pseudo-header.
            let l4c = l4_checksum_at(b, layout);
            fix_l4(b, l4c, old, a, true);
        }
        Op::SetIpDscp(d) => match (l3, l3.checked_sub(2).map(|t| get16(b, t))) {
            (l3, Some(ethertype::IPV4)) if b.len() >= l3 + 20 => {
                let old = get16(b, l3);
                b[l3 + 1] = (b[l3 + 1] & 0x03) | (d << 2);
                let c = update16(get16(b, l3 + 10), old, get16(b, l3));
                put16(b, l3 + 10, c);
            }
            (l3, Some(ethertype::IPV6)) if b.len() >= l3 + 40 => {
                // Traffic class: low nibble of byte 0, high nibble of byte 1.
                let tc = ((b[l3] & 0x0f) << 4) | (b[l3 + 1] >> 4);
                let tc = (tc & 0x03) | (d << 2);
                b[l3] = (b[l3] & 0xf0) | (tc >> 4);
                b[l3 + 1] = (b[l3 + 1] & 0x0f) | (tc << 4);
            }
            _ => {}
        },
        Op::DecTtl => match (l3, l3.checked_sub(2).map(|t| get16(b, t))) {
            (l3, Some(ethertype::IPV4)) if b.len() >= l3 + 20 => {
                if b[l3 + 8] <= 1 {
                    return Err(DropReason::TtlExceeded);
                }
                let old = get16(b, l3 + 8);
                b[l3 + 8] -= 1;
                let c = update16(get16(b, l3 + 10), old, get16(b, l3 + 8));
                put16(b, l3 + 10, c);
            }
            (l3, Some(ethertype::IPV6)) if b.len() >= l3 + 40 => {
                if b[l3 + 7] <= 1 {
                    return Err(DropReason::TtlExceeded);
                }
                b[l3 + 7] -= 1;
            }
            _ => {}
        },
        Op::SetTpSrc(p) | Op::SetTpDst(p) => {
            let l4 = layout.l4 as usize;
            if l4 == 0 || b.len() < l4 + 4 {
                return Ok(());
            }
            let at = l4 + if matches!(op, Op::SetTpSrc(_)) { 0 } else { 2 };
            let old = get16(b, at);
            put16(b, at, p);
            let l4c = l4_checksum_at(b, layout);
            fix_l4(b, l4c, old as u32, p as u32, false);
        }
        Op::Output(_)
        | Op::Normal
        | Op::Flood
        | Op::InPort
        | Op::Counter(_)
        | Op::PushVlan(_)
        | Op::PopVlan
        | Op::SetTunnelId(_)
        | Op::SetTunDst(_) => {}
    }
    Ok(())
}

fn shift(layout: &mut Layout, by: i16) {
    if layout.l3 != 0 {
        layout.l3 = (layout.l3 as i16 + by) as u16;
    }
    if layout.l4 != 0 {
        layout.l4 = (layout.l4 as i16 + by) as u16;
    }
}

fn push_vlan<F: FrameBuf>(f: &mut F, layout: &mut Layout, tpid: u16, tci: u16) -> Result<(), DropReason> {
    if f.bytes_mut().is_none_or(|b| b.len() < 14) {
        return Err(DropReason::BufferShared);
    }
    if !f.push_front(4) {
        return Err(DropReason::NoHeadroom);
    }
    let b = f.bytes_mut().ok_or(DropReason::BufferShared)?;
    b.copy_within(4..16, 0);
    put16(b, 12, tpid);
    put16(b, 14, tci);
    shift(layout, 4);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::{extract, slot, Depth, FlowKey};
    use crate::wire::checksum::{checksum, sum};

    /// An Ethernet frame with `tags` VLAN tags carrying `l4` (protocol `protocol`) over IPv4
    /// or IPv6, its checksum field at `field` holding the pseudo-header's sum as a sender
    /// with offload leaves it, and `padding` zero bytes after the IP packet. Returns the
    /// frame, where the L4 header starts, and the pseudo-header.
    fn offloaded(
        tags: usize,
        v6: bool,
        protocol: u8,
        mut l4: Vec<u8>,
        field: usize,
        padding: usize,
    ) -> (Vec<u8>, usize, Vec<u8>) {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for i in 0..tags {
            f.extend_from_slice(&[if i == 0 { 0x88 } else { 0x81 }, if i == 0 { 0xa8 } else { 0x00 }, 0, 100]);
        }
        let len = l4.len() as u16;
        let mut pseudo = Vec::new();
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[protocol, 64]);
            let (src, dst) = ([0xfdu8; 16], [0xfeu8; 16]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&(20 + len).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
            pseudo.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, protocol]);
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        l4[field..field + 2].copy_from_slice(&sum(&pseudo).to_be_bytes());
        let at = f.len();
        f.extend_from_slice(&l4);
        f.resize(f.len() + padding, 0);
        (f, at, pseudo)
    }

    /// Whether the L4 bytes `l4` verify against `pseudo`.
    fn verifies(pseudo: &[u8], l4: &[u8]) -> bool {
        let mut all = pseudo.to_vec();
        all.extend_from_slice(l4);
        checksum(&all) == 0
    }

    #[test]
    fn completes_offloaded_tcp_and_udp_checksums_found_by_parsing() {
        let udp = [&[0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0d, 0, 0][..], b"hello"].concat();
        let tcp = [&[0u8; 16][..], &[0, 0, 0, 0], b"payload"].concat();
        for (protocol, l4, field) in [(17u8, udp, 6), (6, tcp, 16)] {
            for (tags, v6, padding) in [(0, false, 0), (1, false, 7), (2, false, 0), (0, true, 3), (1, true, 0)] {
                let what = format!("protocol {protocol}, {tags} tags, IPv6 {v6}, {padding} bytes of padding");
                let (mut f, at, pseudo) = offloaded(tags, v6, protocol, l4.clone(), field, padding);
                assert!(!verifies(&pseudo, &f[at..at + l4.len()]), "{what}: not yet complete");
                assert!(complete_offloaded_checksum(&mut f), "{what}");
                assert!(verifies(&pseudo, &f[at..at + l4.len()]), "{what}: completed, padding not summed");
            }
        }
    }

    #[test]
    fn completes_udp_behind_an_ipv6_extension_header() {
        // IPv6 with an 8-byte hop-by-hop header, then UDP: the L4 header is found past it.
        let udp = [&[0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0d, 0, 0][..], b"hello"].concat();
        let (mut f, at, mut pseudo) = offloaded(0, true, 0, udp.clone(), 6, 0);
        // `offloaded` put UDP right after the fixed header with next header 0 (hop-by-hop):
        // insert the extension header, naming UDP, and count it in the payload length.
        f.splice(at..at, [17u8, 0, 1, 4, 0, 0, 0, 0]);
        f[18..20].copy_from_slice(&((udp.len() + 8) as u16).to_be_bytes());
        // The field held the sum of a pseudo-header naming protocol 0: make it name the
        // upper layer, UDP, as the sender's stack would.
        let n = pseudo.len();
        pseudo[n - 1] = 17;
        f[at + 8 + 6..at + 8 + 8].copy_from_slice(&sum(&pseudo).to_be_bytes());
        assert!(complete_offloaded_checksum(&mut f));
        assert!(verifies(&pseudo, &f[at + 8..at + 8 + udp.len()]));
    }

    #[test]
    fn leaves_other_frames_alone_and_refuses_an_ip_length_past_the_frame() {
        // SCTP's offloaded checksum is a CRC32c: not ours to fill in.
        let (mut sctp, _, _) = offloaded(0, false, 132, vec![0u8; 16], 8, 0);
        let before = sctp.clone();
        assert!(complete_offloaded_checksum(&mut sctp));
        assert_eq!(sctp, before);
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        assert!(complete_offloaded_checksum(&mut arp));
        assert_eq!(arp, before);
        // An IPv4 total length longer than the frame, or shorter than its header.
        let udp = vec![0, 1, 0, 2, 0, 8, 0, 0];
        let (mut long, _, _) = offloaded(0, false, 17, udp.clone(), 6, 0);
        long[16..18].copy_from_slice(&200u16.to_be_bytes());
        let before = long.clone();
        assert!(!complete_offloaded_checksum(&mut long));
        assert_eq!(long, before);
        let (mut short, _, _) = offloaded(0, false, 17, udp, 6, 0);
        short[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert!(!complete_offloaded_checksum(&mut short));
        // A frame cut inside its IPv4 header does not parse: refused, as the runt it is.
        assert!(!complete_offloaded_checksum(&mut [0x08, 0x00][..].repeat(8)));
    }

    /// Ethernet / IPv4 / UDP 10.0.0.1:1000 -> 10.0.0.2:53 with correct checksums.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![0x45, 0x00, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut udp = vec![0x03, 0xe8, 0x00, 0x35, 0, 12, 0, 0, b'a', b'b', b'c', b'd'];
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12];
        pseudo.extend_from_slice(&udp);
        let c = checksum(&pseudo);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
        f.extend(udp);
        f
    }

    fn udp_ok(f: &[u8], l3: usize) -> bool {
        let ip = &f[l3..l3 + 20];
        let udp = &f[l3 + 20..];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, udp.len() as u8]);
        pseudo.extend_from_slice(udp);
        checksum(ip) == 0 && checksum(&pseudo) == 0
    }

    fn layout(f: &[u8]) -> Layout {
        let mut k = FlowKey::ZERO;
        extract(f, 1, Depth::L4, &mut k).unwrap()
    }

    #[test]
    fn address_port_ttl_and_dscp_changes_keep_checksums() {
        let mut f = udp_frame();
        let mut l = layout(&f);
        for op in [
            Op::SetIpv4Dst(0xc0a8_0101),
            Op::SetIpv4Src(0x0a0a_0a0a),
            Op::SetTpDst(5353),
            Op::SetTpSrc(1),
            Op::DecTtl,
            Op::SetIpDscp(46),
        ] {
            apply(&mut f, &mut l, &op).unwrap();
            assert!(udp_ok(&f, 14), "checksums after {op:?}");
        }
        let mut k = FlowKey::ZERO;
        extract(&f, 1, Depth::L4, &mut k).unwrap();
        assert_eq!(slot::NW_DST.get(&k), 0xc0a8_0101);
        assert_eq!(slot::TP_DST.get(&k), 5353);
        assert_eq!(slot::IP_TTL.get(&k), 63);
        assert_eq!(slot::IP_TOS.get(&k), 46 << 2);
    }

    #[test]
    fn ttl_one_is_exceeded() {
        let mut f = udp_frame();
        f[14 + 8] = 1;
        let mut l = layout(&f);
        assert_eq!(apply(&mut f, &mut l, &Op::DecTtl), Err(DropReason::TtlExceeded));
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut f = udp_frame();
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        let mut l = layout(&f);
        apply(&mut f, &mut l, &Op::SetTpDst(99)).unwrap();
        assert_eq!(&f[40..42], &[0, 0]);
    }

    #[test]
    fn vlan_push_set_pop() {
        let orig = udp_frame();
        let mut f = orig.clone();
        let mut l = layout(&f);
        apply(&mut f, &mut l, &Op::SetVlanVid(100)).unwrap(); // untagged: pushes
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(l.l3, 18);
        apply(&mut f, &mut l, &Op::SetVlanPcp(5)).unwrap();
        assert_eq!(&f[14..16], &[0xa0, 100]);
        // Later edits use the shifted layout.
        apply(&mut f, &mut l, &Op::SetIpv4Dst(0x0a00_0009)).unwrap();
        assert!(udp_ok(&f, 18));
        apply(&mut f, &mut l, &Op::PopVlan).unwrap();
        assert_eq!(l.l3, 14);
        assert_eq!(f.len(), orig.len());
        assert_eq!(&f[..14], &orig[..14]);
        assert!(udp_ok(&f, 14));
        apply(&mut f, &mut l, &Op::PopVlan).unwrap(); // untagged: nothing to pop
        assert_eq!(f.len(), orig.len());
        apply(&mut f, &mut l, &Op::PushVlan(0x88a8)).unwrap();
        assert_eq!(&f[12..16], &[0x88, 0xa8, 0, 0]);
    }

    #[test]
    fn mac_rewrites() {
        let mut f = udp_frame();
        let mut l = layout(&f);
        apply(&mut f, &mut l, &Op::SetEthDst(0x0200_0000_00aa)).unwrap();
        apply(&mut f, &mut l, &Op::SetEthSrc(0x0200_0000_00bb)).unwrap();
        assert_eq!(&f[0..12], &[2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xbb]);
    }
}
