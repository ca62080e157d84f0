#!/usr/bin/env bash
# Device check for the Jetson routes on a machine with an NVIDIA GPU: builds a tiny random-weight CLIP package,
# then runs it with the TensorRT EP and the CUDA EP (onnxruntime-gpu) and prints what really ran, every fallback
# and the largest difference from the CPU run (scripts/gpu_check.py). About 3-5 minutes with a warm pip cache.
#
#   scripts/gpu_check.sh [WORKDIR]
#
# Needs: .venv from scripts/setup.sh (the exporter: torch CPU etc.; it stays untouched) and PyPI, or a wheelhouse
# given as PIP_ARGS="--no-index --find-links DIR". onnxruntime-gpu goes into its own venv (WORKDIR/gpu-venv):
# it cannot sit beside the CPU onnxruntime wheel (both provide the `onnxruntime` module). That venv sees .venv's
# packages through a site dir added after its own, so its onnxruntime-gpu wins. CUDA and cuDNN come from the
# nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]); TensorRT libraries only with WITH_TENSORRT=1 (a large
# download): without them the TensorRT route is expected to fall back to CUDA and say so.
# PACKAGE=DIR skips the export and uses an existing CLIP package (it needs an fp32 ONNX variant).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d /tmp/mmedge-gpu-check.XXXXXX)}
mkdir -p "$WORK"
PIP_ARGS=${PIP_ARGS:-}
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first (.venv with the exporter)"; exit 2; }

if [ -z "${PACKAGE:-}" ]; then
  .venv/bin/mmedge tiny-model clip "$WORK/tiny-clip"
  .venv/bin/mmedge export "$WORK/tiny-clip" "$WORK/clip-pkg" --formats onnx
  PACKAGE="$WORK/clip-pkg"
fi

if [ ! -x "$WORK/gpu-venv/bin/python" ]; then
  python3.11 -m venv "$WORK/gpu-venv"
  # shellcheck disable=SC2086
  "$WORK/gpu-venv/bin/pip" install -q $PIP_ARGS -c constraints.txt "onnxruntime-gpu[cuda,cudnn]"
  if [ "${WITH_TENSORRT:-0}" = 1 ]; then
    # shellcheck disable=SC2086
    "$WORK/gpu-venv/bin/pip" install -q $PIP_ARGS -c constraints.txt tensorrt-cu12
  fi
  site=$("$WORK/gpu-venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$base')" > "$site/zz-mmedge-venv.pth"
fi

# TensorRT's shared libraries (tensorrt_libs wheel) must be on the loader path for the TensorRT EP.
trt_libs=$("$WORK/gpu-venv/bin/python" -c 'import tensorrt_libs, os; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${trt_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"
timeout 300 "$WORK/gpu-venv/bin/python" scripts/gpu_check.py "$PACKAGE" "$WORK/cache"
