#!/usr/bin/env bash
# Creates (idempotently) the Python venv used by bench/local_chat_ref.py: llama-cpp-python,
# built from its sdist (PyPI ships no wheel for it) as a CPU-only build of llama.cpp.
# cmake and ninja come from PyPI when the machine has none. Takes 10-20 minutes on 2 cores the
# first time; a second run with the pinned version already installed does nothing.
#
# Usage: bench/local-llama-env.sh            (venv at target/bench-llama-env)
#        BENCH_LLAMA_ENV=/some/dir bench/local-llama-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_CPP_PYTHON_VERSION=0.3.36
VENV="${BENCH_LLAMA_ENV:-$PWD/target/bench-llama-env}"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] \
  && "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
  echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION already in $VENV"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Build tools from PyPI (cmake and ninja only when the machine has none on PATH), installed in the
# venv and used with --no-build-isolation: inside pip's isolated build env the venv's cmake
# wrapper cannot import its own module, and a second copy would be downloaded there.
tools=(scikit-build-core)
command -v cmake >/dev/null || tools+=(cmake)
command -v ninja >/dev/null || tools+=(ninja)
"$VENV/bin/python" -m pip install -q "${tools[@]}"
export PATH="$VENV/bin:$PATH"

# CPU only; GGML_NATIVE compiles for this machine's CPU (AVX2/AVX-512 where present), which is
# what llama.cpp does by default for a local build. No BLAS: both engines use their own kernels.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"$VENV/bin/python" -m pip install --no-cache-dir --no-build-isolation --no-binary llama-cpp-python \
  "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" --verbose
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'in $VENV')"
