"""``prune_model_dir``: load a model directory with transformers, remove the least important FFN neurons and
attention heads, and save a Hugging Face directory with the smaller shapes that ``mmedge export`` takes unchanged.

The weights are physically sliced (not masked), so every exported graph is smaller and faster on every engine.
Unstructured sparsity (``nncf.prune``) is not offered here: zeros inside dense matrices speed up none of the
engines mmedge targets (ONNX Runtime, OpenVINO, LiteRT CPU kernels multiply them all the same).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from mmedge.errors import ExportError, UsageError
from mmedge.exporter.families.efficientnet_lite import MODEL_TYPE as LITE_MODEL_TYPE
from mmedge.quantize.prune import importance as imp
from mmedge.quantize.prune.layouts import Layout, head_models, layout_for, set_field
from mmedge.quantize.prune.spec import PruneSpec
from mmedge.quantize.prune.surgery import choose, head_config, remove_ffn, remove_heads

REPORT_NAME = "prune_report.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LayerChange:
    """What one layer lost: ``kind`` is ``ffn`` (neurons), ``heads`` or ``channels`` (EfficientNet-Lite block
    hidden channels); ``removed`` the original unit indices."""

    stack: str
    layer: str
    kind: str
    before: int
    after: int
    removed: list[int]

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class PruneReport:
    """Sizes before and after, per-layer removals, the config fields that changed and the importance method.
    ``bytes_*`` are the weights as saved (the source's dtype: float32, or float16/bfloat16 when the source was)."""

    model_type: str
    architecture: str
    spec: PruneSpec
    importance: str
    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int
    config_changes: dict[str, list] = field(default_factory=dict)
    layers: list[LayerChange] = field(default_factory=list)

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "architecture": self.architecture, "spec": self.spec.to_dict(),
                "importance": self.importance, "params_before": self.params_before, "params_after": self.params_after,
                "param_ratio": round(self.param_ratio, 4), "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "config_changes": self.config_changes,
                "layers": [change.to_dict() for change in self.layers]}


def prune_model_dir(src_dir: str | Path, out_dir: str | Path, spec: PruneSpec, *, importance: str = "magnitude",
                    calibration: Sequence[Mapping[str, object]] | None = None,
                    log: Callable[[str], None] | None = None) -> PruneReport:
    """Prune the model at ``src_dir`` (a HF directory, or anything ``mmedge export`` resolves: a CTranslate2
    Whisper folder, a GGUF file, a bundled name) by ``spec`` and save it to ``out_dir``. An EfficientNet-Lite folder
    loses conv channels instead (``conv_channels``: ``spec.channels`` only, magnitude importance).

    ``importance`` is ``magnitude`` (weights only) or ``activation`` (needs ``calibration``: a list of forward()
    input dicts, e.g. tokenized sentences, as torch tensors or numpy arrays; magnitude ignores it). ``out_dir``
    gets the model (``save_pretrained``, config updated), the source's tokenizer/processor files and
    ``prune_report.json``; it is written whole or not at all, and an existing folder is only replaced when it holds
    an earlier prune output.
    """
    from mmedge.exporter.importers.atomic import atomic_folder
    from mmedge.exporter.source import resolve

    log = log or (lambda _m: None)
    out = Path(out_dir)
    _check_request(spec, importance, calibration)
    source = resolve(src_dir)
    _check_target(out, source.directory)
    model_type = str(source.config.get("model_type"))
    if model_type == LITE_MODEL_TYPE:  # conv channels of our own folder format, not a transformers model
        from mmedge.quantize.prune.conv_channels import prune_efficientnet_lite

        return prune_efficientnet_lite(source.directory, out, spec, importance, log)
    layout = layout_for(model_type)
    _check_spec(spec, layout, model_type)
    model, dtype = _load(source.directory, source.config)
    params_before, bytes_before = _size(model, dtype)
    report = PruneReport(model_type, type(model).__name__, spec, importance, params_before, 0, bytes_before, 0)
    log(f"scoring {importance} importance of {type(model).__name__} ({params_before / 1e6:.2f}M parameters)")
    _prune(model, layout, spec, importance, calibration, report)
    report.params_after, report.bytes_after = _size(model, dtype)
    log(f"pruned to {report.params_after / 1e6:.2f}M parameters ({report.param_ratio:.1%}); saving to {out}")
    with atomic_folder(out) as stage:
        model.to(dtype).save_pretrained(stage, safe_serialization=True)
        _copy_side_files(source.directory, stage)
        (stage / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
        _check_reload(type(model), stage)
    return report


def _check_request(spec: PruneSpec, importance: str, calibration: object) -> None:
    if not isinstance(spec, PruneSpec):
        raise UsageError(f"spec must be a PruneSpec (see parse_prune_spec), not {type(spec).__name__}")
    if importance not in imp.METHODS:
        raise UsageError(f"unknown importance '{importance}'; choose one of {', '.join(imp.METHODS)}")
    if importance == "activation" and not calibration:
        raise UsageError("activation importance needs calibration inputs (a list of model input dicts); "
                         "pass calibration=... or use importance='magnitude'")


def _check_target(out: Path, source: Path) -> None:
    if out.resolve() == source.resolve():
        raise UsageError(f"the prune output {out} is the source directory; choose a new output directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not (out / REPORT_NAME).is_file()):
        raise UsageError(f"{out} exists and is not an empty directory or an earlier prune output; "
                         "choose a new output directory")


def _check_spec(spec: PruneSpec, layout: Layout, model_type: str) -> None:
    if spec.heads and not layout.heads:
        raise UsageError(f"cannot prune heads of '{model_type}': {layout.no_heads}. Head pruning is supported for: "
                         f"{', '.join(head_models())}")
    if spec.channels:
        raise UsageError(f"channel pruning is not available for '{model_type}' (only EfficientNet-Lite conv "
                         "channels are supported); drop channels= from the prune spec")


def _load(directory: Path, config: dict) -> tuple[torch.nn.Module, torch.dtype]:
    """The model as float32 (for scoring and surgery) and the dtype to save it in (the source's own)."""
    import transformers

    name = (config.get("architectures") or ["AutoModel"])[0]
    cls = getattr(transformers, name, None)
    if cls is None:  # a class from custom code: saving a stand-in would silently drop its weights
        raise UsageError(f"transformers {transformers.__version__} has no class {name} (config.json "
                         "'architectures'); structured pruning needs a model transformers itself defines")
    try:
        model = cls.from_pretrained(directory, dtype=torch.float32).eval()
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load {directory} with transformers ({cls.__name__}): {e}") from None
    return model, HALF.get(str(config.get("dtype") or config.get("torch_dtype")), torch.float32)


def _size(model: torch.nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """(parameters, bytes as saved in ``dtype``); tied parameters count once."""
    params = sum(p.numel() for p in model.parameters())
    return params, params * torch.empty((), dtype=dtype).element_size()


def _prune(model: torch.nn.Module, layout: Layout, spec: PruneSpec, importance: str,
           calibration: Sequence[Mapping[str, object]] | None, report: PruneReport) -> None:
    ffn = [imp.ffn_sites(model, stack) for stack in layout.ffn] if spec.ffn else []
    heads = [imp.head_sites(model, stack) for stack in layout.heads] if spec.heads else []
    if spec.heads and any(site.stack.route == "transformers" for sites in heads for site in sites) \
            and model.config.pruned_heads:
        raise UsageError("this model already has pruned heads (config.pruned_heads); prune heads of the original "
                         "model instead")
    sites = [site for stack in ffn + heads for site in stack]
    if not sites:
        return
    scores = imp.activation(model, sites, calibration) if importance == "activation" else \
        [imp.magnitude(site) for site in sites]
    chosen = {id(site): choose(site, score, spec.ffn if site.kind == "ffn" else spec.heads)
              for site, score in zip(sites, scores)}
    for stack_sites in ffn:
        _apply_ffn(model, stack_sites, chosen, report)
    for stack_sites in heads:
        _apply_heads(model, stack_sites, chosen, report)


def _record(report: PruneReport, site: imp.Site, removed: list[int]) -> None:
    report.layers.append(LayerChange(site.stack.name, site.path, site.kind, site.size, site.size - len(removed),
                                     removed))


def _apply_ffn(model: torch.nn.Module, sites: list[imp.Site], chosen: dict, report: PruneReport) -> None:
    for site in sites:
        remove_ffn(site, chosen[id(site)])
        _record(report, site, chosen[id(site)])
    stack = sites[0].stack
    after = sites[0].size - len(chosen[id(sites[0])])
    report.config_changes[stack.config_field] = [sites[0].size, after]
    set_field(model.config, stack.config_field, after)


def _apply_heads(model: torch.nn.Module, sites: list[imp.Site], chosen: dict, report: PruneReport) -> None:
    removed = len(chosen[id(sites[0])])
    for site in sites:
        _record(report, site, chosen[id(site)])
    if sites[0].stack.route == "transformers":
        model.prune_heads({i: chosen[id(site)] for i, site in enumerate(sites) if chosen[id(site)]})
        report.config_changes["pruned_heads"] = [{}, {i: chosen[id(site)] for i, site in enumerate(sites)
                                                       if chosen[id(site)]}]
        return
    for site in sites:
        remove_heads(site, chosen[id(site)])
    before = {name: getattr(model.config, name, None) for name in ("num_attention_heads", "num_key_value_heads",
                                                                   "head_dim")}
    for name, value in head_config(model.config, sites[0], removed).items():
        report.config_changes[name] = [before[name], value]


def _copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, processor and other top-level files of the source that ``save_pretrained`` did not write."""
    for path in sorted(src.iterdir()):
        if path.is_file() and not (dst / path.name).exists() and not path.name.endswith(WEIGHT_SUFFIXES) \
                and not path.name.endswith(".index.json") and path.name != REPORT_NAME:
            shutil.copy2(path, dst / path.name)


def _check_reload(cls: type, directory: Path) -> None:
    """Reload the saved folder: every weight must land in a module of the shape the new config builds."""
    _, info = cls.from_pretrained(directory, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ExportError(f"the pruned {cls.__name__} does not reload cleanly ({problems}); this is a bug in "
                          "mmedge's pruning layout for this model — please report it")
