//! The tunnel work of a worker: the decap stage for bursts from uplinks, and encap on output
//! to a tunnel port. Both run inside [`Pipeline`] burst processing; nothing here allocates
//! (except one mbuf for an ARP request, at most once a second per next hop) or locks.

use std::net::Ipv4Addr;

use super::wire::{self, TunnelError, Underlay, ENCAP_LEN};
use super::{TunMeta, UplinkRt};
use crate::dpdk::{Mbuf, MbufBurst};
use crate::mac_table::PortIdx;
use crate::pipeline::{Egress, FlowScratch, Pipeline};
use crate::stats::{bump, DropReason, WorkerStats};

/// Where encapsulated packets of one tunnel and one set of metadata go.
struct EncapTarget {
    port: PortIdx,
    /// The outer headers with everything but the per-packet fields filled in.
    headers: super::wire::Template,
    /// Largest inner frame (Ethernet header included) that fits the uplink MTU.
    max_frame: usize,
    uplink: PortIdx,
}

fn tunnel_drop_reason(e: TunnelError) -> DropReason {
    match e {
        TunnelError::Truncated => DropReason::TunnelTruncated,
        TunnelError::VxlanFlags => DropReason::VxlanBadFlags,
        TunnelError::GeneveHeader => DropReason::GeneveBadHeader,
    }
}

impl Pipeline {
    /// A burst from an uplink: tunnel packets lose their outer headers and go through the
    /// pipeline from their tunnel port (consecutive packets of one tunnel as one burst), ARP
    /// is answered or learned from, anything else is dropped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process_underlay<E: Egress>(
        &self,
        up: &UplinkRt,
        s: &mut FlowScratch,
        in_port: PortIdx,
        burst: &mut MbufBurst,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let mut sub = std::mem::take(&mut s.decapped);
        let mut sub_port = PortIdx::MAX;
        let mut sub_bytes = 0u64;
        for mut m in burst.drain() {
            match wire::classify(m.data(), |ip| up.is_local(ip), |p| up.kind_of_port(p)) {
                Underlay::Tunnel(h) => {
                    let Some(t) = self.tunnels.decap_tunnel(up, &h) else {
                        out.drop(m, in_port, DropReason::TunnelUnknownVni);
                        continue;
                    };
                    // Received mbufs are ours alone, so this only moves the data offset.
                    if !m.pull_front(h.inner) {
                        out.drop(m, in_port, DropReason::BufferShared);
                        continue;
                    }
                    if t.idx != sub_port && !sub.is_empty() {
                        self.run_decapped(s, sub_port, &mut sub, sub_bytes, now, stats, out);
                        sub_bytes = 0;
                    }
                    sub_port = t.idx;
                    s.tun_in[sub.len()] = TunMeta::of(&h);
                    sub_bytes += m.pkt_len() as u64;
                    if let Err(m) = sub.push(m) {
                        // Cannot happen: the sub-burst holds at most what one burst held.
                        out.drop(m, in_port, DropReason::BufferShared);
                    }
                }
                Underlay::Arp { op, sender_mac, sender_ip, target_ip } => {
                    self.underlay_arp(up, in_port, m, op, sender_mac, sender_ip, target_ip, out)
                }
                Underlay::Bad(e) => out.drop(m, in_port, tunnel_drop_reason(e)),
                Underlay::Other => out.drop(m, in_port, DropReason::NotForVtep),
            }
        }
        if !sub.is_empty() {
            self.run_decapped(s, sub_port, &mut sub, sub_bytes, now, stats, out);
        }
        s.decapped = sub;
    }

    /// Runs decapsulated packets (metadata in `s.tun_in`) through the pipeline from tunnel
    /// port `port`, then clears their metadata (it is all zero outside this call).
    #[allow(clippy::too_many_arguments)]
    fn run_decapped<E: Egress>(
        &self,
        s: &mut FlowScratch,
        port: PortIdx,
        sub: &mut MbufBurst,
        bytes: u64,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        let n = sub.len();
        let c = &stats.ports[port as usize];
        bump(&c.rx_packets, n as u64);
        bump(&c.rx_bytes, bytes);
        self.process_overlay(s, port, sub, bytes, now, stats, out);
        s.tun_in[..n].fill(TunMeta::NONE);
    }

    /// ARP on an uplink: requests for a local VTEP address are answered in place; the
    /// sender of a request or reply to us is a neighbor worth knowing.
    #[allow(clippy::too_many_arguments)]
    fn underlay_arp<E: Egress>(
        &self,
        up: &UplinkRt,
        in_port: PortIdx,
        mut m: Mbuf,
        op: u16,
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
        out: &mut E,
    ) {
        if !up.is_local(target_ip) {
            return out.drop(m, in_port, DropReason::NotForVtep);
        }
        if crate::wire::MacAddr(sender_mac).is_valid_source() && !sender_ip.is_unspecified() {
            self.neighbors.learn(sender_ip, sender_mac);
        }
        if op == 1 {
            match m.data_mut() {
                Some(frame) => {
                    wire::arp_reply_in_place(frame, up.info.mac);
                    out.output(in_port, m);
                }
                None => out.drop(m, in_port, DropReason::BufferShared),
            }
        }
        // A reply to one of our requests has been learned from; its buffer goes back here.
    }

    /// Sends `m` out of `port`: straight to the port's tx buffer, or encapsulated when the
    /// port is a tunnel.
    #[inline(always)]
    pub(crate) fn send<E: Egress>(
        &self,
        port: PortIdx,
        m: Mbuf,
        tun: &TunMeta,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        if !self.tunnels.is_tunnel(port) {
            out.output(port, m)
        } else {
            self.encap(port, m, tun, now, stats, out)
        }
    }

    /// Puts the tunnel's outer headers in front of `m` (in its headroom) and hands it to the
    /// uplink.
    #[inline]
    fn encap<E: Egress>(&self, port: PortIdx, m: Mbuf, tun: &TunMeta, now: u32, stats: &WorkerStats, out: &mut E) {
        match self.encap_target(port, tun, now, out) {
            Ok(target) => {
                if let Some(bytes) = self.encap_one(&target, m, out) {
                    let c = &stats.ports[port as usize];
                    bump(&c.tx_packets, 1);
                    bump(&c.tx_bytes, bytes);
                }
            }
            Err(reason) => out.drop(m, port, reason),
        }
    }

    /// Encapsulates a whole burst for one tunnel port and one set of tunnel metadata (a
    /// burst of one flow): where it goes is worked out once.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn encap_burst<E: Egress>(
        &self,
        port: PortIdx,
        burst: &mut MbufBurst,
        tun: &TunMeta,
        now: u32,
        stats: &WorkerStats,
        out: &mut E,
    ) {
        match self.encap_target(port, tun, now, out) {
            Ok(target) => {
                // Encapsulate in place while every packet can be; then the burst goes to the
                // uplink whole. The rare packet that cannot (too long, shared, no headroom)
                // and those after it take the per-packet path.
                let mut inner_bytes = 0u64;
                let mut done = 0;
                for m in burst.as_mut_slice() {
                    if m.pkt_len() as usize > target.max_frame {
                        break;
                    }
                    let Some(inner_len) = Self::write_outer_headers(&target, m) else { break };
                    inner_bytes += inner_len;
                    done += 1;
                }
                // The tunnel's tx counters once per burst, not per packet.
                let (mut packets, mut bytes) = (done as u64, inner_bytes);
                if done == burst.len() {
                    out.output_burst(target.uplink, burst, inner_bytes + (done * ENCAP_LEN) as u64);
                } else {
                    for (i, m) in burst.drain().enumerate() {
                        if i < done {
                            out.output(target.uplink, m);
                        } else if let Some(b) = self.encap_one(&target, m, out) {
                            packets += 1;
                            bytes += b;
                        }
                    }
                }
                let c = &stats.ports[port as usize];
                bump(&c.tx_packets, packets);
                bump(&c.tx_bytes, bytes);
            }
            Err(reason) => {
                for m in burst.drain() {
                    out.drop(m, port, reason);
                }
            }
        }
    }

    /// Where packets to tunnel `port` with metadata `tun` go, or why they cannot.
    #[inline]
    fn encap_target<E: Egress>(
        &self,
        port: PortIdx,
        tun: &TunMeta,
        now: u32,
        out: &mut E,
    ) -> Result<EncapTarget, DropReason> {
        let t = self.tunnels.tunnel(port).ok_or(DropReason::NoEgressPort)?;
        let up = &self.tunnels.uplinks[t.uplink];
        let remote = match t.config.remote_ip {
            Some(r) => r,
            None if tun.dst() != 0 => Ipv4Addr::from(tun.dst()),
            None => return Err(DropReason::TunnelNoRemote),
        };
        let hop = up.next_hop(remote).ok_or(DropReason::TunnelNoRoute)?;
        let Some(hop_mac) = self.neighbors.lookup(hop) else {
            self.request_neighbor(up, hop, now, out);
            return Err(DropReason::NeighborUnresolved);
        };
        Ok(EncapTarget {
            port,
            headers: t.template.complete(hop_mac, remote, t.config.vni.unwrap_or(tun.id as u32)),
            max_frame: (up.info.mtu as usize + 14).saturating_sub(ENCAP_LEN),
            uplink: up.info.port,
        })
    }

    /// The per-packet part of encap: copy if shared, MTU, headroom, headers. Returns the
    /// inner frame's length when the packet went to the uplink (the caller counts it on the
    /// tunnel port).
    #[inline(always)]
    fn encap_one<E: Egress>(&self, target: &EncapTarget, mut m: Mbuf, out: &mut E) -> Option<u64> {
        let port = target.port;
        if m.pkt_len() as usize > target.max_frame {
            out.drop(m, port, DropReason::TunnelMtuExceeded);
            return None;
        }
        // A buffer also going out elsewhere (flood, several outputs), or one that is not the
        // mbuf's own (indirect, external), cannot grow in place: encapsulate a copy.
        if m.data_mut().is_none() {
            m = match m.deep_copy() {
                Some(c) => c,
                None => {
                    out.drop(m, port, DropReason::MbufExhausted);
                    return None;
                }
            };
        }
        // The buffer is ours alone and direct (copied above if not): only headroom can be
        // missing.
        match Self::write_outer_headers(target, &mut m) {
            Some(inner_len) => {
                out.output(target.uplink, m);
                Some(inner_len)
            }
            None => {
                out.drop(m, port, DropReason::NoHeadroom);
                None
            }
        }
    }

    /// Puts the outer headers in `m`'s headroom; returns the inner frame's length. None,
    /// leaving `m` as it was, when the buffer cannot grow in place (shared, indirect, no
    /// headroom). The MTU is the caller's to check.
    #[inline(always)]
    fn write_outer_headers(target: &EncapTarget, m: &mut Mbuf) -> Option<u64> {
        let inner_len = m.pkt_len() as usize;
        let src_port = wire::entropy_port(m.data());
        let headers = m.prepend(ENCAP_LEN as u16)?;
        target.headers.write_completed(headers, src_port, inner_len);
        Some(inner_len as u64)
    }

    /// Sends an ARP request for `ip` out of `up`, unless one went out this second.
    fn request_neighbor<E: Egress>(&self, up: &UplinkRt, ip: Ipv4Addr, now: u32, out: &mut E) {
        if !self.neighbors.should_request(ip, now) {
            return;
        }
        let Some(mut req) = out.alloc() else { return };
        let Some(buf) = req.append(60) else { return };
        buf.copy_from_slice(&wire::arp_request(up.info.mac, up.info.net.addr, ip));
        out.output(up.info.port, req);
    }

    /// Resolves, ahead of traffic, the next hops of tunnels with a fixed remote VTEP and
    /// the uplinks' gateways: one worker calls this about once a second.
    pub fn resolve_underlay<E: Egress>(&self, now: u32, out: &mut E) {
        for t in self.tunnels.iter() {
            let up = &self.tunnels.uplinks[t.uplink];
            if let Some(hop) = t.config.remote_ip.and_then(|r| up.next_hop(r)) {
                if self.neighbors.lookup(hop).is_none() {
                    self.request_neighbor(up, hop, now, out);
                }
            }
        }
        for up in &self.tunnels.uplinks {
            if let Some(gw) = up.info.gateway {
                if self.neighbors.lookup(gw).is_none() {
                    self.request_neighbor(up, gw, now, out);
                }
            }
        }
    }
}
