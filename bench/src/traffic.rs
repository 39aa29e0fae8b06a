//! Frames of the traffic generator: per flow and size, with a stamp (flow, sequence number,
//! TX time) in the UDP payload that the receive side finds again, plain or inside VXLAN.
//!
//! Flow `i` uses the addresses of [`crate::pcap::flow_frame`] (so rules made by `rulegen`
//! match it); the UDP checksum is zero (allowed for IPv4) because the stamp changes per packet.

use dataplane::tunnel::wire::ENCAP_LEN;

use crate::pcap::{flow_headers, vxlan_headers};

/// Marks a stamped payload.
pub const MAGIC: u16 = 0x5354;
/// Ethernet + IPv4 + UDP header bytes before the stamp.
pub const PLAIN_HEADER: usize = 42;
/// Stamp bytes: magic u16, flow u16, sequence u32 (wraps), TX TSC u64: 16 bytes, so a
/// 64-byte frame (18 bytes of UDP payload) holds it.
pub const STAMP_LEN: usize = 16;

/// IMIX (simple, 7:4:1) frame sizes without FCS: 64, 594 and 1518 bytes on the wire.
pub const IMIX: [usize; 12] = [60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514];

/// The VXLAN outer headers the generator puts around frames (remote VTEP 172.31.0.2 ->
/// switch VTEP 172.31.0.1, as `pcapgen --vxlan` and `bench/tunnels.sh`).
pub struct Vxlan {
    pub vni: u32,
    pub dst_mac: [u8; 6],
}

/// The headers (everything before the stamp) of flow `i` in a frame of `len` bytes.
pub fn headers(i: u16, len: usize, vxlan: Option<&Vxlan>) -> Vec<u8> {
    let inner_len = if vxlan.is_some() { len - ENCAP_LEN } else { len };
    let inner = flow_headers(i, inner_len, 0);
    match vxlan {
        Some(v) => [&vxlan_headers(v.vni, v.dst_mac, &inner, inner_len)[..], &inner[..]].concat(),
        None => inner.to_vec(),
    }
}

/// Writes the stamp at `at`.
#[inline]
pub fn stamp(frame: &mut [u8], at: usize, flow: u16, seq: u32, tsc: u64) {
    frame[at..at + 2].copy_from_slice(&MAGIC.to_be_bytes());
    frame[at + 2..at + 4].copy_from_slice(&flow.to_be_bytes());
    frame[at + 4..at + 8].copy_from_slice(&seq.to_le_bytes());
    frame[at + 8..at + 16].copy_from_slice(&tsc.to_le_bytes());
}

/// Finds a stamp in a received frame: after plain headers, or after VXLAN plus plain
/// headers (the switch may have encapsulated or decapsulated it). (flow, seq, tx tsc).
#[inline]
pub fn find_stamp(frame: &[u8]) -> Option<(u16, u32, u64)> {
    for at in [PLAIN_HEADER, PLAIN_HEADER + ENCAP_LEN] {
        let Some(s) = frame.get(at..at + STAMP_LEN) else { continue };
        // The UDP ports must be the generator's too: a stray frame rarely carries both.
        if s[0..2] == MAGIC.to_be_bytes() && frame[at - 8..at - 4] == [0x04, 0xd2, 0x16, 0x2e] {
            let flow = u16::from_be_bytes([s[2], s[3]]);
            let seq = u32::from_le_bytes(s[4..8].try_into().unwrap());
            let tsc = u64::from_le_bytes(s[8..16].try_into().unwrap());
            return Some((flow, seq, tsc));
        }
    }
    None
}

/// Whether sequence number `seq` comes before `last` (with wrap-around).
#[inline]
pub fn seq_before(seq: u32, last: u32) -> bool {
    (seq.wrapping_sub(last) as i32) < 0
}

/// How a stamped frame arrived, in its flow's order.
#[derive(Debug, PartialEq)]
pub enum Arrival {
    /// The flow's first frame; `all_seen` when it was the last flow without one.
    First {
        all_seen: bool,
    },
    InOrder,
    /// After a later frame of its flow.
    Reordered,
}

/// Per flow, the highest sequence number seen so far, to tell frames that come out of order.
pub struct FlowOrder {
    last: Vec<Option<u32>>,
    unseen: u32,
}

impl FlowOrder {
    pub fn new(flows: u32) -> FlowOrder {
        FlowOrder { last: vec![None; flows as usize], unseen: flows }
    }

    /// Records frame `seq` of `flow`; None for a flow the generator does not send.
    #[inline]
    pub fn record(&mut self, flow: u16, seq: u32) -> Option<Arrival> {
        let last = self.last.get_mut(flow as usize)?;
        Some(match *last {
            Some(l) if seq_before(seq, l) => Arrival::Reordered,
            Some(_) => {
                *last = Some(seq);
                Arrival::InOrder
            }
            None => {
                *last = Some(seq);
                self.unseen -= 1;
                Arrival::First { all_seen: self.unseen == 0 }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_plain_and_in_vxlan() {
        for vx in [None, Some(Vxlan { vni: 100, dst_mac: [2, 0, 0, 0xaa, 0, 1] })] {
            let len = if vx.is_some() { 110 } else { 60 };
            let h = headers(7, len, vx.as_ref());
            let mut f = vec![0u8; len];
            f[..h.len()].copy_from_slice(&h);
            stamp(&mut f, h.len(), 7, 42, 1234);
            assert_eq!(find_stamp(&f), Some((7, 42, 1234)));
            // VXLAN goes to the switch's VTEP MAC, from the remote VTEP's.
            if let Some(v) = &vx {
                assert_eq!(f[0..6], v.dst_mac);
                assert_eq!(f[6..12], [2, 0, 0, 0xbb, 0, 2]);
            }
            // Lengths in the headers add up to the frame.
            let ip = if vx.is_some() { 14 + 50 } else { 14 };
            assert_eq!(u16::from_be_bytes([f[ip + 2], f[ip + 3]]) as usize, len - ip);
        }
        assert_eq!(find_stamp(&[0u8; 60]), None);
    }

    #[test]
    fn sequence_order_survives_wrap_around() {
        assert!(seq_before(1, 2));
        assert!(!seq_before(2, 1));
        assert!(seq_before(u32::MAX, 0));
        assert!(!seq_before(0, u32::MAX));
    }

    #[test]
    fn frames_behind_their_flows_latest_count_as_reordered() {
        let mut order = FlowOrder::new(2);
        assert_eq!(order.record(0, 10), Some(Arrival::First { all_seen: false }));
        assert_eq!(order.record(0, 12), Some(Arrival::InOrder), "a gap (loss) is not reordering");
        assert_eq!(order.record(0, 11), Some(Arrival::Reordered));
        assert_eq!(order.record(0, 12), Some(Arrival::InOrder), "a duplicate of the latest is not reordered");
        assert_eq!(order.record(1, u32::MAX), Some(Arrival::First { all_seen: true }));
        assert_eq!(order.record(1, 0), Some(Arrival::InOrder), "after the wrap");
        assert_eq!(order.record(1, u32::MAX), Some(Arrival::Reordered));
        assert_eq!(order.record(0, 13), Some(Arrival::InOrder), "the frame before did not move it");
        assert_eq!(order.record(2, 1), None, "not a flow of the generator's");
    }

    #[test]
    fn plain_headers_match_the_pcap_flows() {
        let h = headers(300, 60, None);
        let p = crate::pcap::flow_frame(300);
        assert_eq!(h[..12], p[..12]);
        assert_eq!(h[26..34], p[26..34]);
    }
}
