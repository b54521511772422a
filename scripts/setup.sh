#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install edgecls with its test extras.
# EDGECLS_VENV picks another location; the default is .venv in the repository.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EDGECLS_VENV:-$root/.venv}
# A first install needs about 7 GB (torch's CUDA build is 5.5 GB); say so before pip fails half-way.
if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  mkdir -p "$(dirname "$venv")"
  free_kb=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    echo "set-up failed: $((free_kb / 1024)) MB free under $(dirname "$venv"); the environment needs about 8 GB: free space or set EDGECLS_VENV to a bigger disk" >&2
    exit 1
  fi
fi
# Fashion-MNIST, which the main job trains gru on: where it is in none of the places edgecls looks
# ($EDGECLS_DATA, ../shared/datasets, Debian's /usr/share/datasets, the user cache) and apt-get can run,
# install Debian's dataset-fashion-mnist (the package registries are reachable where the internet is not).
fashion_here() {
  local d
  for d in "${EDGECLS_DATA:-}" "$root/../shared/datasets" /usr/share/datasets "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/edgecls/data"; do
    [ -n "$d" ] && { [ -d "$d/FashionMNIST" ] || [ -d "$d/fashion-mnist" ]; } && return 0
  done
  return 1
}
if ! fashion_here; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "set-up: Fashion-MNIST not found; installing Debian's dataset-fashion-mnist" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
      || echo "note: apt-get could not install dataset-fashion-mnist; the main job needs Fashion-MNIST: set EDGECLS_DATA to a torchvision data root (docs/guide/data.md)" >&2
  else
    echo "note: Fashion-MNIST not found; the main job trains on it: sudo apt-get install dataset-fashion-mnist, or set EDGECLS_DATA (docs/guide/data.md)" >&2
  fi
fi
# Set-up done before from the same pyproject.toml and web/package-lock.json is not done again (the test
# commands run this script first, every time).
stamp="$venv/.edgecls-setup"
want=$(cat "$root/pyproject.toml" "$root/web/package-lock.json" | sha256sum | cut -d' ' -f1)
check="import edgecls.runtime, torch, onnxruntime, fastapi, tritonclient.http, ray.data, mkdocs"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "$check" 2>/dev/null \
    && { ! command -v npm >/dev/null || [ -f "$root/web/node_modules/onnxruntime-web/package.json" ]; }; then
  exit 0
fi
echo "set-up [1/3]: Python environment in $venv" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "set-up [2/3]: pip install -e '.[train,test,ray,docs,grpc,openvino]' (a first install takes minutes: torch's CUDA build is most of it)" >&2
"$venv/bin/python" -m pip install --progress-bar on --disable-pip-version-check -e "$root[train,test,ray,docs,grpc,openvino]" 2>&1 \
  | grep -v -e "^WARNING: Location .* is ignored" -e "^Requirement already satisfied" >&2 || true
"$venv/bin/python" -c "$check" || { echo "set-up failed" >&2; exit 1; }
# The browser page's onnxruntime-web, pinned by web/package-lock.json (npm's registry is reachable where PyPI is).
if command -v npm >/dev/null; then
  echo "set-up [3/3]: npm ci --prefix web (onnxruntime-web for the browser page)" >&2
  npm ci --prefix "$root/web" --no-audit --no-fund --silent || { echo "set-up failed: npm ci --prefix web" >&2; exit 1; }
else
  echo "note: npm not found; the browser page (edgecls web) needs it: install npm, then npm ci --prefix web" >&2
fi
echo "$want" > "$stamp"
