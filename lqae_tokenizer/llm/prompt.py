"""The prompt format an :class:`~lqae_tokenizer.llm.ImageLM` reads and draws with (the paper's, both ways).

Reading (classification): the image's words, then the label the LM is asked for::

    input: <word 1> <word 2> ... <word N> output: <label>

Drawing (generation): the label first, then exactly ``tokens_per_image`` codebook words the LM writes::

    output: <label> input: <word 1> <word 2> ... <word N>

The words are the image tokenizer's ``to_text`` (MiniLM whole words for the bundled tokenizers), so any
causal LM reads them through its own tokenizer. Each piece is tokenized on its own and the ids are
concatenated, so that training, scoring and generation see the same token sequence (byte-level BPE and
SentencePiece tokenizers split before a space, so this equals tokenizing the whole line; checked by
:func:`check_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class PromptFormat:
    """The two templates. ``{words}`` is the image text without leading space, ``{label}`` a label name."""

    read: str = "input: {words} output:"
    draw: str = "output: {label} input:"

    def read_prompt(self, words: str) -> str:
        """``"input: w1 ... wN output:"``: what the LM continues with ``" " + label``."""
        return self.read.format(words=" ".join(words.split()))

    def draw_prompt(self, label: str) -> str:
        """``"output: <label> input:"``: what the LM continues with ``" w1 ... wN"``."""
        return self.draw.format(label=label)

    def to_dict(self) -> dict[str, str]:
        return {"read": self.read, "draw": self.draw}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "PromptFormat":
        unknown = set(data) - {"read", "draw"}
        if unknown:
            raise ValueError(f"prompt format has unknown keys {sorted(unknown)}; expected 'read' and 'draw'")
        fmt = cls(**data)
        if "{words}" not in fmt.read or not fmt.read.rstrip().endswith(":"):
            raise ValueError(f"the read template must contain {{words}} and end with ':', got {fmt.read!r}")
        if "{label}" not in fmt.draw or not fmt.draw.rstrip().endswith(":"):
            raise ValueError(f"the draw template must contain {{label}} and end with ':', got {fmt.draw!r}")
        return fmt


def token_ids(llm_tokenizer: Any, text: str) -> list[int]:
    """The LM tokenizer's ids of ``text`` without special tokens."""
    return llm_tokenizer(text, add_special_tokens=False)["input_ids"]


def check_labels(llm_tokenizer: Any, labels: Sequence[str]) -> None:
    """``ValueError`` unless the labels can be told apart by their log-likelihood after a prompt.

    Each label is scored as the tokens of ``" " + label``; when one label's tokens are a prefix of
    another's (``"bag"`` and ``"bags"``), the shorter one's score is part of the longer one's and the
    comparison means nothing. Labels must also be distinct, non-empty and on one line.
    """
    if len(labels) < 2:
        raise ValueError(f"need at least two labels, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    sequences = {}
    for label in labels:
        if not isinstance(label, str) or not label.strip() or "\n" in label or label != label.strip():
            raise ValueError(f"a label is a non-empty one-line string without outer spaces, got {label!r}")
        sequences[label] = token_ids(llm_tokenizer, " " + label)
    for a, ids_a in sequences.items():
        for b, ids_b in sequences.items():
            if a != b and ids_b[: len(ids_a)] == ids_a:
                raise ValueError(f"label {a!r} is tokenized as a prefix of label {b!r} ({ids_a} vs {ids_b}): "
                                 "their scores cannot be compared; rename one of them")
