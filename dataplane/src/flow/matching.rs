//! Matches: a value and a mask over the flow key, the named fields users write them with,
//! and the OpenFlow prerequisites between fields.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::key::{ethertype, ipproto, slot, FlowKey, Slot, KEY_WORDS, VLAN_PCP_MASK, VLAN_PRESENT, VLAN_VID_MASK};
use crate::wire::MacAddr;

/// A match field as users name it. Several may share key bits (`dl_vlan` and `vlan_tci`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    InPort,
    EthSrc,
    EthDst,
    EthType,
    VlanTci,
    VlanVid,
    VlanPcp,
    IpProto,
    IpTos,
    IpDscp,
    IpEcn,
    IpTtl,
    IpFrag,
    Ipv4Src,
    Ipv4Dst,
    Ipv6Src,
    Ipv6Dst,
    ArpOp,
    ArpSpa,
    ArpTpa,
    TpSrc,
    TpDst,
    IcmpType,
    IcmpCode,
    TunId,
    TunSrc,
    TunDst,
}

/// How a field's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Hex,
    Mac,
    Ipv4,
    Ipv6,
    Frag,
}

impl Field {
    pub const ALL: &'static [Field] = &[
        Field::InPort,
        Field::EthSrc,
        Field::EthDst,
        Field::EthType,
        Field::VlanTci,
        Field::VlanVid,
        Field::VlanPcp,
        Field::IpProto,
        Field::IpTos,
        Field::IpDscp,
        Field::IpEcn,
        Field::IpTtl,
        Field::IpFrag,
        Field::Ipv4Src,
        Field::Ipv4Dst,
        Field::Ipv6Src,
        Field::Ipv6Dst,
        Field::ArpOp,
        Field::ArpSpa,
        Field::ArpTpa,
        Field::TpSrc,
        Field::TpDst,
        Field::IcmpType,
        Field::IcmpCode,
        Field::TunId,
        Field::TunSrc,
        Field::TunDst,
    ];

    /// Names accepted in text (the first is the one printed), following ovs-ofctl.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Field::InPort => &["in_port"],
            Field::EthSrc => &["dl_src", "eth_src"],
            Field::EthDst => &["dl_dst", "eth_dst"],
            Field::EthType => &["dl_type", "eth_type"],
            Field::VlanTci => &["vlan_tci"],
            Field::VlanVid => &["dl_vlan", "vlan_vid"],
            Field::VlanPcp => &["dl_vlan_pcp", "vlan_pcp"],
            Field::IpProto => &["nw_proto", "ip_proto"],
            Field::IpTos => &["nw_tos"],
            Field::IpDscp => &["ip_dscp"],
            Field::IpEcn => &["nw_ecn", "ip_ecn"],
            Field::IpTtl => &["nw_ttl", "ip_ttl"],
            Field::IpFrag => &["nw_frag", "ip_frag"],
            Field::Ipv4Src => &["nw_src", "ip_src"],
            Field::Ipv4Dst => &["nw_dst", "ip_dst"],
            Field::Ipv6Src => &["ipv6_src"],
            Field::Ipv6Dst => &["ipv6_dst"],
            Field::ArpOp => &["arp_op"],
            Field::ArpSpa => &["arp_spa"],
            Field::ArpTpa => &["arp_tpa"],
            Field::TpSrc => &["tp_src", "tcp_src", "udp_src", "sctp_src"],
            Field::TpDst => &["tp_dst", "tcp_dst", "udp_dst", "sctp_dst"],
            Field::IcmpType => &["icmp_type", "icmpv6_type"],
            Field::IcmpCode => &["icmp_code", "icmpv6_code"],
            Field::TunId => &["tun_id", "tunnel_id"],
            Field::TunSrc => &["tun_src"],
            Field::TunDst => &["tun_dst"],
        }
    }

    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    pub fn from_name(name: &str) -> Option<Field> {
        // One hash probe instead of comparing with every name of every field in turn: a
        // 10,000-rule transaction looks up tens of thousands of names.
        static BY_NAME: std::sync::OnceLock<rustc_hash::FxHashMap<&'static str, Field>> = std::sync::OnceLock::new();
        let by_name =
            BY_NAME.get_or_init(|| Field::ALL.iter().flat_map(|&f| f.names().iter().map(move |&n| (n, f))).collect());
        by_name.get(name).copied()
    }

    pub fn kind(self) -> Kind {
        match self {
            Field::EthSrc | Field::EthDst => Kind::Mac,
            Field::Ipv4Src | Field::Ipv4Dst | Field::ArpSpa | Field::ArpTpa | Field::TunSrc | Field::TunDst => {
                Kind::Ipv4
            }
            Field::Ipv6Src | Field::Ipv6Dst => Kind::Ipv6,
            Field::EthType | Field::VlanTci | Field::TunId => Kind::Hex,
            Field::IpFrag => Kind::Frag,
            _ => Kind::Int,
        }
    }

    /// Whether a `/mask` may follow the value.
    pub fn maskable(self) -> bool {
        matches!(
            self,
            Field::EthSrc
                | Field::EthDst
                | Field::VlanTci
                | Field::Ipv4Src
                | Field::Ipv4Dst
                | Field::Ipv6Src
                | Field::Ipv6Dst
                | Field::ArpSpa
                | Field::ArpTpa
                | Field::TpSrc
                | Field::TpDst
                | Field::TunId
                | Field::TunSrc
                | Field::TunDst
        )
    }

    /// The key bits of a scalar field, and the largest value it takes. IPv6 fields span two
    /// words and are handled apart.
    pub fn slot_and_max(self) -> (Slot, u64) {
        match self {
            Field::InPort => (slot::IN_PORT, 0xffff),
            Field::EthSrc => (slot::ETH_SRC, 0xffff_ffff_ffff),
            Field::EthDst => (slot::ETH_DST, 0xffff_ffff_ffff),
            Field::EthType => (slot::ETH_TYPE, 0xffff),
            Field::VlanTci | Field::VlanVid | Field::VlanPcp => (slot::VLAN_TCI, 0xffff),
            Field::IpProto => (slot::IP_PROTO, 0xff),
            Field::IpTos | Field::IpDscp | Field::IpEcn => (slot::IP_TOS, 0xff),
            Field::IpTtl => (slot::IP_TTL, 0xff),
            Field::IpFrag => (slot::IP_FRAG, 0x3),
            Field::Ipv4Src | Field::ArpSpa => (slot::NW_SRC, 0xffff_ffff),
            Field::Ipv4Dst | Field::ArpTpa => (slot::NW_DST, 0xffff_ffff),
            Field::ArpOp => (slot::ARP_OP, 0xffff),
            Field::TpSrc => (slot::TP_SRC, 0xffff),
            Field::TpDst => (slot::TP_DST, 0xffff),
            Field::IcmpType => (slot::TP_SRC, 0xff),
            Field::IcmpCode => (slot::TP_DST, 0xff),
            Field::TunId => (slot::TUN_ID, u64::MAX),
            Field::TunSrc => (slot::TUN_SRC, 0xffff_ffff),
            Field::TunDst => (slot::TUN_DST, 0xffff_ffff),
            Field::Ipv6Src | Field::Ipv6Dst => unreachable!("IPv6 fields span two words"),
        }
    }
}

/// The OpenFlow prerequisite a field needs, as the user should write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prerequisite {
    None,
    /// `dl_type` 0x0800 or 0x86dd.
    Ip,
    Ipv4,
    Ipv6,
    Arp,
    /// IP and `nw_proto` 6, 17 or 132.
    TcpUdpSctp,
    /// ICMP over IPv4 (`nw_proto` 1) or ICMPv6 (58).
    Icmp,
}

impl Prerequisite {
    pub fn of(f: Field) -> Prerequisite {
        match f {
            Field::IpProto | Field::IpTos | Field::IpDscp | Field::IpEcn | Field::IpTtl | Field::IpFrag => {
                Prerequisite::Ip
            }
            Field::Ipv4Src | Field::Ipv4Dst => Prerequisite::Ipv4,
            Field::Ipv6Src | Field::Ipv6Dst => Prerequisite::Ipv6,
            Field::ArpOp | Field::ArpSpa | Field::ArpTpa => Prerequisite::Arp,
            Field::TpSrc | Field::TpDst => Prerequisite::TcpUdpSctp,
            Field::IcmpType | Field::IcmpCode => Prerequisite::Icmp,
            _ => Prerequisite::None,
        }
    }

    /// Its bit in [`Prerequisite::all_met_by`].
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Whether a match (value and mask) guarantees the prerequisite.
    pub fn met_by(self, m: &Match) -> bool {
        Prerequisite::all_met_by(m) & self.bit() != 0
    }

    /// The bits of every prerequisite the match guarantees (`None` always).
    fn all_met_by(m: &Match) -> u8 {
        use Prerequisite as P;
        let eth = m.exact(slot::ETH_TYPE).map(|v| v as u16);
        let proto = m.exact(slot::IP_PROTO).map(|v| v as u8);
        let (ipv4, ipv6, arp) =
            (eth == Some(ethertype::IPV4), eth == Some(ethertype::IPV6), eth == Some(ethertype::ARP));
        let l4 = (ipv4 || ipv6) && matches!(proto, Some(ipproto::TCP | ipproto::UDP | ipproto::SCTP));
        let icmp = (ipv4 && proto == Some(ipproto::ICMP)) || (ipv6 && proto == Some(ipproto::ICMPV6));
        [
            (true, P::None),
            (ipv4 || ipv6, P::Ip),
            (ipv4, P::Ipv4),
            (ipv6, P::Ipv6),
            (arp, P::Arp),
            (l4, P::TcpUdpSctp),
            (icmp, P::Icmp),
        ]
        .into_iter()
        .filter(|&(met, _)| met)
        .fold(0, |bits, (_, p)| bits | p.bit())
    }

    /// What to add to a match to meet it, for error messages.
    pub fn hint(self) -> &'static str {
        match self {
            Prerequisite::None => "",
            Prerequisite::Ip => "ip or ipv6 (dl_type=0x0800 or 0x86dd)",
            Prerequisite::Ipv4 => "ip (dl_type=0x0800)",
            Prerequisite::Ipv6 => "ipv6 (dl_type=0x86dd)",
            Prerequisite::Arp => "arp (dl_type=0x0806)",
            Prerequisite::TcpUdpSctp => "tcp, udp or sctp (ip with nw_proto=6, 17 or 132)",
            Prerequisite::Icmp => "icmp or icmp6",
        }
    }
}

/// Which packets a flow applies to: `key & mask == value`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Match {
    /// Always pre-masked (value & mask == value).
    pub value: FlowKey,
    pub mask: FlowKey,
}

impl fmt::Debug for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Match({self})")
    }
}

/// A second setting of the same key bits, with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict;

impl Match {
    /// Matches every packet.
    pub const ANY: Match = Match { value: FlowKey::ZERO, mask: FlowKey::ZERO };

    #[inline(always)]
    pub fn matches(&self, key: &FlowKey) -> bool {
        (0..KEY_WORDS).all(|i| key.0[i] & self.mask.0[i] == self.value.0[i])
    }

    /// Adds `value/mask` over `slot` (both unshifted). Bits already constrained must agree.
    pub fn set(&mut self, s: Slot, value: u64, mask: u64) -> Result<(), Conflict> {
        let mask = (mask & s.full()) << s.shift;
        let value = (value << s.shift) & mask;
        let w = s.word;
        let overlap = self.mask.0[w] & mask;
        if self.value.0[w] & overlap != value & overlap {
            return Err(Conflict);
        }
        self.mask.0[w] |= mask;
        self.value.0[w] |= value;
        Ok(())
    }

    /// The value of `slot` when the match fixes all its bits.
    pub fn exact(&self, s: Slot) -> Option<u64> {
        (s.get(&self.mask) == s.full()).then(|| s.get(&self.value))
    }

    pub fn set_ipv6(&mut self, src: bool, addr: Ipv6Addr, prefix: u8) -> Result<(), Conflict> {
        let v = u128::from(addr);
        let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
        let (hi, lo) =
            if src { (slot::IPV6_SRC_HI, slot::IPV6_SRC_LO) } else { (slot::IPV6_DST_HI, slot::IPV6_DST_LO) };
        self.set(hi, (v >> 64) as u64, (m >> 64) as u64)?;
        self.set(lo, v as u64, m as u64)
    }

    /// The exact match of a packet key's non-zero fields: how a key is shown and sent as a
    /// packet description.
    pub fn of_key(key: &FlowKey) -> Match {
        let mut m = Match::ANY;
        for &f in Field::ALL {
            match f {
                Field::VlanVid | Field::VlanPcp | Field::IpDscp | Field::IpEcn | Field::IcmpType | Field::IcmpCode => {}
                Field::ArpSpa | Field::ArpTpa => {}
                Field::Ipv6Src | Field::Ipv6Dst => {
                    let (hi, lo) = if f == Field::Ipv6Src {
                        (slot::IPV6_SRC_HI, slot::IPV6_SRC_LO)
                    } else {
                        (slot::IPV6_DST_HI, slot::IPV6_DST_LO)
                    };
                    if hi.get(key) != 0 || lo.get(key) != 0 {
                        let _ = m.set(hi, hi.get(key), u64::MAX);
                        let _ = m.set(lo, lo.get(key), u64::MAX);
                    }
                }
                _ => {
                    let (s, _) = f.slot_and_max();
                    let v = s.get(key);
                    if v != 0 {
                        let _ = m.set(s, v, s.full());
                    }
                }
            }
        }
        m
    }

    /// True if every packet this match selects is also selected by `self`: the rule OpenFlow
    /// uses for non-strict modify and delete ("at least as specific as the filter").
    pub fn covers(&self, narrower: &Match) -> bool {
        (0..KEY_WORDS).all(|i| {
            narrower.mask.0[i] & self.mask.0[i] == self.mask.0[i]
                && narrower.value.0[i] & self.mask.0[i] == self.value.0[i]
        })
    }

    /// The first field whose prerequisite the match does not meet.
    pub fn unmet_prerequisite(&self) -> Option<(Field, Prerequisite)> {
        // Checked on the mask bits directly (no text), against tables built at compile time:
        // this runs for every flow added.
        use Prerequisite as P;
        const IP: u8 = P::Ip.bit();
        const IPV4_OR_ARP: u8 = P::Ipv4.bit() | P::Arp.bit();
        const IPV6: u8 = P::Ipv6.bit();
        const ARP: u8 = P::Arp.bit();
        const L4_OR_ICMP: u8 = P::TcpUdpSctp.bit() | P::Icmp.bit();
        // The field's slot (and second slot), the field, the prerequisite an error names, and
        // the prerequisites any of which meets it.
        const CHECKS: [(Slot, Option<Slot>, Field, Prerequisite, u8); 11] = [
            (slot::IP_PROTO, None, Field::IpProto, P::Ip, IP),
            (slot::IP_TOS, None, Field::IpTos, P::Ip, IP),
            (slot::IP_TTL, None, Field::IpTtl, P::Ip, IP),
            (slot::IP_FRAG, None, Field::IpFrag, P::Ip, IP),
            (slot::NW_SRC, None, Field::Ipv4Src, P::Ipv4, IPV4_OR_ARP),
            (slot::NW_DST, None, Field::Ipv4Dst, P::Ipv4, IPV4_OR_ARP),
            (slot::IPV6_SRC_HI, Some(slot::IPV6_SRC_LO), Field::Ipv6Src, P::Ipv6, IPV6),
            (slot::IPV6_DST_HI, Some(slot::IPV6_DST_LO), Field::Ipv6Dst, P::Ipv6, IPV6),
            (slot::ARP_OP, None, Field::ArpOp, P::Arp, ARP),
            (slot::TP_SRC, None, Field::TpSrc, P::TcpUdpSctp, L4_OR_ICMP),
            (slot::TP_DST, None, Field::TpDst, P::TcpUdpSctp, L4_OR_ICMP),
        ];
        // The mask bits of the checks' fields, by what meets them: a valid flow (all of them)
        // is cleared by one pass over the key, and only a flow in error looks for its first
        // unmet field.
        const GROUPS: [u8; 5] = [IP, IPV4_OR_ARP, IPV6, ARP, L4_OR_ICMP];
        const NEEDS: [FlowKey; 5] = {
            let mut needs = [FlowKey::ZERO; 5];
            let mut i = 0;
            while i < CHECKS.len() {
                let (s, also, _, _, any_of) = CHECKS[i];
                let mut g = 0;
                while GROUPS[g] != any_of {
                    g += 1;
                }
                needs[g].0[s.word] |= s.full() << s.shift;
                if let Some(s) = also {
                    needs[g].0[s.word] |= s.full() << s.shift;
                }
                i += 1;
            }
            needs
        };
        let met = Prerequisite::all_met_by(self);
        let mut unmet = FlowKey::ZERO;
        for (&any_of, need) in GROUPS.iter().zip(&NEEDS) {
            if met & any_of == 0 {
                for w in 0..KEY_WORDS {
                    unmet.0[w] |= need.0[w];
                }
            }
        }
        if (0..KEY_WORDS).all(|w| self.mask.0[w] & unmet.0[w] == 0) {
            return None;
        }
        let set = |s: Slot| s.get(&self.mask) != 0;
        CHECKS.iter().find_map(|&(s, also, field, first, any_of)| {
            (met & any_of == 0 && (set(s) || also.is_some_and(set))).then_some((field, first))
        })
    }

    /// The fields this match constrains, with their text form, in a stable order. Shorthands
    /// (`ip`, `tcp`, ...) are not included; see `Display`.
    pub fn fields(&self) -> Vec<(Field, String)> {
        let mut out = Vec::new();
        let tci_mask = slot::VLAN_TCI.get(&self.mask) as u16;
        let tci = slot::VLAN_TCI.get(&self.value) as u16;
        for &f in Field::ALL {
            let text = match f {
                Field::VlanVid | Field::VlanPcp | Field::IpDscp | Field::IpEcn | Field::IcmpType | Field::IcmpCode => {
                    continue
                }
                Field::VlanTci => {
                    if tci_mask == 0 {
                        continue;
                    }
                    if tci_mask == VLAN_PRESENT | VLAN_VID_MASK && tci & VLAN_PRESENT != 0 {
                        out.push((Field::VlanVid, (tci & VLAN_VID_MASK).to_string()));
                        continue;
                    }
                    if tci_mask == VLAN_PRESENT | VLAN_PCP_MASK && tci & VLAN_PRESENT != 0 {
                        out.push((Field::VlanPcp, (tci >> 13).to_string()));
                        continue;
                    }
                    if tci_mask == 0xffff && tci & VLAN_PRESENT != 0 {
                        out.push((Field::VlanVid, (tci & VLAN_VID_MASK).to_string()));
                        out.push((Field::VlanPcp, (tci >> 13).to_string()));
                        continue;
                    }
                    if tci_mask == 0xffff {
                        format!("{tci:#06x}")
                    } else {
                        format!("{tci:#06x}/{tci_mask:#06x}")
                    }
                }
                Field::Ipv6Src | Field::Ipv6Dst => {
                    let (hi, lo) = if f == Field::Ipv6Src {
                        (slot::IPV6_SRC_HI, slot::IPV6_SRC_LO)
                    } else {
                        (slot::IPV6_DST_HI, slot::IPV6_DST_LO)
                    };
                    let m = ((hi.get(&self.mask) as u128) << 64) | lo.get(&self.mask) as u128;
                    if m == 0 {
                        continue;
                    }
                    let v = ((hi.get(&self.value) as u128) << 64) | lo.get(&self.value) as u128;
                    let addr = Ipv6Addr::from(v);
                    if m == u128::MAX {
                        addr.to_string()
                    } else if m.leading_ones() + m.trailing_zeros() == 128 {
                        format!("{addr}/{}", m.leading_ones())
                    } else {
                        format!("{addr}/{}", Ipv6Addr::from(m))
                    }
                }
                _ => {
                    let (s, max) = f.slot_and_max();
                    // Fields that share bits print under the name the layout suggests.
                    let is_arp = self.exact(slot::ETH_TYPE) == Some(ethertype::ARP as u64);
                    if matches!(f, Field::Ipv4Src | Field::Ipv4Dst) && is_arp
                        || matches!(f, Field::ArpSpa | Field::ArpTpa) && !is_arp
                    {
                        continue;
                    }
                    if matches!(f, Field::TpSrc | Field::TpDst) && Prerequisite::Icmp.met_by(self) {
                        let name_field = if f == Field::TpSrc { Field::IcmpType } else { Field::IcmpCode };
                        let m = s.get(&self.mask);
                        if m != 0 {
                            out.push((name_field, s.get(&self.value).to_string()));
                        }
                        continue;
                    }
                    if matches!(f, Field::IpTos) {
                        let m = s.get(&self.mask);
                        let v = s.get(&self.value);
                        match m {
                            0 => {}
                            0xfc => out.push((Field::IpDscp, (v >> 2).to_string())),
                            0x03 => out.push((Field::IpEcn, (v & 3).to_string())),
                            _ => {
                                out.push((Field::IpDscp, (v >> 2).to_string()));
                                out.push((Field::IpEcn, (v & 3).to_string()));
                            }
                        }
                        continue;
                    }
                    let m = s.get(&self.mask);
                    if m == 0 {
                        continue;
                    }
                    let v = s.get(&self.value);
                    let full = m == max;
                    match f.kind() {
                        Kind::Mac => {
                            let a = MacAddr::from_u64(v);
                            if full {
                                a.to_string()
                            } else {
                                format!("{a}/{}", MacAddr::from_u64(m))
                            }
                        }
                        Kind::Ipv4 => {
                            let a = Ipv4Addr::from(v as u32);
                            let m32 = m as u32;
                            if full {
                                a.to_string()
                            } else if m32.leading_ones() + m32.trailing_zeros() == 32 {
                                format!("{a}/{}", m32.leading_ones())
                            } else {
                                format!("{a}/{}", Ipv4Addr::from(m32))
                            }
                        }
                        Kind::Hex if full => format!("{v:#x}"),
                        Kind::Hex => format!("{v:#x}/{m:#x}"),
                        Kind::Frag => match (v, m) {
                            (0, _) => "no".into(),
                            (1, 1) => "yes".into(),
                            (1, _) => "first".into(),
                            (3, _) => "later".into(),
                            _ => format!("{v}/{m}"),
                        },
                        Kind::Int | Kind::Ipv6 if full => v.to_string(),
                        Kind::Int | Kind::Ipv6 => format!("{v:#x}/{m:#x}"),
                    }
                }
            };
            out.push((f, text));
        }
        out
    }
}

impl fmt::Display for Match {
    /// ovs-ofctl syntax: a protocol shorthand (`ip`, `tcp`, `arp`, ...) when the match fixes
    /// dl_type (and nw_proto), then the other fields; `any` for the empty match.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eth = self.exact(slot::ETH_TYPE).map(|v| v as u16);
        let proto = self.exact(slot::IP_PROTO).map(|v| v as u8);
        let short = match (eth, proto) {
            (Some(ethertype::IPV4), Some(ipproto::TCP)) => Some(("tcp", 2)),
            (Some(ethertype::IPV4), Some(ipproto::UDP)) => Some(("udp", 2)),
            (Some(ethertype::IPV4), Some(ipproto::SCTP)) => Some(("sctp", 2)),
            (Some(ethertype::IPV4), Some(ipproto::ICMP)) => Some(("icmp", 2)),
            (Some(ethertype::IPV6), Some(ipproto::TCP)) => Some(("tcp6", 2)),
            (Some(ethertype::IPV6), Some(ipproto::UDP)) => Some(("udp6", 2)),
            (Some(ethertype::IPV6), Some(ipproto::SCTP)) => Some(("sctp6", 2)),
            (Some(ethertype::IPV6), Some(ipproto::ICMPV6)) => Some(("icmp6", 2)),
            (Some(ethertype::IPV4), _) => Some(("ip", 1)),
            (Some(ethertype::IPV6), _) => Some(("ipv6", 1)),
            (Some(ethertype::ARP), _) => Some(("arp", 1)),
            _ => None,
        };
        let mut parts: Vec<String> = Vec::new();
        if let Some((name, _)) = short {
            parts.push(name.to_string());
        }
        for (field, text) in self.fields() {
            let implied = match short {
                Some((_, 2)) => matches!(field, Field::EthType | Field::IpProto),
                Some(_) => field == Field::EthType,
                None => false,
            };
            if !implied {
                parts.push(format!("{}={text}", field.name()));
            }
        }
        if parts.is_empty() {
            write!(f, "any")
        } else {
            write!(f, "{}", parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_detects_conflicts_but_merges_disjoint_bits() {
        let mut m = Match::ANY;
        m.set(slot::VLAN_TCI, (VLAN_PRESENT | 100) as u64, (VLAN_PRESENT | VLAN_VID_MASK) as u64).unwrap();
        m.set(slot::VLAN_TCI, (5 << 13 | VLAN_PRESENT) as u64, (VLAN_PCP_MASK | VLAN_PRESENT) as u64).unwrap();
        assert_eq!(m.exact(slot::VLAN_TCI), Some((5 << 13 | VLAN_PRESENT | 100) as u64));
        assert_eq!(m.set(slot::VLAN_TCI, 0, 0xffff), Err(Conflict));
        assert!(m.set(slot::IN_PORT, 1, 0xffff).is_ok());
        assert_eq!(m.set(slot::IN_PORT, 2, 0xffff), Err(Conflict));
    }

    #[test]
    fn matches_and_covers() {
        let mut wide = Match::ANY;
        wide.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
        wide.set(slot::NW_DST, 0x0a00_0000, 0xff00_0000).unwrap();
        let mut narrow = wide;
        narrow.set(slot::NW_DST, 0x0a01_0203, 0xffff_ffff).unwrap();
        narrow.set(slot::IP_PROTO, 6, 0xff).unwrap();
        assert!(wide.covers(&narrow));
        assert!(!narrow.covers(&wide));
        assert!(Match::ANY.covers(&narrow));
        let mut k = FlowKey::ZERO;
        slot::ETH_TYPE.set(&mut k, 0x0800);
        slot::NW_DST.set(&mut k, 0x0a01_0203);
        assert!(wide.matches(&k));
        assert!(!narrow.matches(&k), "nw_proto 0 != 6");
        slot::IP_PROTO.set(&mut k, 6);
        assert!(narrow.matches(&k));
    }

    #[test]
    fn prerequisites() {
        let mut m = Match::ANY;
        m.set(slot::TP_DST, 80, 0xffff).unwrap();
        assert_eq!(m.unmet_prerequisite(), Some((Field::TpDst, Prerequisite::TcpUdpSctp)));
        m.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
        assert_eq!(m.unmet_prerequisite(), Some((Field::TpDst, Prerequisite::TcpUdpSctp)));
        m.set(slot::IP_PROTO, 6, 0xff).unwrap();
        assert_eq!(m.unmet_prerequisite(), None);
        let mut a = Match::ANY;
        a.set(slot::NW_SRC, 1, 0xffff_ffff).unwrap();
        assert_eq!(a.unmet_prerequisite(), Some((Field::Ipv4Src, Prerequisite::Ipv4)));
    }

    /// `Prerequisite::met_by` as written before it shared its bits with `unmet_prerequisite`.
    fn met_by_reference(p: Prerequisite, m: &Match) -> bool {
        let eth = m.exact(slot::ETH_TYPE).map(|v| v as u16);
        let proto = m.exact(slot::IP_PROTO).map(|v| v as u8);
        let ip = matches!(eth, Some(ethertype::IPV4 | ethertype::IPV6));
        match p {
            Prerequisite::None => true,
            Prerequisite::Ip => ip,
            Prerequisite::Ipv4 => eth == Some(ethertype::IPV4),
            Prerequisite::Ipv6 => eth == Some(ethertype::IPV6),
            Prerequisite::Arp => eth == Some(ethertype::ARP),
            Prerequisite::TcpUdpSctp => ip && matches!(proto, Some(ipproto::TCP | ipproto::UDP | ipproto::SCTP)),
            Prerequisite::Icmp => {
                (eth == Some(ethertype::IPV4) && proto == Some(ipproto::ICMP))
                    || (eth == Some(ethertype::IPV6) && proto == Some(ipproto::ICMPV6))
            }
        }
    }

    /// The rule as written before `unmet_prerequisite` was made fast: each field with the
    /// prerequisites that satisfy it, checked one by one.
    fn unmet_by_table(m: &Match) -> Option<(Field, Prerequisite)> {
        use Prerequisite::*;
        let set = |s: Slot| s.get(&m.mask) != 0;
        let checks: [(bool, Field, &[Prerequisite]); 11] = [
            (set(slot::IP_PROTO), Field::IpProto, &[Ip]),
            (set(slot::IP_TOS), Field::IpTos, &[Ip]),
            (set(slot::IP_TTL), Field::IpTtl, &[Ip]),
            (set(slot::IP_FRAG), Field::IpFrag, &[Ip]),
            (set(slot::NW_SRC), Field::Ipv4Src, &[Ipv4, Arp]),
            (set(slot::NW_DST), Field::Ipv4Dst, &[Ipv4, Arp]),
            (set(slot::IPV6_SRC_HI) || set(slot::IPV6_SRC_LO), Field::Ipv6Src, &[Ipv6]),
            (set(slot::IPV6_DST_HI) || set(slot::IPV6_DST_LO), Field::Ipv6Dst, &[Ipv6]),
            (set(slot::ARP_OP), Field::ArpOp, &[Arp]),
            (set(slot::TP_SRC), Field::TpSrc, &[TcpUdpSctp, Icmp]),
            (set(slot::TP_DST), Field::TpDst, &[TcpUdpSctp, Icmp]),
        ];
        checks
            .into_iter()
            .find(|(on, _, any_of)| *on && !any_of.iter().any(|&p| met_by_reference(p, m)))
            .map(|(_, f, a)| (f, a[0]))
    }

    #[test]
    fn prerequisites_agree_with_met_by_for_every_combination() {
        let fields = [
            (slot::IP_PROTO, 6),
            (slot::IP_TOS, 4),
            (slot::IP_TTL, 9),
            (slot::IP_FRAG, 1),
            (slot::NW_SRC, 1),
            (slot::NW_DST, 2),
            (slot::IPV6_SRC_LO, 3),
            (slot::IPV6_DST_HI, 4),
            (slot::ARP_OP, 1),
            (slot::TP_SRC, 5),
            (slot::TP_DST, 6),
        ];
        let eth_types = [None, Some(0x0800), Some(0x86dd), Some(0x0806), Some(0x8100)];
        let protos = [None, Some(ipproto::TCP), Some(ipproto::UDP), Some(ipproto::SCTP), Some(1), Some(58), Some(47)];
        let mut checked = 0;
        for eth in eth_types {
            for proto in protos {
                // Each field alone and each pair of fields, over every ethertype and protocol.
                for i in 0..fields.len() {
                    for j in i..fields.len() {
                        let mut m = Match::ANY;
                        if let Some(e) = eth {
                            m.set(slot::ETH_TYPE, e, 0xffff).unwrap();
                        }
                        if let Some(p) = proto {
                            m.set(slot::IP_PROTO, p as u64, 0xff).unwrap();
                        }
                        for (s, v) in [fields[i], fields[j]] {
                            if s != slot::IP_PROTO || proto.is_none() {
                                m.set(s, v, s.full()).unwrap();
                            }
                        }
                        assert_eq!(m.unmet_prerequisite(), unmet_by_table(&m), "{m}");
                        for p in [
                            Prerequisite::None,
                            Prerequisite::Ip,
                            Prerequisite::Ipv4,
                            Prerequisite::Ipv6,
                            Prerequisite::Arp,
                            Prerequisite::TcpUdpSctp,
                            Prerequisite::Icmp,
                        ] {
                            assert_eq!(p.met_by(&m), met_by_reference(p, &m), "{p:?} of {m}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 7 * 66);
        // A partly masked ethertype meets nothing.
        let mut m = Match::ANY;
        m.set(slot::ETH_TYPE, 0x0800, 0xff00).unwrap();
        m.set(slot::NW_DST, 1, 0xffff_ffff).unwrap();
        assert_eq!(m.unmet_prerequisite(), Some((Field::Ipv4Dst, Prerequisite::Ipv4)));
        assert_eq!(unmet_by_table(&m), m.unmet_prerequisite());
    }

    #[test]
    fn display_uses_shorthands_and_prefixes() {
        let mut m = Match::ANY;
        assert_eq!(m.to_string(), "any");
        m.set(slot::IN_PORT, 1, 0xffff).unwrap();
        m.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
        m.set(slot::IP_PROTO, 6, 0xff).unwrap();
        m.set(slot::NW_DST, 0x0a00_0000, 0xffff_ff00).unwrap();
        m.set(slot::TP_DST, 0x50, 0xfff0).unwrap();
        assert_eq!(m.to_string(), "tcp,in_port=1,nw_dst=10.0.0.0/24,tp_dst=0x50/0xfff0");
        let mut v = Match::ANY;
        v.set(slot::VLAN_TCI, (VLAN_PRESENT | 7) as u64, (VLAN_PRESENT | VLAN_VID_MASK) as u64).unwrap();
        v.set(slot::ETH_DST, 0x0200_0000_0001, 0xffff_ffff_ffff).unwrap();
        assert_eq!(v.to_string(), "dl_dst=02:00:00:00:00:01,dl_vlan=7");
        let mut six = Match::ANY;
        six.set(slot::ETH_TYPE, 0x86dd, 0xffff).unwrap();
        six.set_ipv6(true, "2001:db8::".parse().unwrap(), 32).unwrap();
        assert_eq!(six.to_string(), "ipv6,ipv6_src=2001:db8::/32");
    }
}
