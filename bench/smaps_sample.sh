#!/usr/bin/env bash
# Samples a running process's memory map for bench/smaps_split.py: /proc/PID/smaps every
# EVERY seconds into OUT/smaps.<seconds since start>, until the process exits.
# Usage: bench/smaps_sample.sh PID EVERY OUT   (e.g. alongside bench/soak.sh, with the PID of
# `pgrep -f "^$SLUICE_BIN serve"`)
set -u
pid=$1 every=$2 out=$3
mkdir -p "$out"
t0=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  cp "/proc/$pid/smaps" "$out/smaps.$(($(date +%s) - t0))" 2>/dev/null
  sleep "$every"
done
