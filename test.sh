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

# Redis for sluice-store's tests: the one at REDIS_URL, else the usual local one, else a
# throwaway server stopped on exit (the Redis-down tests start their own `redis-server`).
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if [ -z "${REDIS_URL:-}" ] && ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
  trap 'redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --locked --no-fail-fast "$@"
