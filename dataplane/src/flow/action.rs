//! Flow actions and the checks that make a flow's action list valid.

use std::fmt;
use std::net::Ipv4Addr;

use super::matching::{Match, Prerequisite};
use crate::wire::MacAddr;

/// Most tables a pipeline has (numbered 0 to MAX_TABLES - 1).
pub const MAX_TABLES: usize = 255;

/// One action. A flow's actions run in order; several outputs make several copies, each
/// with the changes made before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send to the port with this number.
    Output(u32),
    /// The L2 learning switch decides (learn the source, forward or flood).
    Normal,
    /// Every port but the ingress port.
    Flood,
    /// Back out of the ingress port.
    InPort,
    /// Push an 802.1Q (0x8100) or 802.1ad (0x88a8) tag with VID 0 and PCP 0.
    PushVlan(u16),
    PopVlan,
    /// Set the VID of the outer tag (pushing a 0x8100 tag on an untagged frame, as OVS's
    /// mod_vlan_vid does).
    SetVlanVid(u16),
    SetVlanPcp(u8),
    SetEthSrc(MacAddr),
    SetEthDst(MacAddr),
    SetIpv4Src(Ipv4Addr),
    SetIpv4Dst(Ipv4Addr),
    /// Set the DSCP (upper 6 bits of the IPv4 TOS / IPv6 traffic class).
    SetIpDscp(u8),
    /// Decrement the IPv4 TTL / IPv6 hop limit; a packet whose TTL would reach zero is
    /// dropped and counted (`ttl_exceeded`).
    DecTtl,
    SetTpSrc(u16),
    SetTpDst(u16),
    /// Continue in a later table.
    GotoTable(u8),
    /// Count the packet in a named counter.
    Counter(String),
    /// Set the tunnel ID (VNI) an output to a tunnel port uses, and `tun_id` for later
    /// tables.
    SetTunnelId(u64),
    /// Set the remote VTEP an output to a tunnel port without a fixed `remote_ip` uses.
    SetTunDst(Ipv4Addr),
}

impl Action {
    /// Whether the action changes packet bytes (a copy must be taken before it when an
    /// earlier output shares the buffer).
    pub fn modifies_packet(&self) -> bool {
        matches!(
            self,
            Action::PushVlan(_)
                | Action::PopVlan
                | Action::SetVlanVid(_)
                | Action::SetVlanPcp(_)
                | Action::SetEthSrc(_)
                | Action::SetEthDst(_)
                | Action::SetIpv4Src(_)
                | Action::SetIpv4Dst(_)
                | Action::SetIpDscp(_)
                | Action::DecTtl
                | Action::SetTpSrc(_)
                | Action::SetTpDst(_)
        )
    }

    /// Whether the action changes the flow key a later table sees (packet bytes or
    /// metadata).
    pub fn changes_key(&self) -> bool {
        self.modifies_packet() || matches!(self, Action::SetTunnelId(_) | Action::SetTunDst(_))
    }

    /// Whether the action sends the packet somewhere.
    pub fn outputs(&self) -> bool {
        matches!(self, Action::Output(_) | Action::Normal | Action::Flood | Action::InPort)
    }

    fn prerequisite(&self) -> Prerequisite {
        match self {
            Action::SetIpv4Src(_) | Action::SetIpv4Dst(_) => Prerequisite::Ipv4,
            Action::SetIpDscp(_) | Action::DecTtl => Prerequisite::Ip,
            Action::SetTpSrc(_) | Action::SetTpDst(_) => Prerequisite::TcpUdpSctp,
            _ => Prerequisite::None,
        }
    }
}

impl fmt::Display for Action {
    /// ovs-ofctl syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Normal => write!(f, "NORMAL"),
            Action::Flood => write!(f, "FLOOD"),
            Action::InPort => write!(f, "IN_PORT"),
            Action::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            Action::PopVlan => write!(f, "pop_vlan"),
            Action::SetVlanVid(v) => write!(f, "mod_vlan_vid:{v}"),
            Action::SetVlanPcp(p) => write!(f, "mod_vlan_pcp:{p}"),
            Action::SetEthSrc(m) => write!(f, "mod_dl_src:{m}"),
            Action::SetEthDst(m) => write!(f, "mod_dl_dst:{m}"),
            Action::SetIpv4Src(a) => write!(f, "mod_nw_src:{a}"),
            Action::SetIpv4Dst(a) => write!(f, "mod_nw_dst:{a}"),
            Action::SetIpDscp(d) => write!(f, "set_field:{d}->ip_dscp"),
            Action::DecTtl => write!(f, "dec_ttl"),
            Action::SetTpSrc(p) => write!(f, "mod_tp_src:{p}"),
            Action::SetTpDst(p) => write!(f, "mod_tp_dst:{p}"),
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
            Action::Counter(n) => write!(f, "counter:{n}"),
            Action::SetTunnelId(v) => write!(f, "set_tunnel:{v:#x}"),
            Action::SetTunDst(a) => write!(f, "set_field:{a}->tun_dst"),
        }
    }
}

/// Formats an action list as ovs-ofctl does (`drop` for none).
pub fn format_actions(actions: &[Action]) -> String {
    if actions.is_empty() {
        "drop".into()
    } else {
        actions.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// What is wrong with an action list: the index of the action and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub index: usize,
    pub message: String,
}

/// Checks an action list of a flow in `table` with `m`: goto only forward and last,
/// prerequisites of header-changing actions met by the match (as OpenFlow requires), valid
/// values, and output ports that `port_exists` knows.
pub fn validate_actions(
    table: u8,
    m: &Match,
    actions: &[Action],
    port_exists: &dyn Fn(u32) -> bool,
) -> Result<(), ActionError> {
    let err = |index: usize, message: String| Err(ActionError { index, message });
    for (i, a) in actions.iter().enumerate() {
        let p = a.prerequisite();
        if !p.met_by(m) {
            return err(i, format!("{a} needs the match to include {}", p.hint()));
        }
        match a {
            Action::GotoTable(t) => {
                if *t <= table {
                    return err(i, format!("goto_table:{t} must go forward (this flow is in table {table})"));
                }
                if *t as usize >= MAX_TABLES {
                    return err(i, format!("goto_table:{t}: tables are 0 to {}", MAX_TABLES - 1));
                }
                if i + 1 != actions.len() {
                    return err(i, "goto_table must be the last action".into());
                }
            }
            Action::Output(port) if !port_exists(*port) => {
                return err(i, format!("output:{port}: no port number {port}"));
            }
            Action::SetVlanVid(v) if *v > 4095 => return err(i, format!("mod_vlan_vid:{v}: VID is 0 to 4095")),
            Action::SetVlanPcp(p) if *p > 7 => return err(i, format!("mod_vlan_pcp:{p}: PCP is 0 to 7")),
            Action::SetIpDscp(d) if *d > 63 => return err(i, format!("ip_dscp {d}: DSCP is 0 to 63")),
            Action::PushVlan(t) if *t != 0x8100 && *t != 0x88a8 => {
                return err(i, format!("push_vlan:{t:#06x}: the TPID is 0x8100 or 0x88a8"))
            }
            Action::SetTpSrc(_) | Action::SetTpDst(_)
                if m.exact(crate::flow::key::slot::IP_PROTO) == Some(crate::flow::key::ipproto::SCTP as u64) =>
            {
                return err(i, format!("{a}: rewriting SCTP ports is not supported (its CRC32c is not incremental)"))
            }
            Action::SetTunnelId(v) if *v > 0x00ff_ffff => {
                return err(i, format!("set_tunnel:{v:#x}: VXLAN and Geneve VNIs are 24 bits (at most 0xffffff)"))
            }
            Action::SetTunDst(a) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() => {
                return err(i, format!("{a}: tun_dst must be a unicast address"))
            }
            Action::Counter(name) if !valid_counter_name(name) => {
                return err(i, format!("counter:{name}: names are 1 to 64 letters, digits, '_', '-' or '.'"))
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn valid_counter_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::slot;

    fn tcp_match() -> Match {
        let mut m = Match::ANY;
        m.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
        m.set(slot::IP_PROTO, 6, 0xff).unwrap();
        m
    }

    #[test]
    fn goto_must_go_forward_and_be_last() {
        let ok = |_: u32| true;
        assert!(validate_actions(0, &Match::ANY, &[Action::Output(1), Action::GotoTable(3)], &ok).is_ok());
        let e = validate_actions(3, &Match::ANY, &[Action::GotoTable(3)], &ok).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(e.message.contains("must go forward"));
        let e = validate_actions(0, &Match::ANY, &[Action::GotoTable(1), Action::Output(2)], &ok).unwrap_err();
        assert!(e.message.contains("last action"));
    }

    #[test]
    fn header_changes_need_their_headers_matched() {
        let ok = |_: u32| true;
        let e = validate_actions(0, &Match::ANY, &[Action::DecTtl], &ok).unwrap_err();
        assert!(e.message.contains("dec_ttl needs the match to include ip"), "{}", e.message);
        assert!(validate_actions(0, &tcp_match(), &[Action::DecTtl, Action::SetTpDst(8080)], &ok).is_ok());
        let mut udp_less = Match::ANY;
        udp_less.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
        let e = validate_actions(0, &udp_less, &[Action::Output(1), Action::SetTpSrc(1)], &ok).unwrap_err();
        assert_eq!(e.index, 1);
    }

    #[test]
    fn unknown_output_port_is_named() {
        let e = validate_actions(0, &Match::ANY, &[Action::Output(9)], &|p| p == 1).unwrap_err();
        assert_eq!(e.message, "output:9: no port number 9");
    }

    #[test]
    fn display_round_trip_names() {
        let a = vec![Action::SetEthDst(MacAddr([2, 0, 0, 0, 0, 1])), Action::Output(2), Action::GotoTable(5)];
        assert_eq!(format_actions(&a), "mod_dl_dst:02:00:00:00:00:01,output:2,goto_table:5");
        assert_eq!(format_actions(&[]), "drop");
    }
}
