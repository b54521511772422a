#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install edgecls with its test extras.
# EDGECLS_VENV picks another location; the default is .venv in the repository.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EDGECLS_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[train,test,ray]" 2>&1 \
  | grep -v "^WARNING: Location .* is ignored" || true
"$venv/bin/python" -c "import edgecls, torch, onnxruntime, fastapi, tritonclient.http, ray.data" || { echo "set-up failed" >&2; exit 1; }
# The browser page's onnxruntime-web, pinned by web/package-lock.json (npm's registry is reachable where PyPI is).
if command -v npm >/dev/null; then
  npm ci --prefix "$root/web" --no-audit --no-fund --silent || { echo "set-up failed: npm ci --prefix web" >&2; exit 1; }
else
  echo "note: npm not found; the browser page (edgecls web) needs it: install npm, then npm ci --prefix web" >&2
fi
