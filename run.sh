#!/usr/bin/env bash
# Builds sluice and serves it. Config: $SLUICE_CONFIG, else ./sluice.toml if present, else
# providers from API-key environment variables (OPENAI_API_KEY, ...). State lives under
# ./.sluice (embedded: no external service needed). Extra arguments go to `sluice serve`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked -p sluice
args=()
if [ -z "${SLUICE_CONFIG:-}" ] && [ -f sluice.toml ]; then
  args+=(--config sluice.toml)
fi
exec target/release/sluice serve "${args[@]}" "$@"
