#!/usr/bin/env bash
# The main job on the embedded default: a tiny random-weight CLIP is written offline, exported to ONNX,
# OpenVINO IR and TFLite (each file checked against PyTorch), then run on each engine.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=${1:-demo}
PHOTOS=examples/data/photos
mmedge tiny-model clip "$OUT/tiny-clip"
mmedge export "$OUT/tiny-clip" "$OUT/clip-package" --static
mmedge info "$OUT/clip-package" --verify
for engine in onnxruntime openvino litert; do
  echo
  echo "== zero-shot on $engine =="
  mmedge run "$OUT/clip-package" --engine "$engine" --image "$PHOTOS/chelsea.jpg" \
    --labels "a photo of a cat,a photo of a dog,a rocket,a cup of coffee"
done
echo
echo "== photo search (default engine for this device) =="
mmedge run "$OUT/clip-package" --images "$PHOTOS" --query "a photo of a cat" --top-k 3
echo
echo "The tiny model has random weights: the numbers show the pipeline and engine parity, not accuracy."
