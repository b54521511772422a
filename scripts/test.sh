#!/usr/bin/env bash
# Set up, then run the whole test suite on the real data sets (../shared/datasets unless EDGECLS_DATA is set).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${EDGECLS_VENV:-$root/.venv}
export EDGECLS_DATA=${EDGECLS_DATA:-$root/../shared/datasets}
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
