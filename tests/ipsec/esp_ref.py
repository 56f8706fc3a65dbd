#!/usr/bin/python3
"""An independent ESP (RFC 4303) tunnel-mode reference for interop tests.

A thin CLI around scapy's ``scapy.layers.ipsec.SecurityAssociation`` (Debian's python3-scapy 2.5
with python3-cryptography). IPv4 outer header; the inner packets may be IPv4 or IPv6.

  esp_ref.py encrypt --in inner.pcap --out esp.pcap --spi N --src A --dst B --alg ALG --key HEX
                     [--auth-key HEX] [--esn] [--seq-start N] [--src-mac M --dst-mac M]
                     [--iv-mode seq|random]
  esp_ref.py decrypt --in esp.pcap --out inner.pcap --spi N --src A --dst B --alg ALG --key HEX
                     [--auth-key HEX] [--esn] [--seq-start N] [--json report.json]

Algorithms (ICV 16 bytes for all):
  aes-gcm-128, aes-gcm-256     RFC 4106: --key is key||salt (4-byte salt last, as Linux's
                               rfc4106(gcm(aes)) takes it): 40 or 72 hex digits; IV 8 bytes.
  aes-cbc-128-hmac-sha256,     RFC 3602 + RFC 4868 HMAC-SHA-256-128: --key 32 or 64 hex digits,
  aes-cbc-256-hmac-sha256      --auth-key the HMAC key (32 bytes usual); IV 16 bytes.

Sequence numbers: the first frame gets --seq-start (default 1), the next ones count up. With
--esn they are 64-bit (RFC 4304): the low 32 bits go on the wire, the high 32 bits enter the ICV
(GCM: in the AAD, RFC 4106 section 5; HMAC: appended to the authenticated data, RFC 4303
section 2.2.1). Without --esn a sequence number above 2^32-1 is an error. On decrypt with --esn
the high half is inferred per frame (RFC 4303 appendix A): --seq-start gives the starting point
(its high half), and each frame takes the high half that puts it nearest the last one seen.

IVs: --iv-mode seq (default) makes the output reproducible: GCM IV = the 64-bit sequence number
(big-endian, as Linux's seqiv does), CBC IV = 8 zero bytes || the 64-bit sequence number. That is
fine for test vectors and wrong for real CBC traffic (RFC 3602 wants unpredictable IVs);
--iv-mode random draws them from os.urandom.

Padding (encrypt): RFC 4303 section 2.4 default padding 1, 2, 3, ...: the plaintext (payload,
padding, pad length, next header) is a multiple of 16 bytes for CBC and of 4 bytes for GCM.
Decrypt checks the padding bytes (status pad_invalid if they are not 1, 2, 3, ...).

Outer IPv4 header: version 4, IHL 5, TOS 0, ID 0, no flags, TTL 64, protocol 50.

Decrypt writes each recovered inner packet as an Ethernet frame (synthesized header: --src-mac,
--dst-mac, EtherType 0x0800 or 0x86dd from the next-header field) and, with --json, a report:
{"frames": [{"index", "status", "spi", "seq", "inner_len", "next_header", ...}], "totals": {...}}
with status one of ok, icv_failed, pad_invalid, spi_mismatch, addr_mismatch, not_esp, truncated,
bad_next_header. Frames that are not ok are not written. The exit status is 0 even when frames
fail (read the report); it is 2 for usage errors.

scapy 2.5 quirks this script works around (each is marked "QUIRK" below):
  1. ESN with HMAC: SecurityAssociation signs and verifies ESP without the high 32 sequence bits
     (AuthAlgo.sign/verify add them for AH only), so its CBC+HMAC ICV is wrong under ESN. This
     script computes and checks the ICV itself (scapy's AuthAlgo HMAC over raw(ESP) || seq_hi).
  2. `seq_num or self.seq_num` and `esn or self.esn`: a sequence low half of 0 or a high half
     of 0 passed per call falls back to the SA's stored values. The script sets the SA's
     seq_num and esn before every packet, so 0 means 0.
  3. Padding on decrypt: CryptAlgo.decrypt slices the padding after it has already cut it off,
     so the returned padding is garbage and never checked. The script checks it by encrypting
     the recovered plaintext again with the packet's IV and the expected padding, and comparing
     the ciphertext with the received one.
  4. IVs: scapy draws a random IV per packet unless one is passed; the script passes
     deterministic ones (see --iv-mode).
  5. Trailing Ethernet padding: raw() of a parsed IP packet includes the Ethernet trailer
     (scapy's Padding layer), which scapy would encrypt as part of the inner packet. The script
     cuts each inner packet to its IP length first.
GCM salt: SecurityAssociation splits crypt_key into key and salt itself (the last 4 bytes are the
salt, nonce = salt || IV), which matches the RFC 4106/Linux convention, so --key goes in as is.
"""

import argparse
import json
import os
import socket
import struct
import sys

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation, _ESPPlain
from scapy.utils import RawPcapReader, RawPcapWriter

ALGS = {
    # name: (scapy crypt algo, key bytes without salt, salt bytes, scapy auth algo or None)
    "aes-gcm-128": ("AES-GCM", 16, 4, None),
    "aes-gcm-256": ("AES-GCM", 32, 4, None),
    "aes-cbc-128-hmac-sha256": ("AES-CBC", 16, 0, "SHA2-256-128"),
    "aes-cbc-256-hmac-sha256": ("AES-CBC", 32, 0, "SHA2-256-128"),
}
ICV_LEN = 16
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
DLT_EN10MB = 1


def die(msg):
    print(f"esp_ref: {msg}", file=sys.stderr)
    sys.exit(2)


def hexbytes(s, what):
    s = s.strip()
    if s.lower().startswith("0x"):
        s = s[2:]
    s = s.replace(":", "")
    try:
        return bytes.fromhex(s)
    except ValueError:
        die(f"{what}: not a hex string")


def mac_bytes(m):
    b = bytes.fromhex(m.replace(":", ""))
    if len(b) != 6:
        die(f"bad MAC address {m}")
    return b


def make_sa(args):
    crypt, klen, slen, auth = ALGS[args.alg]
    key = hexbytes(args.key, "--key")
    if len(key) != klen + slen:
        die(f"--key for {args.alg} must be {klen + slen} bytes ({2 * (klen + slen)} hex digits)"
            + (f": {klen}-byte key then {slen}-byte salt" if slen else ""))
    auth_key = None
    if auth:
        if not args.auth_key:
            die(f"{args.alg} needs --auth-key")
        auth_key = hexbytes(args.auth_key, "--auth-key")
        if not auth_key:
            die("--auth-key is empty")
    elif args.auth_key:
        die(f"{args.alg} takes no --auth-key")
    sa = SecurityAssociation(
        ESP, spi=args.spi, crypt_algo=crypt, crypt_key=key, auth_algo=auth, auth_key=auth_key,
        tunnel_header=IP(src=args.src, dst=args.dst, id=0, ttl=64), esn_en=args.esn, esn=0)
    return sa


def make_iv(sa, seq64, mode):
    n = sa.crypt_algo.iv_size
    if mode == "random":
        return os.urandom(n)
    return struct.pack("!Q", seq64).rjust(n, b"\x00")


def esn_icv(sa, esp, seq_hi):
    """QUIRK 1: the ICV of ESP (spi, seq, iv+ciphertext) with the ESN high bits appended."""
    mac = sa.auth_algo.new_mac(sa.auth_key)
    mac.update(bytes(esp) + struct.pack("!L", seq_hi))
    return mac.finalize()[:sa.auth_algo.icv_size]


def ipv4_checksum(h):
    s = sum(struct.unpack(f"!{len(h) // 2}H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def l3_packet(frame):
    """(ethertype, the IP packet cut to its own length) of an Ethernet frame, or None."""
    if len(frame) < 14:
        return None
    et = struct.unpack("!H", frame[12:14])[0]
    l3 = frame[14:]
    if et == ETH_IPV4 and len(l3) >= 20 and l3[0] >> 4 == 4:
        tot = struct.unpack("!H", l3[2:4])[0]
        if tot < 20 or tot > len(l3):
            return None
        return et, l3[:tot]  # QUIRK 5: drop the Ethernet trailer
    if et == ETH_IPV6 and len(l3) >= 40 and l3[0] >> 4 == 6:
        tot = 40 + struct.unpack("!H", l3[4:6])[0]
        if tot > len(l3):
            return None
        return et, l3[:tot]
    return None


def read_pcap(path):
    r = RawPcapReader(path)
    if getattr(r, "linktype", DLT_EN10MB) != DLT_EN10MB:
        die(f"{path}: not an Ethernet capture (linktype {r.linktype})")
    for data, meta in r:
        yield data, meta
    r.close()


def ts_of(meta):
    sec = getattr(meta, "sec", None)
    usec = getattr(meta, "usec", None)
    if sec is None:  # pcapng metadata
        tshigh, tslow = getattr(meta, "tshigh", 0), getattr(meta, "tslow", 0)
        t = (tshigh << 32) | tslow
        sec, usec = t // 1000000, t % 1000000
    return sec, usec


def cmd_encrypt(args):
    sa = make_sa(args)
    seq64 = args.seq_start
    src_mac, dst_mac = mac_bytes(args.src_mac), mac_bytes(args.dst_mac)
    w = RawPcapWriter(args.out, linktype=DLT_EN10MB, sync=False)
    w.write_header(None)
    n = skipped = 0
    for frame, meta in read_pcap(args.inp):
        l3 = l3_packet(frame)
        if l3 is None:
            skipped += 1
            continue
        et, pkt = l3
        inner = IP(pkt) if et == ETH_IPV4 else IPv6(pkt)
        if not args.esn and seq64 > 0xFFFFFFFF:
            die(f"sequence number {seq64} needs --esn")
        if seq64 > 0xFFFFFFFFFFFFFFFF:
            die("sequence number space exhausted")
        lo, hi = seq64 & 0xFFFFFFFF, seq64 >> 32
        sa.seq_num, sa.esn = lo, hi  # QUIRK 2: 0 must mean 0
        iv = make_iv(sa, seq64, args.iv_mode)
        out = sa.encrypt(inner, seq_num=lo, iv=iv, esn_en=args.esn, esn=hi)
        esp = out[ESP]
        if args.esn and sa.auth_algo.mac:  # QUIRK 1
            body = esp.data[:-ICV_LEN]
            esp.data = body + esn_icv(sa, ESP(spi=esp.spi, seq=esp.seq, data=body), hi)
        ip = bytearray(bytes(out))
        ip[10:12] = b"\x00\x00"
        ip[10:12] = struct.pack("!H", ipv4_checksum(bytes(ip[:(ip[0] & 15) * 4])))
        sec, usec = ts_of(meta)
        w.write_packet(dst_mac + src_mac + struct.pack("!H", ETH_IPV4) + bytes(ip), sec=sec, usec=usec)
        n += 1
        seq64 += 1
    w.close()
    print(f"esp_ref: encrypted {n} frames (skipped {skipped} non-IP) into {args.out}, "
          f"seq {args.seq_start}..{seq64 - 1}", file=sys.stderr)
    return 0


def expected_padding(padlen):
    return bytes(range(1, padlen + 1))


def padding_ok(sa, esp_in, plain, seq_hi, esn):
    """QUIRK 3: re-encrypt the recovered plaintext with RFC 4303 default padding and the packet's
    own IV; the ciphertext must equal the received one."""
    icv_size = ICV_LEN if sa.crypt_algo.is_aead else 0
    check = _ESPPlain(spi=plain.spi, seq=plain.seq, iv=plain.iv, data=plain.data,
                      padding=expected_padding(plain.padlen), padlen=plain.padlen, nh=plain.nh)
    sa.esn = seq_hi
    again = sa.crypt_algo.encrypt(sa, check, sa.crypt_key, icv_size, esn_en=esn, esn=seq_hi)
    received = esp_in.data if sa.crypt_algo.is_aead else esp_in.data[:-ICV_LEN]
    return bytes(again.data) == bytes(received)


def infer_hi(last64, lo):
    """RFC 4303 appendix A: the high half that puts (hi, lo) nearest the last sequence number."""
    base = last64 >> 32
    best = None
    for hi in (base - 1, base, base + 1):
        if hi < 0 or hi > 0xFFFFFFFF:
            continue
        cand = (hi << 32) | lo
        if best is None or abs(cand - last64) < abs(best - last64):
            best = cand
    return best >> 32


def cmd_decrypt(args):
    sa = make_sa(args)
    src_mac, dst_mac = mac_bytes(args.src_mac), mac_bytes(args.dst_mac)
    w = RawPcapWriter(args.out, linktype=DLT_EN10MB, sync=False)
    w.write_header(None)
    frames = []
    totals = {}
    last64 = args.seq_start
    for idx, (frame, meta) in enumerate(read_pcap(args.inp)):
        rec = {"index": idx}
        frames.append(rec)

        def done(status):
            rec["status"] = status
            totals[status] = totals.get(status, 0) + 1

        l3 = l3_packet(frame)
        if l3 is None or l3[0] != ETH_IPV4:
            done("not_esp")
            continue
        pkt = l3[1]
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != socket.IPPROTO_ESP or ihl < 20 or len(pkt) < ihl:
            done("not_esp")
            continue
        outer = IP(pkt)
        rec["outer_src"], rec["outer_dst"] = outer.src, outer.dst
        esp_raw = pkt[ihl:]
        if len(esp_raw) < 8:
            done("truncated")
            continue
        spi, lo = struct.unpack("!LL", esp_raw[:8])
        rec["spi"] = spi
        if spi != args.spi:
            rec["seq"] = lo
            done("spi_mismatch")
            continue
        hi = infer_hi(last64, lo) if args.esn else 0
        seq64 = (hi << 32) | lo
        rec["seq"] = seq64
        if len(esp_raw) < 8 + sa.crypt_algo.iv_size + ICV_LEN + 2:
            done("truncated")
            continue
        if outer.src != args.src or outer.dst != args.dst:
            done("addr_mismatch")
            continue
        esp = outer[ESP]
        sa.seq_num, sa.esn = lo, hi  # QUIRK 2
        if sa.auth_algo.mac:
            body = esp.data[:-ICV_LEN]
            want = esn_icv(sa, ESP(spi=spi, seq=lo, data=body), hi) if args.esn else None
            if want is not None:
                if want != esp.data[-ICV_LEN:]:
                    done("icv_failed")
                    continue
            else:
                try:
                    sa.auth_algo.verify(esp, sa.auth_key)
                except Exception:  # IPSecIntegrityError
                    done("icv_failed")
                    continue
            ct_len = len(body) - sa.crypt_algo.iv_size
            if ct_len <= 0 or ct_len % sa.crypt_algo.block_size:
                done("truncated")
                continue
        try:
            plain = sa.crypt_algo.decrypt(sa, esp, sa.crypt_key, ICV_LEN, esn_en=args.esn, esn=hi)
        except Exception:  # IPSecIntegrityError (GCM tag), or garbage
            done("icv_failed")
            continue
        rec["next_header"] = plain.nh
        rec["pad_len"] = plain.padlen
        if not padding_ok(sa, esp, plain, hi, args.esn):
            done("pad_invalid")
            continue
        inner = bytes(plain.data)
        rec["inner_len"] = len(inner)
        if plain.nh == 4 and inner and inner[0] >> 4 == 4:
            et = ETH_IPV4
        elif plain.nh == 41 and inner and inner[0] >> 4 == 6:
            et = ETH_IPV6
        else:
            done("bad_next_header")
            continue
        last64 = seq64
        sec, usec = ts_of(meta)
        w.write_packet(dst_mac + src_mac + struct.pack("!H", et) + inner, sec=sec, usec=usec)
        done("ok")
    w.close()
    report = {"frames": frames, "totals": dict(sorted(totals.items()), frames=len(frames))}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
    print(f"esp_ref: {len(frames)} frames: {summary or 'none'}", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("encrypt", "decrypt"):
        s = sub.add_parser(name)
        s.add_argument("--in", dest="inp", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--spi", type=lambda v: int(v, 0), required=True)
        s.add_argument("--src", required=True, help="outer IPv4 source (the SA's tunnel source)")
        s.add_argument("--dst", required=True, help="outer IPv4 destination")
        s.add_argument("--alg", choices=sorted(ALGS), required=True)
        s.add_argument("--key", required=True)
        s.add_argument("--auth-key")
        s.add_argument("--esn", action="store_true")
        s.add_argument("--seq-start", type=lambda v: int(v, 0), default=1)
        if name == "encrypt":
            s.add_argument("--src-mac", default="02:00:00:00:00:01")
            s.add_argument("--dst-mac", default="02:00:00:00:00:02")
            s.add_argument("--iv-mode", choices=("seq", "random"), default="seq")
        else:
            s.add_argument("--src-mac", default="02:00:00:00:00:02")
            s.add_argument("--dst-mac", default="02:00:00:00:00:01")
            s.add_argument("--json")
    args = p.parse_args()
    if not 0 <= args.spi <= 0xFFFFFFFF:
        die("--spi out of range")
    if args.seq_start < 0 or (not args.esn and args.seq_start > 0xFFFFFFFF):
        die("--seq-start out of range (above 2^32-1 needs --esn)")
    return cmd_encrypt(args) if args.cmd == "encrypt" else cmd_decrypt(args)


if __name__ == "__main__":
    sys.exit(main())
