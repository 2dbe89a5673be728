#!/usr/bin/env python3
"""Send a paced stream of malformed VXLAN datagrams to a VTEP (helper of scripts/soak.sh).

Usage: soak_bad_datagrams.py --to IP[:PORT] --from IP [--from IP ...] [--rate N] [--vni N]
                             [--duration SECS]

Each datagram is one of (chosen at random, roughly equally):
  truncated    0-7 bytes: shorter than the 8-byte VXLAN header       -> drop_truncated
  no_iflag     VXLAN header without the I flag, then a 60-byte frame -> drop_bad_header
  wrong_vni    I flag set, a VNI other than --vni, a 60-byte frame   -> drop_unknown_vni
  short_frame  valid header for --vni, inner frame of 1-13 bytes     -> drop_short_frame
  garbage      1-1400 random bytes                                   -> any of the above
The source address rotates over the --from addresses (the first gets half of the datagrams, the
others share the rest): a source that is not a configured VTEP of the receiver is counted as
drop_not_allowed there instead. Runs until --duration elapses (0: until SIGTERM/SIGINT), then
prints the number sent per source and kind as one JSON object on stdout.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import time

KINDS = ("truncated", "no_iflag", "wrong_vni", "short_frame", "garbage")


def frame(rng, n=60):
    # broadcast destination, locally administered unicast source, EtherType 0x88b5 (local use)
    src = bytes([0x02 | (rng.randrange(256) & 0xFC)]) + rng.randbytes(5)
    return b"\xff" * 6 + src + b"\x88\xb5" + rng.randbytes(max(0, n - 14))


def make(kind, rng, vni):
    if kind == "truncated":
        return rng.randbytes(rng.randrange(8))
    if kind == "no_iflag":
        return struct.pack("!BxxxI", rng.randrange(256) & ~0x08, vni << 8) + frame(rng)
    if kind == "wrong_vni":
        other = rng.choice([v for v in (0, vni + 1, rng.randrange(1 << 24)) if v != vni] or [vni ^ 1])
        return struct.pack("!BxxxI", 0x08, other << 8) + frame(rng)
    if kind == "short_frame":
        return struct.pack("!BxxxI", 0x08, vni << 8) + rng.randbytes(rng.randrange(1, 14))
    return rng.randbytes(rng.randrange(1, 1401))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", required=True, help="destination IP[:PORT] (port default 4789)")
    ap.add_argument("--from", dest="sources", action="append", required=True, help="source IP (repeatable)")
    ap.add_argument("--rate", type=float, default=300, help="datagrams per second in all (default 300)")
    ap.add_argument("--vni", type=int, default=42, help="the receiver's VNI (default 42)")
    ap.add_argument("--duration", type=float, default=0, help="seconds to run; 0 = until signalled")
    a = ap.parse_args()
    host, _, port = a.to.partition(":")
    dst = (host, int(port or 4789))
    socks = []
    for ip in a.sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        socks.append(s)
    weights = [1.0] if len(socks) == 1 else [0.5] + [0.5 / (len(socks) - 1)] * (len(socks) - 1)
    sent = {ip: dict.fromkeys(KINDS, 0) for ip in a.sources}
    errors = 0
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(os.getpid() ^ int(time.time()))
    start = time.monotonic()
    tick = 0.01  # send in 10 ms slices
    n_done = 0
    while not stop:
        now = time.monotonic()
        if a.duration and now - start >= a.duration:
            break
        due = int((now - start) * a.rate) + (a.rate > 0)
        for _ in range(due - n_done):
            i = rng.choices(range(len(socks)), weights)[0]
            kind = rng.choice(KINDS)
            try:
                socks[i].sendto(make(kind, rng, a.vni), dst)
                sent[a.sources[i]][kind] += 1
            except OSError:  # e.g. ECONNREFUSED from an earlier ICMP error; keep going
                errors += 1
        n_done = max(n_done, due)
        time.sleep(tick)
    json.dump({"sent": sent, "total": sum(sum(k.values()) for k in sent.values()),
               "send_errors": errors, "seconds": round(time.monotonic() - start, 1)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
