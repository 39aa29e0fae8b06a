//! The L2 learning switch stage ("normal" forwarding, as OVS calls it).
//!
//! For a frame that arrived on `in_port` it learns (VLAN, source MAC) → `in_port` and decides:
//! known unicast goes to the one port its destination was learned on; broadcast, multicast and
//! unknown unicast flood to every other port; nothing goes back out of the ingress port.
//! Learning is per VLAN (independent VLAN learning); tagged frames keep their tag.

use crate::mac_table::{Learned, MacTable, PortIdx};
use crate::stats::{bump, DropReason, WorkerStats};
use crate::wire::{EthernetFrame, MacAddr, WireError};

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

/// The header fields the L2 stage works on, parsed once per frame. Addresses are in u64 form
/// ([`MacAddr::to_u64`]): what the MAC table hashes and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct L2Headers {
    /// VLAN id of the outermost tag; 0 for untagged frames.
    pub vlan: u16,
    pub src: u64,
    pub dst: u64,
}

/// Parses the fields the stage needs, or says why the frame is malformed.
#[inline(always)]
pub fn parse(frame: &[u8]) -> Result<L2Headers, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(parse_drop_reason)?;
    Ok(L2Headers { vlan: eth.vlan_id(), src: eth.src_u64(), dst: eth.dst_u64() })
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
    match parse(frame) {
        Ok(h) => decide_parsed(table, settings, in_port, &h, true, now, stats),
        Err(reason) => L2Decision::Drop(reason),
    }
}

/// [`decide`] for headers parsed already. `learn` false skips learning, for a frame whose
/// source was just learned from the frame before it (same port, VLAN and MAC).
#[inline]
pub fn decide_parsed(
    table: &MacTable,
    settings: &L2Settings,
    in_port: PortIdx,
    h: &L2Headers,
    learn: bool,
    now: u32,
    stats: &WorkerStats,
) -> L2Decision {
    if !MacAddr::u64_is_valid_source(h.src) {
        return L2Decision::Drop(DropReason::InvalidSourceMac);
    }
    if learn {
        match table.learn_u64(h.vlan, h.src, in_port, now) {
            Learned::Unchanged | Learned::Refreshed | Learned::Static => {}
            Learned::New => bump(&stats.mac_learned, 1),
            Learned::Moved => bump(&stats.mac_moved, 1),
            Learned::TableFull => bump(&stats.mac_learn_failed, 1),
        }
    }
    if MacAddr::u64_is_multicast(h.dst) {
        if MacAddr::u64_is_link_local_reserved(h.dst) && !settings.forward_link_local {
            return L2Decision::Drop(DropReason::LinkLocalDestination);
        }
        return L2Decision::Flood;
    }
    match table.lookup_u64(h.vlan, h.dst) {
        Some(port) if port == in_port => L2Decision::Drop(DropReason::DestinationOnIngressPort),
        Some(port) => L2Decision::Unicast(port),
        None => L2Decision::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
