//! Ethernet II frames (IEEE 802.3) and 802.1Q / 802.1ad VLAN tags.

use std::fmt;
use std::str::FromStr;

use super::WireError;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The I/G bit: group (multicast or broadcast) addresses have it set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// A valid source address is neither a group address nor all zeros (IEEE 802.3 4.2.3.1.1;
    /// Linux's bridge drops frames with any other source).
    pub fn is_valid_source(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }

    /// 01:80:C2:00:00:00 to 01:80:C2:00:00:0F: reserved for link-local protocols (STP, LACP,
    /// LLDP, 802.1X) that an 802.1D bridge must not forward.
    pub fn is_link_local_reserved(&self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// The address in the low 48 bits of a u64 (big-endian order): a cheap hash key.
    pub fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Group bit of an address in u64 form.
    #[inline(always)]
    pub fn u64_is_multicast(v: u64) -> bool {
        v & (1 << 40) != 0
    }

    /// [`MacAddr::is_valid_source`] of an address in u64 form.
    #[inline(always)]
    pub fn u64_is_valid_source(v: u64) -> bool {
        !Self::u64_is_multicast(v) && v != 0
    }

    /// [`MacAddr::is_link_local_reserved`] of an address in u64 form.
    #[inline(always)]
    pub fn u64_is_link_local_reserved(v: u64) -> bool {
        v & 0xffff_ffff_fff0 == 0x0180_c200_0000
    }

    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six hex octets separated by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)")]
pub struct BadMacAddr(pub String);

impl FromStr for MacAddr {
    type Err = BadMacAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMacAddr(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// EtherType values the switch recognises; every other value is kept as `Unknown`, because
/// flow tables must be able to match on what the parser does not understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// IEEE 802.1Q customer VLAN tag.
    Vlan,
    Ipv6,
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    Qinq,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            0x88a8 => EtherType::Qinq,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Qinq => 0x88a8,
            EtherType::Unknown(v) => v,
        }
    }
}

impl EtherType {
    /// True for the TPIDs that introduce a VLAN tag.
    pub fn is_vlan_tpid(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::Qinq)
    }
}

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// The tag control information of the first VLAN tag, when ETHERTYPE is a TPID.
    pub const VLAN_TCI: Range<usize> = 14..16;
    pub const VLAN_INNER_TYPE: Range<usize> = 16..18;
}

/// Ethernet header length without VLAN tags.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// Bytes one VLAN tag adds.
pub const VLAN_TAG_LEN: usize = 4;

/// A VLAN tag's tag control information (IEEE 802.1Q 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: EtherType,
    pub pcp: u8,
    pub dei: bool,
    /// 12-bit VLAN identifier.
    pub vid: u16,
}

impl VlanTag {
    pub fn from_tci(tpid: EtherType, tci: u16) -> VlanTag {
        VlanTag { tpid, pcp: (tci >> 13) as u8, dei: tci & 0x1000 != 0, vid: tci & 0x0fff }
    }
}

/// A read (and, with `T: AsMut<[u8]>`, write) view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without a length check: accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// A view of a buffer long enough for the Ethernet header and, when the EtherType says a
    /// VLAN tag follows, for that tag. After this, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated { layer: "ethernet", needed: HEADER_LEN, actual: len });
        }
        if matches!(self.ethertype_raw(), 0x8100 | 0x88a8) && len < HEADER_LEN + VLAN_TAG_LEN {
            return Err(WireError::Truncated { layer: "vlan", needed: HEADER_LEN + VLAN_TAG_LEN, actual: len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        MacAddr(a)
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        MacAddr(a)
    }

    /// The destination address in the low 48 bits of a u64 (as [`MacAddr::to_u64`]): two
    /// instructions, for hashing and comparing on the fast path.
    #[inline(always)]
    pub fn dst_u64(&self) -> u64 {
        let b: [u8; 8] = self.buffer.as_ref()[0..8].try_into().expect("8 bytes");
        u64::from_be_bytes(b) >> 16
    }

    /// The source address in the low 48 bits of a u64.
    #[inline(always)]
    pub fn src_u64(&self) -> u64 {
        let b: [u8; 8] = self.buffer.as_ref()[6..14].try_into().expect("8 bytes");
        u64::from_be_bytes(b) >> 16
    }

    /// The raw EtherType field.
    #[inline(always)]
    pub fn ethertype_raw(&self) -> u16 {
        let b: [u8; 2] = self.buffer.as_ref()[field::ETHERTYPE].try_into().expect("2 bytes");
        u16::from_be_bytes(b)
    }

    /// The VLAN id of the outermost tag, or 0 for an untagged frame.
    #[inline(always)]
    pub fn vlan_id(&self) -> u16 {
        match self.ethertype_raw() {
            0x8100 | 0x88a8 => {
                let b: [u8; 2] = self.buffer.as_ref()[field::VLAN_TCI].try_into().expect("2 bytes");
                u16::from_be_bytes(b) & 0x0fff
            }
            _ => 0,
        }
    }

    /// The EtherType field right after the addresses (a TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The outermost VLAN tag, if any.
    #[inline]
    pub fn vlan(&self) -> Option<VlanTag> {
        let tpid = self.ethertype();
        if !tpid.is_vlan_tpid() {
            return None;
        }
        let b = &self.buffer.as_ref()[field::VLAN_TCI];
        Some(VlanTag::from_tci(tpid, u16::from_be_bytes([b[0], b[1]])))
    }

    /// The EtherType of the payload, behind the outermost VLAN tag if there is one.
    #[inline]
    pub fn payload_ethertype(&self) -> EtherType {
        if self.ethertype().is_vlan_tpid() {
            let b = &self.buffer.as_ref()[field::VLAN_INNER_TYPE];
            EtherType::from(u16::from_be_bytes([b[0], b[1]]))
        } else {
            self.ethertype()
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:00:00:00:00:01 as captured on a veth (60 bytes with padding).
    static ARP_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    // A frame tagged VLAN 100, PCP 5, carrying IPv4 (truncated after the tag).
    static TAGGED_FRAME: [u8; 18] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x81, 0x00, 0xa0, 0x64, 0x08, 0x00];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), "02:00:00:00:00:01".parse().unwrap());
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.payload_ethertype(), EtherType::Arp);
    }

    #[test]
    fn fast_accessors_agree() {
        let f = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(f.dst_u64(), f.dst_addr().to_u64());
        assert_eq!(f.src_u64(), f.src_addr().to_u64());
        assert_eq!(f.vlan_id(), 0);
        let t = EthernetFrame::new_checked(&TAGGED_FRAME[..]).unwrap();
        assert_eq!(t.src_u64(), 0x0200_0000_0001);
        assert_eq!(t.vlan_id(), 100);
    }

    #[test]
    fn deconstruct_vlan() {
        let f = EthernetFrame::new_checked(&TAGGED_FRAME[..]).unwrap();
        let tag = f.vlan().unwrap();
        assert_eq!(tag, VlanTag { tpid: EtherType::Vlan, pcp: 5, dei: false, vid: 100 });
        assert_eq!(f.payload_ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 14];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(MacAddr::BROADCAST);
        f.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        f.set_ethertype(EtherType::Arp);
        assert_eq!(&buf[..], &ARP_FRAME[..14]);
    }

    #[test]
    fn short_header() {
        let err = EthernetFrame::new_checked(&ARP_FRAME[..13]).unwrap_err();
        assert_eq!(err, WireError::Truncated { layer: "ethernet", needed: 14, actual: 13 });
    }

    #[test]
    fn truncated_vlan_tag() {
        let err = EthernetFrame::new_checked(&TAGGED_FRAME[..16]).unwrap_err();
        assert_eq!(err, WireError::Truncated { layer: "vlan", needed: 18, actual: 16 });
    }

    #[test]
    fn unknown_ethertype_is_a_value() {
        let mut buf = ARP_FRAME;
        buf[12] = 0x88;
        buf[13] = 0xcc;
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::Unknown(0x88cc));
    }

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:0A:ff:00:10:9".parse().unwrap();
        assert_eq!(m.0, [2, 10, 255, 0, 16, 9]);
        assert_eq!(m.to_string(), "02:0a:ff:00:10:09");
        assert_eq!("02-00-00-00-00-01".parse::<MacAddr>().unwrap().0[5], 1);
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "02:00:00:00:00:zz", "020:00:00:00:00:01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_valid_source());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_valid_source());
        assert!(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]).is_link_local_reserved());
        assert!(!MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]).is_link_local_reserved());
        assert!(!MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_link_local_reserved());
        for m in [
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
            MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]),
        ] {
            let v = m.to_u64();
            assert_eq!(MacAddr::u64_is_multicast(v), m.is_multicast(), "{m}");
            assert_eq!(MacAddr::u64_is_valid_source(v), m.is_valid_source(), "{m}");
            assert_eq!(MacAddr::u64_is_link_local_reserved(v), m.is_link_local_reserved(), "{m}");
        }
    }
}
