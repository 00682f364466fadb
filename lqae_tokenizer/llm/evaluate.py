"""Reading accuracy of an :class:`~lqae_tokenizer.llm.ImageLM` on labelled image text, with its 95% CI."""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from .data import LabelledText


def binomial_ci95(correct: int, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy ``correct / n``."""
    p = correct / n
    return 1.96 * math.sqrt(p * (1 - p) / n)


def reading_accuracy(image_lm: Any, items: Sequence[LabelledText], *, chunk: int = 50,
                     progress: bool = False) -> dict[str, Any]:
    """Classify every item's text among ``image_lm.labels``: accuracy, CI, per-class accuracy, confusion.

    Returns ``{"accuracy", "ci95", "n", "per_class", "confusion", "images_per_second", "predictions"}``;
    ``confusion[true][predicted]`` counts, labels in ``image_lm.labels`` order.
    """
    labels = image_lm.labels
    unknown = sorted({i.label for i in items} - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's labels {labels}")
    start, predictions = time.time(), []
    for s in range(0, len(items), chunk):
        scores = image_lm.scores_of_texts([i.text for i in items[s : s + chunk]])
        predictions += [labels[k] for k in scores.argmax(1).tolist()]
        if progress:
            print(f"  {len(predictions)}/{len(items)}", end="\r", flush=True)
    seconds = time.time() - start
    index = {label: k for k, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for item, predicted in zip(items, predictions):
        confusion[index[item.label]][index[predicted]] += 1
    correct = sum(confusion[k][k] for k in range(len(labels)))
    per_class = {label: confusion[k][k] / max(1, sum(confusion[k])) for k, label in enumerate(labels)}
    return {"accuracy": correct / len(items), "ci95": binomial_ci95(correct, len(items)), "n": len(items),
            "per_class": per_class, "confusion": confusion, "images_per_second": len(items) / seconds,
            "predictions": predictions}
