//! The L2 learning switch stage ("normal" forwarding, as OVS calls it).
//!
//! For a frame that arrived on `in_port` it learns (VLAN, source MAC) → `in_port` and decides:
//! known unicast goes to the one port its destination was learned on; broadcast, multicast and
//! unknown unicast flood to every other port; nothing goes back out of the ingress port.
//! Learning is per VLAN (independent VLAN learning); tagged frames keep their tag.

use crate::mac_table::{Learned, MacTable, PortIdx};
use crate::stats::{bump, DropReason, WorkerStats};
use crate::wire::{EthernetFrame, WireError};

/// What the L2 stage decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Decision {
    /// Send to this one port.
    Unicast(PortIdx),
    /// Send to every port but the ingress port.
    Flood,
    Drop(DropReason),
}

/// Settings of the stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct L2Settings {
    /// Forward frames to the 802.1D reserved groups 01:80:c2:00:00:0x (STP, LACP, LLDP).
    /// Off by default, as a standard bridge (and OVS without `forward-bpdu`).
    pub forward_link_local: bool,
}

/// The parse-stage drop reason for a header the wire views rejected.
pub fn parse_drop_reason(e: WireError) -> DropReason {
    match e {
        WireError::Truncated { layer: "vlan", .. } => DropReason::VlanTruncated,
        WireError::Truncated { .. } => DropReason::FrameTooShort,
    }
}

/// Learns from and decides for one frame. `now` is the switch's coarse clock in seconds.
#[inline]
pub fn decide(
    table: &MacTable,
    settings: &L2Settings,
    in_port: PortIdx,
    frame: &[u8],
    now: u32,
    stats: &WorkerStats,
) -> L2Decision {
    let eth = match EthernetFrame::new_checked(frame) {
        Ok(eth) => eth,
        Err(e) => return L2Decision::Drop(parse_drop_reason(e)),
    };
    let vlan = eth.vlan().map_or(0, |tag| tag.vid);
    let src = eth.src_addr();
    if !src.is_valid_source() {
        return L2Decision::Drop(DropReason::InvalidSourceMac);
    }
    match table.learn(vlan, src, in_port, now) {
        Learned::Unchanged | Learned::Refreshed | Learned::Static => {}
        Learned::New => bump(&stats.mac_learned, 1),
        Learned::Moved => bump(&stats.mac_moved, 1),
        Learned::TableFull => bump(&stats.mac_learn_failed, 1),
    }
    let dst = eth.dst_addr();
    if dst.is_multicast() {
        if dst.is_link_local_reserved() && !settings.forward_link_local {
            return L2Decision::Drop(DropReason::LinkLocalDestination);
        }
        return L2Decision::Flood;
    }
    match table.lookup(vlan, dst) {
        Some(port) if port == in_port => L2Decision::Drop(DropReason::DestinationOnIngressPort),
        Some(port) => L2Decision::Unicast(port),
        None => L2Decision::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    fn frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    fn setup() -> (MacTable, L2Settings, WorkerStats) {
        (MacTable::new(64), L2Settings::default(), WorkerStats::default())
    }

    #[test]
    fn unknown_unicast_floods_then_learned_goes_unicast() {
        let (t, s, st) = setup();
        assert_eq!(decide(&t, &s, 0, &frame(B, A, None), 1, &st), L2Decision::Flood);
        assert_eq!(decide(&t, &s, 1, &frame(A, B, None), 1, &st), L2Decision::Unicast(0));
        assert_eq!(decide(&t, &s, 0, &frame(B, A, None), 1, &st), L2Decision::Unicast(1));
        assert_eq!(st.mac_learned.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn broadcast_floods_and_learns() {
        let (t, s, st) = setup();
        assert_eq!(decide(&t, &s, 2, &frame(BCAST, A, None), 1, &st), L2Decision::Flood);
        assert_eq!(t.lookup(0, MacAddr(A)), Some(2));
    }

    #[test]
    fn never_back_out_of_ingress() {
        let (t, s, st) = setup();
        decide(&t, &s, 0, &frame(BCAST, A, None), 1, &st);
        decide(&t, &s, 0, &frame(BCAST, B, None), 1, &st);
        assert_eq!(
            decide(&t, &s, 0, &frame(B, A, None), 1, &st),
            L2Decision::Drop(DropReason::DestinationOnIngressPort)
        );
    }

    #[test]
    fn vlans_learn_independently() {
        let (t, s, st) = setup();
        decide(&t, &s, 1, &frame(BCAST, B, Some(10)), 1, &st);
        assert_eq!(decide(&t, &s, 0, &frame(B, A, Some(10)), 1, &st), L2Decision::Unicast(1));
        assert_eq!(decide(&t, &s, 0, &frame(B, A, Some(20)), 1, &st), L2Decision::Flood);
        assert_eq!(decide(&t, &s, 0, &frame(B, A, None), 1, &st), L2Decision::Flood);
    }

    #[test]
    fn malformed_frames_are_dropped_with_reasons() {
        let (t, s, st) = setup();
        let short = &frame(B, A, None)[..13];
        assert_eq!(decide(&t, &s, 0, short, 1, &st), L2Decision::Drop(DropReason::FrameTooShort));
        let cut_tag = &frame(B, A, Some(5))[..16];
        assert_eq!(decide(&t, &s, 0, cut_tag, 1, &st), L2Decision::Drop(DropReason::VlanTruncated));
        assert_eq!(decide(&t, &s, 0, &frame(A, BCAST, None), 1, &st), L2Decision::Drop(DropReason::InvalidSourceMac));
        assert!(t.is_empty(), "nothing learned from malformed frames");
    }

    #[test]
    fn link_local_groups_are_not_forwarded_by_default() {
        let (t, mut s, st) = setup();
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_eq!(decide(&t, &s, 0, &frame(stp, A, None), 1, &st), L2Decision::Drop(DropReason::LinkLocalDestination));
        s.forward_link_local = true;
        assert_eq!(decide(&t, &s, 0, &frame(stp, A, None), 1, &st), L2Decision::Flood);
    }
}
