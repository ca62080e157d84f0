"""Decoding for every generative pipeline: greedy, sampling and beam search over a ``StepModel``.

Numpy only. The results equal Hugging Face's ``model.generate`` for the same settings (same processors in
the same order, same beam search), so a package's ``generation_config`` behaves as it did under PyTorch::

    cfg = GenerationConfig.from_dict(manifest_generation_dict).with_overrides(max_new_tokens=32)
    out = generate(step_model, prompt_ids, cfg, decode=tokenizer.decode)
"""

from mmedge.runtime.generation.config import GenerationConfig
from mmedge.runtime.generation.generate import generate, stream
from mmedge.runtime.generation.processors import (
    MinNewTokens, NoRepeatNGram, RepetitionPenalty, SuppressTokens, SuppressTokensAtBegin, Temperature, TopK,
    TopP, build_processors)
from mmedge.runtime.generation.protocol import GenerationOutput, StepModel

__all__ = ["GenerationConfig", "GenerationOutput", "StepModel", "generate", "stream", "build_processors",
           "RepetitionPenalty", "NoRepeatNGram", "MinNewTokens", "SuppressTokens", "SuppressTokensAtBegin",
           "Temperature", "TopK", "TopP"]
