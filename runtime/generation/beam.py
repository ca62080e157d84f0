"""Beam search for one prompt, step for step the algorithm of Hugging Face's ``GenerationMixin._beam_search``.

What has to match HF for the same best sequence and score:
- processors act on log-softmax scores, not raw logits, and see each running beam's whole sequence;
- each step keeps the top ``K = max(2, 1 + n_eos) * num_beams`` continuations over all beams; only
  finishing candidates among the first ``num_beams`` of them may enter the finished set, scored
  ``logprob / new_len ** length_penalty``; the best ``num_beams`` unfinished ones keep running;
- a candidate also "finishes" when it reaches the length limit;
- early stopping: ``True`` stops once ``num_beams`` hypotheses are finished; ``False`` stops when the best
  running beam, penalised at its current length, cannot beat the worst finished one; ``"never"`` assumes the
  best running beam could still grow to the length limit (when ``length_penalty > 0``).
Scores are float32 like HF's. Sampling (``do_sample``) draws the K continuations without replacement with
the Gumbel-top-k trick, which is the same distribution as HF's ``torch.multinomial`` without replacement.
"""

from __future__ import annotations

import numpy as np

from mmedge.runtime.generation.config import GenerationConfig
from mmedge.runtime.generation.processors import apply, build_processors
from mmedge.runtime.generation.protocol import StepModel

BIG = np.float32(-1.0e9)  # HF's "never choose this" score offset


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first (ties: lower index first)."""
    idx = np.argpartition(values, values.shape[0] - k)[-k:] if k < values.shape[0] else np.arange(values.shape[0])
    return idx[np.argsort(-values[idx], kind="stable")]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def beam_search(model: StepModel, prompt: np.ndarray, config: GenerationConfig, new_limit: int,
                *, continue_cache: bool = False) -> tuple[list[int], float, bool]:
    """Return the best hypothesis (prompt + new tokens), its score and whether it ended with an eos."""
    beams, length, lp, es = config.num_beams, prompt.shape[0], config.length_penalty, config.early_stopping
    total = length + new_limit
    if continue_cache:
        model.reorder(np.zeros(beams, np.int64))  # one cached row becomes `beams` identical rows
    else:
        model.reset()
    logits = model.extend(np.ascontiguousarray(np.broadcast_to(prompt, (beams, length))))
    vocab = logits.shape[1]
    procs = build_processors(config, length, vocab)
    eos = np.asarray(config.eos_token_ids, np.int64)
    k = min(max(2, 1 + len(config.eos_token_ids)) * beams, beams * vocab)
    rng = np.random.default_rng(config.seed) if config.do_sample else None
    arange = np.arange(beams)

    running = np.empty((beams, total), np.int64)
    running[:, :length] = prompt
    run_scores = np.full(beams, BIG, np.float32)
    run_scores[0] = 0.0  # only the first beam is live at step one, so the beams do not all pick the same tokens
    finished = np.zeros((beams, total), np.int64)
    fin_len = np.zeros(beams, np.int64)
    fin_scores = np.full(beams, BIG, np.float32)
    fin_done = np.zeros(beams, bool)
    improvable = True
    step = np.empty((beams, 1), np.int64)
    cur = length
    while True:
        logp = apply(procs, running[:, :cur], _log_softmax(logits))
        logp += run_scores[:, None]
        flat = logp.reshape(-1)
        keys = flat if rng is None else flat + rng.gumbel(size=flat.shape).astype(np.float32)
        idx = _top(keys, k)
        scores, beam, tok = flat[idx], idx // vocab, idx % vocab
        hits = np.isin(tok, eos) | (cur + 1 >= total)

        # finished set: only the first `beams` candidates may enter, and only while that can still matter
        room = improvable and not (es is True and bool(fin_done.all()))
        accept = hits[:beams] & room
        if accept.any():
            fresh = np.where(accept, scores[:beams] / np.float32((cur + 1 - length) ** lp), -np.inf)
            merged = np.concatenate([fin_scores, fresh.astype(np.float32)])
            pick = _top(merged, beams)  # best first, like HF's top-k over old + new
            fresh_seqs = running[beam[:beams]]
            fresh_seqs[:, cur] = tok[:beams]
            finished = np.concatenate([finished, fresh_seqs])[pick]
            fin_len = np.concatenate([fin_len, np.full(beams, cur + 1)])[pick]
            fin_done = np.concatenate([fin_done, accept])[pick]
            fin_scores = merged[pick]

        # running set: the best `beams` candidates that did not finish
        run_lp = scores + hits.astype(np.float32) * BIG
        sel = _top(run_lp, beams)
        rows = beam[sel]
        running = running[rows]
        running[:, cur] = tok[sel]
        run_scores = run_lp[sel]
        cur += 1

        hypothetical = total - length if (es == "never" and lp > 0.0) else cur - length
        best_possible = run_scores[0] / np.float32(hypothetical ** lp)
        worst = np.where(fin_done, fin_scores.min(), BIG)
        improvable = improvable and bool((best_possible > worst).any())
        if not improvable or (es is True and fin_done.all()) or hits.all():
            break
        if not np.array_equal(rows, arange):
            model.reorder(rows)
        step[:, 0] = tok[sel]
        logits = model.extend(step)

    best = finished[0, :fin_len[0]].tolist()
    return best, float(fin_scores[0]), bool(best[-1] in set(config.eos_token_ids))
