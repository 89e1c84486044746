#!/usr/bin/env python3
"""Splits the anonymous resident memory of bench/smaps_sample.sh's samples by allocator, one
line per STEP seconds (default 60): mimalloc's arenas (mimalloc v2 places them from 2 TiB,
0x200_0000_0000, up), glibc's thread arenas (mappings starting on a 64 MiB boundary), glibc's
main heap ([heap]), thread stacks (2 MiB mappings) and the rest; in KiB.
Usage: bench/smaps_split.py DIR [STEP]"""
import glob
import re
import sys

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def mappings(path):
    """(start, end, permissions, name, anonymous KiB) of each mapping."""
    out = []
    for line in open(path):
        m = HEADER.match(line)
        if m:
            out.append([int(m[1], 16), int(m[2], 16), m[3], m[4].strip(), 0])
        elif line.startswith("Anonymous:") and out:
            out[-1][4] = int(line.split()[1])
    return out


def kind(lo, hi, perm, name):
    if name.startswith("/"):
        return "file"
    if name:
        return name.strip("[]")
    if 0x200_0000_0000 <= lo < 0x400_0000_0000:
        return "mimalloc"
    if lo % (64 << 20) == 0 and perm.startswith("rw"):
        return "glibc-arenas"
    if hi - lo in (2048 << 10, 2052 << 10):
        return "stacks"
    return "other"


def main():
    d, step = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60
    times = sorted(int(p.rsplit(".", 1)[1]) for p in glob.glob(d + "/smaps.*"))
    kinds = ["mimalloc", "glibc-arenas", "heap", "stacks", "other", "file"]
    print("| s | " + " | ".join(kinds) + " |")
    print("| ---: |" + " ---: |" * len(kinds))
    last = -step
    for t in times:
        if t - last < step and t != times[-1]:
            continue
        last = t
        total = dict.fromkeys(kinds, 0)
        for lo, hi, perm, name, anon in mappings(f"{d}/smaps.{t}"):
            k = kind(lo, hi, perm, name)
            total[k if k in total else "other"] += anon
        print(f"| {t} | " + " | ".join(str(total[k]) for k in kinds) + " |")


main()
