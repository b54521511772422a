#!/usr/bin/env bash
# The runtime-only install on aarch64 (Raspberry Pi 4/5 class CPUs), under emulation, against x86:
#   1. an arm64 Debian 12 root (debootstrap, cached), edgecls's wheel installed there the way an ARM user
#      would (the core install: no torch, every dependency its aarch64 build from PyPI);
#   2. `edgecls infer` and the runtime's logits on samples/ for every shipped model file, fp32 and every
#      reduced-precision variant, under QEMU_CPU=cortex-a72 (Pi 4) and cortex-a76 (Pi 5);
#   3. `edgecls serve` there answering a tritonclient request from this machine, and `edgecls web --out`;
#   4. the answers compared with this machine's (scripts/aarch64.py compare): one table, exit 1 on any
#      difference.
# Needs root (chroot, mount) and binfmt_misc with qemu-user-static; where those are missing it says so in
# one line and exits 2. The root and the venv are cached in $EDGECLS_ARM_CACHE (/var/cache/edgecls/aarch64).
#
#   bash scripts/check-aarch64.sh [--cpus "cortex-a72 cortex-a76"] [--models gru,cnn] [--no-serve] [--perturb MODEL]
#                                 [--report DIR]
# --report DIR: also write the table as DIR/aarch64.md and .json (benchmarks/results holds the committed one).
# --perturb MODEL: a test of the checker; the arm64 side runs MODEL's fp32 file with one weight scaled by
# 1.01, which must fail.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EDGECLS_VENV:-$repo/.venv}
cache=${EDGECLS_ARM_CACHE:-/var/cache/edgecls/aarch64}
cpus="cortex-a72 cortex-a76"
serve_check=1
perturb=""
models=""
report=()
while [ $# -gt 0 ]; do
  case $1 in
    --cpus) cpus=$2; shift 2 ;;
    --no-serve) serve_check=0; shift ;;
    --perturb) perturb=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --report) report=(--report "$(cd "$2" && pwd)"); shift 2 ;;
    *) echo "check-aarch64: unknown option $1" >&2; exit 2 ;;
  esac
done
start=$SECONDS
say() { echo "check-aarch64 [$((SECONDS - start)) s]: $*" >&2; }
fail_env() { say "$*"; exit 2; }

# ---- the machine: root, binfmt, qemu-user-static, debootstrap ----
[ "$(id -u)" = 0 ] || fail_env "needs root (chroot and mount); run it as root, as CI does"
[ -x "$venv/bin/python" ] || fail_env "no $venv; run bash scripts/setup.sh first"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || fail_env "cannot install ${missing[*]} with apt-get; install them, then run again"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || fail_env "binfmt_misc is not mounted and cannot be (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || fail_env "binfmt has no enabled qemu-aarch64 handler (update-binfmts --enable qemu-aarch64 failed)"

# ---- the arm64 root: cached base, a fresh copy per run ----
mkdir -p "$cache/pip"
base="$cache/bookworm-arm64-python.tar.gz"
if [ ! -s "$base" ]; then
  say "building the arm64 Debian 12 root (debootstrap, once; about 5 minutes)"
  tmp_root="$cache/root.build.$$"
  rm -rf "$tmp_root"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$tmp_root" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
    || { rm -rf "$tmp_root"; fail_env "debootstrap failed; see $cache/debootstrap.log"; }
  tar -C "$tmp_root" -czf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$tmp_root"
fi
chroot=$(command -v chroot)
work=$(mktemp -d "$cache/run.XXXXXX")
R=$work/root
mounts=()
stop_server() {  # SIGTERM (uvicorn answers what is in flight, then exits), SIGKILL after 30 s
  [ -n "${server_pid:-}" ] || return 0
  kill "$server_pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
cleanup() {
  stop_server
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  if grep -q " $work/" /proc/mounts; then  # never delete through a mount that is still there (/dev)
    say "left $work in place: something under it is still mounted"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
mkdir -p "$R"
tar -C "$R" -xzf "$base"
[ -e "$R/usr/bin/python3" ] || fail_env "$base holds no python3; delete it to build the root again"

# What the root sees: /proc with an aarch64 cpuinfo for the emulated CPU (qemu passes the host's x86
# cpuinfo through, and ONNX Runtime's CPU detection crashed on it), /dev, DNS, the host's CA bundle for pip.
mkdir -p "$R/work" "$R/root/.cache/pip" "$R/sys/devices/system/cpu/cpu0" "$R/sys/devices/system/cpu/cpu1"
for f in possible present online; do echo 0-1 >"$R/sys/devices/system/cpu/$f"; done  # cpuinfo's core lists
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$R/etc/ssl/certs/host-ca.crt" 2>/dev/null \
  || cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/host-ca.crt"
cpuinfo=$work/cpuinfo
touch "$cpuinfo"
mount -t proc proc "$R/proc" && mounts+=("$R/proc")
mount --bind "$cpuinfo" "$R/proc/cpuinfo" && mounts+=("$R/proc/cpuinfo")
mount --bind /dev "$R/dev" && mounts+=("$R/dev")
mount --bind "$cache/pip" "$R/root/.cache/pip" && mounts+=("$R/root/.cache/pip")

write_cpuinfo() {  # what Linux prints on two cores of that CPU
  local part variant revision features
  case $1 in
    cortex-a72) part=0xd08; variant=0x0; revision=3; features="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) part=0xd0b; variant=0x4; revision=1
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    *) fail_env "unknown --cpus entry $1 (cortex-a72 or cortex-a76)" ;;
  esac
  : >"$cpuinfo"
  for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$n" "$features" "$variant" "$part" "$revision" >>"$cpuinfo"
  done
}
in_root() {  # the command line that runs in the root as an ARM user would, on the emulated CPU $1, with none of
  # the host's environment: env and chroot exec, so a background job's $! is the emulated program itself
  write_cpuinfo "$1"
  in_root_cmd=(env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$1"
    PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$chroot" "$R")
}
arm() {  # run a command in the root on the emulated CPU $1
  in_root "$1"; shift
  "${in_root_cmd[@]}" "$@"
}

# ---- edgecls there: the wheel, the core install ----
say "building the wheel"
"$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo" >/dev/null
wheel=$(ls "$work/dist"/edgecls-*.whl)
cp "$wheel" "$R/work/"
deps_key=$(sha256sum "$repo/pyproject.toml" | cut -c1-16)
venv_cache="$cache/venv-$deps_key.tar.gz"
if [ -s "$venv_cache" ]; then
  tar -C "$R" -xzf "$venv_cache"
  arm cortex-a72 /opt/venv/bin/pip install -q --no-deps --force-reinstall "/work/$(basename "$wheel")"
else
  say "pip install of the wheel and its aarch64 dependencies, emulated (about a minute; cached afterwards)"
  arm cortex-a72 python3 -m venv /opt/venv
  arm cortex-a72 /opt/venv/bin/pip install -q "/work/$(basename "$wheel")"
  tar -C "$R" -czf "$venv_cache.tmp" opt/venv && mv "$venv_cache.tmp" "$venv_cache"
fi
installed=$(arm cortex-a72 /opt/venv/bin/pip list --format=freeze)
heavy=$(grep -iE '^(torch|torchvision|onnxruntime-gpu|nvidia-|cuda|triton)' <<<"$installed" || true)
[ -z "$heavy" ] || { say "the core install on aarch64 pulled: $(tr '\n' ' ' <<<"$heavy")"; exit 1; }
say "core install on aarch64: $(grep -iE '^(onnxruntime|numpy|pillow|simplejpeg)==' <<<"$installed" | tr '\n' ' ')(no torch, no CUDA)"

# ---- the shipped files and the samples, on both sides ----
cp -r "$repo/artifacts" "$R/work/artifacts"
cp -r "$repo/samples" "$R/work/samples"
cp "$repo/scripts/aarch64.py" "$R/work/"
if [ -n "$perturb" ]; then
  [ -f "$R/work/artifacts/$perturb/model.onnx" ] || fail_env "--perturb $perturb: no shipped model of that name"
  "$venv/bin/python" "$repo/scripts/aarch64.py" perturb "$R/work/artifacts/$perturb/model.onnx"
  say "test of the checker: $perturb's fp32 file on the arm64 side has one weight scaled by 1.01"
fi
say "x86 reference ($(uname -m))"
(cd "$repo" && "$venv/bin/python" scripts/aarch64.py probe --artifacts artifacts --samples samples --cli \
  --models "$models" --out "$work/x86.json" >/dev/null)
results=()
for cpu in $cpus; do
  say "arm64 under QEMU_CPU=$cpu"
  arm "$cpu" sh -c "cd /work && python aarch64.py probe --artifacts artifacts --samples samples --cli \
    --models '$models' --out arm-$cpu.json"
  cp "$R/work/arm-$cpu.json" "$work/arm-$cpu.json"
  results+=("$work/arm-$cpu.json")
done

status=0
if [ "$serve_check" = 1 ]; then
  cpu=${cpus%% *}
  port=$("$venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  say "edgecls serve on arm64 ($cpu), one tritonclient request from $(uname -m)"
  in_root "$cpu"
  "${in_root_cmd[@]}" /opt/venv/bin/edgecls serve --onnx /work/artifacts/gru/model.onnx --port "$port" \
    --provider cpu >"$work/serve.log" 2>&1 &
  server_pid=$!
  (cd "$repo" && "$venv/bin/python" scripts/aarch64.py serve-check --url "127.0.0.1:$port" --model gru \
    --artifacts artifacts --samples samples) || { status=1; tail -5 "$work/serve.log" >&2; }
  stop_server
  [ -z "$(pgrep -f "edgecls serve --onnx /work/artifacts/gru/model.onnx --port $port" || true)" ] \
    || { say "the emulated server did not stop"; status=1; }
  say "edgecls web --out on arm64 ($cpu)"
  site_pkgs=$(ls -d "$R"/opt/venv/lib/python3*/site-packages)
  mkdir -p "$site_pkgs/edgecls/web/node_modules"  # what `npm ci --prefix web` gives a checkout
  cp -r "$repo/web/node_modules/onnxruntime-web" "$site_pkgs/edgecls/web/node_modules/"
  if arm "$cpu" sh -c "cd /work && edgecls web --model gru --artifacts artifacts --out site" >"$work/web.log" 2>&1 \
      && [ -s "$R/work/site/index.html" ] && [ -s "$R/work/site/models/gru.onnx" ]; then
    echo "edgecls web --out on arm64: wrote the page, onnxruntime-web and gru ($(du -sh "$R/work/site" | cut -f1))"
  else
    say "edgecls web --out failed on arm64: $(tail -3 "$work/web.log")"
    status=1
  fi
fi

echo
(cd "$repo" && "$venv/bin/python" scripts/aarch64.py compare "$work/x86.json" "${results[@]}" --artifacts artifacts \
  "${report[@]}") \
  || status=1
if [ ${#report[@]} -gt 0 ]; then  # the docs' results pages are generated from that JSON
  "$venv/bin/python" "$repo/scripts/results_pages.py" >/dev/null
fi
exit $status
