"""Where does a Whisper decode step's time go? ``CachedDecoder.extend`` + ``generate`` on the slim runtime.

For one clip, the encoder runs once; then, per engine/variant, the greedy loop (``generate``) is timed as a whole
(ms per decode step) and split into its pieces, each timed in place with ``time.perf_counter`` by wrapping the
object that does it (the wrappers cost < 1 µs per call and are subtracted nowhere: they are in "python"):

    engine        EngineSession.run: the engine call itself (ORT run / OpenVINO infer / LiteRT runner)
    check         SignatureRunner._check: the contract checks (shape, dtype, NaN/Inf scan of every float input)
    cache         the KV-cache update after the call (np.concatenate on dynamic, the slice write on static)
    feeds         building ids / positions / mask (the rest of _extend_* before the call)
    processors    copy of the logits into the work buffer + the logits processors (Whisper: suppress tokens)
    python        everything else: generator, argmax, dict building, runner dispatch, output mapping

Then the same step's pieces are timed in isolation (micro-benchmarks on real shapes, median of many calls), and
cProfile's top functions for the loop are printed. The machine's load is printed: on a busy machine compare
shares, not absolute numbers.

    python bench/decode_profile.py --package tiny-en-pkg/ [--engines onnxruntime:fp32,openvino:fp32] [--reps 20]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

CLIP = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
CASES = "onnxruntime:fp32,onnxruntime:fp32-static,openvino:fp32,openvino:fp32-static,litert:fp32-static"


class Acc:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.t[key] = self.t.get(key, 0.0) + dt


def instrument(pipe, acc: Acc):
    """Wrap the pieces of the per-token path; returns an undo function."""
    from mmedge.runtime import decoder as dec_mod
    from mmedge.runtime.generation import sampling
    from mmedge.runtime.runner import SignatureRunner

    clock = time.perf_counter
    undo = []

    sessions = {id(s.session): s.session for s in pipe.decoder_runner.signatures.values()}
    for sess in sessions.values():
        inner = sess.run

        def run(feeds, key="", _inner=inner):
            t = clock()
            out = _inner(feeds, key)
            acc.add("engine", clock() - t)
            return out

        sess.run = run
        undo.append(lambda s=sess: s.__dict__.pop("run", None))

    orig_check = SignatureRunner._check

    def _check(self, feeds):
        t = clock()
        out = orig_check(self, feeds)
        acc.add("check", clock() - t)
        return out

    SignatureRunner._check = _check
    undo.append(lambda: setattr(SignatureRunner, "_check", orig_check))

    orig_concat = np.concatenate  # the decoder module's global ``np`` is swapped for a shim that times concatenate

    class NpShim:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def concatenate(*a, **kw):
            t = clock()
            out = orig_concat(*a, **kw)
            acc.add("cache", clock() - t)
            return out

    dec_mod.np = NpShim()
    undo.append(lambda: setattr(dec_mod, "np", np))

    orig_apply = sampling.apply
    orig_copyto = np.copyto

    def apply(procs, ids, scores):
        t = clock()
        out = orig_apply(procs, ids, scores)
        acc.add("processors", clock() - t)
        return out

    class SamplingNp:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def copyto(dst, src, **kw):
            t = clock()
            orig_copyto(dst, src, **kw)
            acc.add("processors", clock() - t)

    sampling.apply = apply
    sampling.np = SamplingNp()
    undo.append(lambda: setattr(sampling, "apply", orig_apply))
    undo.append(lambda: setattr(sampling, "np", np))

    # whole extend and the run inside it: feeds = extend - (engine + check + cache + runner dispatch)
    orig_ext_dyn, orig_ext_static = dec_mod.CachedDecoder._extend_dynamic, dec_mod.CachedDecoder._run_static

    def timed(fn, key):
        def wrapper(self, *a):
            t = clock()
            out = fn(self, *a)
            acc.add(key, clock() - t)
            return out
        return wrapper

    dec_mod.CachedDecoder._extend_dynamic = timed(orig_ext_dyn, "extend")
    dec_mod.CachedDecoder._run_static = timed(orig_ext_static, "extend")
    undo.append(lambda: setattr(dec_mod.CachedDecoder, "_extend_dynamic", orig_ext_dyn))
    undo.append(lambda: setattr(dec_mod.CachedDecoder, "_run_static", orig_ext_static))

    # the static cache's slice write sits inside _run_static: it lands in "feeds+dispatch" (and is timed alone in
    # the micro-benchmarks)
    def restore():
        for u in reversed(undo):
            u()

    return restore


def micro(fn, n: int = 200) -> float:
    """Median µs of ``fn()``."""
    for _ in range(max(3, n // 10)):
        fn()
    ts = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        fn()
        ts.append(clock() - t)
    return 1e6 * float(np.median(ts))


def profile_case(pkg: Path, engine: str, variant: str, samples: np.ndarray, reps: int, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    from mmedge import runtime
    from mmedge.runtime.decoder import CachedDecoder
    from mmedge.runtime.generation import generate

    options = {"onnxruntime": {"intra_op_num_threads": threads},
               "openvino": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads},
               "litert": {"num_threads": threads}}[engine]
    pipe = runtime.load(pkg, engine=engine, variant=variant, verify=False, options=options)
    out: dict = {"engine": engine, "variant": variant}
    with threadpool_limits(limits=1, user_api="blas"):
        cross = pipe.encoder(input_features=pipe.features(samples))
        extra = dict(cross)
        pad = int(pipe.gen.get("pad_token_id") or 0)
        prompt = pipe.prompt_ids(None, None)
        config = pipe.config

        def loop():
            d = CachedDecoder(pipe.decoder_runner, pipe.cache, pad_token_id=pad, extra_feeds=extra)
            return generate(d, prompt, config), d

        res, d = loop()  # warm-up
        steps = len(res.tokens) + (res.stop_reason == "eos")  # decode calls after the prefill
        # plain loop, no instrumentation: the reference per-step time (prefill excluded by subtracting one prefill)
        def prefill_only():
            d2 = CachedDecoder(pipe.decoder_runner, pipe.cache, pad_token_id=pad, extra_feeds=extra)
            d2.reset()
            d2.extend(np.asarray([prompt], np.int64))

        t_prefill = micro(prefill_only, 20)
        t_loop = micro(lambda: loop(), reps)
        out["steps"] = steps
        out["static"] = bool(d.static)
        out["prefill_us"] = t_prefill
        out["step_us"] = (t_loop - t_prefill) / steps

        # instrumented loop: shares per piece
        acc = Acc()
        restore = instrument(pipe, acc)
        try:
            t0 = time.perf_counter()
            for _ in range(reps):
                loop()
            total = time.perf_counter() - t0
        finally:
            restore()
        per_loop = {k: 1e6 * v / reps for k, v in acc.t.items()}
        per_loop["total"] = 1e6 * total / reps
        out["instrumented_per_loop_us"] = per_loop

        # micro-benchmarks at a mid-length cache (the loop's median length)
        length = len(prompt) + steps // 2
        d.reset()
        d.extend(np.asarray([prompt + res.tokens[: length - len(prompt)]], np.int64))
        step_ids = np.asarray([[res.tokens[length - len(prompt)]]], np.int64)
        if d.static:
            runner, size = pipe.decoder_runner.signature("decode"), 1
            positions = np.asarray([[d.length]], np.int64)
            mask = np.zeros((1, d.capacity + 1), np.int64)
            mask[:, :d.length] = 1
            mask[:, d.capacity] = 1
        else:
            runner = pipe.decoder_runner.default
            positions = np.asarray([[d.length]], np.int64)
            mask = np.ones((1, d.length + 1), np.int64)
        feeds = dict(input_ids=step_ids, position_ids=positions, attention_mask=mask, past_keys=d.keys,
                     past_values=d.values, **d.extra_feeds)
        bound = runner._check(feeds)
        key = runner._key
        sess = runner.session
        result = sess.run(bound, key)
        logical = runner(**feeds)
        m: dict = {"cache_len": d.length}
        m["engine_run"] = micro(lambda: sess.run(bound, key))
        m["runner_call"] = micro(lambda: runner(**feeds))
        m["check"] = micro(lambda: runner._check(feeds))
        float_inputs = {k: v for k, v in feeds.items() if v.dtype.kind == "f"}
        m["isfinite_scan"] = micro(lambda: [np.isfinite(v).all() for v in float_inputs.values()])
        m["isfinite_scan_cross_only"] = micro(lambda: [np.isfinite(v).all() for k, v in float_inputs.items()
                                                       if k.startswith("cross")])
        m["float_input_mb"] = sum(v.nbytes for v in float_inputs.values()) / 2**20
        nk = logical["new_keys"]
        if d.static:
            buf = d.keys.copy()
            m["cache_write"] = 2 * micro(lambda: buf.__setitem__((slice(None), slice(None), slice(None),
                                                                   slice(d.length, d.length + 1)), nk[:, :, :, :1]))
        else:
            m["cache_write"] = 2 * micro(lambda: np.concatenate([d.keys, nk], axis=3))
            m["cache_bytes_copied_per_step_kb"] = 2 * (d.keys.nbytes + nk.nbytes) / 1024
            prealloc = np.zeros(d.keys.shape[:3] + (448,) + d.keys.shape[4:], np.float32)
            m["cache_write_preallocated"] = 2 * micro(lambda: prealloc.__setitem__(
                (slice(None), slice(None), slice(None), slice(d.length, d.length + 1)), nk))

        if d.static:
            def build():
                feed_ids = np.full((1, 1), pad, np.int64)
                feed_ids[:, :1] = step_ids
                pos = np.minimum(np.arange(d.length, d.length + 1, dtype=np.int64), d.max_positions - 1)
                mk = np.zeros((1, d.capacity + 1), np.int64)
                mk[:, :d.length] = 1
                mk[:, d.capacity: d.capacity + 1] = 1
                return np.ascontiguousarray(np.broadcast_to(pos, (1, 1))), mk
        else:
            def build():
                pos = np.broadcast_to(np.arange(d.length, d.length + 1, dtype=np.int64), (1, 1))
                return np.ascontiguousarray(pos), np.ones((1, d.length + 1), np.int64)
        m["feeds_build"] = micro(build)
        from mmedge.runtime.generation.processors import apply, build_processors

        procs = build_processors(config, len(prompt), int(logical["logits"].shape[-1]))
        logits = logical["logits"][:, -1]
        work = np.empty_like(logits)
        ids = np.zeros((1, length + 1), np.int64)
        m["processors_copy_apply"] = micro(lambda: apply(procs, ids, (np.copyto(work, logits), work)[1]))
        m["argmax"] = micro(lambda: int(work[0].argmax()))
        m["logits_kb"] = logical["logits"].nbytes / 1024
        out["micro_us"] = m

        # cProfile of the loop
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(max(2, reps // 4)):
            loop()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
        out["cprofile"] = s.getvalue()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, required=True, help="a Whisper package (mmedge export ... --static)")
    p.add_argument("--engines", default=CASES, help=f"engine:variant comma list (default {CASES})")
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--reps", type=int, default=20, help="greedy loops timed per case (default 20)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--cprofile", action="store_true", help="print cProfile's top functions per case")
    args = p.parse_args(argv)
    from mmedge.runtime.preprocess.audio import load_audio

    samples = load_audio(args.clip)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; threads {args.threads}; "
          f"clip {args.clip.name}")
    for case in args.engines.split(","):
        engine, variant = case.split(":")
        r = profile_case(args.package, engine, variant, samples, args.reps, args.threads)
        inst = r["instrumented_per_loop_us"]
        steps = r["steps"]
        known = {k: inst.get(k, 0.0) for k in ("engine", "check", "cache", "processors")}
        extend = inst.get("extend", 0.0)
        # feeds + dispatch inside extend = extend - engine - check - cache (cache is inside extend on dynamic)
        feeds = extend - known["engine"] - known["check"] - (0.0 if r["static"] else known["cache"])
        python = inst["total"] - extend - known["processors"]
        print(f"\n== {engine} {variant}: {steps} decode steps + prefill; uninstrumented {r['step_us']:.0f} µs/step "
              f"(prefill {r['prefill_us']:.0f} µs)")
        per = steps + 1
        print("   instrumented, µs per call (share of the loop):")
        for name, v in [("engine", known["engine"]), ("check", known["check"]), ("cache", known["cache"]),
                        ("feeds+cache+disp" if r["static"] else "feeds+dispatch", feeds),
                        ("processors", known["processors"]), ("python (loop)", python)]:
            print(f"     {name:16s} {v / per:8.1f}  ({100 * v / inst['total']:4.1f} %)")
        print(f"     {'total':16s} {inst['total'] / per:8.1f}")
        m = r["micro_us"]
        print(f"   isolated at cache length {m['cache_len']}, median µs: " + ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items() if k != "cache_len"))
        if args.cprofile:
            print(r["cprofile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
