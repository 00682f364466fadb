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


# Attention implementations that take a custom 4D mask as it is (True / 0: attend): the label tree below.
_TREE_MASK_ATTENTION = ("sdpa", "eager")


def label_tree_rows(queries: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]
                    ) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[list[int]]]:
    """Each query with every candidate's tokens but its last appended as a branch of its own: what one
    forward pass needs to score all candidates (:func:`score_queries_batched`).

    Returns per row ``(tokens, positions, branch, targets)``: ``branch[j]`` is -1 for a query token and
    k for a token of candidate k (it sees the query and the earlier tokens of its own branch only);
    positions restart after the query in every branch, so each branch is computed as if it followed the
    query alone. ``targets[k]`` lists, for each of candidate k's tokens, the index in the row whose
    logits predict it: the query's last token for the first, the branch's own tokens for the others.
    """
    rows = []
    for query, conts in zip(queries, continuations):
        tokens, positions, branch, targets = list(query), list(range(len(query))), [-1] * len(query), []
        for k, cont in enumerate(conts):
            before = len(tokens)
            tokens += cont[:-1]
            positions += range(len(query), len(query) + len(cont) - 1)
            branch += [k] * (len(cont) - 1)
            targets.append([len(query) - 1] + list(range(before, before + len(cont) - 1)))
        rows.append((tokens, positions, branch, targets))
    return [list(r) for r in zip(*rows)] if rows else [[], [], [], []]


def label_tree_mask(branch: Sequence[int], width: int, device: Any) -> torch.Tensor:
    """``bool [width, width]`` (True: attend) of one row of :func:`label_tree_rows`, left-padded to
    ``width``: causal over the query, each branch sees the query and itself, never another branch; a
    padding token sees only itself (a row with nothing to attend to would give NaN)."""
    pad = width - len(branch)
    b = torch.tensor([-2] * pad + list(branch), device=device)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    same_or_query = (b[None, :] == -1) | (b[None, :] == b[:, None])
    mask = causal & same_or_query & (b[None, :] != -2)
    return mask | (torch.eye(width, dtype=torch.bool, device=device) & (b[:, None] == -2))


@torch.inference_mode()
def score_queries_batched(model: Any, tokenizer: Any, queries: Sequence[str], candidates: Sequence[str], *,
                          batch_size: int = 16) -> list[list[float]]:
    """:func:`score_queries` without a shared prefix, ``batch_size`` queries per forward pass: ``[Q][C]``.

    On a CPU one forward pass of a small LM costs about the time it takes to read its weights, however
    few tokens it runs (SmolLM2-135M: ~0.2 s for 20 tokens or 120), so queries are left-padded into
    batches, and every candidate is scored in the same pass: its tokens (but the last) follow the query
    as a branch that sees only the query and itself (a tree-shaped attention mask,
    :func:`label_tree_mask`, with positions restarting after the query in every branch). So the query
    runs once and nothing is copied; repeating its key/value cache once per candidate, the way before,
    spent a third of classify's time copying. Models whose attention takes no custom mask (e.g. flash
    attention) use :func:`score_queries` per query. Equal to :func:`score_labels_reference` up to float
    rounding (tested).
    """
    model, tokenizer = _resolve(model, tokenizer)
    if getattr(model.config, "_attn_implementation", None) not in _TREE_MASK_ATTENTION:
        return score_queries(model, tokenizer, "", queries, candidates)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[list[float]] = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        ids = [token_ids(tokenizer, q) for q in chunk]
        conts = [_continuations(tokenizer, q_ids, q, candidates) for q_ids, q in zip(ids, chunk)]
        tokens, positions, branches, targets = label_tree_rows(ids, conts)
        width = max(len(t) for t in tokens)
        batch = torch.tensor([[pad] * (width - len(t)) + t for t in tokens], device=device)  # [B, W]
        position_ids = torch.tensor([[0] * (width - len(p)) + p for p in positions], device=device)
        mask = torch.stack([label_tree_mask(b, width, device) for b in branches])[:, None]  # [B, 1, W, W]
        if model.config._attn_implementation == "eager":  # eager adds the mask to the scores
            mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
        # Logits only from the first position that predicts a candidate token on (the query's last token):
        # the branches sit at the end of each row, so that is a few columns, not the vocabulary x the prompt.
        first = min(width - len(t) + len(q) - 1 for t, q in zip(tokens, ids))
        logits = model(batch, attention_mask=mask, position_ids=position_ids, use_cache=False,
                       logits_to_keep=width - first).logits
        logprobs = logits.float().log_softmax(-1)  # [B, width - first, V]
        for b, (row_tokens, row_targets) in enumerate(zip(tokens, targets)):
            shift = width - len(row_tokens) - first  # this row's token i has its logits at index i + shift
            results.append([sum(float(logprobs[b, at + shift, token]) for at, token in zip(at_rows, cont))
                            for at_rows, cont in zip(row_targets, conts[b])])
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


