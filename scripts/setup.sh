#!/usr/bin/env bash
# Creates .venv inside the checkout and installs mmedge with the export and dev extras, pinned by
# constraints.txt. torch is named in the same pip command so pip never pulls a CUDA build.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv/.mmedge-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
  torch==2.13.0 -e '.[export,dev]'
# onnx2torch (fixed-shape Piper voices) without its dependencies: it asks for torchvision, whose PyPI wheel fails to
# import beside the CPU torch wheel; mmedge never needs the two converters that use it.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt onnx2torch==1.5.15
echo "$want" > "$stamp"
