#!/usr/bin/python3
"""Inner frames for the VTI benchmark: Ethernet/IPv4/UDP, fixed frame size (no FCS), N flows.

  gen_frames.py --out X.pcap --size 64|1400 [--count 4096] [--flows 256] [--dir out|in]

--dir out: lan hosts 10.0.0.0/16 -> remote hosts 10.1.0.0/16 (what the lan port receives and
the tunnel encrypts); --dir in: remote 10.1.0.0/16 -> lan 10.0.0.0/16 (what the peer encrypts
and the appliance decrypts). Flow i (of --flows) uses lan host 10.0.0.0 + i + 1, remote host 10.1.0.(i % 64 + 1)
and UDP ports 1024 + i -> 5001. Correct IPv4 header and UDP checksums. Written by hand
(struct), no scapy, so it is fast and has no dependencies.
"""

import argparse
import struct

LAN_HOST_MAC = bytes.fromhex("020000000101")  # a lan host / router (secgw.cfg neigh port 0)
LAN_PORT_MAC = bytes.fromhex("020000000010")  # the appliance's lan port


def csum(b):
    if len(b) % 2:
        b += b"\x00"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(size, src, dst, sport, dport, ident):
    payload_len = size - 14 - 20 - 8
    if payload_len < 0:
        raise SystemExit(f"size {size} below 42")
    data = bytes((ident + k) & 0xFF for k in range(payload_len))
    udp = struct.pack("!HHHH", sport, dport, 8 + payload_len, 0) + data
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return LAN_PORT_MAC + LAN_HOST_MAC + b"\x08\x00" + ip + udp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--count", type=int, default=4096)
    p.add_argument("--flows", type=int, default=256)
    p.add_argument("--dir", choices=("out", "in"), default="out")
    a = p.parse_args()
    with open(a.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n in range(a.count):
            i = n % a.flows
            h = i + 1
            lan = bytes([10, 0, (h >> 8) & 0xFF, h & 0xFF])
            remote = bytes([10, 1, 0, i % 64 + 1])
            src, dst = (lan, remote) if a.dir == "out" else (remote, lan)
            fr = frame(a.size, src, dst, 1024 + i, 5001, n)
            f.write(struct.pack("<IIII", 1700000000 + n // 1000000, n % 1000000, len(fr), len(fr)))
            f.write(fr)
    return 0


if __name__ == "__main__":
    main()
