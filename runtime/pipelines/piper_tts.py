"""Text-to-speech with an imported Piper voice: text → espeak-ng phonemes → phoneme ids → the voice's graph,
split where the speech length is decided (``exporter/importers/piper_split.py``): encoder → numpy → decoder.

The steps are Piper's own (``piper.voice.PiperVoice.synthesize``): the text is phonemized by espeak-ng per
sentence (``preprocess.espeak``: each clause keeps its punctuation), known vowel clusters are merged, phonemes
become ids as ``BOS PAD (id PAD)* EOS``, each sentence is synthesised on its own (graph inputs ``input``,
``input_lengths``, ``scales`` = [noise_scale, length_scale, noise_w] and, for several speakers, ``sid``),
peak-normalised, and the sentences are concatenated. A phoneme missing from the voice's map is dropped, as Piper
drops it; the result lists what was dropped (``details["dropped_phonemes"]``), so nothing is lost silently.

Randomness: the voice's two noises (duration and prior), drawn inside the whole graph by ``RandomNormalLike``, are
drawn here with numpy's ``default_rng(seed)``: a seed repeats the speech on every engine and variant, and
``noise_scale=0, noise_w=0`` gives the whole graph's deterministic speech (``synthesize``).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.length_regulation import durations, expand_prior
from mmedge.runtime.pipelines.speech import SpeechResult
from mmedge.runtime.preprocess.espeak import phonemize
from mmedge.runtime.runner import ComponentRunner

BOS, EOS, PAD = "^", "$", "_"


def merge_vowel_clusters(phonemes: list[str], clusters: list[list[str]]) -> list[str]:
    """Join each run of phonemes that forms a known cluster (longest first) into one phoneme, as Piper does."""
    known = {tuple(c) for c in clusters}
    longest = max((len(c) for c in known), default=0)
    out, i = [], 0
    while i < len(phonemes):
        for n in range(min(longest, len(phonemes) - i), 1, -1):
            if tuple(phonemes[i:i + n]) in known:
                out.append("".join(phonemes[i:i + n]))
                i += n
                break
        else:
            out.append(phonemes[i])
            i += 1
    return out


def synthesize(encoder: ComponentRunner, decoder: ComponentRunner, feeds: dict[str, np.ndarray],
               rng: np.random.Generator, *, hop: int, sampling_rate: int) -> np.ndarray:
    """One sentence through a split voice (``feeds``: the whole graph's ``input``, ``input_lengths``, ``scales``
    [, ``sid``]): the encoder, the graph's own length regulation in numpy (``length_regulation``: durations
    ``ceil(exp(logw) · x_mask · length_scale)``, each phoneme's prior repeated over its frames, ``z_p = m_p + noise
    · exp(logs_p) · noise_scale``; the duration noise is standard normal, the encoder scales it by ``noise_w``),
    the decoder. Fixed-shape runners get ids and frames padded; a sentence beyond them is a ``StaticShapeError``
    (the id count before any engine runs, the frame count after the encoder, before the decoder)."""
    n = feeds["input"].shape[1]
    width, max_frames = encoder.fixed_dim("input", 1) or n, decoder.fixed_dim("frame_mask", 2)
    if n > width:
        raise StaticShapeError(f"a sentence makes {n} phoneme ids; this static artifact takes at most {width}: "
                               "split the sentence, or use a dynamic variant (--variant fp32)")
    speaker = {"sid": feeds["sid"]} if "sid" in feeds else {}
    noise_scale, length_scale = feeds["scales"][0], feeds["scales"][1]
    ids = np.zeros((1, width), np.int64)
    ids[0, :n] = feeds["input"][0]
    duration_noise = np.zeros((1, 2, width), np.float32)
    duration_noise[0, :, :n] = rng.standard_normal((2, n), np.float32)
    out = encoder(input=ids, input_lengths=feeds["input_lengths"], scales=feeds["scales"],
                  duration_noise=duration_noise, **speaker)
    per_token, frames = durations(out["log_duration"][0, 0, :n], out["x_mask"][0, 0, :n], length_scale)
    if max_frames is not None and frames > max_frames:
        raise StaticShapeError(f"a sentence would last {frames} frames ({frames * hop / sampling_rate:.2f} s); this "
                               f"static artifact makes at most {max_frames}: split the sentence, speak faster "
                               "(length_scale), or use a dynamic variant (--variant fp32)")
    latents, frame_mask = expand_prior(per_token, frames, out["prior_means"][0, :, :n],
                                       out["prior_log_scales"][0, :, :n], noise_scale, rng, max_frames)
    audio = decoder(prior_latents=latents, frame_mask=frame_mask, **speaker)["output"]
    return audio.reshape(-1)[:frames * hop]


class PiperTtsPipeline:
    """Runs a ``piper-tts`` package (``mmedge export joe-us-piper DIR``). Build it with ``runtime.load``."""

    family = "piper-tts"
    task = "text-to-speech"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre, gen = package.manifest.preprocessing, package.manifest.generation
        try:
            phonemes = pre["phonemes"]
            self.phoneme_type: str = phonemes["type"]
            self.espeak_voice: str = phonemes["espeak_voice"]
            self.id_map: dict[str, list[int]] = {k: [int(i) for i in v] for k, v in phonemes["phoneme_id_map"].items()}
            self.vowel_clusters: list[list[str]] = phonemes.get("vowel_clusters") or []
            self.speakers: dict[str, int] = dict(pre["speakers"]["speaker_id_map"])
            self.num_speakers = int(pre["speakers"]["num_speakers"])
            self.sampling_rate = int(gen["sample_rate"])
            self.defaults = {k: float(gen[k]) for k in ("noise_scale", "length_scale", "noise_w")}
            self.encoder, self.decoder = runners["encoder"], runners["decoder"]
            self.hop = int(package.manifest.postprocessing["audio"]["hop_length"])
            self.decoder.trust({"prior_latents"})  # computed from the encoder's own outputs
            for symbol in (BOS, EOS, PAD):
                self.id_map[symbol]  # noqa: B018 - a voice without them cannot be fed
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this piper-tts package lacks {e} in its manifest; re-import the voice") from None
        self.package, self.ran = package, ran

    def phonemes(self, text: str) -> list[list[str]]:
        """The phonemes of each sentence of ``text`` (what the voice is fed, before ids)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text to speak is empty; give a sentence")
        if self.phoneme_type == "text":  # the voice reads characters
            sentences = [list(unicodedata.normalize("NFD", text))]
        else:
            sentences = phonemize(text, self.espeak_voice)
        if self.vowel_clusters:
            sentences = [merge_vowel_clusters(s, self.vowel_clusters) for s in sentences]
        return sentences

    def phoneme_ids(self, phonemes: list[str]) -> tuple[list[int], list[str]]:
        """Piper's id sequence ``BOS PAD (id PAD)* EOS`` and the phonemes the voice has no id for (dropped)."""
        ids, dropped = [*self.id_map[BOS], *self.id_map[PAD]], []
        for p in phonemes:
            if p not in self.id_map:
                dropped.append(p)
                continue
            ids += [*self.id_map[p], *self.id_map[PAD]]
        return ids + self.id_map[EOS], dropped

    def _speaker_id(self, speaker: int | str | None) -> int | None:
        if self.num_speakers <= 1:
            if speaker not in (None, 0):
                raise InputError("this voice has a single speaker; leave out the speaker")
            return None
        if speaker is None:
            return 0
        if isinstance(speaker, str) and not speaker.isdigit():
            if speaker not in self.speakers:
                raise InputError(f"unknown speaker '{speaker}'; this voice has: {', '.join(sorted(self.speakers))}")
            return self.speakers[speaker]
        sid = int(speaker)
        if not 0 <= sid < self.num_speakers:
            raise InputError(f"speaker {sid} is out of range; this voice has speakers 0-{self.num_speakers - 1}")
        return sid

    def speak(self, text: str, *, speaker: int | str | None = None, noise_scale: float | None = None,
              length_scale: float | None = None, noise_w: float | None = None, normalize: bool = True,
              seed: int | None = None) -> SpeechResult:
        """Speech for ``text``: one graph run per sentence, peak-normalised unless ``normalize=False``.

        ``noise_scale``/``length_scale``/``noise_w`` default to the voice's own settings; ``length_scale`` > 1 is
        slower. ``seed`` repeats the noise (see the module doc)."""
        scales = {**self.defaults, **{k: v for k, v in (("noise_scale", noise_scale), ("length_scale", length_scale),
                                                         ("noise_w", noise_w)) if v is not None}}
        if scales["length_scale"] <= 0 or scales["noise_scale"] < 0 or scales["noise_w"] < 0:
            raise InputError(f"scales must be length_scale > 0, noise_scale >= 0, noise_w >= 0 (got {scales})")
        sid = self._speaker_id(speaker)
        rng = np.random.default_rng(seed)
        sentences, pieces, dropped = self.phonemes(text), [], []
        for phonemes in sentences:
            ids, lost = self.phoneme_ids(phonemes)
            dropped += lost
            feeds = {"input": np.asarray([ids], np.int64), "input_lengths": np.asarray([len(ids)], np.int64),
                     "scales": np.asarray([scales["noise_scale"], scales["length_scale"], scales["noise_w"]],
                                          np.float32)}
            if sid is not None:
                feeds["sid"] = np.asarray([sid], np.int64)
            audio = synthesize(self.encoder, self.decoder, feeds, rng, hop=self.hop,
                               sampling_rate=self.sampling_rate).astype(np.float32)
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            if normalize:
                audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
            pieces.append(np.clip(audio, -1.0, 1.0))
        if not pieces:
            raise InputError(f"espeak-ng found nothing to speak in {text!r}; give words")
        return SpeechResult(text=text, waveform=np.concatenate(pieces), sampling_rate=self.sampling_rate, ran=self.ran,
                            details={"phonemes": ["".join(s) for s in sentences],
                                     "dropped_phonemes": sorted(set(dropped)),
                                     "scales": scales, "speaker": sid, "seed": seed})
