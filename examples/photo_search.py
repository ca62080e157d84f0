"""Photo search on a device: index a folder of photos once, then find them by a text query.

    python examples/photo_search.py PACKAGE index PHOTO_DIR [--index photos.npz] [--batch-size 16]
    python examples/photo_search.py PACKAGE query "a cat" [--index photos.npz] [-k 5]

``index`` embeds every photo of the folder with the package's CLIP vision tower (in batches) and saves the
L2-normalised embeddings with the photos' paths in a ``.npz`` file; ``query`` embeds the text with the text
tower and ranks the indexed photos by cosine similarity, printing score and path, and which engine ran.

Only the slim runtime (``mmedge.runtime``: numpy, Pillow, tokenizers and one engine) is used: no torch. The
index holds plain arrays only (paths as a unicode array, metadata as a JSON string) and is read with
``allow_pickle=False``. It records a fingerprint of the package's vision tower, so an index built with another
model is refused with a message instead of returning meaningless rankings. Any engine of the same package can
query an index built on another (they agree within 1e-4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from mmedge import runtime
from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.pipelines.clip import IMAGE_SUFFIXES, list_images

INDEX_FORMAT = "mmedge-photo-index/1"


class PhotoIndexError(MmedgeError):
    """The index file is missing, damaged or belongs to another package."""

    exit_code = 2


def package_fingerprint(pipe) -> str:
    """sha256 over the manifest's sha256 of every vision-tower file (all formats and variants).

    Engine-independent on purpose: an index built on onnxruntime can be queried on OpenVINO or LiteRT of the
    same package. A package exported from other weights has other file hashes, so its fingerprint differs.
    """
    manifest = pipe.package.manifest
    lines = sorted(f"{a.file}:{manifest.files.get(a.file, '')}" for a in manifest.components["vision"].artifacts)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def describe_ran(ran) -> str:
    info = next(iter(ran.components.values()), {})
    extra = info.get("providers") or info.get("execution_devices") or (
        [f"{info['num_threads']} threads"] if info.get("num_threads") else [])
    text = f"{ran.engine} on {ran.format}/{ran.variant} (device profile {ran.device}" + \
        (f"; {', '.join(map(str, extra))}" if extra else "") + ")"
    for f in ran.fallbacks:
        text += f"\n  fallback: {f.get('component', '') + ': ' if f.get('component') else ''}{f['what']}: {f['why']}"
    return text


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _embed_batch(pipe, paths: list[Path]) -> tuple[np.ndarray, list[Path]]:
    """Embed a batch; when one photo cannot be read, embed the rest one by one and skip the bad ones."""
    try:
        return pipe.embed_images(paths), paths
    except InputError:
        rows, kept = [], []
        for p in paths:
            try:
                rows.append(pipe.embed_images([p]))
                kept.append(p)
            except InputError as e:
                _log(f"skipping {p}: {e}")
        return (np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)), kept


def build_index(pipe, photo_dir: Path, index: Path, batch_size: int) -> int:
    paths = list_images(photo_dir)
    if not paths:
        raise InputError(f"no photos found in {photo_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    chunks, kept = [], []
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        emb, ok = _embed_batch(pipe, paths[i:i + batch_size])
        if ok:
            chunks.append(_normalize(emb))
            kept.extend(ok)
        _log(f"embedded {min(i + batch_size, len(paths))}/{len(paths)} photos")
    if not kept:
        raise InputError(f"none of the {len(paths)} files in {photo_dir} could be read as a photo")
    embeddings = np.concatenate(chunks)
    meta = {"format": INDEX_FORMAT, "package": str(Path(pipe.package.root).absolute()),
            "package_fingerprint": package_fingerprint(pipe), "source": pipe.package.manifest.source.get("model"),
            "photo_dir": str(photo_dir.absolute()), "count": len(kept), "dim": int(embeddings.shape[1]),
            "engine": pipe.ran.engine, "format_variant": f"{pipe.ran.format}/{pipe.ran.variant}",
            "created_unix": int(time.time())}
    index.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed: a killed run never leaves a half-written index behind.
    fd, tmp = tempfile.mkstemp(prefix=index.name + ".", suffix=".tmp", dir=index.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, embeddings=embeddings, paths=np.array([str(p.absolute()) for p in kept], dtype=str),
                     meta=np.array(json.dumps(meta)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file owner-only; give it the usual permissions
        os.replace(tmp, index)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    took = time.perf_counter() - start
    print(f"indexed {len(kept)} photos from {photo_dir} into {index} "
          f"({embeddings.shape[1]}-dim, {took:.2f} s, {len(kept) / took:.1f} photos/s)")
    print(f"ran: {describe_ran(pipe.ran)}")
    return 0


def load_index(index: Path, package: str) -> tuple[np.ndarray, np.ndarray, dict]:
    hint = f"build it with: python {sys.argv[0]} {package} index PHOTO_DIR --index {index}"
    if not index.is_file():
        raise PhotoIndexError(f"no photo index at {index}; {hint}")
    try:
        with np.load(index, allow_pickle=False) as data:
            embeddings, paths, meta = data["embeddings"], data["paths"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise PhotoIndexError(f"{index} is not a photo index written by this example ({e}); {hint}") from None
    if meta.get("format") != INDEX_FORMAT or paths.dtype.kind != "U" or embeddings.ndim != 2 \
            or len(paths) != len(embeddings):
        raise PhotoIndexError(f"{index} is not a photo index of format {INDEX_FORMAT}; {hint}")
    return embeddings, paths, meta


def query_index(pipe, package: str, index: Path, text: str, k: int,
                index_data: tuple[np.ndarray, np.ndarray, dict]) -> int:
    embeddings, paths, meta = index_data
    if meta.get("package_fingerprint") != package_fingerprint(pipe):
        raise PhotoIndexError(
            f"{index} was built from another package ({meta.get('package')}, model {meta.get('source')}), "
            f"not from {package}: its embeddings cannot be compared with this package's text embeddings. "
            f"Rebuild it: python {sys.argv[0]} {package} index {meta.get('photo_dir', 'PHOTO_DIR')} --index {index}")
    if not text.strip():
        raise InputError("the query is empty; give a description such as \"a cat on a sofa\"")
    query = _normalize(pipe.embed_text([text]))[0]
    if query.shape[0] != embeddings.shape[1]:
        raise PhotoIndexError(f"{index} holds {embeddings.shape[1]}-dim embeddings but this package makes "
                          f"{query.shape[0]}-dim ones; rebuild the index")
    scores = embeddings @ query
    order = np.argsort(-scores, kind="stable")[: max(1, k)]
    print(f"query: {text!r} — top {len(order)} of {len(paths)} photos in {index}")
    for rank, i in enumerate(order, 1):
        print(f"{rank:3d}  {scores[i]:+.4f}  {paths[i]}")
    print(f"ran: {describe_ran(pipe.ran)}")
    print(f"index built on: {meta.get('engine')} {meta.get('format_variant')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, default=Path("photos.npz"), help="index file (default photos.npz)")
    common.add_argument("--engine", choices=["onnxruntime", "openvino", "litert"], help="default: the device plan's")
    common.add_argument("--variant", help="package variant, e.g. fp32 or fp32-static")
    common.add_argument("--device", help="device profile (default: detected)")
    common.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    common.add_argument("--no-verify", action="store_true", help="skip the package's checksum verification")
    parser = argparse.ArgumentParser(description="Index a folder of photos with CLIP, then search it by text.")
    parser.add_argument("package", help="a CLIP model package (mmedge export ...)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", parents=[common], help="embed every photo of a folder into an index file")
    p.add_argument("photo_dir", type=Path)
    p.add_argument("--batch-size", type=int, default=16)
    p = sub.add_parser("query", parents=[common], help="rank the indexed photos by a text query")
    p.add_argument("text")
    p.add_argument("-k", "--top-k", type=int, default=5, help="how many photos to print (default 5)")
    args = parser.parse_args(argv)

    options = ({"num_threads": args.threads, "intra_op_num_threads": args.threads,
                "INFERENCE_NUM_THREADS": args.threads} if args.threads else None)
    try:
        # A query checks its index before loading any engine: a missing index fails fast.
        index_data = load_index(args.index, args.package) if args.command == "query" else None
        pipe = runtime.load(args.package, engine=args.engine, variant=args.variant, device=args.device,
                            verify=not args.no_verify, options=options)
        if pipe.family != "clip":
            raise InputError(f"{args.package} is a '{pipe.family}' package; photo search needs a CLIP package")
        if args.command == "index":
            return build_index(pipe, args.photo_dir, args.index, args.batch_size)
        return query_index(pipe, args.package, args.index, args.text, args.top_k, index_data)
    except MmedgeError as e:
        print(f"photo_search: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
