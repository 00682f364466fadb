"""Seeded constrained sampling of many drawings at once: the loop :meth:`ImageLM.draw_ids` runs.

``transformers``' ``generate`` samples each token with ``torch.multinomial``, which draws an exponential
random number for every entry of the vocabulary (49,152 for SmolLM2) in every row at every step: at 32
drawings that took 30% of a bf16 drawing on a 2-core CPU, more than the LM's matmuls. Here one uniform
number per row picks the token by inverse transform sampling (:func:`sample_next`), the prompt runs
once for all rows and its key/value cache is repeated, and the logits processors
(:class:`~lqae_tokenizer.llm.constrained.CodebookWordsProcessor`, label guidance) are called exactly as
``generate`` calls them (float32 scores, then temperature, then top-k). The reference is
``generate`` itself: at a vanishing temperature both give the constrained greedy sequence (tested).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .scoring import forward_cached

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_next(scores: torch.Tensor, uniform: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """``LongTensor[n]``: one token per row of ``scores`` (``float [n, V]``, ``-inf`` for forbidden tokens),
    drawn from ``softmax(scores / temperature)`` restricted to the ``top_k`` highest (0: all; ties with the
    k-th kept, as ``transformers``' top-k does) by inverse transform sampling with ``uniform``
    (``float64 [n]`` in [0, 1)): the first token whose cumulative probability exceeds ``uniform`` times the
    row's total. A token of probability 0 is never picked (its cumulative sum equals its predecessor's).
    ``ValueError`` for a row with no allowed token.
    """
    scores = scores.float() / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    cdf = torch.softmax(scores, dim=-1).double().cumsum(-1)  # float64: no rounding step hides a token
    total = cdf[:, -1:]
    if not bool(torch.all(total > 0)):
        raise ValueError("a row allows no token (every score is -inf or NaN)")
    picked = torch.searchsorted(cdf, uniform.to(cdf)[:, None] * total, right=True)
    return picked[:, 0].clamp(max=scores.shape[-1] - 1)


@torch.inference_mode()
def sample_constrained(model: Any, prompt: Sequence[int], n: int, processors: Sequence[LogitsProcessor], *,
                       max_new_tokens: int, eos_token_id: int, seed: int, temperature: float = 1.0,
                       top_k: int = 0) -> torch.Tensor:
    """``LongTensor[n, T]``: the tokens ``n`` rows sample after ``prompt`` (``T`` <= ``max_new_tokens``;
    a row that ended is filled with ``eos_token_id``, and sampling stops when every row has ended).

    Seeded by its own ``torch.Generator`` (the global random state is neither used nor changed): the
    same call on the same machine gives the same tokens. ``processors`` see ``(ids [n, prompt + t],
    float32 scores [n, V])`` at every step, as ``generate`` gives them.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt_ids = torch.tensor([list(prompt)], device=device)
    logits, cache = forward_cached(model, prompt_ids, None, logits_to_keep=1)  # the prompt once, for every row
    if n > 1:
        cache.batch_repeat_interleave(n)
    logits = logits[:, -1].expand(n, -1)
    ids = prompt_ids.expand(n, -1)
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        scores = logits.float()
        for processor in processors:
            scores = processor(ids, scores)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        tokens = sample_next(scores, uniform, temperature=temperature, top_k=top_k)
        tokens = tokens.masked_fill(ended, eos_token_id)
        ids = torch.cat([ids, tokens[:, None]], dim=1)
        ended |= tokens == eos_token_id
        if bool(ended.all()):
            break
        logits, cache = forward_cached(model, tokens[:, None], cache, logits_to_keep=1)
        logits = logits[:, -1]
    return ids[:, len(prompt):]
