"""examples/smart_camera.py end to end, as a user runs it: the first run builds tiny BLIP captioning and BLIP VQA
packages into its work folder and describes the bundled photo; captions and answers are token-equal to
transformers' ``generate`` on the tiny weights it wrote; a second run reuses the packages on the slim runtime (no
torch), skips an unreadable image, and a wrong package or an empty question stops with the CLI's exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "smart_camera.py"
PHOTO = EXAMPLES / "data" / "photos" / "chelsea.jpg"
QUESTIONS = ("is it red?", "what is the cat doing?")
MAX_NEW = 6


def _run(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _observations(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The default run: no packages given, so the tiny ones are built into the work folder (~40 s)."""
    work = tmp_path_factory.mktemp("smart-camera")
    done = _run("--work", str(work), "--json", "--max-new-tokens", str(MAX_NEW),
                *[a for q in QUESTIONS for a in ("--question", q)])
    assert done.returncode == 0, done.stderr[-3000:]
    return work, done


def test_first_run_builds_tiny_packages_and_equals_transformers(first_run):
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

    work, done = first_run
    assert "building a tiny random-weight 'blip' package" in done.stderr
    assert "building a tiny random-weight 'blip-vqa' package" in done.stderr
    assert (work / "blip-pkg" / "mmedge.json").is_file() and (work / "blip-vqa-pkg" / "mmedge.json").is_file()
    [seen] = _observations(done.stdout)
    assert Path(seen["image"]) == PHOTO
    assert seen["caption"]["ran"] == "onnxruntime onnx/fp32" and seen["caption"]["ms"] > 0
    assert [a["question"] for a in seen["answers"]] == list(QUESTIONS)
    assert all(a["ran"] == "onnxruntime onnx/fp32" and a["ms"] > 0 for a in seen["answers"])

    # token-equal to transformers on the weights the example wrote (start token and final [SEP] left out)
    image = Image.open(PHOTO)
    captioner = BlipForConditionalGeneration.from_pretrained(work / "tiny-blip").eval()
    processor = BlipProcessor.from_pretrained(work / "tiny-blip")
    sep = captioner.config.text_config.sep_token_id
    with torch.no_grad():
        caption = captioner.generate(**processor(images=image, return_tensors="pt"), max_new_tokens=MAX_NEW)[0]
    assert seen["caption"]["tokens"] == [t for t in caption.tolist()[1:] if t != sep]
    vqa = BlipForQuestionAnswering.from_pretrained(work / "tiny-blip-vqa").eval()
    processor = BlipProcessor.from_pretrained(work / "tiny-blip-vqa")
    for answer in seen["answers"]:
        with torch.no_grad():
            out = vqa.generate(**processor(images=image, text=answer["question"], return_tensors="pt"),
                               max_new_tokens=MAX_NEW)[0].tolist()
        assert answer["tokens"] == [t for t in out[1:] if t != sep], answer["question"]
        assert answer["text"] == processor.decode(out, skip_special_tokens=True).strip()


def test_second_run_reuses_packages_on_the_slim_runtime(first_run, tmp_path):
    work, first = first_run
    bad = tmp_path / "frame-0002.jpg"
    bad.write_text("not a picture")
    done = _run("--work", str(work), str(PHOTO), str(bad), "--max-new-tokens", str(MAX_NEW),
                *[a for q in QUESTIONS for a in ("--question", q)], importtime=True)
    assert done.returncode == 1, done.stderr[-3000:]  # one unreadable image: reported, the others done
    # -X importtime lists every module the process imported: with built packages, no torch or exporter
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    assert "building" not in done.stderr and "frame-0002.jpg: FAILED: cannot read image" in done.stderr
    assert re.search(r"^vqa: .*blip-vqa-pkg \(blip-vqa\) on onnxruntime onnx/fp32", done.stderr, re.M)
    [seen] = _observations(first.stdout)
    lines = done.stdout.splitlines()
    assert lines[0] == PHOTO.name
    assert lines[1].startswith(f"  caption: {seen['caption']['text']!r}  [onnxruntime onnx/fp32, ")
    for answer in seen["answers"]:  # the same answers as the first run
        i = lines.index(f"  Q: {answer['question']}")
        assert lines[i + 1].startswith(f"  A: {answer['text']!r}  [onnxruntime onnx/fp32, ")


def test_wrong_package_and_empty_question_stop_with_a_message(first_run):
    work, _ = first_run
    swapped = _run("--caption-package", str(work / "blip-vqa-pkg"), "--vqa-package", str(work / "blip-pkg"))
    assert swapped.returncode == 2
    assert ("is a 'blip-vqa' (visual-question-answering) package; --caption-package needs a package of task "
            "image-to-text") in swapped.stderr
    empty = _run("--work", str(work / "never-built"), "--question", " ")
    assert empty.returncode == 5 and "--question is empty" in empty.stderr
    assert not (work / "never-built").exists()  # refused before anything was built
