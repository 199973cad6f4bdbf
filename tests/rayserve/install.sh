#!/usr/bin/env bash
# Installs the Ray Serve used by the Ray Serve tests into a Python venv.
#
# Usage: tests/rayserve/install.sh [VENV_DIR]
# VENV_DIR defaults to $INFADAPT_RAYSERVE_VENV, else ${CARGO_TARGET_DIR:-target}/rayserve-venv
# (where the tests look for it). The tests start a local Ray cluster (a head and worker
# nodes on this machine) from the venv's `ray`. Idempotent: quick when the pinned version is
# already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

ray_version="2.60.0"
venv="${1:-${INFADAPT_RAYSERVE_VENV:-${CARGO_TARGET_DIR:-target}/rayserve-venv}}"
python="${PYTHON:-python3}"

ready() {
    [ -x "$venv/bin/ray" ] && [ -x "$venv/bin/python3" ] \
        && [ "$("$venv/bin/python3" -c 'import ray, ray.serve, starlette; print(ray.__version__)' 2>/dev/null)" = "$ray_version" ]
}

if ready; then
    echo "rayserve venv ready: $venv (ray $ray_version)"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "ray[serve]==$ray_version"
ready || { echo "error: ray $ray_version with Serve is not importable from $venv" >&2; exit 1; }
echo "rayserve venv ready: $venv (ray $ray_version)"
