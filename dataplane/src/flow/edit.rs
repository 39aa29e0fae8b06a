//! Header changes made by flow actions, on any frame buffer (an mbuf in the datapath, a
//! vector in tests). Checksums are kept right: IPv4 header checksums and TCP/UDP checksums
//! are updated incrementally (a UDP checksum of zero, "none", stays zero).

use super::compiled::Op;
use super::key::{ethertype, Layout};
use crate::stats::DropReason;
use crate::wire::checksum::{update16, update32};

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
    use crate::wire::checksum::checksum;

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
