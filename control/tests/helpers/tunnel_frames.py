#!/usr/bin/env python3
"""Underlay frames for the tunnel tests, crafted with scapy, sent from a remote VTEP's
namespace to the switch's uplink.

  tunnel_frames.py IFACE UPLINK_MAC REMOTE_IP LOCAL_IP INNER_DST_MAC MARKER_HEX

Sends, in this order, and prints one line "CASE COUNT" per case:
  truncated        UDP to 4789 with 2 payload bytes, and IPv4 claiming more than it carries
  vxlan_flags      VXLAN with the I flag clear
  unknown_vni      VXLAN with VNI 999 (no tunnel has it)
  geneve_header    Geneve with version 1, and Geneve with options longer than the packet
  not_for_vtep     UDP to port 9999 of the VTEP address
  geneve_options   a valid Geneve packet (VNI 100) with 8 bytes of options, carrying MARKER
"""
import struct
import sys

from scapy.all import IP, UDP, Ether, Raw, sendp  # noqa: E402

iface, uplink_mac, remote_ip, local_ip, inner_dst, marker = sys.argv[1:7]
marker = bytes.fromhex(marker)

inner = bytes(
    Ether(dst=inner_dst, src="02:00:00:99:00:01")
    / IP(src="10.254.0.9", dst="10.254.0.1")
    / UDP(sport=1111, dport=2222)
    / Raw(marker)
)


def outer(dport, payload, **ip):
    return Ether(dst=uplink_mac) / IP(src=remote_ip, dst=local_ip, **ip) / UDP(sport=50000, dport=dport) / Raw(payload)


def vxlan(flags, vni):
    return struct.pack("!B3xI", flags, vni << 8) + inner


def geneve(version, opt_words, vni, options):
    return struct.pack("!BBH", version << 6 | opt_words, 0, 0x6558) + struct.pack("!I", vni << 8) + options + inner


truncated_ip = outer(4789, vxlan(0x08, 100), len=400)
cases = [
    ("truncated", [outer(4789, b"\x08\x00")] * 2 + [truncated_ip]),
    ("vxlan_flags", [outer(4789, vxlan(0x00, 100))] * 4),
    ("unknown_vni", [outer(4789, vxlan(0x08, 999))] * 5),
    ("geneve_header", [outer(6081, geneve(1, 0, 100, b""))] * 3 + [outer(6081, geneve(0, 63, 100, b""))] * 3),
    ("not_for_vtep", [outer(9999, b"hello")] * 2),
    ("geneve_options", [outer(6081, geneve(0, 2, 100, b"\x01\x02\x80\x01\x00\x00\x00\x00"))] * 3),
]
for name, frames in cases:
    sendp(frames, iface=iface, verbose=False)
    print(name, len(frames), flush=True)
