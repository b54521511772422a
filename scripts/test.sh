#!/usr/bin/env bash
# Set up, then run the tests. Two tiers:
#   bash scripts/test.sh          the whole suite, on the real data sets (../shared/datasets unless EDGECLS_DATA
#                                 is set)
#   bash scripts/test.sh --fast   the fast tier alone: no data sets, no network, no browser (pytest -m "not slow")
# Other arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tier=()
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not slow")
fi
bash "$root/scripts/setup.sh"
venv=${EDGECLS_VENV:-$root/.venv}
export EDGECLS_DATA=${EDGECLS_DATA:-$root/../shared/datasets}
cd "$root"
exec "$venv/bin/python" -m pytest "${tier[@]}" "$@"
