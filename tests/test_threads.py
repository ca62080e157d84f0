"""One pipeline object, 8 threads at once: the same results as sequential calls, per engine.

Every thread waits on a ``threading.Barrier`` and then makes its calls, so they really run together; a probe
around each engine session counts the calls in flight and the test requires overlap (at least two at once).
Each thread gets a different input, so a call that sees another thread's input or state (a shared OpenVINO infer
request, a LiteRT interpreter, a pipeline-held KV cache) gives a wrong answer here."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from mmedge import runtime
from mmedge.runtime.runner import ComponentRunner

THREADS, ROUNDS, REPEATS = 8, 3, 2
CASES = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("litert", "fp32-static")]
OPTIONS = {"openvino": {"INFERENCE_PRECISION_HINT": "f32"}}
LABELS = [["a cat", "a dog"], ["a rocket", "a cup of coffee", "a car"], ["red", "green", "blue", "black"]]
PROMPTS = ["A photo of a cat on the", "Once upon a time", "The rocket launched at", "Coffee is", "In the morning",
           "She opened the door and", "Numbers: one two", "The weather today"]


class InFlight:
    """Wraps every engine session of a pipeline and records the most calls running at the same moment."""

    def __init__(self, pipe: Any):
        self.now = self.peak = 0
        self._lock = threading.Lock()
        sessions = {id(sig.session): sig.session for value in vars(pipe).values()
                    if isinstance(value, ComponentRunner) for sig in value.signatures.values()}
        assert sessions, "no engine sessions found on the pipeline"
        for session in sessions.values():
            session.run = self._counted(session.run)

    def _counted(self, run: Callable) -> Callable:
        def counted(feeds, key=""):
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                return run(feeds, key)
            finally:
                with self._lock:
                    self.now -= 1
        return counted


def concurrently(calls: list[Callable[[], Any]]) -> list[list[Any]]:
    """Run ``calls[i]`` REPEATS times in thread i, all threads released together; results per thread."""
    barrier = threading.Barrier(len(calls))
    results: list[list[Any]] = [[] for _ in calls]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            for _ in range(REPEATS):
                results[i].append(calls[i]())
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def check_concurrent_equals_sequential(pipe: Any, calls: list[Callable[[], Any]], same: Callable[[Any, Any], None],
                                      rounds: int = ROUNDS):
    expected = [call() for call in calls]
    probe = InFlight(pipe)
    for _ in range(rounds):
        for i, got in enumerate(concurrently(calls)):
            for result in got:
                same(result, expected[i])
    assert probe.peak >= 2, f"the calls never overlapped (peak {probe.peak} in flight)"


def _images(n: int, size=(96, 128)) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("engine, variant", CASES)
def test_clip_zero_shot_from_8_threads(clip_package, engine, variant):
    pipe = runtime.load(clip_package, engine=engine, variant=variant, device="x86-cpu", options=OPTIONS.get(engine))
    calls = [lambda im=im, labels=LABELS[i % len(LABELS)]: pipe.zero_shot(im, labels).probs
             for i, im in enumerate(_images(THREADS))]

    def same(got, want):
        np.testing.assert_array_equal(got, want)

    check_concurrent_equals_sequential(pipe, calls, same)


@pytest.mark.parametrize("engine, variant", CASES)
def test_image_classification_from_8_threads(vit_package, engine, variant):
    pipe = runtime.load(vit_package, engine=engine, variant=variant, device="x86-cpu", options=OPTIONS.get(engine))
    calls = [lambda im=im: [(p.id, p.prob) for p in pipe.classify(im, top_k=3).predictions]
             for im in _images(THREADS, (60, 80))]

    def same(got, want):
        assert got == want

    check_concurrent_equals_sequential(pipe, calls, same)


@pytest.mark.parametrize("engine, variant", [*CASES, ("onnxruntime", "fp32-static")])
def test_text_generation_from_8_threads(lm_packages, engine, variant):
    """Each call decodes on its own KV cache (``TextGenerationPipeline.new_decoder``), dynamic and static."""
    pipe = runtime.load(lm_packages["gpt2"], engine=engine, variant=variant, device="x86-cpu",
                        options=OPTIONS.get(engine))
    calls = [lambda p=p: pipe.generate(p, max_new_tokens=6, min_new_tokens=6).tokens for p in PROMPTS[:THREADS]]

    def same(got, want):
        assert got == want

    check_concurrent_equals_sequential(pipe, calls, same)


def test_chat_sessions_of_one_pipeline_keep_their_own_cache(lm_packages):
    """Two chats on one pipeline, turns interleaved: each continues its own conversation, as if it were alone
    (before, every chat of a pipeline extended the pipeline's one KV cache)."""
    pipe = runtime.load(lm_packages["llama"], engine="onnxruntime", variant="fp32", device="x86-cpu")
    kw = dict(max_new_tokens=4, min_new_tokens=4)
    alone = pipe.chat()
    expected = [alone.send("hello there", **kw).tokens, alone.send("and then?", **kw).tokens]
    a, b = pipe.chat(), pipe.chat()
    got = [a.send("hello there", **kw).tokens]
    b.send("something else entirely, at length", **kw)
    got.append(a.send("and then?", **kw).tokens)
    b.send("and more", **kw)
    assert got == expected


@pytest.mark.parametrize("engine, variant", [("onnxruntime", "fp32"), ("openvino", "fp32")])
def test_whisper_transcription_from_8_threads(whisper_package, engine, variant):
    """Encoder + KV-cache decoder (a ``CachedDecoder`` per window) on the real Whisper tiny.en: 8 threads, each
    on its own slice of real speech, give the sequential transcripts."""
    from mmedge.runtime.preprocess.audio import load_audio

    pipe = runtime.load(whisper_package, engine=engine, variant=variant, device="x86-cpu",
                        options=OPTIONS.get(engine))
    speech = load_audio(Path(__file__).parents[1] / "examples" / "data" / "audio" / "librivox-0870.wav")
    second = 16000
    clips = [speech[i * second // 2: i * second // 2 + 2 * second] for i in range(THREADS)]  # different 2 s slices
    calls = [lambda c=c: pipe.transcribe(c).text for c in clips]

    def same(got, want):
        assert got == want

    check_concurrent_equals_sequential(pipe, calls, same, rounds=1)
