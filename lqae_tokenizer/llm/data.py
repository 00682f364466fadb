"""Training data for an :class:`~lqae_tokenizer.llm.ImageLM`: labelled image text -> token examples.

Image text comes from the image tokenizer, written by ``lqae-tokenize DIR --output x.jsonl`` (the label
of a record is the name of its image's parent folder, as ``datasets``' ``imagefolder`` does; a
``label`` field wins when present) or by ``Dataset.map(tok.datasets_map_fn())`` on an ``imagefolder``
dataset saved with ``save_to_disk`` (columns ``text`` and ``label``, a ``ClassLabel``).

Each image gives a reading example (loss on the label's tokens) and/or a drawing example (loss on
the words' tokens and end of sequence); prompt tokens are masked out of the loss with -100.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .prompt import PromptFormat, token_ids

TASKS = ("read", "draw")
IGNORE = -100


@dataclass(frozen=True)
class LabelledText:
    """One image's text (``to_text`` output) and its label name; ``where`` names its source (``file:line``)
    for error messages and takes no part in comparisons."""

    text: str
    label: str
    where: str = field(default="", compare=False)


def _jsonl_records(path: Path) -> list[tuple[str, str, str]]:
    """``(text, raw label, "file:line")`` of each record; ``ValueError`` naming the file and line of the
    first one that is not a JSON object with a text and a label (or a path whose folder names it)."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}); expected lqae-tokenize JSONL output") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object with 'text' and 'label' or 'path', "
                             f"got {type(record).__name__}")
        if not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{number}: a record without a 'text' string (a learned VQ-VAE codebook has no words)")
        label = record.get("label")
        if label is None:
            if not isinstance(record.get("path"), str):
                raise ValueError(f"{path}:{number}: a record needs 'label', or 'path' whose parent folder names it")
            label = Path(record["path"].split("::")[0]).parent.name
        out.append((record["text"], str(label), f"{path}:{number}"))
    return out


def _datasets_records(path: Path) -> list[tuple[str, str]]:
    from datasets import load_from_disk

    ds = load_from_disk(str(path))
    missing = {"text", "label"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{path}: the dataset has no column(s) {sorted(missing)} (columns: {ds.column_names}); "
                         "build it with ds.map(tok.datasets_map_fn(), batched=True) on an imagefolder dataset")
    feature = ds.features["label"]
    names = getattr(feature, "names", None)
    return [(t, names[l] if names else str(l), f"{path} row {i}") for i, (t, l) in enumerate(zip(ds["text"], ds["label"]))]


def read_labelled_text(paths: Iterable[str | Path], label_names: dict[str, str] | None = None) -> list[LabelledText]:
    """Records from ``lqae-tokenize`` JSONL files and/or ``datasets`` folders, in the order given.

    ``label_names`` renames raw labels (e.g. folder ``"0"`` -> ``"T-shirt"``); with it, a raw label
    it does not name is an error (``ValueError``), so a typo cannot create an extra class.
    """
    paths = list(paths)
    raw: list[tuple[str, str, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            raw += _datasets_records(path)
        elif path.is_file():
            raw += _jsonl_records(path)
        else:
            raise FileNotFoundError(f"training data {path} does not exist (expected a .jsonl file or a datasets folder)")
    if not raw:
        raise ValueError(f"the data {[str(p) for p in paths]} holds no records")
    if label_names is not None:
        unknown = sorted({label for _, label, _ in raw} - set(label_names))
        if unknown:
            raise ValueError(f"labels {unknown[:10]} are not in the label names given ({sorted(label_names)[:10]})")
        raw = [(text, label_names[label], where) for text, label, where in raw]
    return [LabelledText(" ".join(text.split()), label, where) for text, label, where in raw]


def read_example(fmt: PromptFormat, llm_tokenizer: Any, item: LabelledText) -> dict[str, list[int]]:
    """``input: <words> output: <label>``, loss on the label's tokens."""
    prompt = token_ids(llm_tokenizer, fmt.read_prompt(item.text))
    answer = token_ids(llm_tokenizer, " " + item.label)
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


def draw_example(fmt: PromptFormat, llm_tokenizer: Any, item: LabelledText) -> dict[str, list[int]]:
    """``output: <label> input: <words>`` + end of sequence, loss on the words (and any line breaks
    between grid rows) and the end."""
    prompt = token_ids(llm_tokenizer, fmt.draw_prompt(item.label))
    answer = fmt.draw_answer_ids(llm_tokenizer, item.text) + [llm_tokenizer.eos_token_id]
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


def build_examples(items: Sequence[LabelledText], llm_tokenizer: Any, tasks: Sequence[str],
                   fmt: PromptFormat | None = None) -> list[dict[str, list[int]]]:
    """One example per image and task, image-major (an image's read and draw examples side by side)."""
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
    fmt = fmt or PromptFormat()
    builders = {"read": read_example, "draw": draw_example}
    return [builders[task](fmt, llm_tokenizer, item) for item in items for task in tasks]


class PadCollator:
    """Left-pads a batch and asks the LM for logits only where answers are.

    Returns ``input_ids`` ``[B, T]`` (left-padded with ``pad_id``), ``attention_mask``, ``position_ids``
    (counted from each row's first real token, so padding changes nothing), ``labels`` (-100 on padding
    and prompts) and ``logits_to_keep`` = K: with left padding every answer lies in the last K - 1
    positions, so the LM's output layer (49,152 x 576 for SmolLM2) runs on K positions instead of T.
    A reading batch (answers of 2-4 tokens) then costs about a fifth less.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        keep = 2
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, longest - n:] = torch.tensor(f["input_ids"])
            labels[row, longest - n:] = torch.tensor(f["labels"])
            mask[row, longest - n:] = 1
            first_answer = next(i for i, t in enumerate(f["labels"]) if t != IGNORE)
            keep = max(keep, n - first_answer + 1)  # the answer's tokens and the position before them
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
                "logits_to_keep": keep}


def per_example_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Mean over examples of each example's mean next-token cross-entropy on its answer tokens.

    A plain token mean would weight a drawing's ~100 word tokens 50x a label's two tokens; per example,
    reading and drawing count the same. ``labels`` ``[B, T]`` with -100 on ignored positions;
    ``outputs.logits`` ``[B, K, V]`` for the last K positions (K <= T, see :class:`PadCollator`).
    """
    keep = outputs.logits.shape[1]
    logits = outputs.logits[:, :-1].float()  # [B, K-1, V]: position t predicts token t+1
    target = labels[:, labels.shape[1] - keep + 1:].to(logits.device)  # [B, K-1]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE,
                                               reduction="none")  # [B, K-1]
    counts = (target != IGNORE).sum(1).clamp(min=1)
    return (losses.sum(1) / counts).mean()
