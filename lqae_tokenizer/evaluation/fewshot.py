"""Few-shot classification: N-way K-shot episodes, the paper's prompt and a no-LLM baseline.

The paper prompts GPT-3 with lines ``input: <image text> output: <label>`` (one per support image)
followed by ``input: <query text> output:``. Every candidate label is scored by its log-likelihood
after the prompt under a Hugging Face causal LM (:mod:`lqae_tokenizer.llm.scoring`, re-exported here),
so no free text is parsed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ..llm.prompt import PromptFormat
from ..llm.scoring import score_labels, score_labels_reference, score_queries, score_queries_batched  # noqa: F401


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task: dataset indices and their episode-local labels in ``[0, N)``."""

    classes: tuple[int, ...]  # the dataset classes, in episode-label order
    support: tuple[int, ...]
    support_labels: tuple[int, ...]
    query: tuple[int, ...]
    query_labels: tuple[int, ...]


def sample_episodes(labels: Sequence[int], *, n_way: int, k_shot: int, n_query: int, episodes: int,
                    seed: int = 0) -> list[Episode]:
    """``episodes`` balanced episodes: ``n_way`` classes, ``k_shot`` support and ``n_query`` query
    images per class, support and query disjoint. Raises ``ValueError`` when a class is too small."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    eligible = sorted(c for c, idx in by_class.items() if len(idx) >= k_shot + n_query)
    if len(eligible) < n_way:
        raise ValueError(f"{n_way}-way {k_shot}-shot with {n_query} queries needs {n_way} classes with >= "
                         f"{k_shot + n_query} images; only {len(eligible)} have that many")
    rng = random.Random(seed)
    out = []
    for _ in range(episodes):
        classes = tuple(rng.sample(eligible, n_way))
        support, s_labels, query, q_labels = [], [], [], []
        for local, cls in enumerate(classes):
            picked = rng.sample(by_class[cls], k_shot + n_query)
            support += picked[:k_shot]
            s_labels += [local] * k_shot
            query += picked[k_shot:]
            q_labels += [local] * n_query
        order = list(range(len(support)))
        rng.shuffle(order)  # interleave classes in the prompt
        out.append(Episode(classes, tuple(support[i] for i in order), tuple(s_labels[i] for i in order),
                           tuple(query), tuple(q_labels)))
    return out


def build_prompt(support_texts: Sequence[str], support_labels: Sequence[str], query_text: str) -> str:
    """The paper's prompt: one ``input: ... output: ...`` line per support example, then the query.

    Example:
        >>> build_prompt([" cat sat"], ["shoe"], " dog ran")
        'input: cat sat output: shoe\\ninput: dog ran output:'
    """
    if len(support_texts) != len(support_labels):
        raise ValueError("one label per support text")
    fmt = PromptFormat()  # the one template of reading, the same an ImageLM reads with
    lines = [f"{fmt.read_prompt(t)} {label}" for t, label in zip(support_texts, support_labels)]
    return "\n".join(lines + [fmt.read_prompt(query_text)])


def nearest_class_mean_accuracy(features: torch.Tensor, episodes: Sequence[Episode]) -> tuple[float, float]:
    """Mean accuracy and 95% confidence half-width over episodes of a nearest-class-mean classifier.

    Each query is assigned to the class whose support features' mean is nearest in cosine similarity
    (features ``[n, H]``, e.g. ``ImageTokenizer.features`` of the dataset). No LLM involved.
    """
    accuracies = []
    for ep in episodes:
        support = torch.nn.functional.normalize(features[list(ep.support)].double(), dim=1)
        labels = torch.tensor(ep.support_labels)
        n_way = len(ep.classes)
        means = torch.stack([support[labels == c].mean(0) for c in range(n_way)])
        query = torch.nn.functional.normalize(features[list(ep.query)].double(), dim=1)
        predicted = (query @ torch.nn.functional.normalize(means, dim=1).t()).argmax(1)
        accuracies.append(float((predicted == torch.tensor(ep.query_labels)).double().mean()))
    acc = torch.tensor(accuracies, dtype=torch.float64)
    half_width = 1.96 * float(acc.std(unbiased=True)) / len(accuracies) ** 0.5 if len(accuracies) > 1 else float("nan")
    return float(acc.mean()), half_width
