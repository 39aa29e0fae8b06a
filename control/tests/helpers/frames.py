#!/usr/bin/env python3
"""Raw Ethernet frames for the integration tests (Python standard library only).

  frames.py send  --iface IF --dst MAC --src MAC [--vlan VID] [--ethertype HEX] [--marker HEX]
                  [--length N] [--count N]
  frames.py sniff --iface IF --marker HEX --seconds S [--vlan VID|none]
      prints "ready" once the socket is open, then, after S seconds, the number of frames
      received on IF (not sent by this host) that contain the marker bytes and, with --vlan,
      carry that VLAN tag (or none).

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
# struct tpacket_auxdata: status, len, snaplen (u32); mac, net, vlan_tci, vlan_tpid (u16)
AUXDATA = struct.Struct("=IIIHHHH")


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def send(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    tag = b"" if a.vlan is None else struct.pack("!HH", 0x8100, a.vlan)
    frame = mac(a.dst) + mac(a.src) + tag + struct.pack("!H", int(a.ethertype, 16)) + bytes.fromhex(a.marker)
    frame = frame.ljust(a.length, b"\0")
    for _ in range(a.count):
        s.send(frame)


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
        if want_vlan is None or vlan == want_vlan:
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
    pn = sub.add_parser("sniff")
    pn.add_argument("--iface", required=True)
    pn.add_argument("--marker", required=True)
    pn.add_argument("--seconds", type=float, default=2.0)
    pn.add_argument("--vlan")
    a = p.parse_args()
    send(a) if a.cmd == "send" else sniff(a)


if __name__ == "__main__":
    main()
