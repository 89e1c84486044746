#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (cargo-nextest, a Python venv with
# the official OpenAI SDK), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")"

# Official SDKs (OpenAI, Anthropic), driven against a real sluice by the Python SDK tests.
PYENV="$PWD/target/pyenv"
if ! "$PYENV/bin/python" -c 'import openai, anthropic' >/dev/null 2>&1; then
  python3 -m venv "$PYENV"
  "$PYENV/bin/pip" install -q --disable-pip-version-check 'openai>=1.40,<3' 'anthropic>=0.40,<1'
fi
export SLUICE_PYTHON="$PYENV/bin/python"
export SLUICE_REQUIRE_PYTHON_SDK=1

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --locked --no-fail-fast "$@"
