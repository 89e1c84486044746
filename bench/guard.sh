#!/usr/bin/env bash
# What guardrails' built-in detectors cost per 4 KB chat request (issue 19): every
# built-in detector at once, then each alone, over a realistic body without personal data
# and one with three values to redact (crates/sluice-guard/examples/cost.rs, release
# build, one core); then what output validation (validate_json) costs per whole answer
# (crates/sluice-guard/examples/validate_cost.rs). Results go to
# bench/results/guard-<timestamp>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench/results/guard-$(date +%Y%m%d-%H%M%S).txt"
cargo build --release --locked -p sluice-guard --example cost --example validate_cost >&2
BIN="${CARGO_TARGET_DIR:-target}/release/examples/cost"
VALIDATE="${CARGO_TARGET_DIR:-target}/release/examples/validate_cost"
{
  echo "# bench/guard.sh  ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  "$BIN"
  for d in email phone card iban ssn aadhaar pan ip secret; do "$BIN" "$d" | sed -n 1p; done
  "$VALIDATE"
} | tee "$OUT"
