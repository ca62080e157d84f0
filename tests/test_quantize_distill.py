"""Distillation: students built from the teacher's weights (layers dropped, FFN narrowed to the largest-norm
neurons; an unshrunk student equals the teacher), training that lowers the held-out loss on tiny GPT-2, Whisper and
CLIP teachers with real inputs, checkpoints that resume exactly, early stopping, export of the student with mmedge,
typed errors; and (slow) real Whisper tiny.en's decoder distilled 4 -> 2 layers with its WER on LibriVox."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmedge.errors import InputError, UsageError
from mmedge.exporter.families import write_tiny_model
from mmedge.quantize.distill import build_student, default_inputs, distill, parse_distill_spec
from mmedge.quantize.distill.student import LAYOUTS

from conftest import LIBRIVOX

PHOTOS = Path(__file__).parents[1] / "examples" / "data" / "photos"
FAST = "lr=3e-3,batch=4,threads=1"  # the tiny random teachers learn visibly in a few steps at this rate


def write_tiny_whisper(out: Path) -> Path:
    """A random-weight Whisper (4 decoder layers) with the standard 80-bin feature extractor; no tokenizer,
    which distillation does not need (the teacher's own token ids are the decoder inputs)."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = WhisperConfig(vocab_size=96, num_mel_bins=80, encoder_layers=2, decoder_layers=4, d_model=32,
                               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                               decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=64,
                               decoder_start_token_id=1, bos_token_id=2, eos_token_id=2, pad_token_id=2)
        model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=1, bos_token_id=2, eos_token_id=2,
                                               pad_token_id=2, alignment_heads=[[1, 0], [2, 1], [3, 1]])
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    dirs = {name: write_tiny_model(name, root / name) for name in ("gpt2", "llama", "clip")}
    dirs["whisper"] = write_tiny_whisper(root / "whisper")
    return dirs


@pytest.fixture(scope="module")
def clips() -> list[Path]:
    found = sorted(LIBRIVOX.glob("*.wav"))
    if not found:
        pytest.skip("apt-get install pocketsphinx-testdata (done by .ci/run)")
    return found + [Path(__file__).parents[1] / "examples" / "data" / "audio" / "goforward.wav"]


def load(model_dir: Path):
    from mmedge.quantize.distill.student import layout_for, load_model

    return load_model(model_dir, layout_for(model_dir))


def outputs(model, family: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if family == "whisper":
            out = model(input_features=torch.randn(1, 80, 3000, generator=g), decoder_input_ids=torch.tensor([[1, 5, 9]]))
            return [out.logits]
        if family == "clip":
            out = model(input_ids=torch.tensor([[1, 5, 9, 2]]), pixel_values=torch.randn(1, 3, 32, 32, generator=g))
            return [out.image_embeds, out.text_embeds]
        return [model(input_ids=torch.tensor([[1, 5, 9, 30]])).logits]


# ------------------------------------------------------------------------------------------------- the spec


def test_spec_parses_and_resolves_layers():
    spec = parse_distill_spec("layers=1/2, ffn=0.5, steps=200")
    assert (spec.layers, spec.ffn, spec.steps, spec.epochs) == ("1/2", 0.5, 200, None)
    assert spec.keep_layers(4) == [0, 3] and spec.keep_layers(12) == [0, 2, 4, 7, 9, 11]
    assert parse_distill_spec("layers=3").keep_layers(12) == [0, 6, 11]  # maximally spaced, first and last
    assert parse_distill_spec("layers=5+0+2").keep_layers(6) == [0, 2, 5]
    epochs = parse_distill_spec("epochs=3,lr=1e-3,patience=0")
    assert (epochs.steps, epochs.epochs, epochs.lr, epochs.patience) == (None, 3, 1e-3, 0)


@pytest.mark.parametrize("text", ["layers=2/1", "layers=0", "layers=a", "ffn=1", "ffn=-0.1", "steps=0", "lr=x",
                                  "steps=5,epochs=2", "batch=0", "holdout=0.9", "color=red", "layers", "steps=3,steps=4",
                                  "output=0,hidden=0", "temperature=0"])
def test_bad_specs_are_usage_errors_naming_the_form(text):
    with pytest.raises(UsageError, match="layers=1/2,ffn=0.5,steps=200"):
        parse_distill_spec(text)


def test_layer_choices_beyond_the_model_are_usage_errors():
    with pytest.raises(UsageError, match="has 4 layers"):
        parse_distill_spec("layers=0+4").keep_layers(4)
    with pytest.raises(UsageError, match="only 2"):
        parse_distill_spec("layers=3").keep_layers(2)


# ------------------------------------------------------------------------------------------ build_student


@pytest.mark.parametrize("family", ["gpt2", "llama", "clip", "whisper"])
def test_unshrunk_student_equals_the_teacher(teachers, tmp_path, family):
    report = build_student(teachers[family], tmp_path / "s", parse_distill_spec("layers=1/1,ffn=0"))
    assert report.student_params == report.teacher_params
    for a, b in zip(outputs(load(teachers[family]), family), outputs(load(tmp_path / "s"), family)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["gpt2", "llama", "clip", "whisper"])
def test_student_drops_layers_and_keeps_the_largest_ffn_neurons(teachers, tmp_path, family):
    spec = parse_distill_spec("layers=1/2,ffn=0.5")
    report = build_student(teachers[family], tmp_path / "s", spec)
    teacher, student = load(teachers[family]), load(tmp_path / "s")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    layout = LAYOUTS[teacher.config.model_type]
    assert report.student_params < report.teacher_params and report.student_bytes < report.teacher_bytes
    assert sum(p.numel() for p in student.parameters()) == report.student_params
    for stack in layout.stacks:
        info = report.stacks[stack.prefix]
        n = info["teacher_layers"]
        assert info["kept"] == spec.keep_layers(n) and info["student_layers"] == len(info["kept"]) < n
        assert info["student_ffn"] == info["teacher_ffn"] // 2
        (w_in, axis_in), (w_out, axis_out) = stack.ffn.slices[0], stack.ffn.slices[-1]
        for j, i in enumerate(info["kept"]):
            t_in, s_in = t_state[f"{stack.prefix}.{i}.{w_in}"], s_state[f"{stack.prefix}.{j}.{w_in}"]
            t_out = t_state[f"{stack.prefix}.{i}.{w_out}"]
            # which teacher neurons survived: match each student neuron's input weights to a teacher neuron
            t_rows, s_rows = t_in.movedim(axis_in, 0).flatten(1), s_in.movedim(axis_in, 0).flatten(1)
            kept = [int(torch.nonzero((t_rows == row).all(1))[0]) for row in s_rows]
            assert kept == sorted(kept) and len(set(kept)) == len(kept)
            assert torch.equal(s_state[f"{stack.prefix}.{j}.{w_out}"], t_out.index_select(axis_out, torch.tensor(kept)))
            score = t_rows.norm(dim=1) * t_out.movedim(axis_out, 0).flatten(1).norm(dim=1)
            if len(stack.ffn.score) == 3:  # gated FFN: the up projection scores too
                up = t_state[f"{stack.prefix}.{i}.{stack.ffn.score[1]}"]
                score = score * up.norm(dim=1)
            dropped = sorted(set(range(len(score))) - set(kept))
            assert score[kept].min() >= score[dropped].max()
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert json.loads((tmp_path / "s" / "mmedge_student.json").read_text())["stacks"] == report.stacks
    if family == "whisper":
        assert config["decoder_layers"] == 2 and config["encoder_layers"] == 2
        gen = json.loads((tmp_path / "s" / "generation_config.json").read_text())
        assert gen["alignment_heads"] == [[1, 1]]  # teacher layer 3 is student layer 1; layers 1, 2 are gone
        assert (tmp_path / "s" / "preprocessor_config.json").is_file()
    if family in ("gpt2", "llama", "clip"):
        assert (tmp_path / "s" / "tokenizer.json").read_bytes() == (teachers[family] / "tokenizer.json").read_bytes()


def test_build_student_refuses_unsupported_models_and_foreign_folders(teachers, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UsageError, match="not 'bert'"):
        build_student(bert, tmp_path / "s", parse_distill_spec(""))
    with pytest.raises(UsageError, match="no config.json"):
        build_student(tmp_path / "missing", tmp_path / "s", parse_distill_spec(""))
    with pytest.raises(UsageError, match="must differ"):
        build_student(teachers["gpt2"], teachers["gpt2"], parse_distill_spec(""))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    for foreign in (tmp_path / "notes", teachers["llama"]):  # neither a folder of notes nor another model
        with pytest.raises(UsageError, match="not a student folder"):
            build_student(teachers["gpt2"], foreign, parse_distill_spec(""))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


# --------------------------------------------------------------------------------------------- training


def run(teacher: Path, student: Path, inputs, text: str, ckpt: Path, **kw):
    return distill(teacher, student, inputs, parse_distill_spec(text), checkpoint_dir=ckpt, progress=False, **kw)


@pytest.mark.parametrize("family", ["gpt2", "whisper", "clip"])
def test_distillation_lowers_the_heldout_loss(teachers, clips, tmp_path, family):
    inputs = {"gpt2": default_inputs("causal-lm"), "whisper": clips,
              "clip": sorted(PHOTOS.glob("*.jpg")) + default_inputs("causal-lm")[:12]}[family]
    lines: list[str] = []
    report = run(teachers[family], tmp_path / "s", inputs, f"layers=1/2,ffn=0.5,steps=20,eval_every=5,{FAST}",
                 tmp_path / "ck", log=lines.append)
    assert report.step == report.steps_run == 20 and report.resumed_from is None and not report.stopped_early
    assert report.best_loss < report.initial_loss and report.best_step > 0
    assert [h["step"] for h in report.history] == [0, 5, 10, 15, 20] and len(lines) == 5
    assert report.student_params < report.teacher_params and report.student["stacks"]
    # the student folder holds the best student: its held-out loss is the best one
    assert report.best_loss == min(h["heldout"] for h in report.history)
    best = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert not all(torch.equal(best[k], v) for k, v in load(teachers[family]).state_dict().items() if k in best)


def test_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does(teachers, tmp_path):
    sentences = default_inputs("causal-lm")[:16]
    teacher = teachers["gpt2"]
    whole = run(teacher, tmp_path / "a", sentences, f"steps=8,eval_every=2,{FAST}", tmp_path / "ck-a")

    first = run(teacher, tmp_path / "b", sentences, f"steps=4,eval_every=2,{FAST}", tmp_path / "ck-b")
    assert first.step == 4
    second = run(teacher, tmp_path / "b", sentences, f"steps=8,eval_every=2,{FAST}", tmp_path / "ck-b")
    assert (second.resumed_from, second.step, second.steps_run) == (4, 8, 4)

    def stop_at_step_4(line: str) -> None:  # Ctrl-C during the run: the checkpoint is written, then re-raised
        if line.startswith("step 4:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(teacher, tmp_path / "c", sentences, f"steps=8,eval_every=2,save_every=100,{FAST}", tmp_path / "ck-c",
            log=stop_at_step_4)
    third = run(teacher, tmp_path / "c", sentences, f"steps=8,eval_every=2,save_every=100,{FAST}", tmp_path / "ck-c")
    assert (third.resumed_from, third.step) == (4, 8)

    for resumed in (second, third):
        assert resumed.history == whole.history and resumed.best_loss == whole.best_loss
    final = torch.load(tmp_path / "ck-a" / "checkpoint.pt", weights_only=True)["model"]
    for folder in ("ck-b", "ck-c"):
        state = torch.load(tmp_path / folder / "checkpoint.pt", weights_only=True)["model"]
        assert all(torch.equal(state[k], final[k]) for k in final)
    saved = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in load_file(str(tmp_path / "b" / "model.safetensors")).items())

    with pytest.raises(UsageError, match="different distillation run"):
        run(teacher, tmp_path / "b", sentences, f"steps=8,eval_every=2,{FAST},seed=1", tmp_path / "ck-b")


def test_early_stopping_on_a_plateau(teachers, tmp_path):
    sentences = default_inputs("causal-lm")[:12]
    report = run(teachers["gpt2"], tmp_path / "s", sentences, "steps=50,eval_every=1,patience=3,lr=0,threads=1",
                 tmp_path / "ck")
    assert report.stopped_early and report.step == 3 and report.best_step == 0
    assert [h["heldout"] for h in report.history] == [report.initial_loss] * 4
    again = run(teachers["gpt2"], tmp_path / "s", sentences, "steps=60,eval_every=1,patience=3,lr=0,threads=1",
                tmp_path / "ck")
    assert again.stopped_early and again.steps_run == 0 and again.resumed_from == 3


def test_bad_inputs_are_typed_errors(teachers, tmp_path):
    with pytest.raises(UsageError, match="trains on text"):
        run(teachers["gpt2"], tmp_path / "s", [PHOTOS / "horse.jpg", "a sentence"], "steps=1", tmp_path / "ck")
    with pytest.raises(InputError, match="does not exist"):
        run(teachers["gpt2"], tmp_path / "s", ["missing.wav"], "steps=1", tmp_path / "ck")
    with pytest.raises(UsageError, match="at least 2 inputs"):
        run(teachers["gpt2"], tmp_path / "s", ["one sentence only"], "steps=1", tmp_path / "ck")
    with pytest.raises(UsageError, match="needs text inputs"):
        run(teachers["clip"], tmp_path / "c", [PHOTOS / "horse.jpg"], "steps=1", tmp_path / "ck")
    with pytest.raises(UsageError, match="needs audio inputs"):
        run(teachers["whisper"], tmp_path / "w", [], "steps=1", tmp_path / "ck")
    with pytest.raises(InputError, match="cannot tell"):
        run(teachers["whisper"], tmp_path / "w", [Path(__file__)], "steps=1", tmp_path / "ck")


def test_distilled_student_exports_and_runs_with_mmedge(teachers, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmedge import runtime
    from mmedge.exporter.export import export

    run(teachers["gpt2"], tmp_path / "s", default_inputs("causal-lm"), f"layers=1/2,ffn=0.5,steps=10,{FAST}",
        tmp_path / "ck")
    package = export(tmp_path / "s", tmp_path / "pkg", formats=["onnx"])
    pipe = runtime.load(package, engine="onnxruntime", device="x86-cpu")
    result = pipe.generate("A photo of a cat", max_new_tokens=8, min_new_tokens=8)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval(), AutoTokenizer.from_pretrained(tmp_path / "s")
    ids = tokenizer("A photo of a cat", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    assert result.tokens == expected[0, ids.shape[1]:].tolist()
    assert model.config.n_layer == 1


# ------------------------------------------------------------------------------------------------ real weights


@pytest.mark.slow
def test_real_whisper_tiny_en_decoder_distilled_to_two_layers(whisper_tiny_en_dir, tmp_path, capsys):
    """distil-whisper's recipe on the real tiny.en: decoder 4 -> 2 layers (0 and 3), encoder frozen, trained a few
    steps on the 5 LibriVox clips + goforward (teacher transcripts as targets). WER is measured on the same
    LibriVox clips (there are no others), so it shows how far a short run gets, not generalisation."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from mmedge.exporter.importers import import_ctranslate2_whisper
    from mmedge.runtime.preprocess.audio import load_audio

    from test_whisper import wer, words

    teacher = import_ctranslate2_whisper(whisper_tiny_en_dir, tmp_path / "teacher")
    spec = parse_distill_spec("layers=1/2,steps=30,eval_every=5,lr=1e-4,batch=2,max_len=128,threads=2")
    build_student(teacher, tmp_path / "initial", spec)
    clips = sorted(LIBRIVOX.glob("*.wav"))
    report = distill(teacher, tmp_path / "student", clips + [LIBRIVOX.parent / "goforward.raw"], spec,
                     checkpoint_dir=tmp_path / "ck", progress=False)
    assert report.best_loss < report.initial_loss
    truth = {line.rsplit("(", 1)[1].rstrip(")\n"): line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "")
             for line in (LIBRIVOX / "transcription").read_text().splitlines() if "(" in line}
    processor = WhisperProcessor.from_pretrained(tmp_path / "student")
    rates = {}
    for name, folder in (("teacher", teacher), ("student before training", tmp_path / "initial"),
                         ("distilled student", tmp_path / "student")):
        model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
        errors = total = 0
        for clip in clips:
            features = processor(load_audio(clip), sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                text = processor.batch_decode(model.generate(features), skip_special_tokens=True)[0]
            e, n = wer(words(truth[clip.stem]), words(text))
            errors, total = errors + e, total + n
        rates[name] = errors / total
    with capsys.disabled():
        print(f"\nWhisper tiny.en decoder 4 -> 2 layers, {report.step} steps ({report.seconds:.0f} s): held-out loss "
              f"{report.initial_loss:.3f} -> {report.best_loss:.3f}; params {report.teacher_params / 1e6:.1f}M -> "
              f"{report.student_params / 1e6:.1f}M; WER on the LibriVox clips: "
              + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))
    assert rates["teacher"] < 0.1
    assert np.isfinite(list(rates.values())).all()
