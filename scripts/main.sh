#!/usr/bin/env bash
# Set up, then the main job: train the default model on its real data.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${EDGECLS_VENV:-$root/.venv}
cd "$root"
model=${1:-gru}
"$venv/bin/edgecls" train --model "$model"
