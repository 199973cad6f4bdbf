#!/usr/bin/env bash
# Installs the TorchServe used by the TorchServe tests into a Python venv.
#
# Usage: tests/torchserve/install.sh [VENV_DIR]
# VENV_DIR defaults to $INFADAPT_TORCHSERVE_VENV, else
# ${CARGO_TARGET_DIR:-target}/torchserve-venv (where the tests look for it). TorchServe
# needs Java 17 (`java` on PATH); `pyyaml` is a dependency of its worker that the wheel
# does not declare. Real torch is not installed: the test archives ship a stand-in module.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${1:-${INFADAPT_TORCHSERVE_VENV:-${CARGO_TARGET_DIR:-target}/torchserve-venv}}"
python="${PYTHON:-python3}"

ready() {
    [ -x "$venv/bin/torchserve" ] && [ -x "$venv/bin/torch-model-archiver" ] \
        && "$venv/bin/python3" -c 'import ts, yaml, model_archiver' 2>/dev/null
}

if ready; then
    echo "torchserve venv ready: $venv"
    exit 0
fi

if ! command -v java >/dev/null; then
    echo "error: TorchServe needs Java 17 (apt-get install -y openjdk-17-jre-headless)" >&2
    exit 1
fi

"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
    'torchserve==0.12.0' 'torch-model-archiver==0.12.0' pyyaml
ready
echo "torchserve venv ready: $venv"
