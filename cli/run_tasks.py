"""``mmedge run``'s task half: one function per task that turns the command line's inputs into a pipeline call and
prints the result and what ran. Kept apart from ``main`` (the parser and the other commands) so that each task's
handling sits in one place; imported only by ``mmedge run`` and the commands that print what ran.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmedge.errors import UsageError


def csv_list(value: str) -> list[str]:
    """A comma-separated option as a list, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]


#: the tasks whose ``mmedge run`` reads --audio: given to any other package it would be silently ignored
AUDIO_TASKS = ("automatic-speech-recognition", "audio-classification")


def run(pipe, args: argparse.Namespace) -> int:
    """Run the task of ``pipe``'s family with the inputs in ``args``; print the result and what ran."""
    if args.audio and pipe.task not in AUDIO_TASKS:
        raise UsageError(f"--audio is for speech recognition and audio classification packages; this one is "
                         f"'{pipe.family}' ({pipe.task}): drop --audio or run an audio package")
    if pipe.family in ("causal-lm", "seq2seq"):
        return _run_text_generation(pipe, args)
    if pipe.task == "text-to-image":
        return _run_text_to_image(pipe, args)
    if pipe.family == "face-expression":
        return _run_face_expression(pipe, args)
    if pipe.family == "audio-classification":
        return _run_audio_classification(pipe, args)
    if pipe.family == "image-classification":
        return _run_image_classification(pipe, args)
    if pipe.family == "super-resolution":
        return _run_super_resolution(pipe, args)
    if pipe.task == "automatic-speech-recognition":
        return _run_asr(pipe, args)
    if pipe.family == "llava":
        return _run_vlm(pipe, args)
    if pipe.task == "visual-question-answering":
        return _run_vqa(pipe, args)
    if pipe.task == "image-to-text":
        return _run_caption(pipe, args)
    if pipe.task == "text-to-speech":
        return _run_tts(pipe, args)
    if pipe.family != "clip":
        raise UsageError(f"mmedge run has no task inputs for family '{pipe.family}' yet")
    return _run_clip(pipe, args)


def _run_caption(pipe, args: argparse.Namespace) -> int:
    if not args.image:
        raise UsageError("give --image FILE [--prompt 'a picture of'] for a captioning package")
    result = pipe.caption(args.image, prompt=args.prompt, **_generation_overrides(args)).to_dict()
    print(json.dumps(result, indent=2) if args.json else f"{result['text']}\n{describe_ran(result['ran'])}")
    return 0


def _run_clip(pipe, args: argparse.Namespace) -> int:
    if args.prompt or args.chat:
        raise UsageError(f"--prompt/--chat need a text-generation package; this one is '{pipe.family}'")
    if args.image and args.labels:
        result = pipe.zero_shot(args.image, csv_list(args.labels), template=args.template).to_dict()
        lines = [f"{r['prob']:.4f}  {r['label']}" for r in result["results"]]
    elif args.images and args.query:
        result = pipe.search(args.images, args.query, k=args.top_k or 5).to_dict()
        lines = [f"{r['score']:+.4f}  {r['image']}" for r in result["results"]]
    elif args.text:
        emb = pipe.embed_text([args.text])[0]
        result = {"task": "text-embedding", "text": args.text, "embedding": emb.tolist(), "ran": pipe.ran.to_dict()}
        lines = [f"text embedding ({emb.shape[0]} dims): " + " ".join(f"{v:+.4f}" for v in emb[:8]) + " ..."]
    elif args.image:
        emb = pipe.embed_images([args.image])[0]
        result = {"task": "image-embedding", "image": args.image, "embedding": emb.tolist(), "ran": pipe.ran.to_dict()}
        lines = [f"image embedding ({emb.shape[0]} dims): " + " ".join(f"{v:+.4f}" for v in emb[:8]) + " ..."]
    else:
        raise UsageError("give task inputs: --image X --labels 'a,b' (zero-shot), --images DIR --query Q "
                         "(search), --text T or --image X (embeddings)")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))
        print(describe_ran(result["ran"]))
    return 0

def describe_ran(ran: dict) -> str:
    parts = [f"engine {ran['engine']}", f"{ran['format']}/{ran['variant']}", f"device profile {ran['device']}"]
    first = next(iter(ran["components"].values()), {})
    if first.get("providers"):
        parts.append("providers " + ",".join(first["providers"]))
    if first.get("execution_devices"):
        parts.append("devices " + ",".join(first["execution_devices"]))
    if first.get("num_threads"):
        parts.append(f"{first['version']}, {first['num_threads']} threads")
    if first.get("delegated_nodes") is not None:  # LiteRT: what the delegate really took over
        parts.append(f"delegate {first['delegate']} ({first['delegated_nodes']} nodes)")
    text = "ran: " + " · ".join(parts)
    for f in ran["fallbacks"]:
        text += f"\nfallback: {f.get('component', '') + ': ' if f.get('component') else ''}{f['what']}: {f['why']}"
    return text

def _generation_overrides(args: argparse.Namespace) -> dict:
    overrides = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                 "top_k": args.top_k, "num_beams": args.beams, "seed": args.seed,
                 "repetition_penalty": args.repetition_penalty}
    if args.temperature is not None or args.top_p is not None or args.top_k is not None:
        overrides["do_sample"] = True
    if args.greedy:
        overrides["do_sample"] = False
    return overrides

def _run_text_to_image(pipe, args: argparse.Namespace) -> int:
    """Stable Diffusion: ``--prompt`` to the image file ``--out``; ``--image`` (+ ``--strength``) starts from an image."""
    if args.prompt is None or not args.out:
        raise UsageError("give --prompt 'text' --out image.png for a text-to-image package (--prompt '' for an "
                         "unconditional image; add --image in.png [--strength 0.6] to start from an image)")

    def progress(done: int, total: int) -> None:
        print(f"\rdenoising step {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    result = pipe.generate(args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
                           guidance=args.guidance, scheduler=args.scheduler, seed=args.seed, height=args.height,
                           width=args.width, image=args.image, strength=args.strength,
                           on_step=None if args.json else progress)
    path = result.save(args.out)
    data = {**result.to_dict(), "out": str(path)}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        t = data["timings"]
        print(f"wrote a {data['width']}x{data['height']} image to {path} ({data['scheduler']}, {data['steps']} steps, "
              f"guidance {data['guidance']:g}, seed {data['seed']}; {t['total_ms'] / 1000:.1f} s, "
              f"{t['step_ms']:.0f} ms per step)")
        print(describe_ran(data["ran"]))
    return 0

def _run_tts(pipe, args: argparse.Namespace) -> int:
    """Text-to-speech: ``--text`` spoken into the WAV file ``--out`` (at the model's sample rate)."""
    if not args.text or not args.out:
        raise UsageError("give --text 'what to say' --out speech.wav for a text-to-speech package")
    options: dict = {}
    if args.speaker is not None:
        options["speaker"] = args.speaker
    if args.seed is not None:
        options["seed"] = args.seed
    if args.speaker_embedding:
        if pipe.family != "speecht5-tts":
            raise UsageError("--speaker-embedding is for SpeechT5 packages; this voice takes --speaker N")
        import numpy as np

        try:
            options["speaker_embedding"] = np.load(args.speaker_embedding, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read --speaker-embedding {args.speaker_embedding} as a .npy array: {e}") from None
    result = pipe.speak(args.text, **options)
    path = result.save(args.out)
    data = {**result.to_dict(), "out": str(path)}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"wrote {data['duration_s']:.2f} s of speech ({data['sampling_rate']} Hz) to {path}")
        print(describe_ran(data["ran"]))
    return 0

def _run_face_expression(pipe, args: argparse.Namespace) -> int:
    """Faces in ``--image`` and their expressions; no face found is a result (exit 0), not an error."""
    if not args.image:
        raise UsageError("give --image FILE [--score-threshold 0.5] for a face-expression package")
    result = pipe.recognize(args.image, score_threshold=args.score_threshold).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for i, face in enumerate(result["faces"], 1):
        box = face["box"]
        top = ", ".join(f"{label} {p:.3f}" for label, p in list(face["probs"].items())[:3])
        print(f"face {i} at x={box['x']:.0f} y={box['y']:.0f} {box['width']:.0f}x{box['height']:.0f} "
              f"(score {face['score']:.2f}): {face['label']} ({top})")
    if not result["faces"]:
        threshold = args.score_threshold or pipe.score_threshold
        print(f"no face found in {args.image} (score threshold {threshold}; a lower --score-threshold or a larger "
              "face may help)")
    print(describe_ran(result["ran"]))
    return 0

def _run_image_classification(pipe, args: argparse.Namespace) -> int:
    """Top-k labels of ``--image``, or the top labels of every image in ``--images DIR``."""
    from mmedge.runtime.pipelines.clip import list_images

    if not (args.image or args.images):
        raise UsageError("give --image FILE (or --images DIR) [--top-k 5] for an image-classification package")
    paths = [args.image] if args.image else list_images(args.images)
    results = [r.to_dict() for r in pipe.classify_many(paths, top_k=args.top_k or 5)]
    if args.json:
        print(json.dumps(results[0] if args.image else results, indent=2))
        return 0
    for result in results:
        if not args.image:
            print(result["image"])
        print("\n".join(f"{r['prob']:.4f}  {r['label']}" for r in result["results"]))
    print(describe_ran(results[0]["ran"]) if results else f"no images found in {args.images}")
    return 0

def _run_super_resolution(pipe, args: argparse.Namespace) -> int:
    if not (args.image and args.out):
        raise UsageError("give --image IN --out OUT.png [--tile N] for a super-resolution package")
    result = pipe.upscale(args.image, tile=args.tile)
    path = result.save(args.out)
    info = result.to_dict()
    if args.json:
        print(json.dumps({**info, "out": str(path)}, indent=2))
        return 0
    (w, h), (ow, oh) = info["input_size"], info["output_size"]
    how = "whole image" if info["tile"] is None else f"{info['tiles']} tiles of {info['tile']} px, overlap {info['overlap']}"
    print(f"{w}x{h} -> {ow}x{oh} (x{info['scale']}, {how}) written to {path}")
    print(describe_ran(info["ran"]))
    return 0

def _run_audio_classification(pipe, args: argparse.Namespace) -> int:
    if not args.audio:
        raise UsageError("give --audio FILE (WAV, FLAC, raw 16 kHz PCM...) for an audio-classification package")
    result = pipe.classify(args.audio).to_dict()
    lines = [f"{r['prob']:.4f}  {r['label']}" for r in result["results"]]
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines + [describe_ran(result["ran"])]))
    return 0

def _run_asr(pipe, args: argparse.Namespace) -> int:
    if not args.audio:
        raise UsageError("give --audio FILE (WAV, FLAC, raw 16 kHz PCM...) for a speech-recognition package")
    options = {"language": args.language, "task": args.task} if pipe.family == "whisper" else {}
    if pipe.family == "whisper":
        options.update(_generation_overrides(args))
    elif args.language or args.task:
        raise UsageError(f"--language/--task apply to Whisper packages, not '{pipe.family}'")
    result = pipe.transcribe(args.audio, **options).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["text"])
        print(describe_ran(result["ran"]))
    return 0

def _run_vlm(pipe, args: argparse.Namespace) -> int:
    overrides = _generation_overrides(args)
    if args.chat:
        session = pipe.chat(args.image, system=args.system)
        return _chat_loop(pipe, session, overrides)
    if not (args.image and args.question):
        raise UsageError("give --image FILE --question 'text' (or --image FILE --chat) for a vision-language package")
    on_text = (lambda piece: print(piece, end="", flush=True)) if args.stream and not args.json else None
    return _print_generation(pipe.answer(args.image, args.question, on_text=on_text, **overrides), args, on_text)

def _run_vqa(pipe, args: argparse.Namespace) -> int:
    """BLIP-style VQA: one question about one image per run (the model has no chat and no free prompt)."""
    if args.chat or args.prompt:
        raise UsageError(f"a {pipe.family} package answers one question about an image: give --image FILE "
                         "--question 'text' instead of --chat/--prompt")
    if not args.image:
        raise UsageError(f"give --image FILE --question 'text' for a {pipe.family} (visual question answering) "
                         "package")
    if not args.question:
        raise UsageError(f"a {pipe.family} package answers a question about the image: add --question 'what is in "
                         "the picture?' (to caption an image, use a captioning package)")
    on_text = (lambda piece: print(piece, end="", flush=True)) if args.stream and not args.json else None
    return _print_generation(pipe.answer(args.image, args.question, on_text=on_text, **_generation_overrides(args)),
                             args, on_text)

def _chat_loop(pipe, session, overrides: dict) -> int:
    print(describe_ran(pipe.ran.to_dict()), file=sys.stderr)
    print("chat: type a message and press Enter; an empty line or Ctrl-D ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        print("assistant: ", end="", flush=True)
        session.send(line.rstrip("\n"), on_text=lambda piece: print(piece, end="", flush=True), **overrides)
        print(flush=True)
    return 0

def _print_generation(result, args: argparse.Namespace, on_text) -> int:
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print("" if on_text else result.text)
    t = result.timings
    speed = f", {t['tokens_per_s']:.1f} tokens/s" if t.get("tokens_per_s") else ""
    ttft = f", first token {t['time_to_first_token_ms']:.1f} ms" if t.get("time_to_first_token_ms") else ""
    print(f"[{len(result.tokens)} tokens, stop: {result.stop_reason}{ttft}{speed}]", file=sys.stderr)
    print(describe_ran(result.ran.to_dict()))
    return 0

def _run_text_generation(pipe, args: argparse.Namespace) -> int:
    overrides = _generation_overrides(args)
    if args.chat:
        return _chat_loop(pipe, pipe.chat(system=args.system), overrides)
    if not args.prompt:
        raise UsageError("give --prompt 'text' (or --chat) for a text-generation package")
    on_text = (lambda piece: print(piece, end="", flush=True)) if args.stream and not args.json else None
    return _print_generation(pipe.generate(args.prompt, on_text=on_text, **overrides), args, on_text)
