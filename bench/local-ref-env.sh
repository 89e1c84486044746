#!/usr/bin/env bash
# Creates the Python venv for the reference (sentence-transformers / PyTorch) side of the local
# embedding checks and benchmarks, at target/bench-pyenv, and prints its python path:
#   bench/local-ref-env.sh            ->   /.../target/bench-pyenv/bin/python
# Used by crates/sluice-local/tests/fixtures/minilm_reference.py and bench/local_embed_ref.py.
# Idempotent: installs nothing when the venv already imports sentence_transformers.
#
# PyPI's Linux x86_64 torch is the CUDA build: with its NVIDIA dependencies the venv is several
# GB (see SIZE below). A CPU-only torch is not on PyPI (`pip install --no-deps torch` fails at
# `import torch` on the missing libcublasLt), so the CUDA build is used, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-pyenv
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import sentence_transformers' >/dev/null 2>&1; then
  echo "$PWD/$py"
  exit 0
fi
mkdir -p target
[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$py" -m pip install -q --disable-pip-version-check \
  'torch==2.15.0' 'sentence-transformers==6.2.0' numpy >&2
"$py" -c 'import sentence_transformers, torch, numpy' >&2
echo "$PWD/$py"
