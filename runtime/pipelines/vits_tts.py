"""VITS / MMS-TTS text-to-speech on the slim runtime: characters → encoder → numpy length regulation → decoder.

The split and why it is there are in ``exporter/families/vits.py``. The numpy part is transformers'
``VitsModel.forward`` between the text encoder and the flow: durations ``ceil(exp(log_duration) · mask ·
(1 / speaking_rate))``, a frame count of at least 1, every token's prior mean and log-variance repeated over its
frames, and ``prior_latents = means + noise · exp(log_variances) · noise_scale``. The noise (the duration
predictor's and the prior's) is drawn here with numpy's ``default_rng(seed)``, so a seed repeats a run exactly;
with ``noise_scale=0, noise_scale_duration=0`` the speech equals transformers' with the same settings.

Static artifacts take ``max_text_len`` token ids and ``max_frames`` frames: shorter inputs are padded and
masked (the decoder masks the padding inside the vocoder, so the real samples are the unpadded ones); a longer
text or a longer predicted speech is a ``StaticShapeError`` naming both limits.
"""

from __future__ import annotations

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.length_regulation import durations, expand_prior
from mmedge.runtime.pipelines.speech import SpeechResult
from mmedge.runtime.preprocess.vits_text import VitsCharacters
from mmedge.runtime.runner import ComponentRunner


class VitsTtsPipeline:
    """Runs a ``vits-tts`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "vits-tts"
    task = "text-to-speech"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        try:
            self.characters = VitsCharacters(m.preprocessing["text"])
            self.sampling_rate = int(m.postprocessing["audio"]["sampling_rate"])
            self.hop = int(m.postprocessing["audio"]["hop_length"])
            gen = m.generation
            self.defaults = {k: float(gen[k]) for k in ("noise_scale", "noise_scale_duration", "speaking_rate")}
            self.stochastic, self.num_speakers = bool(gen["stochastic_duration"]), int(gen["num_speakers"])
            self.encoder, self.decoder = runners["encoder"], runners["decoder"]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this vits-tts package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        #: Static limits (None: dynamic artifact).
        self.max_text_len: int | None = self.encoder.fixed_dim("input_ids", 1)
        self.max_frames: int | None = self.decoder.fixed_dim("frame_mask", 2)
        self.decoder.trust({"prior_latents"})  # computed from the encoder's own outputs

    def _speaker(self, speaker: int | str | None) -> dict[str, np.ndarray]:
        if self.num_speakers <= 1:
            if speaker not in (None, 0, "0"):
                raise InputError("this voice has a single speaker; leave out the speaker")
            return {}
        if isinstance(speaker, str) and not speaker.isdigit():
            raise InputError(f"speaker '{speaker}' is not a number; this voice has speakers 0-{self.num_speakers - 1}")
        sid = 0 if speaker is None else int(speaker)
        if not 0 <= sid < self.num_speakers:
            raise InputError(f"speaker {sid} is out of range; this voice has speakers 0-{self.num_speakers - 1}")
        return {"speaker_id": np.asarray([sid], np.int64)}

    def _padded(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        width = self.max_text_len or len(ids)
        if len(ids) > width:
            raise StaticShapeError(f"the text makes {len(ids)} token ids; this static artifact takes at most "
                                   f"{width} (about {(width - 1) // 2} characters): shorten or split the text, or "
                                   "use a dynamic variant (--variant fp32)")
        input_ids, mask = np.zeros((1, width), np.int64), np.zeros((1, width), np.int64)
        input_ids[0, :len(ids)], mask[0, :len(ids)] = ids, 1
        return input_ids, mask

    def speak(self, text: str, *, speaker: int | str | None = None, noise_scale: float | None = None,
              noise_scale_duration: float | None = None, speaking_rate: float | None = None,
              seed: int | None = None) -> SpeechResult:
        """Speech for ``text``. Settings default to the model's config; ``seed`` repeats the noise."""
        settings = {**self.defaults, **{k: float(v) for k, v in (("noise_scale", noise_scale),
                                                                  ("noise_scale_duration", noise_scale_duration),
                                                                  ("speaking_rate", speaking_rate)) if v is not None}}
        if settings["speaking_rate"] <= 0 or settings["noise_scale"] < 0 or settings["noise_scale_duration"] < 0:
            raise InputError(f"need speaking_rate > 0 and noise scales >= 0 (got {settings})")
        ids, dropped = self.characters.encode(text)
        speaker_feed = self._speaker(speaker)
        rng = np.random.default_rng(seed)
        input_ids, mask = self._padded(ids)
        feeds = {"input_ids": input_ids, "attention_mask": mask, **speaker_feed}
        if self.stochastic:
            noise = np.zeros((1, 2, input_ids.shape[1]), np.float32)
            noise[0, :, :len(ids)] = rng.standard_normal((2, len(ids)), np.float32) * np.float32(
                settings["noise_scale_duration"])
            feeds["duration_noise"] = noise
        out = self.encoder(**feeds)
        length_scale = np.float32(1.0 / settings["speaking_rate"])
        frames_per_token, frames = durations(out["log_duration"][0, 0], mask[0], length_scale)
        if self.max_frames is not None and frames > self.max_frames:
            seconds = frames * self.hop / self.sampling_rate
            raise StaticShapeError(f"the speech would last {frames} frames ({seconds:.2f} s); this static artifact "
                                   f"makes at most {self.max_frames} frames: shorten the text, speak faster "
                                   "(speaking_rate), or use a dynamic variant (--variant fp32)")
        latents, frame_mask = expand_prior(frames_per_token, frames, out["prior_means"][0].T,
                                           out["prior_log_variances"][0].T, settings["noise_scale"], rng,
                                           self.max_frames)
        waveform = self.decoder(prior_latents=latents, frame_mask=frame_mask, **speaker_feed)["waveform"]
        return SpeechResult(text=text, waveform=waveform[0, :frames * self.hop].astype(np.float32),
                            sampling_rate=self.sampling_rate, ran=self.ran,
                            details={"token_ids": len(ids), "frames": frames, "dropped_characters": dropped,
                                     "settings": settings, "seed": seed,
                                     "speaker": int(speaker_feed["speaker_id"][0]) if speaker_feed else None})
