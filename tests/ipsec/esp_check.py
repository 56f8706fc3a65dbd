#!/usr/bin/python3
"""Helpers for test_esp_ref.sh: input captures, round-trip comparison, and known-answer tests
that check esp_ref.py (scapy) against a second ESP implementation written here directly on
python3-cryptography (AESGCM; Cipher(AES, CBC) + HMAC-SHA256), with the Ethernet, IPv4 and ESP
bytes laid out by hand with struct.

  esp_check.py gen-inner OUT.pcap          mixed IPv4/IPv6 frames (+ one ARP frame, + a 60-byte
                                           frame with Ethernet trailer padding)
  esp_check.py compare INNER.pcap DECRYPTED.pcap REPORT.json SEQ_START [TTL_DEC]
                                           every IP frame of INNER came back, byte for byte, in
                                           order, status ok, consecutive sequence numbers (with
                                           TTL_DEC: the TTL less that, as a router forwards it)
  esp_check.py same-inner A.pcap B.pcap [TTL_DEC]
                                           the IP packets of B are those of A, in order
  esp_check.py statuses REPORT.json STATUS all frames of the report have STATUS
  esp_check.py kat ESP_REF                 known answers (prints one line per case, exit 1 on
                                           a mismatch)
  esp_check.py badpad OUT.pcap             one GCM frame with a valid tag but padding 0,0,0...
                                           (esp_ref decrypt must say pad_invalid)
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PY = sys.executable
LINKTYPE_ETHERNET = 1


# --- pcap, by hand (no scapy here) ---------------------------------------------------------
def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000, i, len(fr), len(fr)))
            f.write(fr)


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def csum(b):
    if len(b) % 2:
        b += b"\x00"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0, ttl=64):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                    bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def udp4(src, dst, sport, dport, data):
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def udp6(sport, dport, data):
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("20010db8000000000000000000000002")
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = src + dst + struct.pack("!IxxxB", len(u), 17)
    c = csum(pseudo + u) or 0xFFFF
    u = u[:6] + struct.pack("!H", c) + u[8:]
    return struct.pack("!IHBB", 0x60000000, len(u), 17, 64) + src + dst + u


def eth(payload, ethertype, dst="02:00:00:00:00:01", src="02:00:00:00:01:01"):
    mac = lambda m: bytes.fromhex(m.replace(":", ""))
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def inner_ip(frame):
    """The IP packet of an Ethernet frame cut to its own length, or None."""
    et = struct.unpack("!H", frame[12:14])[0]
    l3 = frame[14:]
    if et == 0x0800:
        return l3[:struct.unpack("!H", l3[2:4])[0]]
    if et == 0x86DD:
        return l3[:40 + struct.unpack("!H", l3[4:6])[0]]
    return None


def gen_inner(path):
    frames = []
    for i in range(24):
        frames.append(eth(udp4(f"10.0.0.{i + 1}", f"10.1.0.{i % 4 + 1}", 1000 + i, 2000,
                               bytes(range(i % 7)) * (1 + 7 * i)), 0x0800))
        frames.append(eth(udp6(3000 + i, 4000, os.urandom(i * 13)), 0x86DD))
    # a small frame with Ethernet trailer padding (IPv4 total length 28, frame 60 bytes)
    frames.append(eth(udp4("10.0.0.99", "10.1.0.1", 1, 2, b"") + b"\xee" * 18, 0x0800))
    # one non-IP frame (ARP), which encrypt skips
    frames.append(eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806))
    # a 1400-byte frame
    frames.append(eth(udp4("10.0.0.200", "10.1.0.2", 5, 6, b"\x5a" * (1400 - 42)), 0x0800))
    write_pcap(path, frames)


def ttl_minus(p, n):
    """An IP packet as a router forwards it: TTL / hop limit less n (IPv4 checksum updated)."""
    if n == 0:
        return p
    if p[0] >> 4 == 6:
        return p[:7] + bytes([p[7] - n]) + p[8:]
    h = bytearray(p[:(p[0] & 15) * 4])
    h[8] -= n
    h[10:12] = b"\x00\x00"
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + p[len(h):]


def compare(inner_path, dec_path, report_path, seq_start, ttl_dec=0):
    want = [ttl_minus(p, ttl_dec) for p in (inner_ip(f) for f in read_pcap(inner_path)) if p is not None]
    got_frames = read_pcap(dec_path)
    got = [inner_ip(f) for f in got_frames]
    rep = json.load(open(report_path))
    errs = []
    if len(got) != len(want):
        errs.append(f"{len(got)} frames decrypted, {len(want)} expected")
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            errs.append(f"frame {i}: inner packet differs")
            break
    for i, fr in enumerate(rep["frames"]):
        if fr["status"] != "ok":
            errs.append(f"report frame {i}: {fr['status']}")
            break
        if fr["seq"] != seq_start + i:
            errs.append(f"report frame {i}: seq {fr['seq']}, expected {seq_start + i}")
            break
    for i, f in enumerate(got_frames):
        et = struct.unpack("!H", f[12:14])[0]
        if et != (0x0800 if f[14] >> 4 == 4 else 0x86DD):
            errs.append(f"decrypted frame {i}: EtherType {et:#x}")
            break
    if errs:
        print("; ".join(errs))
        return 1
    return 0


def same_inner(a_path, b_path, ttl_dec=0):
    """The IP packets of B are those of A (TTL less ttl_dec), in order."""
    want = [ttl_minus(p, ttl_dec) for p in (inner_ip(f) for f in read_pcap(a_path)) if p is not None]
    got = [inner_ip(f) for f in read_pcap(b_path)]
    if len(got) != len(want):
        print(f"{len(got)} packets, {len(want)} expected")
        return 1
    for i, (x, y) in enumerate(zip(want, got)):
        if x != y:
            print(f"packet {i} differs:\n  want {x.hex()}\n  got  {y.hex() if y else None}")
            return 1
    return 0


def statuses(report_path, status):
    rep = json.load(open(report_path))
    bad = [f for f in rep["frames"] if f["status"] != status]
    if bad or not rep["frames"]:
        print(f"expected all {status}, got {rep['totals']}")
        return 1
    return 0


# --- the second implementation -------------------------------------------------------------
def esp_padding(n_plain, align):
    """RFC 4303 2.4 default padding: (payload + pad + 2) a multiple of align."""
    padlen = -(n_plain + 2) % align
    return bytes(range(1, padlen + 1)) + bytes([padlen])


def esp_frame_gcm(key_salt, spi, seq64, esn, inner, nh, src, dst, iv=None):
    key, salt = key_salt[:-4], key_salt[-4:]
    iv = iv if iv is not None else struct.pack("!Q", seq64)
    lo, hi = seq64 & 0xFFFFFFFF, seq64 >> 32
    aad = struct.pack("!LLL", spi, hi, lo) if esn else struct.pack("!LL", spi, lo)
    plain = inner + esp_padding(len(inner), 4) + bytes([nh])
    ct_tag = AESGCM(key).encrypt(salt + iv, plain, aad)
    esp = struct.pack("!LL", spi, lo) + iv + ct_tag
    return eth(ipv4(src, dst, 50, esp), 0x0800, dst="02:00:00:00:00:02", src="02:00:00:00:00:01")


def esp_frame_cbc(key, auth_key, spi, seq64, esn, inner, nh, src, dst):
    iv = struct.pack("!QQ", 0, seq64)
    lo, hi = seq64 & 0xFFFFFFFF, seq64 >> 32
    plain = inner + esp_padding(len(inner), 16) + bytes([nh])
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    body = struct.pack("!LL", spi, lo) + iv + ct
    h = hmac.HMAC(auth_key, hashes.SHA256())
    h.update(body + (struct.pack("!L", hi) if esn else b""))
    esp = body + h.finalize()[:16]
    return eth(ipv4(src, dst, 50, esp), 0x0800, dst="02:00:00:00:00:02", src="02:00:00:00:00:01")


def kat(esp_ref):
    src, dst = "192.0.2.1", "192.0.2.2"
    key16 = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    key32 = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    salt = bytes.fromhex("cafebabe")
    auth = bytes.fromhex("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
    in4 = udp4("10.0.0.1", "10.1.0.1", 1234, 5678, b"known answer, IPv4 inner")
    in6 = udp6(1234, 5678, b"known answer, IPv6 inner!")
    cases = [
        # name, alg, key, auth key, spi, seq64, esn, inner, nh
        ("gcm128 ipv4", "aes-gcm-128", key16 + salt, None, 0x1000, 1, False, in4, 4),
        ("gcm128 ipv6 esn", "aes-gcm-128", key16 + salt, None, 0x1000, (7 << 32) | 5, True, in6, 41),
        ("gcm256 ipv4 esn", "aes-gcm-256", key32 + salt, None, 0xdeadbeef, (1 << 32) | 0, True, in4, 4),
        ("cbc128 ipv4", "aes-cbc-128-hmac-sha256", key16, auth, 0x2000, 42, False, in4, 4),
        ("cbc128 ipv4 esn", "aes-cbc-128-hmac-sha256", key16, auth, 0x2000, (3 << 32) | 9, True, in4, 4),
        ("cbc256 ipv6", "aes-cbc-256-hmac-sha256", key32, auth, 0x2001, 0xffffffff, False, in6, 41),
        ("cbc256 ipv6 esn", "aes-cbc-256-hmac-sha256", key32, auth, 0x2001, (1 << 32) | 0, True, in6, 41),
    ]
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for name, alg, key, akey, spi, seq64, esn, inner, nh in cases:
            if alg.startswith("aes-gcm"):
                want = esp_frame_gcm(key, spi, seq64, esn, inner, nh, src, dst)
            else:
                want = esp_frame_cbc(key, akey, spi, seq64, esn, inner, nh, src, dst)
            write_pcap(f"{d}/in.pcap", [eth(inner, 0x0800 if nh == 4 else 0x86DD)])
            sa = ["--spi", hex(spi), "--src", src, "--dst", dst, "--alg", alg, "--key", key.hex(),
                  "--seq-start", str(seq64)] + (["--auth-key", akey.hex()] if akey else []) + \
                 (["--esn"] if esn else [])
            r = subprocess.run([PY, esp_ref, "encrypt", "--in", f"{d}/in.pcap", "--out",
                                f"{d}/esp.pcap"] + sa, capture_output=True, text=True)
            got = read_pcap(f"{d}/esp.pcap") if r.returncode == 0 else []
            enc_ok = got == [want]
            # and the other way: esp_ref decrypts the independently built frame
            write_pcap(f"{d}/want.pcap", [want])
            r2 = subprocess.run([PY, esp_ref, "decrypt", "--in", f"{d}/want.pcap", "--out",
                                 f"{d}/dec.pcap", "--json", f"{d}/r.json"] + sa,
                                capture_output=True, text=True)
            dec_ok = False
            if r2.returncode == 0:
                rep = json.load(open(f"{d}/r.json"))
                dec = read_pcap(f"{d}/dec.pcap")
                dec_ok = (rep["frames"][0]["status"] == "ok" and rep["frames"][0]["seq"] == seq64
                          and len(dec) == 1 and inner_ip(dec[0]) == inner)
            ok = enc_ok and dec_ok
            failed += not ok
            print(f"kat {name}: encrypt {'ok' if enc_ok else 'MISMATCH'}, "
                  f"decrypt {'ok' if dec_ok else 'FAILED'}"
                  + ("" if ok else f"\n  want {want.hex()}\n  got  {got[0].hex() if got else r.stderr}"))
    return 1 if failed else 0


def badpad(path):
    """A GCM frame whose padding bytes are zeros instead of 1, 2, 3 (valid tag)."""
    key = bytes(range(16)) + bytes.fromhex("a0a1a2a3")
    inner = udp4("10.0.0.1", "10.1.0.1", 1, 2, b"abc")  # 31 bytes: 3 bytes of padding
    iv = struct.pack("!Q", 1)
    aad = struct.pack("!LL", 0x1000, 1)
    plain = inner + b"\x00\x00\x00" + bytes([3, 4])
    esp = struct.pack("!LL", 0x1000, 1) + iv + AESGCM(key[:16]).encrypt(key[16:] + iv, plain, aad)
    write_pcap(path, [eth(ipv4("192.0.2.1", "192.0.2.2", 50, esp), 0x0800)])
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "gen-inner":
        return gen_inner(*args) or 0
    if cmd == "compare":
        return compare(args[0], args[1], args[2], int(args[3], 0), int(args[4]) if len(args) > 4 else 0)
    if cmd == "same-inner":
        return same_inner(args[0], args[1], int(args[2]) if len(args) > 2 else 0)
    if cmd == "statuses":
        return statuses(*args)
    if cmd == "kat":
        return kat(args[0])
    if cmd == "badpad":
        return badpad(args[0])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
