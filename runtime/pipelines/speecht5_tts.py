"""SpeechT5 text-to-speech on the slim runtime: text encoder once, then the mel decoder step by step with its KV
cache, then postnet + vocoder; the loop in numpy is transformers' ``generate_speech``.

Each step feeds the last mel frame (zeros first) at its position with the speaker embedding and the prenet's
dropout masks, and gets ``reduction_factor`` new frames and their stop logits. Generation stops, as in
transformers, at the first step from ``minlen = int(S · minlenratio / r)`` on whose stop probabilities (sigmoid of
the logits) sum to ``threshold``, and at the latest at ``maxlen = int(S · maxlenratio / r)`` (S: the text's token
count). SpeechT5 keeps its prenet dropout at inference; the masks (1 with probability p, as ``torch.bernoulli(p)``
draws them) come from numpy's ``default_rng(seed)``: a seed repeats the speech exactly, no seed gives fresh speech
each call, as transformers does.

Static artifacts take ``max_text_len`` tokens and ``max_steps`` decoder steps (the cache buffer; the vocoder's
``max_steps · r`` frames): a longer text, or speech that has not stopped when the buffer is full, is a
``StaticShapeError`` naming the limit. The cache is a fixed buffer written in place (static) or grows by one
entry per step (dynamic).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from mmedge.errors import InputError, PackageError, StaticShapeError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.speech import SpeechResult
from mmedge.runtime.preprocess.tokenizer import TextTokenizer
from mmedge.runtime.runner import ComponentRunner


class SpeechT5TtsPipeline:
    """Runs a ``speecht5-tts`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "speecht5-tts"
    task = "text-to-speech"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        m = package.manifest
        try:
            text, gen = m.preprocessing["text"], m.generation
            self.tokenizer = TextTokenizer(package.file_path(text["tokenizer_file"]))
            self.pad_id, self.unk_id = int(text["pad_token_id"]), int(text["unk_token_id"])
            self.speaker_dim = int(m.preprocessing["speaker_embedding_dim"])
            self.sampling_rate = int(m.postprocessing["audio"]["sampling_rate"])
            self.hop = int(m.postprocessing["audio"]["hop_length"])
            self.defaults = {k: float(gen[k]) for k in ("threshold", "minlenratio", "maxlenratio")}
            self.r, self.bins = int(gen["reduction_factor"]), int(gen["num_mel_bins"])
            self.dropout = float(gen["prenet_dropout"])
            self.prenet_shape = (int(gen["prenet_layers"]), 1, int(gen["prenet_units"]))
            self.max_positions = int(gen["max_speech_positions"])
            cache = gen["cache"]
            self.cache_shape = (int(cache["layers"]), 1, int(cache["kv_heads"]), int(cache["head_dim"]))
            self.encoder, self.decoder, self.vocoder = runners["encoder"], runners["decoder"], runners["vocoder"]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this speecht5-tts package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        #: Static limits (None: dynamic artifact).
        self.max_text_len: int | None = self.encoder.fixed_dim("input_ids", 1)
        self.max_steps: int | None = self.decoder.fixed_dim("past_keys", 3)
        self.cross = [t.name for t in self.encoder.artifact.outputs]
        self.decoder.trust({"past_keys", "past_values", "mel", *self.cross})
        self.vocoder.trust({"spectrogram"})

    def _ids(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text to speak is empty; give a sentence")
        ids = self.tokenizer.encode(text)
        if self.unk_id in ids:  # name them: the vocabulary holds one piece per character ("▁" for a space)
            chars = unicodedata.normalize("NFKC", "".join(text.split()))
            unknown = sorted({c for c in chars if self.tokenizer.token_id(c) is None})
            raise InputError(f"this voice cannot speak the characters {unknown}; spell them out (numbers as words) "
                             "or leave them out")
        return ids

    def _speaker(self, speaker_embedding) -> np.ndarray:
        if speaker_embedding is None:
            raise InputError(f"SpeechT5 speaks with a speaker embedding: give a {self.speaker_dim}-value x-vector "
                             "(speaker_embedding=..., or --speaker-embedding FILE.npy)")
        emb = np.asarray(speaker_embedding, np.float32).reshape(-1)
        if emb.size != self.speaker_dim or not np.isfinite(emb).all():
            raise InputError(f"the speaker embedding must hold {self.speaker_dim} finite values, got {emb.size}")
        return emb[None]

    def speak(self, text: str, *, speaker_embedding: np.ndarray | None = None, seed: int | None = None,
              threshold: float | None = None, minlenratio: float | None = None,
              maxlenratio: float | None = None, speaker: int | str | None = None) -> SpeechResult:
        """Speech for ``text`` in the voice of ``speaker_embedding``; settings default to ``generate_speech``'s.
        ``speaker`` (the other pipelines' speaker id) is refused: a SpeechT5 voice is an embedding."""
        if speaker is not None:
            raise InputError("a SpeechT5 voice is chosen by a speaker embedding (speaker_embedding=..., or "
                             "--speaker-embedding FILE.npy), not by a speaker id")
        settings = {**self.defaults, **{k: float(v) for k, v in (("threshold", threshold), ("minlenratio", minlenratio),
                                                                  ("maxlenratio", maxlenratio)) if v is not None}}
        speaker, ids = self._speaker(speaker_embedding), self._ids(text)
        width = self.max_text_len or len(ids)
        if len(ids) > width:
            raise StaticShapeError(f"the text makes {len(ids)} tokens; this static artifact takes at most {width}: "
                                   "shorten or split the text, or use a dynamic variant (--variant fp32)")
        input_ids = np.full((1, width), self.pad_id, np.int64)
        mask = np.zeros((1, width), np.int64)
        input_ids[0, :len(ids)], mask[0, :len(ids)] = ids, 1
        cross = self.encoder(input_ids=input_ids, attention_mask=mask)
        maxlen = int(len(ids) * settings["maxlenratio"] / self.r)
        minlen = int(len(ids) * settings["minlenratio"] / self.r)
        spectra, stopped = self._generate(speaker, mask, cross, minlen, maxlen, settings["threshold"],
                                          np.random.default_rng(seed))
        frames = len(spectra) * self.r
        total = self.max_steps * self.r if self.max_steps else frames
        spectrogram = np.zeros((1, total, self.bins), np.float32)
        spectrogram[0, :frames] = np.concatenate(spectra)
        frame_mask = np.zeros((1, 1, total), np.float32)
        frame_mask[..., :frames] = 1.0
        out = self.vocoder(spectrogram=spectrogram, frame_mask=frame_mask)
        return SpeechResult(text=text, waveform=out["waveform"][0, :frames * self.hop].astype(np.float32),
                            sampling_rate=self.sampling_rate, ran=self.ran,
                            details={"tokens": len(ids), "steps": len(spectra), "mel_frames": frames,
                                     "stopped": stopped,
                                     "settings": settings, "seed": seed})

    def _generate(self, speaker: np.ndarray, encoder_mask: np.ndarray, cross: dict[str, np.ndarray], minlen: int,
                  maxlen: int, threshold: float, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
        """The decoder loop: mel frames [r, bins] per step until the stopping rule (see the module doc), and which
        rule stopped it ("threshold" or "maxlenratio")."""
        layers, _, heads, dim = self.cache_shape
        capacity = self.max_steps or 0
        keys = np.zeros((layers, 1, heads, capacity, dim), np.float32)
        values = np.zeros_like(keys)
        mel = np.zeros((1, 1, self.bins), np.float32)
        spectra: list[np.ndarray] = []
        step = 0
        while True:
            step += 1
            if self.max_steps is not None and step > self.max_steps or step > self.max_positions:
                limit = min(self.max_steps or self.max_positions, self.max_positions)
                raise StaticShapeError(f"the speech did not stop within {limit} decoder steps ({limit * self.r} mel "
                                       f"frames), this package's limit: shorten the text, lower maxlenratio, or use "
                                       "a dynamic variant (--variant fp32)")
            past = step - 1
            if self.max_steps is None:
                valid = np.ones((1, past), np.int64)
            else:
                valid = np.zeros((1, capacity), np.int64)
                valid[0, :past] = 1
            masks = (rng.random(self.prenet_shape, dtype=np.float32) < self.dropout).astype(np.float32)
            out = self.decoder(mel=mel, position_ids=np.asarray([[past]], np.int64), speaker_embeddings=speaker,
                               prenet_masks=masks, past_mask=valid, past_keys=keys, past_values=values,
                               encoder_attention_mask=encoder_mask, **cross)
            if self.max_steps is None:
                keys = np.concatenate([keys, out["new_keys"]], axis=3)
                values = np.concatenate([values, out["new_values"]], axis=3)
            else:
                keys[:, :, :, past:past + 1] = out["new_keys"]
                values[:, :, :, past:past + 1] = out["new_values"]
            spectra.append(out["spectrum"][0])
            mel = out["spectrum"][:, -1:, :]
            if step < minlen:
                continue
            stop = float(np.sum(1.0 / (1.0 + np.exp(-out["stop_logits"][0].astype(np.float64)))))
            if step >= maxlen:
                return spectra, "maxlenratio"
            if stop >= threshold:
                return spectra, "threshold"
