#!/usr/bin/env bash
# Installs the Triton Inference Server used by the Triton tests into a Python venv.
#
# Usage: tests/triton/install.sh [VENV_DIR]
# VENV_DIR defaults to $INFADAPT_TRITON_VENV, else ${CARGO_TARGET_DIR:-target}/triton-venv
# (where the tests look for it). The `nvidia-pytriton` wheel carries a real `tritonserver`
# binary (2.51) with the python backend; it runs on CPU. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${1:-${INFADAPT_TRITON_VENV:-${CARGO_TARGET_DIR:-target}/triton-venv}}"
python="${PYTHON:-python3}"

if ! { [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c 'import numpy' 2>/dev/null \
        && ls "$venv"/lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver >/dev/null 2>&1; }; then
    "$python" -m venv "$venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check --no-deps \
        'nvidia-pytriton==0.7.0' 'numpy<2'
fi
"$venv/bin/python3" -c 'import numpy'
server="$(ls "$venv"/lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver)"
test -x "$server"
# The python backend needs the stub built for this Python next to it.
base="$(dirname "$(dirname "$server")")"
minor="$("$venv/bin/python3" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
stub="$base/python_backend_stubs/$minor/triton_python_backend_stub"
if [ ! -x "$stub" ]; then
    echo "error: the wheel has no python backend stub for Python $minor (it has: $(ls "$base/python_backend_stubs"))" >&2
    exit 1
fi
cp "$stub" "$base/backends/python/triton_python_backend_stub"
echo "triton venv ready: $venv ($server)"
