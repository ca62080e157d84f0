"""Build a student from a teacher: fewer layers and/or narrower FFNs, initialised from the teacher's weights.

The student is a new transformers model of the same class, made from the teacher's config with the layer
count and FFN width changed, whose state dict is the teacher's with the kept layers renumbered and the kept FFN
neurons sliced out; it is saved as a Hugging Face folder (config, generation config, weights, and the teacher's
tokenizer/processor files), so ``mmedge export`` treats it like any other model of its family.

FFN neurons are ranked by the product of their input-row and output-column L2 norms (for gated FFNs the gate
and up rows too): a neuron whose weights are small contributes little to the layer output whatever its input,
which is the cheapest importance score that needs no data.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmedge.errors import ExportError, UsageError
from mmedge.exporter.importers.atomic import atomic_folder
from mmedge.quantize.distill.spec import DistillSpec

#: Files of a model folder that are weights or the config (rewritten for the student, never copied).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
#: The ``StudentReport`` of a student folder (which teacher layers each student layer came from), read by ``distill``.
STUDENT_FILE = "mmedge_student.json"
#: Per-layer config lists (one entry per layer) that must follow the kept layers.
_PER_LAYER_KEYS = ("layer_types", "no_rope_layers")


@dataclass(frozen=True)
class Ffn:
    """An FFN inside one layer: the config key of its width, the tensors to slice (name relative to the layer,
    neuron axis; missing optional ones such as biases are skipped) and the weights that score the neurons."""

    size_key: str
    slices: tuple[tuple[str, int], ...]
    score: tuple[str, ...]


@dataclass(frozen=True)
class Stack:
    """A list of layers the student shrinks: its state-dict prefix and the config key of its length
    (``text_config.num_hidden_layers`` addresses a sub-config)."""

    prefix: str
    count_key: str
    ffn: Ffn | None


@dataclass(frozen=True)
class Layout:
    family: str
    model_class: str
    stacks: tuple[Stack, ...]


def _linear_ffn(size_key: str, up: tuple[str, ...], down: str) -> Ffn:
    """nn.Linear FFN: the up/gate projections hold neurons as rows (and bias entries), the down one as columns."""
    slices = tuple((f"{n}.{p}", 0) for n in up for p in ("weight", "bias")) + ((f"{down}.weight", 1),)
    return Ffn(size_key, slices, tuple(f"{n}.weight" for n in up) + (f"{down}.weight",))


_GPT2_FFN = Ffn("n_inner", (("mlp.c_fc.weight", 1), ("mlp.c_fc.bias", 0), ("mlp.c_proj.weight", 0)),
                ("mlp.c_fc.weight", "mlp.c_proj.weight"))  # Conv1D stores weights as [in, out]
_GATED_FFN = _linear_ffn("intermediate_size", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj")
_LLAMA_LIKE = Layout("causal-lm", "AutoModelForCausalLM", (Stack("model.layers", "num_hidden_layers", _GATED_FFN),))

LAYOUTS: dict[str, Layout] = {
    "whisper": Layout("whisper", "WhisperForConditionalGeneration",
                      (Stack("model.decoder.layers", "decoder_layers",
                             _linear_ffn("decoder_ffn_dim", ("fc1",), "fc2")),)),
    "clip": Layout("clip", "CLIPModel", tuple(
        Stack(f"{tower}_model.encoder.layers", f"{tower}_config.num_hidden_layers",
              _linear_ffn(f"{tower}_config.intermediate_size", ("mlp.fc1",), "mlp.fc2")) for tower in ("text", "vision"))),
    "gpt2": Layout("causal-lm", "AutoModelForCausalLM", (Stack("transformer.h", "n_layer", _GPT2_FFN),)),
    **{t: _LLAMA_LIKE for t in ("llama", "qwen2", "mistral", "gemma", "smollm3")},
    # Phi-3 fuses gate and up into one matrix: layers can be dropped, its FFN is not narrowed.
    "phi3": Layout("causal-lm", "AutoModelForCausalLM", (Stack("model.layers", "num_hidden_layers", None),)),
}


@dataclass
class StudentReport:
    """What ``build_student`` made: per stack the teacher's and the student's layer count, the kept teacher
    layers and the FFN widths; parameter counts and fp32 parameter bytes of both models."""

    family: str
    student_dir: str
    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher_params: int = 0
    student_params: int = 0
    teacher_bytes: int = 0
    student_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"{str(model_dir)!r} is not a Hugging Face model folder (no config.json); give the folder "
                         "of a transformers model (e.g. one written by `mmedge tiny-model`)")
    return json.loads(path.read_text(encoding="utf-8"))


def layout_for(model_dir: Path) -> Layout:
    """The layer layout of the model in ``model_dir``; unsupported architectures are a ``UsageError``."""
    model_type = read_config(model_dir).get("model_type")
    if model_type not in LAYOUTS:
        raise UsageError(f"distillation supports model types {', '.join(sorted(LAYOUTS))}, not {model_type!r}; "
                         "use --prune or --quantize for this model")
    return LAYOUTS[model_type]


def load_model(model_dir: Path, layout: Layout) -> torch.nn.Module:
    import transformers

    try:
        return getattr(transformers, layout.model_class).from_pretrained(model_dir, dtype=torch.float32).eval()
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the {layout.family} model in {model_dir}: {exc}") from None


def param_stats(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, bytes), each shared (tied) tensor counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def build_student(teacher_dir: str | Path, student_dir: str | Path, spec: DistillSpec) -> StudentReport:
    """Write the student of ``teacher_dir`` described by ``spec`` (``layers``, ``ffn``) to ``student_dir``.

    ``student_dir`` is replaced atomically when it is new, empty or an earlier student (it has ``STUDENT_FILE``);
    any other folder is refused rather than deleted. ``layers=1/1,ffn=0`` gives an exact copy of the teacher (a
    check of the weight mapping).
    """
    teacher_dir, student_dir = Path(teacher_dir), Path(student_dir)
    layout = layout_for(teacher_dir)
    if student_dir.resolve() == teacher_dir.resolve():
        raise UsageError("the student folder must differ from the teacher's; give a new folder for the student")
    if student_dir.exists() and any(student_dir.iterdir()) and not (student_dir / STUDENT_FILE).is_file():
        raise UsageError(f"{str(student_dir)!r} exists and is not a student folder made by build_student; give a "
                         "new or empty folder (it is not overwritten)")
    teacher = load_model(teacher_dir, layout)
    student, report = shrink(teacher, layout, spec)
    report.student_dir = str(student_dir)
    save_student(student, student_dir, files_from=teacher_dir,
                 extra={STUDENT_FILE: json.dumps(report.to_dict(), indent=1)})
    return report


def shrink(teacher: torch.nn.Module, layout: Layout, spec: DistillSpec) -> tuple[torch.nn.Module, StudentReport]:
    """The student model (in eval mode) and its report; the teacher is left unchanged."""
    config = copy.deepcopy(teacher.config)
    state = teacher.state_dict()
    report = StudentReport(family=layout.family, student_dir="")
    # student layer prefix -> (teacher layer prefix, kept FFN neurons or None, the FFN's neuron axes)
    sources: dict[str, tuple[str, torch.Tensor | None, dict[str, int]]] = {}
    for stack in layout.stacks:
        n = _get(config, stack.count_key)
        keep = spec.keep_layers(n)
        _set(config, stack.count_key, len(keep))
        sub = _owner(config, stack.count_key)
        for key in _PER_LAYER_KEYS:
            if isinstance(getattr(sub, key, None), list) and len(getattr(sub, key)) == n:
                setattr(sub, key, [getattr(sub, key)[i] for i in keep])
        info: dict[str, Any] = {"teacher_layers": n, "student_layers": len(keep), "kept": keep}
        width = new_width = None
        if stack.ffn is not None:
            name, axis = stack.ffn.slices[0]
            width = state[f"{stack.prefix}.0.{name}"].shape[axis]
            new_width = max(1, round(width * (1 - spec.ffn)))
            _set(config, stack.ffn.size_key, new_width)
            info.update(teacher_ffn=width, student_ffn=new_width)
        elif spec.ffn:
            raise UsageError(f"ffn narrowing is not supported for {teacher.config.model_type} (fused FFN weights); "
                             "use layers= only")
        for j, i in enumerate(keep):
            layer = f"{stack.prefix}.{i}."
            narrowed = new_width is not None and new_width < width
            sources[f"{stack.prefix}.{j}."] = (layer, _top_neurons(state, layer, stack.ffn, new_width) if narrowed
                                               else None, dict(stack.ffn.slices) if narrowed else {})
        report.stacks[stack.prefix] = info

    student = type(teacher)(config)
    mapped = {}
    for name in student.state_dict():
        prefix = next((p for p in sources if name.startswith(p)), None)
        if prefix is None:
            mapped[name] = state[name]
            continue
        layer, neurons, axes = sources[prefix]
        rel = name[len(prefix):]
        mapped[name] = state[layer + rel].index_select(axes[rel], neurons) if rel in axes else state[layer + rel]
    student.load_state_dict(mapped, strict=True)
    student.generation_config = _generation_config(teacher, layout, report)
    student.eval()
    report.teacher_params, report.teacher_bytes = param_stats(teacher)
    report.student_params, report.student_bytes = param_stats(student)
    return student, report


def _top_neurons(state: dict[str, torch.Tensor], layer: str, ffn: Ffn, keep: int) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` neurons with the largest product of weight norms."""
    axes = dict(ffn.slices)
    score = None
    for name in ffn.score:
        weight = state[layer + name]
        norm = weight.float().norm(dim=1 - axes[name])
        score = norm if score is None else score * norm
    return torch.topk(score, keep).indices.sort().values


def _generation_config(teacher: torch.nn.Module, layout: Layout, report: StudentReport) -> Any:
    """The teacher's generation config; Whisper's ``alignment_heads`` (decoder layer, head) are renumbered to the
    kept layers and dropped where their layer is gone."""
    gen = copy.deepcopy(teacher.generation_config)
    heads = getattr(gen, "alignment_heads", None)
    if layout.family == "whisper" and heads:
        new_index = {old: new for new, old in enumerate(report.stacks[layout.stacks[0].prefix]["kept"])}
        gen.alignment_heads = [[new_index[layer], head] for layer, head in heads if layer in new_index] or None
    return gen


def save_student(student: torch.nn.Module, student_dir: Path, *, files_from: Path,
                 extra: dict[str, str] | None = None) -> None:
    """Save ``student`` as a Hugging Face folder at ``student_dir`` (atomically), with the tokenizer and processor
    files (every top-level file that is not weights or config) copied from ``files_from`` and ``extra`` text
    files written."""
    copies = [p for p in Path(files_from).iterdir()
              if p.is_file() and p.name not in _MODEL_FILES and not p.name.endswith(_WEIGHT_SUFFIXES)]
    with atomic_folder(Path(student_dir)) as tmp:
        for path in copies:
            shutil.copy2(path, tmp / path.name)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        student.save_pretrained(tmp)


def _owner(config: Any, key: str) -> Any:
    for part in key.split(".")[:-1]:
        config = getattr(config, part)
    return config


def _get(config: Any, key: str) -> Any:
    return getattr(_owner(config, key), key.split(".")[-1])


def _set(config: Any, key: str, value: Any) -> None:
    setattr(_owner(config, key), key.split(".")[-1], value)
