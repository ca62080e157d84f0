"""Tiny random-weight decoder LMs in Hugging Face format, written offline: a GPT-2 (learned absolute
positions, Conv1D projections, tied head) and a Llama-style model (rotary positions, grouped-query
attention, a ChatML chat template as Qwen2 uses) — the two attention/position schemes the cache graph
must get right. The byte-level BPE tokenizer is trained here on the embedded corpus."""

from __future__ import annotations

from pathlib import Path

import torch

from mmedge.errors import UsageError
from mmedge.exporter.families.tiny_corpus import CORPUS

VARIANTS = ("gpt2", "llama")
EOS = "<|endoftext|>"
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(chat: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.strip().splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None,
                                   pad_token=EOS, model_input_names=["input_ids", "attention_mask"])
    if chat:
        fast.chat_template = CHATML
    return fast


def write_tiny_causal_lm(out_dir: str | Path, variant: str = "gpt2", seed: int = 0) -> Path:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if variant not in VARIANTS:
        raise UsageError(f"unknown tiny causal LM '{variant}'; choose one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(chat=variant == "llama")
    eos = tokenizer.convert_tokens_to_ids(EOS)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if variant == "gpt2":
            config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                bos_token_id=eos, eos_token_id=eos)
            model = GPT2LMHeadModel(config)
        else:
            im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
            config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                 bos_token_id=eos, eos_token_id=[eos, im_end], tie_word_embeddings=False)
            model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=config.eos_token_id,
                                               pad_token_id=eos, max_new_tokens=20, do_sample=False)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
