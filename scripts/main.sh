#!/usr/bin/env bash
# Set up, then the main job end to end for one model (default gru): train on the real data,
# export to ONNX (validated against PyTorch), and evaluate ONNX Runtime vs PyTorch on the full test split.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${EDGECLS_VENV:-$root/.venv}
cd "$root"
model=${1:-gru}
artifacts=${EDGECLS_ARTIFACTS:-runs}
"$venv/bin/edgecls" train --model "$model" --artifacts "$artifacts"
"$venv/bin/edgecls" export --model "$model" --artifacts "$artifacts"
"$venv/bin/edgecls" evaluate --model "$model" --artifacts "$artifacts"
