"""The distillation loop: AdamW on the student, held-out evaluation with early stopping, checkpoints, resume.

Every step is a pure function of (checkpointed state, step number): the batch of step ``s`` comes from a
permutation seeded with ``seed + epoch``, the learning rate is constant and dropout draws from the torch RNG whose
state is checkpointed. So a run interrupted at step k (or run with ``steps=k``) and resumed with ``steps=n`` ends
where an uninterrupted ``steps=n`` run ends, when k is a multiple of ``eval_every``. Evaluations happen at step 0
(the initial loss, also the first "best"), every ``eval_every`` steps and at the last step; each new best student
is saved to the student folder at once, so an interrupted run always leaves the best student so far.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from mmedge.errors import UsageError
from mmedge.quantize.distill.checkpoint import load_checkpoint, save_checkpoint
from mmedge.quantize.distill.inputs import load_inputs
from mmedge.quantize.distill.spec import RESUMABLE_KEYS, DistillSpec
from mmedge.quantize.distill.student import (STUDENT_FILE, StudentReport, build_student, layout_for, load_model,
                                             param_stats, save_student)
from mmedge.quantize.distill.tasks import DistillTask, make_task


@dataclass
class DistillReport:
    """What a ``distill`` call did. ``step`` is the step the student reached, ``steps_run`` how many this call ran
    (less than ``step`` after a resume from ``resumed_from``); losses are held-out distillation losses."""

    family: str
    teacher_dir: str
    student_dir: str
    teacher_params: int
    student_params: int
    teacher_bytes: int
    student_bytes: int
    train_examples: int
    heldout_examples: int
    total_steps: int
    step: int = 0
    steps_run: int = 0
    resumed_from: int | None = None
    initial_loss: float = math.nan
    best_loss: float = math.nan
    best_step: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    student: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distill(teacher_dir: str | Path, student_dir: str | Path, inputs: Iterable[Any], spec: DistillSpec, *,
            checkpoint_dir: str | Path, log: Callable[[str], None] | None = None,
            progress: bool = True) -> DistillReport:
    """Train the student in ``student_dir`` to match the teacher in ``teacher_dir`` on unlabelled ``inputs`` (see
    ``inputs.load_inputs``; ``inputs.default_inputs(family)`` gives real ones) and leave the best student there.

    When ``student_dir`` holds no model yet it is built first with ``build_student(teacher_dir, student_dir,
    spec)``; an existing student is trained as it is (``layers``/``ffn`` only apply when building). A checkpoint in
    ``checkpoint_dir`` from the same run is resumed. ``log`` receives one line per evaluation; ``progress`` shows a
    progress bar on stderr.
    """
    teacher_dir, student_dir, checkpoint_dir = Path(teacher_dir), Path(student_dir), Path(checkpoint_dir)
    started = time.perf_counter()
    layout = layout_for(teacher_dir)
    loaded = load_inputs(inputs, layout.family)
    built = None
    if not (student_dir / "config.json").is_file():
        built = build_student(teacher_dir, student_dir, spec)
    kept = _kept_layers(student_dir)
    with _threads(spec.threads), torch.random.fork_rng():
        teacher, student = load_model(teacher_dir, layout), load_model(student_dir, layout)
        task = make_task(layout.family, teacher_dir, teacher, kept, spec)
        examples = task.prepare(loaded, progress)
        train, heldout = _split(examples, spec)
        per_epoch = math.ceil(len(train) / spec.batch)
        (teacher_params, teacher_bytes), (student_params, student_bytes) = param_stats(teacher), param_stats(student)
        report = DistillReport(layout.family, str(teacher_dir), str(student_dir), teacher_params, student_params,
                               teacher_bytes, student_bytes, len(train), len(heldout),
                               spec.steps or spec.epochs * per_epoch, student=built.to_dict() if built else None)
        run = _Run(task, student, spec, report, checkpoint_dir, _fingerprint(spec, student, examples),
                   log or (lambda _line: None))
        run.start(heldout)
        run.train(train, heldout, per_epoch, progress)
    report.seconds = time.perf_counter() - started
    return report


class _Run:
    """One distillation run's mutable state: the student, its optimizer, the report it fills, and the
    early-stopping counter; ``checkpoint`` saves all of it."""

    def __init__(self, task: DistillTask, student: torch.nn.Module, spec: DistillSpec, report: DistillReport,
                 checkpoint_dir: Path, fingerprint: str, say: Callable[[str], None]):
        self.task, self.student, self.spec, self.report = task, student, spec, report
        self.checkpoint_dir, self.fingerprint, self.say = checkpoint_dir, fingerprint, say
        task.freeze(student)
        self.optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=spec.lr)
        self.bad_evals = 0

    def start(self, heldout: list) -> None:
        """Resume from the checkpoint, or evaluate the untrained student (step 0, the first best)."""
        report, state = self.report, load_checkpoint(self.checkpoint_dir, self.fingerprint)
        if state is None:
            torch.manual_seed(self.spec.seed)
            report.initial_loss = report.best_loss = _evaluate(self.task, self.student, heldout, self.spec.batch)
            report.history.append({"step": 0, "heldout": report.best_loss})
            self.say(f"step 0: held-out loss {report.best_loss:.5g}")
            return
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.bad_evals = state["bad_evals"]
        report.resumed_from = report.step = state["step"]
        for key in _TRACKED:
            setattr(report, key, state[key])
        self.say(f"resumed from step {report.step} of {self.checkpoint_dir} (best held-out loss "
                 f"{report.best_loss:.5g} at step {report.best_step})")

    def train(self, train: list, heldout: list, per_epoch: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        report, spec = self.report, self.spec
        total = report.total_steps
        eval_every = spec.eval_every or per_epoch
        save_every = spec.save_every or eval_every
        bar = tqdm(total=total, initial=min(report.step, total), desc=f"distill {report.family}", unit="step",
                   disable=not progress)
        running: list[float] = []
        try:
            while report.step < total and not report.stopped_early:
                running.append(self.step(_batch(train, report.step, per_epoch, spec)))
                bar.update(1)
                bar.set_postfix(loss=f"{running[-1]:.4g}", best=f"{report.best_loss:.4g}")
                if report.step % eval_every == 0 or report.step == total:
                    self.evaluate(heldout, sum(running) / len(running))
                    running = []
                if report.step % save_every == 0 or report.step == total or report.stopped_early:
                    self.checkpoint()
        except KeyboardInterrupt:
            self.checkpoint()
            self.say(f"interrupted at step {report.step}; checkpoint saved to {self.checkpoint_dir}, rerun to resume")
            raise
        finally:
            bar.close()

    def step(self, batch: list) -> float:
        self.student.train()
        loss, _parts = self.task.loss(self.student, self.task.collate(batch))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.report.step += 1
        self.report.steps_run += 1
        return loss.item()

    def evaluate(self, heldout: list, train_loss: float) -> None:
        """Held-out loss; a new best is saved to the student folder at once, otherwise patience runs down."""
        report = self.report
        loss = _evaluate(self.task, self.student, heldout, self.spec.batch)
        report.history.append({"step": report.step, "train": train_loss, "heldout": loss})
        if loss < report.best_loss:
            report.best_loss, report.best_step, self.bad_evals = loss, report.step, 0
            student_dir = Path(report.student_dir)
            save_student(self.student, student_dir, files_from=student_dir)
        else:
            self.bad_evals += 1
            report.stopped_early = self.spec.patience > 0 and self.bad_evals >= self.spec.patience
        self.say(f"step {report.step}: held-out loss {loss:.5g} (best {report.best_loss:.5g} at step "
                 f"{report.best_step}){'; stopping early' if report.stopped_early else ''}")

    def checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_dir, {
            "fingerprint": self.fingerprint, "step": self.report.step, "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "bad_evals": self.bad_evals,
            **{key: getattr(self.report, key) for key in _TRACKED}})


#: Report fields a checkpoint carries over to the resumed run.
_TRACKED = ("initial_loss", "best_loss", "best_step", "stopped_early", "history")


def _kept_layers(student_dir: Path) -> dict[str, list[int]]:
    path = student_dir / STUDENT_FILE
    if not path.is_file():
        raise UsageError(f"{str(student_dir)!r} holds a model that build_student did not make (no {STUDENT_FILE}); "
                         "give an empty folder so the student is built from the teacher")
    report = StudentReport(**json.loads(path.read_text(encoding="utf-8")))
    return {prefix: info["kept"] for prefix, info in report.stacks.items()}


def _split(examples: list, spec: DistillSpec) -> tuple[list, list]:
    """A seeded split into (train, held-out); at least one example on each side."""
    if len(examples) < 2:
        raise UsageError(f"distillation needs at least 2 inputs (one held out for early stopping), got "
                         f"{len(examples)}; give more inputs")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(spec.seed)).tolist()
    n_heldout = min(len(examples) - 1, max(1, round(len(examples) * spec.holdout)))
    return [examples[i] for i in sorted(order[n_heldout:])], [examples[i] for i in sorted(order[:n_heldout])]


def _batch(train: list, step: int, per_epoch: int, spec: DistillSpec) -> list:
    """The examples of ``step``: epoch ``step // per_epoch`` visits ``train`` in a permutation seeded by it."""
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(spec.seed + 1 + epoch)).tolist()
    return [train[i] for i in order[position * spec.batch:(position + 1) * spec.batch]]


def _evaluate(task: DistillTask, student: torch.nn.Module, heldout: list, batch: int) -> float:
    """Mean held-out loss (weighted by batch size), student in eval mode, no gradients."""
    student.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(heldout), batch):
            chunk = heldout[start:start + batch]
            total += float(task.loss(student, task.collate(chunk))[0]) * len(chunk)
    return total / len(heldout)


def _fingerprint(spec: DistillSpec, student: torch.nn.Module, examples: list) -> str:
    """What a step depends on: the spec (less the keys that may change on resume), the student's shapes and a
    digest of the prepared examples."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in spec.to_dict().items() if k not in RESUMABLE_KEYS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(json.dumps({k: list(v.shape) for k, v in student.state_dict().items()}, sort_keys=True).encode())
    for example in examples:
        for name in sorted(example):
            digest.update(name.encode())
            digest.update(example[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch CPU threads (0: unchanged), restoring the previous number afterwards."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
