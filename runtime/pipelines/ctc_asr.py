"""CTC speech recognition (wav2vec2, HuBERT, WavLM) on the slim runtime: audio → encoder logits → greedy text.

Pre-processing equals ``Wav2Vec2FeatureExtractor`` and decoding equals ``Wav2Vec2CTCTokenizer.decode(argmax)``
(see ``mmedge.runtime.preprocess.ctc``), so a transcript is the one transformers gives for the same weights.

Windows. A dynamic artifact runs the whole recording at once (``window_s=None``; recordings longer than
``MAX_WHOLE_CLIP_S``, 30 s, in windows of that length, as attention memory grows with the square of the length), or
disjoint ``window_s`` windows. A static artifact has a fixed window (the ``samples`` axis of its signature, 10 s for real models):
the audio is cut into consecutive disjoint windows of that size (or of a smaller ``window_s``) and the last one
is padded up to the fixed size. Each window is processed as transformers processes one utterance on its own:
``processor(window, padding="max_length", max_length=W)`` — padded with ``padding_value`` and then normalised
(over the real samples only when the extractor returns an attention mask, else over the whole padded window,
exactly as HF does) — and the model sees no context across a boundary. Only the frames the real samples
produce (``frames_for(len(window))``) are kept, so padding never reaches the text; up to ``stride - 1``
trailing samples per window (< 20 ms) fall outside every frame, and a window shorter than the receptive field
(25 ms) yields no frames and is not run. The kept argmax ids of all windows are concatenated *before* the CTC
collapse, so a character whose frames straddle a boundary is written once; a word cut by a boundary stays one
word unless the model puts a delimiter there. ``chunks`` holds one entry per window (its own decoded text), or
one per word with ``word_timestamps=True`` (times as transformers' ``return_timestamps="word"``).
"""

from __future__ import annotations


import numpy as np

from mmedge.errors import PackageError
from mmedge.runtime.loader import RunInfo
from mmedge.runtime.package import Package
from mmedge.runtime.pipelines.asr_result import TranscriptionResult
from mmedge.runtime.preprocess.audio import AudioInput, load_audio
from mmedge.runtime.preprocess.ctc import AudioNormalizer, CtcVocabulary, frames_for, window_size
from mmedge.runtime.runner import ComponentRunner


class CtcAsrPipeline:
    """Runs a ``wav2vec2-ctc`` package. Build it with ``mmedge.runtime.load(path)``."""

    family = "wav2vec2-ctc"
    task = "automatic-speech-recognition"

    def __init__(self, package: Package, runners: dict[str, ComponentRunner], ran: RunInfo):
        pre = package.manifest.preprocessing
        try:
            self.layers = [(int(k), int(s)) for k, s in pre["frames"]["layers"]]
            self.normalizer = AudioNormalizer.from_config(pre["audio"])
            self.vocabulary = CtcVocabulary(pre["ctc"])
            self.encoder = runners["encoder"]
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"this wav2vec2-ctc package lacks {e} in its manifest; re-export it") from None
        self.package, self.ran = package, ran
        self.sampling_rate = self.normalizer.sampling_rate
        self.hop = int(np.prod([s for _, s in self.layers]))  # samples per logit frame (320)
        #: The static window in samples, or None for a dynamic artifact.
        self.window: int | None = self.encoder.fixed_dim("input_values", 1)

    # --------------------------------------------------------------------------------------------- windows

    def frame_logits(self, audio: AudioInput, *, window_s: float | None = None,
                     sampling_rate: int | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """Logits of every kept frame ``[frames, vocab]``, each frame's first input sample, and per window
        ``(start_sample, end_sample, frames)``. ``audio``: a file path or samples (at ``sampling_rate``,
        default the model's rate; resampled otherwise)."""
        samples = load_audio(audio, sampling_rate=sampling_rate or self.sampling_rate, target_rate=self.sampling_rate)
        size = window_size(window_s, len(samples), self.sampling_rate, self.window)
        logits, positions, windows = [], [], []
        for start in range(0, len(samples), size):
            piece = samples[start:start + size]
            n = frames_for(len(piece), self.layers)
            windows.append((start, start + len(piece), n))
            if n == 0:  # shorter than the receptive field: no frame to compute
                continue
            out = self.encoder(input_values=self.normalizer(piece, pad_to=self.window)[None])["logits"][0]
            if out.shape[0] < n:
                raise PackageError(f"the encoder returned {out.shape[0]} frames for {len(piece)} samples, expected "
                                   f"{n}; the manifest's frame layers do not match the model: re-export")
            logits.append(out[:n])
            positions.append(start + self.hop * np.arange(n))
        vocab = len(self.vocabulary.tokens)
        if not logits:
            return np.zeros((0, vocab), np.float32), np.zeros(0, np.int64), windows
        return np.concatenate(logits), np.concatenate(positions), windows

    # ----------------------------------------------------------------------------------------- transcribe

    def transcribe(self, audio: AudioInput, *, window_s: float | None = None, word_timestamps: bool = False,
                   sampling_rate: int | None = None) -> TranscriptionResult:
        """Greedy CTC transcript of a recording (a path or samples); see the module docstring for windows."""
        logits, positions, windows = self.frame_logits(audio, window_s=window_s, sampling_rate=sampling_rate)
        ids = logits.argmax(axis=-1) if len(logits) else np.zeros(0, np.int64)
        rate, vocab = self.sampling_rate, self.vocabulary
        if word_timestamps:
            chunks = [{"start_s": float(positions[w.start] / rate),
                       "end_s": float((positions[w.end - 1] + self.hop) / rate), "text": w.text}
                      for w in vocab.words(ids)]
        else:
            chunks, first = [], 0
            for start, end, n in windows:
                chunks.append({"start_s": start / rate, "end_s": end / rate,
                               "text": vocab.decode(ids[first:first + n])})
                first += n
        return TranscriptionResult(text=vocab.decode(ids), chunks=chunks, ran=self.ran)
