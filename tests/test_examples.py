"""The runnable examples work end to end on the session's tiny CLIP package, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmedge import runtime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(EXAMPLES / "photo_search.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photo_index(clip_package, photos, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("photo-search")
    index = work / "photos.npz"
    done = _run(str(clip_package), "index", str(photos), "--index", str(index), "--batch-size", "2", cwd=work)
    assert done.returncode == 0, done.stderr
    return index, done


def test_photo_search_index_then_query(clip_package, photos, photo_index, tmp_path):
    index, indexed = photo_index
    n = len(list(photos.iterdir()))
    assert index.is_file() and f"indexed {n} photos" in indexed.stdout
    with np.load(index, allow_pickle=False) as data:  # plain arrays only: no pickle needed to read it back
        embeddings, paths, meta = data["embeddings"], data["paths"], json.loads(str(data["meta"]))
    assert paths.dtype.kind == "U" and embeddings.shape[0] == len(paths) == n
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert meta["engine"] == "onnxruntime" and len(meta["package_fingerprint"]) == 64

    query = "a photo of a cat"
    # -X importtime lists every module the process imported: the example must stay on the slim runtime
    done = _run(str(clip_package), "query", query, "--index", str(index), "-k", str(n + 3), cwd=tmp_path,
                importtime=True)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\|\s+(torch|transformers|mmedge\.exporter)(\.|\s*$)", done.stderr, re.M)
    hits = [line.split(maxsplit=2) for line in done.stdout.splitlines() if re.match(r"\s*\d+\s+[+-]\d", line)]
    assert [int(h[0]) for h in hits] == list(range(1, n + 1))  # every photo ranked, once
    ranked = [Path(h[2]).resolve() for h in hits]
    assert sorted(ranked) == sorted(p.resolve() for p in photos.iterdir())
    scores = [float(h[1]) for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert "ran: onnxruntime on onnx/fp32" in done.stdout

    expected = runtime.load(clip_package, engine="onnxruntime", device="x86-cpu").search(photos, query, k=n)
    assert ranked[0] == Path(expected.hits[0][0]).resolve()
    np.testing.assert_allclose(scores[0], expected.hits[0][1], atol=1e-4)


def test_photo_search_clear_errors(clip_package, photo_index, tmp_path):
    index, _ = photo_index
    missing = _run(str(clip_package), "query", "a cat", "--index", str(tmp_path / "none.npz"), cwd=tmp_path)
    assert missing.returncode == 2 and "no photo index at" in missing.stderr and " index " in missing.stderr
    assert "Traceback" not in missing.stderr

    # an index from another package: same files, another fingerprint
    with np.load(index, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "package_fingerprint": "0" * 64, "package": "/elsewhere/pkg"}))
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)
    done = _run(str(clip_package), "query", "a cat", "--index", str(other), cwd=tmp_path)
    assert done.returncode == 2 and "built from another package" in done.stderr and "Rebuild" in done.stderr
    assert "Traceback" not in done.stderr
