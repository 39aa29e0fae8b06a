#!/usr/bin/env python3
"""Raw Ethernet frames for the integration tests (Python standard library only).

  frames.py send  --iface IF --dst MAC --src MAC [--vlan VID] [--ethertype HEX] [--marker HEX]
                  [--length N] [--count N] [--partial-udp]
      with --partial-udp, an IPv4/UDP frame whose payload is the marker, its UDP checksum
      left to offload (as a stack with tx checksumming leaves it: the field holds the
      pseudo-header's sum; PACKET_VNET_HDR asks the kernel to keep it so)
  frames.py sniff --iface IF --marker HEX --seconds S [--vlan VID|none] [--udp-checksum]
      prints "ready" once the socket is open, then, after S seconds, the number of frames
      received on IF (not sent by this host) that contain the marker bytes and, with --vlan,
      carry that VLAN tag (or none); with --udp-checksum, only IPv4/UDP frames whose UDP
      checksum verifies.

The kernel takes VLAN tags off received frames and reports them beside the data
(PACKET_AUXDATA); the sniffer reads them there, or inline when a tag was left in place.
"""
import argparse
import select
import socket
import struct
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
PACKET_VNET_HDR = 15
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
# struct tpacket_auxdata: status, len, snaplen (u32); mac, net, vlan_tci, vlan_tpid (u16)
AUXDATA = struct.Struct("=IIIHHHH")


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def ones_sum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


SRC_IP, DST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def pseudo_header(src, dst, udp_len):
    return src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)


def partial_udp(payload):
    """IPv4 header and UDP datagram, the UDP checksum field holding the pseudo-header's sum."""
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, socket.IPPROTO_UDP, 0, SRC_IP, DST_IP)
    ip = ip[:10] + struct.pack("!H", 0xFFFF ^ ones_sum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", 1000, 2000, udp_len, ones_sum(pseudo_header(SRC_IP, DST_IP, udp_len)))
    return ip + udp + payload


def send(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tag = b"" if a.vlan is None else struct.pack("!HH", 0x8100, a.vlan)
    vnet = b""
    if a.partial_udp:
        ethertype, body = 0x0800, partial_udp(bytes.fromhex(a.marker))
        # struct virtio_net_hdr (host order): NEEDS_CSUM from the UDP header, field at +6.
        vnet = struct.pack("=BBHHHH", VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 14 + len(tag) + 20, 6)
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    else:
        ethertype, body = int(a.ethertype, 16), bytes.fromhex(a.marker)
    s.bind((a.iface, 0))
    frame = (mac(a.dst) + mac(a.src) + tag + struct.pack("!H", ethertype) + body).ljust(a.length, b"\0")
    for _ in range(a.count):
        s.send(vnet + frame)


def udp_checksum_verifies(frame):
    """Whether `frame` (untagged or with its tag inline) is IPv4/UDP with a valid checksum."""
    at = 18 if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
    if frame[at - 2 : at] != b"\x08\x00" or frame[at + 9] != socket.IPPROTO_UDP:
        return False
    udp_at = at + (frame[at] & 0x0F) * 4
    udp_len = struct.unpack("!H", frame[udp_at + 4 : udp_at + 6])[0]
    udp = frame[udp_at : udp_at + udp_len]
    src, dst = frame[at + 12 : at + 16], frame[at + 16 : at + 20]
    return ones_sum(pseudo_header(src, dst, udp_len) + udp) == 0xFFFF


def sniff(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, 0))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    marker = bytes.fromhex(a.marker)
    want_vlan = None if a.vlan is None else (-1 if a.vlan == "none" else int(a.vlan))
    print("ready", flush=True)
    count = 0
    end = time.monotonic() + a.seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([s], [], [], left)
        if not ready:
            break
        data, ancillary, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
        if addr[2] == socket.PACKET_OUTGOING or marker not in data:
            continue
        vlan = -1
        for level, kind, value in ancillary:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, _ = AUXDATA.unpack(value[: AUXDATA.size])
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0x0FFF
        if vlan < 0 and data[12:14] in (b"\x81\x00", b"\x88\xa8"):
            vlan = struct.unpack("!H", data[14:16])[0] & 0x0FFF
        if (want_vlan is None or vlan == want_vlan) and (not a.udp_checksum or udp_checksum_verifies(data)):
            count += 1
    print(count, flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("send")
    ps.add_argument("--iface", required=True)
    ps.add_argument("--dst", required=True)
    ps.add_argument("--src", required=True)
    ps.add_argument("--vlan", type=int)
    ps.add_argument("--ethertype", default="88b5")  # IEEE local experimental
    ps.add_argument("--marker", default="")
    ps.add_argument("--length", type=int, default=60)
    ps.add_argument("--count", type=int, default=1)
    ps.add_argument("--partial-udp", action="store_true")
    pn = sub.add_parser("sniff")
    pn.add_argument("--iface", required=True)
    pn.add_argument("--marker", required=True)
    pn.add_argument("--seconds", type=float, default=2.0)
    pn.add_argument("--vlan")
    pn.add_argument("--udp-checksum", action="store_true")
    a = p.parse_args()
    send(a) if a.cmd == "send" else sniff(a)


if __name__ == "__main__":
    main()
