#!/usr/bin/python3
"""Per-second packet rates of a running DPDK process, read from its telemetry socket.

  ethdev_rate.py --prefix FILE_PREFIX --out-port N [--in-port M] [--warmup W] [--seconds S]

Connects to /var/run/dpdk/FILE_PREFIX/dpdk_telemetry.v2 (what dpdk-telemetry.py -f uses; it
waits up to 20 s for the process to create it), skips W seconds of warm-up, then reads
/ethdev/stats,N (and ,M) once a second for S seconds. Prints one line per second
("sample <s> out_pps <x> in_pps <y>") and a last line "median out_pps <x> in_pps <y>" (the
median of the per-second rates; each rate is the counter delta over the measured time between
two reads, not over a nominal second). opackets of the output port count what the transmit
queue accepted (net_null frees every frame, so that is everything sent); ipackets of the input
port count what was received. With --pid (the DPDK process), the last line also gives
"others <percent>": the CPU time all other processes (this script included) took over the
measured seconds, in percent of one CPU (/proc/stat minus /proc/PID/stat): how disturbed the
measurement was. (ipsec-secgw keeps both of its lcores busy: the worker polls, and the main
lcore spins in rte_eal_mp_wait_lcore.)
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time


def connect(path, wait):
    deadline = time.time() + wait
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(path)
            info = json.loads(s.recv(4096).decode())
            return s, info.get("max_output_len", 16384)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def query(s, maxlen, cmd):
    s.send(cmd.encode())
    return json.loads(s.recv(maxlen).decode())


def counters(s, maxlen, out_port, in_port):
    o = query(s, maxlen, f"/ethdev/stats,{out_port}")["/ethdev/stats"]
    i = query(s, maxlen, f"/ethdev/stats,{in_port}")["/ethdev/stats"] if in_port is not None else None
    return time.monotonic(), o["opackets"], (i["ipackets"] if i else 0)


def cpu_times(pid):
    """(all CPUs' total jiffies, their busy jiffies, the process's jiffies)"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    own = 0
    if pid:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            own = int(st[11]) + int(st[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    idle = v[3] + v[4]
    return sum(v), sum(v) - idle, own


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prefix", required=True)
    p.add_argument("--out-port", type=int, required=True)
    p.add_argument("--in-port", type=int)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--pid", type=int)
    p.add_argument("--runtime-dir", default=os.environ.get("RUNTIME_DIR", "/var/run/dpdk"))
    a = p.parse_args()
    path = os.path.join(a.runtime_dir, a.prefix, "dpdk_telemetry.v2")
    try:
        s, maxlen = connect(path, 20)
    except OSError as e:
        print(f"ethdev_rate: cannot connect to {path}: {e}", file=sys.stderr)
        return 1
    # wait until packets flow, then the warm-up
    t_end = time.time() + 20
    while counters(s, maxlen, a.out_port, a.in_port)[1] == 0 and time.time() < t_end:
        time.sleep(0.1)
    time.sleep(a.warmup)
    prev = counters(s, maxlen, a.out_port, a.in_port)
    c0 = cpu_times(a.pid)
    outs, ins = [], []
    for n in range(1, a.seconds + 1):
        time.sleep(max(0.0, prev[0] + 1.0 - time.monotonic()))
        cur = counters(s, maxlen, a.out_port, a.in_port)
        dt = cur[0] - prev[0]
        outs.append((cur[1] - prev[1]) / dt)
        ins.append((cur[2] - prev[2]) / dt)
        print(f"sample {n} out_pps {outs[-1]:.0f} in_pps {ins[-1]:.0f}", flush=True)
        prev = cur
    s.close()
    c1 = cpu_times(a.pid)
    ncpu = os.cpu_count() or 1
    others = 100.0 * ncpu * ((c1[1] - c0[1]) - (c1[2] - c0[2])) / max(1, c1[0] - c0[0])
    print(f"median out_pps {statistics.median(outs):.0f} in_pps {statistics.median(ins):.0f} "
          f"others {max(0.0, others):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
