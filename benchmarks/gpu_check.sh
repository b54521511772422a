#!/usr/bin/env bash
# The GPU checks and figures of the engines issue, as one short script for a lent GPU machine (the `device`
# tool runs it from the repository root, with .venv carried; results go to $OUT, default benchmarks/results):
#   1. the CUDA and TensorRT parity tests (tests that skip on a machine without a GPU run here);
#   2. `edgecls bench` on CUDA, batch 1 and 256, every shipped model: ORT-CUDA against eager-CUDA;
#   3. the same on TensorRT (fp32, then fp16) where its libraries are installed (pip install 'edgecls[tensorrt]').
# Each step is bounded in time; a failing step is reported and the next one runs. Exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
py=${EDGECLS_VENV:-.venv}/bin/python
failed=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" || { echo "!! $name failed (exit $?)"; failed=1; }
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || { echo "no NVIDIA GPU"; exit 1; }
step "CUDA and TensorRT parity tests" 240 "$py" -m pytest -q -x -k "cuda or tensorrt or gpu" tests
step "bench, CUDA" 180 "$py" -m edgecls bench --model all --provider cuda --batch-sizes 1,256 --seconds 0.5 \
  --e2e-images 0 --out "$out/gpu-cuda"
if "$py" -c "import tensorrt_libs" 2>/dev/null; then
  for precision in fp32 fp16; do
    step "bench, TensorRT $precision" 240 "$py" -m edgecls bench --model all --provider tensorrt \
      --precision "$precision" --batch-sizes 1,256 --seconds 0.5 --e2e-images 0 --out "$out/gpu-tensorrt-$precision"
  done
else
  echo "== TensorRT: its libraries are not installed here (pip install 'edgecls[tensorrt]'); not measured"
fi
exit $failed
