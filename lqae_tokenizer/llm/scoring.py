"""Scoring labels after prompts with a causal LM: what an ImageLM reads with, and the few-shot study's scorer.

Every candidate label is scored by the log-likelihood of its tokens (``" " + label``) after the prompt,
so no free text is parsed. :func:`score_queries_batched` is the fast path (left-padded batches of
prompts, one key/value cache shared by every label); :func:`score_labels_reference` is the plain way
(one full pass per label) that the tests compare it with.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Sequence

import torch

from .causal_lm import load_causal_lm
from .prompt import token_ids


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as one left-padded batch: ``(ids, attention mask, position ids)``,
    each ``LongTensor[B, T]``; positions count from each row's first real token, so every row is
    computed as if it were alone."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = (torch.arange(width, device=device)
            >= torch.tensor([width - len(r) for r in rows], device=device)[:, None]).long()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def _resolve(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    if isinstance(model, str):
        model, tokenizer = load_causal_lm(model)
    model.eval()
    return model, tokenizer


def forward_cached(model: Any, ids: torch.Tensor, cache: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """``(logits, cache)`` of ``ids`` run on top of ``cache``. transformers 5 renamed ``past_key_values``
    to ``cache`` (the old name warns, then goes away): use whichever this model's forward takes."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(ids, use_cache=True, **{name: cache}, **kwargs)
    return out.logits, getattr(out, name, None)


def _extend(model: Any, ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
    """Run ``ids`` on top of ``cache`` (None: from scratch): log-probs of the next token ``[V]``, cache."""
    device = next(model.parameters()).device
    logits, cache = forward_cached(model, torch.tensor([ids], device=device), cache, logits_to_keep=1)
    return logits[0, -1].float().log_softmax(-1), cache


@torch.inference_mode()
def score_queries(model: Any, tokenizer: Any, prefix: str, queries: Sequence[str],
                  candidates: Sequence[str]) -> list[list[float]]:
    """Log-likelihood of each ``" " + candidate`` after ``prefix + query``, for every query: ``[Q][C]``.

    The shared ``prefix`` (e.g. an episode's support lines) runs once; each query runs once on a copy
    of its key/value cache; all candidates of a query run as one batch on that cache. Equal to
    :func:`score_labels_reference` (one full pass per label) up to float rounding (tested).

    Args:
        model: a Hugging Face causal LM, or a name for :func:`~lqae_tokenizer.llm.causal_lm.load_causal_lm`.
        tokenizer: its tokenizer (ignored when ``model`` is a name).
    """
    model, tokenizer = _resolve(model, tokenizer)
    device = next(model.parameters()).device
    prefix_ids = token_ids(tokenizer, prefix)
    prefix_state = _extend(model, prefix_ids, None) if prefix_ids else None
    results = []
    for query in queries:
        query_full = token_ids(tokenizer, prefix + query)
        if prefix_state is not None and query_full[: len(prefix_ids)] == prefix_ids:
            start, (next_logprobs, cache) = len(prefix_ids), (prefix_state[0], copy.deepcopy(prefix_state[1]))
        else:  # the query merges with the prefix's last token: no shared cache for it
            start, next_logprobs, cache = 0, None, None
        if len(query_full) > start:
            next_logprobs, cache = _extend(model, query_full[start:], cache)
        continuations = _continuations(tokenizer, query_full, prefix + query, candidates)
        longest = max(len(c) for c in continuations)
        if longest > 1:
            cache.batch_repeat_interleave(len(candidates))
            # Right padding: a causal LM's scores of the real tokens never see the padding after them.
            batch = torch.tensor([c[:-1] + [c[-1]] * (longest - len(c)) for c in continuations], device=device)
            logprobs = forward_cached(model, batch, cache)[0].float().log_softmax(-1)
        scores = []
        for b, c in enumerate(continuations):
            total = float(next_logprobs[c[0]])
            for t in range(1, len(c)):
                total += float(logprobs[b, t - 1, c[t]])
            scores.append(total)
        results.append(scores)
    return results


def _continuations(tokenizer: Any, query_ids: list[int], query: str, candidates: Sequence[str]) -> list[list[int]]:
    """Each candidate's tokens after ``query`` (``ValueError`` if one changes how the query tokenizes)."""
    out = []
    for candidate in candidates:
        full = token_ids(tokenizer, query + " " + candidate)
        if full[: len(query_ids)] != query_ids:
            raise ValueError(f"candidate {candidate!r} changes how the prompt is tokenized; end the prompt with 'output:'")
        out.append(full[len(query_ids):])
    return out


@torch.inference_mode()
def score_queries_batched(model: Any, tokenizer: Any, queries: Sequence[str], candidates: Sequence[str], *,
                          batch_size: int = 16) -> list[list[float]]:
    """:func:`score_queries` without a shared prefix, ``batch_size`` queries per forward pass: ``[Q][C]``.

    On a CPU one forward pass of a small LM costs about the time it takes to read its weights, however
    few tokens it runs (SmolLM2-135M: ~0.2 s for 20 tokens or 120), so queries are left-padded into
    batches (position ids counted from each row's first token, padding masked out), their key/value
    cache is repeated once per candidate, and every candidate's remaining tokens run in one more pass.
    Equal to :func:`score_labels_reference` up to float rounding (tested).
    """
    model, tokenizer = _resolve(model, tokenizer)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[list[float]] = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        ids = [token_ids(tokenizer, q) for q in chunk]
        conts = [_continuations(tokenizer, q_ids, q, candidates) for q_ids, q in zip(ids, chunk)]
        batch, mask, positions = left_pad(ids, pad, device)  # [B, T] each
        out = model(batch, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1].float().log_softmax(-1)  # [B, V]
        scores = [[float(first[b, c[0]]) for c in conts[b]] for b in range(len(chunk))]
        longest = max(len(c) for row in conts for c in row)
        if longest > 1:
            n_cand = len(candidates)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            cache.batch_repeat_interleave(n_cand)
            rows = [c[:-1] + [pad] * (longest - len(c)) for row in conts for c in row]  # right-padded
            tail = torch.tensor(rows, device=device)  # [B*C, L-1]
            tail_mask = torch.cat([mask.repeat_interleave(n_cand, 0), torch.ones_like(tail)], dim=1)
            tail_pos = positions[:, -1:].repeat_interleave(n_cand, 0) + 1 + torch.arange(longest - 1, device=device)
            logprobs = forward_cached(model, tail, cache, attention_mask=tail_mask,
                                       position_ids=tail_pos)[0].float().log_softmax(-1)  # [B*C, L-1, V]
            for b in range(len(chunk)):
                for k, c in enumerate(conts[b]):
                    row = b * n_cand + k
                    scores[b][k] += sum(float(logprobs[row, t - 1, c[t]]) for t in range(1, len(c)))
        results += scores
    return results


def score_labels(model: Any, tokenizer: Any, prompt: str, candidates: Sequence[str]) -> list[float]:
    """Log-likelihood of each ``" " + candidate`` after ``prompt`` under a causal LM (higher is likelier):
    one pass over the prompt, all candidates batched on its key/value cache (:func:`score_queries`)."""
    return score_queries(model, tokenizer, "", [prompt], candidates)[0]


@torch.inference_mode()
def score_labels_reference(model: Any, tokenizer: Any, prompt: str, candidates: Sequence[str]) -> list[float]:
    """The plain way, kept as the reference of :func:`score_labels`: one full pass per candidate."""
    model, tokenizer = _resolve(model, tokenizer)
    device = next(model.parameters()).device
    prompt_ids = token_ids(tokenizer, prompt)
    scores = []
    for continuation in _continuations(tokenizer, prompt_ids, prompt, candidates):
        full = prompt_ids + continuation
        ids = torch.tensor([full], device=device)
        logprobs = model(ids).logits.float().log_softmax(-1)[0]  # [T, vocab]
        target = ids[0, len(prompt_ids):]
        positions = torch.arange(len(prompt_ids) - 1, len(full) - 1, device=device)
        scores.append(float(logprobs[positions, target].sum()))
    return scores


