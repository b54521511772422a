#!/usr/bin/env bash
# The GPU checks and figures of the engines issue, as one short script for a lent GPU machine (the `device`
# tool runs it from the repository root, with .venv carried; results go to $OUT, default benchmarks/results):
#   1. the CUDA and TensorRT parity tests (tests that skip on a machine without a GPU run here), among them the
#      IOBinding, CUDA-graph and fused-form paths (tests/test_device_paths.py);
#   2. benchmarks/cuda_levers.py: each GPU lever alone against eager-CUDA (plain run, IOBinding, CUDA graph at
#      batch 1, steps vs fused form), so the engine's choices can be checked against measurements;
#   3. `edgecls bench` on CUDA, batch 1 and 256, every shipped model: ORT-CUDA against eager-CUDA;
#   4. the same on TensorRT (fp32, then fp16) where its libraries are installed (pip install 'edgecls[tensorrt]').
# Each step is bounded in time (about 9 minutes in all, one device call); a failing step is reported and the next
# one runs. Exit 1 if any failed.
# The environment: the lent machine has torch and a CPU-only onnxruntime; onnxruntime-gpu (its wheel is larger
# than one call's 64 MiB carry) and edgecls's other needs must be brought into the environment EDGECLS_VENV
# points at, or onto PYTHONPATH, before this runs.
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
step "CUDA and TensorRT parity tests" 150 "$py" -m pytest -q -x -k "cuda or tensorrt or gpu" tests
step "GPU levers, one at a time" 120 "$py" benchmarks/cuda_levers.py --provider cuda --out "$out"
step "bench, CUDA" 120 "$py" -m edgecls bench --model all --provider cuda --batch-sizes 1,256 --seconds 0.5 \
  --e2e-images 0 --out "$out/gpu-cuda"
if "$py" -c "import tensorrt_libs" 2>/dev/null; then
  for precision in fp32 fp16; do
    step "bench, TensorRT $precision" 90 "$py" -m edgecls bench --model all --provider tensorrt \
      --precision "$precision" --batch-sizes 1,256 --seconds 0.5 --e2e-images 0 --out "$out/gpu-tensorrt-$precision"
  done
else
  echo "== TensorRT: its libraries are not installed here (pip install 'edgecls[tensorrt]'); not measured"
fi
exit $failed
