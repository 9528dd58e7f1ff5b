#!/usr/bin/env bash
# Download into .whl/ exactly the wheels the lent GPU machine (Python 3.12, x86-64, no internet) needs beyond its
# own packages to import this project and run bench/gpu_check.py, then print their total size.
#
#   bash scripts/gpu_wheels.sh
#
# Its image already has torch (CUDA), transformers, accelerate, huggingface_hub, safetensors, numpy, pillow,
# matplotlib, tqdm, pyyaml, onnx, onnxscript and onnxruntime (CPU). The plugin imports loguru at module level:
# that is the only wheel the check needs (it generates through the plugin's own path, not lmms-eval; method=
# topology's default engine needs neither gudhi nor dionysus). Versions are the lock's (requirements-cpu.lock).
# Not carried, because they cannot travel under the 64 MiB limit of a call: onnxruntime-gpu (255.6 MB wheel,
# 1.31.1) and so onnxruntime-genai-cuda (16.7 MB, needs onnxruntime-gpu>=1.31); the check reports both sections
# as blocked. .whl/ is emptied of other wheels first (two versions of one package stop the install there) and is
# ignored through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(loguru)

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
mkdir -p .whl
rm -f .whl/*.whl
pins=()
for name in "${PACKAGES[@]}"; do
    pin="$(grep -i "^${name}==" requirements-cpu.lock | head -1)"
    [ -n "$pin" ] || { echo "gpu_wheels: $name is not in requirements-cpu.lock" >&2; exit 1; }
    pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls -l .whl/*.whl
echo "gpu_wheels: $(ls .whl/*.whl | wc -l) wheel(s), $(du -ch .whl/*.whl | tail -1 | cut -f1) in .whl/ (${pins[*]})"
