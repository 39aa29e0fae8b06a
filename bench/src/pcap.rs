//! Writes benchmark traffic as classic pcap files.
//!
//! The frames match `../shared/peers/gen_pcaps.py` byte for byte, so this switch and the
//! OVS-DPDK / testpmd baselines replay the same traffic. Flow `i` (0 <= i < 65536) is a
//! 60-byte Ethernet/IPv4/UDP frame (64 bytes on the wire with FCS):
//! `02:00:01:00:00:01 -> 02:00:00:00:(i>>8):(i&255)`, `10.0.0.1 -> 10.1.(i>>8).(i&255)`,
//! TTL 64, IP id 1, UDP 1234 -> 5678 with its checksum and 18 zero bytes of payload (scapy
//! puts the padding inside the UDP datagram).

use std::io::{self, Write};
use std::net::Ipv4Addr;

use dataplane::tunnel::wire::{entropy_port, Template, TunnelKind, ENCAP_LEN};

/// Source MAC of every frame.
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x01, 0x00, 0x00, 0x01];
/// Frame length without FCS.
pub const FRAME_LEN: usize = 60;

/// Destination MAC of flow `i`.
pub fn flow_dst_mac(i: u16) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, (i >> 8) as u8, i as u8]
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { (chunk[0] as u16) << 8 };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet, IPv4 and UDP headers of flow `i` in a frame of `frame_len` bytes (IPv4 id
/// `ip_id`, header checksum set, UDP checksum left zero).
pub fn flow_headers(i: u16, frame_len: usize, ip_id: u16) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&flow_dst_mac(i));
    f[6..12].copy_from_slice(&SRC_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let udp_len = (frame_len - 34) as u16;
    // IPv4: version 4, IHL 5, total length 20 + UDP, TTL 64, UDP.
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
    let c = checksum(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&5678u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// The frame of flow `i`.
pub fn flow_frame(i: u16) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[..42].copy_from_slice(&flow_headers(i, FRAME_LEN, 1));
    let udp_len = (FRAME_LEN - 34) as u16;
    // Pseudo-header: addresses, protocol, UDP length.
    let mut pseudo = 0u32;
    for w in [[10u8, 0], [0, 1], [10, 1], [(i >> 8) as u8, i as u8]] {
        pseudo += u16::from_be_bytes(w) as u32;
    }
    pseudo += 17 + udp_len as u32;
    let c = match checksum(&f[34..], pseudo) {
        0 => 0xffff,
        c => c,
    };
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

/// The switch-side VTEP MAC that benchmark VXLAN traffic goes to unless told otherwise.
pub const VTEP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xaa, 0x00, 0x01];
/// The remote VTEP that benchmark VXLAN traffic comes from.
const REMOTE_VTEP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xbb, 0x00, 0x02];

/// Outer headers of benchmark VXLAN traffic, as a remote VTEP sends it: 02:00:00:bb:00:02,
/// 172.31.0.2 -> `dst_mac`, 172.31.0.1, UDP to 4789 with the source port hashed from `inner`
/// (the inner frame, or at least its headers), for an inner frame of `inner_len` bytes.
pub fn vxlan_headers(vni: u32, dst_mac: [u8; 6], inner: &[u8], inner_len: usize) -> [u8; ENCAP_LEN] {
    let template = Template::new(TunnelKind::Vxlan, REMOTE_VTEP_MAC, Ipv4Addr::new(172, 31, 0, 2), 4789);
    let mut out = [0u8; ENCAP_LEN];
    template.write(&mut out, dst_mac, Ipv4Addr::new(172, 31, 0, 1), vni, entropy_port(inner), inner_len);
    out
}

/// Writes a pcap (microsecond, Ethernet link type) holding `frames`.
pub fn write_pcap<W: Write>(mut out: W, frames: impl IntoIterator<Item = impl AsRef<[u8]>>) -> io::Result<()> {
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0; 8])?; // thiszone, sigfigs
    out.write_all(&65535u32.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
    for (n, frame) in frames.into_iter().enumerate() {
        let frame = frame.as_ref();
        out.write_all(&(n as u32 / 1_000_000).to_le_bytes())?;
        out.write_all(&(n as u32 % 1_000_000).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(frame)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flow 258 as scapy builds it (gen_pcaps.py's reference frame for that index).
    const SCAPY_FLOW_258: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x02, 0x00, 0x01, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2e,
        0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x65, 0xbb, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x01, 0x01, 0x02, 0x04, 0xd2,
        0x16, 0x2e, 0x00, 0x1a, 0xcf, 0xb6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn matches_scapy_reference() {
        assert_eq!(flow_frame(258), SCAPY_FLOW_258);
    }

    #[test]
    fn pcap_layout() {
        let mut buf = Vec::new();
        write_pcap(&mut buf, [flow_frame(0), flow_frame(1)]).unwrap();
        assert_eq!(buf.len(), 24 + 2 * (16 + 60));
        assert_eq!(&buf[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&buf[24 + 16..24 + 16 + 60], &flow_frame(0));
    }
}
