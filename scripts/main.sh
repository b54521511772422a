#!/usr/bin/env bash
# Set-up, then the main job end to end:
#  1. classify the real sample images in samples/ with the shipped models (ONNX Runtime only; no data,
#     no training, no download needed);
#  2. train one model (default gru) on its real data, export it to ONNX (validated against PyTorch) and
#     evaluate ONNX Runtime against PyTorch on the full test split, all into runs/.
# Training data: $EDGECLS_DATA, else ../shared/datasets beside the checkout, Debian's /usr/share/datasets (set-up
# installs dataset-fashion-mnist where none is found and apt-get can run), or a torchvision download (docs/guide/data.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${EDGECLS_VENV:-$root/.venv}
cd "$root"
model=${1:-gru}
artifacts=${EDGECLS_ARTIFACTS:-runs}
samples=$("$venv/bin/python" -m edgecls.commands.samples folder "$model")
echo "== $model on its sample images (the true label is in each file name)"
"$venv/bin/edgecls" infer "$samples" --model "$model" --provider auto
echo "== every shipped model on its sample images"
"$venv/bin/python" -m edgecls.commands.samples check
echo "== train, export and evaluate $model into $artifacts/"
"$venv/bin/edgecls" train --model "$model" --artifacts "$artifacts"
"$venv/bin/edgecls" export --model "$model" --artifacts "$artifacts"
"$venv/bin/edgecls" evaluate --model "$model" --artifacts "$artifacts"
