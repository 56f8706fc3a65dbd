#!/usr/bin/env python3
"""Independent oracle for the flow classifier (pipelines::flow), used by tests/flow_vs_scapy.rs.

Reads frames and classifier configurations from the file named on the command line, decodes
every header with scapy, applies the rules of Linux 3.13's flow dissector and of cls_flow's key
functions (as the appliance defines them for forwarded packets), and prints the key values, the
software rxhash and the class id of every configuration for every frame.

Nothing here is derived from the Rust code: the hashes are written from Bob Jenkins' lookup3
description (hashword, final, mix) and checked against lookup3's published driver5 answers at
start-up; header fields come from scapy's dissectors.

Input lines:
    hashrnd N
    config MODE KEYS MASK XOR RSHIFT ADDEND DIVISOR BASECLASS SEED   ("-" = not set; KEYS
                                                                    comma-separated)
    frame IIF PRIORITY MARK RSS HEX                                  (RSS "-" = none; HEX may be
                                                                    "-" for an empty frame)
Output: one line per frame:
    K0 ... K17 | SWHASH COMPLETE | CLASSID0 CLASSID1 ...
"""
import socket
import sys

try:
    from scapy.packet import Packet
    from scapy.fields import ShortField, XShortField
    from scapy.layers.l2 import Ether, Dot1Q, Dot3
    from scapy.layers.inet import IP, GRE
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ppp import PPPoE
except ImportError as e:  # a hard requirement: the comparison must not pass silently
    sys.stderr.write("flow_oracle.py needs scapy (Debian: apt-get install python3-scapy): %s\n" % e)
    sys.exit(2)

M32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------------
# lookup3 (Bob Jenkins, public domain), from its description.


def rot(x, k):
    return ((x << k) | (x >> (32 - k))) & M32


def mix(a, b, c):
    a = (a - c) & M32; a ^= rot(c, 4); c = (c + b) & M32
    b = (b - a) & M32; b ^= rot(a, 6); a = (a + c) & M32
    c = (c - b) & M32; c ^= rot(b, 8); b = (b + a) & M32
    a = (a - c) & M32; a ^= rot(c, 16); c = (c + b) & M32
    b = (b - a) & M32; b ^= rot(a, 19); a = (a + c) & M32
    c = (c - b) & M32; c ^= rot(b, 4); b = (b + a) & M32
    return a, b, c


def final(a, b, c):
    c ^= b; c = (c - rot(b, 14)) & M32
    a ^= c; a = (a - rot(c, 11)) & M32
    b ^= a; b = (b - rot(a, 25)) & M32
    c ^= b; c = (c - rot(b, 16)) & M32
    a ^= c; a = (a - rot(c, 4)) & M32
    b ^= a; b = (b - rot(a, 14)) & M32
    c ^= b; c = (c - rot(b, 24)) & M32
    return a, b, c


def hashlittle(key, initval):
    """lookup3's hashlittle: bytes, little-endian word loads."""
    n = len(key)
    a = b = c = (0xDEADBEEF + n + initval) & M32
    i = 0
    while n > 12:
        a = (a + int.from_bytes(key[i:i + 4], "little")) & M32
        b = (b + int.from_bytes(key[i + 4:i + 8], "little")) & M32
        c = (c + int.from_bytes(key[i + 8:i + 12], "little")) & M32
        a, b, c = mix(a, b, c)
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = key[i:] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & M32
    b = (b + int.from_bytes(tail[4:8], "little")) & M32
    c = (c + int.from_bytes(tail[8:12], "little")) & M32
    return final(a, b, c)[2]


def hashword(k, initval):
    """lookup3's hashword (the kernel's jhash2): 32-bit words, seed counts the bytes."""
    n = len(k)
    a = b = c = (0xDEADBEEF + (n << 2) + initval) & M32
    i = 0
    while n > 3:
        a = (a + k[i]) & M32
        b = (b + k[i + 1]) & M32
        c = (c + k[i + 2]) & M32
        a, b, c = mix(a, b, c)
        n -= 3
        i += 3
    if n == 0:
        return c
    if n == 3:
        c = (c + k[i + 2]) & M32
    if n >= 2:
        b = (b + k[i + 1]) & M32
    a = (a + k[i]) & M32
    return final(a, b, c)[2]


def jhash_3words_linux3(a, b, c, initval):
    """jhash_3words of Linux 2.6.37..4.0: a and b get the golden value, c the seed; final."""
    return final((a + 0xDEADBEEF) & M32, (b + 0xDEADBEEF) & M32, (c + initval) & M32)[2]


def self_test():
    # lookup3.c driver5's printed answers.
    assert hashlittle(b"", 0) == 0xDEADBEEF
    assert hashlittle(b"", 0xDEADBEEF) == 0xBD5B7DDE
    assert hashlittle(b"Four score and seven years ago", 0) == 0x17770551
    assert hashlittle(b"Four score and seven years ago", 1) == 0xCD628161
    # hashword equals hashlittle over little-endian words (lookup3's own remark).
    words = [(i * 0x9E3779B9 + 0x7F4A7C15) & M32 for i in range(11)]
    for n in range(len(words) + 1):
        le = b"".join(w.to_bytes(4, "little") for w in words[:n])
        assert hashword(words[:n], 77) == hashlittle(le, 77), n


# ---------------------------------------------------------------------------------------------
# Header decoding with scapy, under the flow dissector's rules.


class U16(Packet):
    """Two bytes in network order (the PPP protocol field, read without compression)."""
    name = "u16"
    fields_desc = [XShortField("v", 0)]


class PortBytes(Packet):
    """The 4 bytes the dissector takes as ports (or an SPI)."""
    name = "ports"
    fields_desc = [ShortField("sport", 0), ShortField("dport", 0)]


class Truncated(Exception):
    pass


class Stop(Exception):
    pass


def take(raw, off, n, cls):
    if off + n > len(raw):
        raise Truncated()
    return cls(raw[off:off + n])


def ether_type(raw, off):
    e = take(raw, off, 14, Ether)
    return e.len if isinstance(e, Dot3) else e.type


def fold6(addr):
    b = socket.inet_pton(socket.AF_INET6, addr)
    return bytes(b[i] ^ b[4 + i] ^ b[8 + i] ^ b[12 + i] for i in range(4))


PORT_OFFSETS = {6: 0, 17: 0, 33: 0, 50: 0, 132: 0, 136: 0, 51: 4}


def dissect(raw):
    """Returns (src, dst, ports, ip_proto, complete); src/dst/ports as 4 network-order bytes."""
    st = {"src": bytes(4), "dst": bytes(4), "ports": bytes(4), "proto": 0}
    try:
        proto = ether_type(raw, 0)
        off = 14
        while True:  # the EtherType switch
            if proto in (0x8100, 0x88A8):
                proto = take(raw, off, 4, Dot1Q).type
                off += 4
                continue
            if proto == 0x8864:
                take(raw, off, 6, PPPoE)
                ppp = take(raw, off + 6, 2, U16).v
                off += 8
                if ppp == 0x0021:
                    net = 4
                elif ppp == 0x0057:
                    net = 6
                else:
                    raise Stop()
            elif proto == 0x0800:
                net = 4
            elif proto == 0x86DD:
                net = 6
            else:
                raise Stop()
            while True:  # IP, then IP in IP
                if net == 4:
                    ip = take(raw, off, 20, IP)
                    if ip.ihl < 5:
                        raise Stop()
                    off += ip.ihl * 4
                    st["src"] = socket.inet_aton(ip.src)
                    st["dst"] = socket.inet_aton(ip.dst)
                    more_fragments = int(ip.flags) & 0x1
                    ipp = 0 if (more_fragments or ip.frag) else ip.proto
                else:
                    ip6 = take(raw, off, 40, IPv6)
                    off += 40
                    st["src"] = fold6(ip6.src)
                    st["dst"] = fold6(ip6.dst)
                    ipp = ip6.nh
                if ipp == 4:
                    net = 4
                elif ipp == 41:
                    net = 6
                else:
                    break
            if ipp == 47:
                g = take(raw, off, 4, GRE)
                if g.version == 0 and not g.routing_present:
                    proto = g.proto
                    off += 4 + 4 * (g.chksum_present + g.key_present + g.seqnum_present)
                    if proto == 0x6558:
                        proto = ether_type(raw, off)
                        off += 14
                    continue
            break
        st["proto"] = ipp
        if ipp in PORT_OFFSETS and off + PORT_OFFSETS[ipp] + 4 <= len(raw):
            p = take(raw, off + PORT_OFFSETS[ipp], 4, PortBytes)
            st["ports"] = p.sport.to_bytes(2, "big") + p.dport.to_bytes(2, "big")
        return st["src"], st["dst"], st["ports"], st["proto"], True
    except (Truncated, Stop):
        return st["src"], st["dst"], st["ports"], 0, False


def software_rxhash(src, dst, ports, complete, hashrnd):
    if not complete:
        return 0
    # The raw words a little-endian host loads from the network-order fields.
    s = int.from_bytes(src, "little")
    d = int.from_bytes(dst, "little")
    p0 = int.from_bytes(ports[0:2], "little")
    p1 = int.from_bytes(ports[2:4], "little")
    if d < s or (d == s and p1 < p0):
        s, d = d, s
        p0, p1 = p1, p0
    h = jhash_3words_linux3(d, s, p0 | (p1 << 16), hashrnd)
    return h or 1


KEY_NAMES = ["src", "dst", "proto", "proto-src", "proto-dst", "iif", "priority", "mark",
             "nfct", "nfct-src", "nfct-dst", "nfct-proto-src", "nfct-proto-dst", "rt-classid",
             "sk-uid", "sk-gid", "vlan-tag", "rxhash"]


def key_values(raw, iif, priority, mark, rss, hashrnd):
    src, dst, ports, ipp, complete = dissect(raw)
    # skb->protocol as a little-endian host's u16 of the network-order field; 0 without one.
    protocol = ether_type(raw, 0) if len(raw) >= 14 else 0
    raw_protocol = ((protocol & 0xFF) << 8) | (protocol >> 8)
    src_v = int.from_bytes(src, "big")
    dst_v = int.from_bytes(dst, "big") or raw_protocol
    has_ports = ports != bytes(4)
    psrc = int.from_bytes(ports[0:2], "big") if has_ports else 0
    pdst = int.from_bytes(ports[2:4], "big") if has_ports else raw_protocol
    vlan = 0
    if len(raw) >= 16 and protocol == 0x8100:
        vlan = Dot1Q(raw[14:16] + b"\x00\x00").vlan
    sw = software_rxhash(src, dst, ports, complete, hashrnd)
    values = {
        "src": src_v, "dst": dst_v, "proto": ipp, "proto-src": psrc, "proto-dst": pdst,
        "iif": iif + 1, "priority": priority, "mark": mark, "nfct": 0,
        "nfct-src": src_v, "nfct-dst": dst_v, "nfct-proto-src": psrc, "nfct-proto-dst": pdst,
        "rt-classid": 0, "sk-uid": 0, "sk-gid": 0, "vlan-tag": vlan,
        "rxhash": sw if rss is None else rss,
    }
    return [values[k] for k in KEY_NAMES], sw, complete


def opt(s):
    return None if s == "-" else int(s)


def classid(cfg, values):
    mode, keys, mask, xor, rshift, addend, divisor, base, seed = cfg
    chosen = [values[i] for i, name in enumerate(KEY_NAMES) if name in keys]
    if mode == "hash":
        r = hashword(chosen, seed)
    else:
        assert len(chosen) == 1
        k = chosen[0]
        m = M32 if mask is None else mask
        r = ((((k & m) ^ (xor or 0)) >> (rshift or 0)) + (addend or 0)) & M32
    if divisor:
        r %= divisor
    if base is None:
        base = 0x00010001
    elif base >> 16 == 0:
        base |= 0x00010000
    return (base & 0xFFFF0000) | ((base + r) & 0xFFFF)


def main():
    self_test()
    hashrnd = 0
    configs = []
    out = []
    with open(sys.argv[1]) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "hashrnd":
                hashrnd = int(w[1])
            elif w[0] == "config":
                mode = "map" if w[1] == "-" else w[1]
                keys = set(w[2].split(","))
                nums = [opt(x) for x in w[3:10]]
                configs.append((mode, keys, *nums))
            elif w[0] == "frame":
                iif, prio, mark = int(w[1]), int(w[2]), int(w[3])
                rss = opt(w[4])
                raw = b"" if w[5] == "-" else bytes.fromhex(w[5])
                values, sw, complete = key_values(raw, iif, prio, mark, rss, hashrnd)
                cids = [classid(c, values) for c in configs]
                out.append("%s | %d %d | %s" % (" ".join(map(str, values)), sw, int(complete),
                                                 " ".join(map(str, cids))))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
