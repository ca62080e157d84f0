"""Fixed-shape ONNX graphs → ORT format (``.ort``) plus the required-operators config of a reduced ORT build.

Uses ``onnxruntime.tools.convert_onnx_models_to_ort``. It converts through an ``InferenceSession``, which reads
external data, so our graphs whose weights sit in a shared ``weights.onnx_data`` need no single-file copy: the
``.ort`` flatbuffer gets the initializers inline. The tool converts a whole directory and writes *one* config
for every model in it, which is what a reduced build's ``--include_ops_by_config`` takes; so each component's
static graphs (and their data file) are hard-linked into ``<tmp>/<component>/`` and the directory is converted
once. Hard links: no second copy of the weights on disk (a copy where linking is impossible).

Style ``Runtime`` (basic optimizations baked in, the rest saved and replayed on the phone when
``session.enable_saved_runtime_optimizations`` is set): ORT's guidance for NNAPI/CoreML, which must see the
graph before CPU-specific fusions take nodes away from them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from mmedge.errors import ExportError


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: a copy is slower but equivalent
        shutil.copyfile(src, dst)


def convert(graphs: dict[str, list[Path]], out_dir: Path) -> tuple[dict[str, dict[str, Path]], Path]:
    """Convert ``{component: [files of its static ONNX artifact]}`` (graphs and their data files) into
    ``out_dir/<component>/<graph>.with_runtime_opt.ort``; returns ``{component: {graph stem: .ort}}`` and the
    required-operators config covering all of them."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ort-src-", dir=out_dir.parent) as tmp:
        for component, files in graphs.items():
            for f in files:
                _link(f, Path(tmp) / component / f.name)
        log = io.StringIO()  # the tool prints a line per step; kept for the error message only
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(Path(tmp), output_dir=out_dir, target_platform="arm",
                                           optimization_styles=[OptimizationStyle.Runtime])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            tail = " ".join(log.getvalue().split()[-40:])
            raise ExportError(f"ORT-format conversion failed: {e} ({tail}); export without --device or report "
                              "the model config") from None
    ort_files = {c: {f.name.split(".")[0]: f for f in sorted((out_dir / c).glob("*.ort"))} for c in graphs}
    configs = sorted(out_dir.glob("required_operators*.config"))
    if len(configs) != 1 or not all(ort_files.values()):
        raise ExportError(f"ORT-format conversion left no .ort file or config in {out_dir}; report it")
    _drop_local_paths(configs[0])
    return ort_files, configs[0]


def _drop_local_paths(config: Path) -> None:
    """The tool lists the converted files with absolute (staging) paths in comment lines: replace them, so the
    package does not leak the export machine's paths and stays reproducible."""
    lines = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    config.write_text("# Required operators of this package's .ort files (ORT reduced build: "
                      "--include_ops_by_config)\n" + "\n".join(lines) + "\n")
