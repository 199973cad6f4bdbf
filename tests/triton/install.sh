#!/usr/bin/env bash
# Installs the Triton Inference Server used by the Triton tests into a Python venv.
#
# Usage: tests/triton/install.sh [VENV_DIR]
# VENV_DIR defaults to $INFADAPT_TRITON_VENV, else ${CARGO_TARGET_DIR:-target}/triton-venv
# (where the tests look for it). The `nvidia-pytriton` wheel carries a real `tritonserver`
# binary with the python backend; it runs on CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${1:-${INFADAPT_TRITON_VENV:-${CARGO_TARGET_DIR:-target}/triton-venv}}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c 'import numpy' 2>/dev/null; then
    echo "triton venv ready: $venv"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check --no-deps \
    'nvidia-pytriton==0.7.0' 'numpy<2'
"$venv/bin/python3" -c "import numpy"
server="$(ls "$venv"/lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver)"
test -x "$server"
echo "triton venv ready: $venv ($server)"
