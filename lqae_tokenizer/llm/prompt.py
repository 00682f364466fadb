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

With ``words_per_line`` = W > 0 the words are laid out as the image's grid rows, a line break after
every W words (W = 8 for an 8x8 token grid), so that the LM sees where a row ends::

    output: <label> input: <word 1> ... <word 8>
     <word 9> ... <word 16>
     ...

Each line after the first starts with a space, so every word keeps the LM tokens it has inline; a drawing
is the lines' tokens with one newline token between them (:meth:`PromptFormat.draw_answer_ids`), and the
constrained generation writes that newline after every W-th word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class PromptFormat:
    """The two templates and the layout of the words.

    ``{words}`` is the image text without leading space, ``{label}`` a label name; ``words_per_line``
    is 0 for all words on one line (the paper's format) or the grid's row length W.
    """

    read: str = "input: {words} output:"
    draw: str = "output: {label} input:"
    words_per_line: int = 0

    def lines(self, words: str) -> list[str]:
        """The image's words (any whitespace between them) as lines of ``words_per_line`` words (0: one line)."""
        split = words.split()
        width = self.words_per_line or max(len(split), 1)
        return [" ".join(split[i:i + width]) for i in range(0, len(split), width)]

    def image_text(self, words: str) -> str:
        """The words as the LM sees them: ``"w1 ... wN"``, or W per line joined by ``"\\n "``."""
        return "\n ".join(self.lines(words))

    def read_prompt(self, words: str) -> str:
        """``"input: w1 ... wN output:"``: what the LM continues with ``" " + label``."""
        return self.read.format(words=self.image_text(words))

    def draw_prompt(self, label: str) -> str:
        """``"output: <label> input:"``: what the LM continues with ``" w1 ... wN"``."""
        return self.draw.format(label=label)

    def draw_answer_ids(self, llm_tokenizer: Any, words: str) -> list[int]:
        """The LM tokens of a drawing's words after the draw prompt (without end of sequence).

        One line: the tokens of ``" w1 ... wN"``. With ``words_per_line``: each line's tokens of
        ``" " + line``, with :func:`newline_id` between lines, which is exactly what the constrained
        generation allows, so training and drawing see the same sequence.
        """
        lines = self.lines(words)
        if not self.words_per_line:
            return token_ids(llm_tokenizer, " " + lines[0]) if lines else []
        newline = newline_id(llm_tokenizer)
        ids: list[int] = []
        for number, line in enumerate(lines):
            ids += ([newline] if number else []) + token_ids(llm_tokenizer, " " + line)
        return ids

    def __post_init__(self) -> None:
        if isinstance(self.words_per_line, bool) or not isinstance(self.words_per_line, int) or self.words_per_line < 0:
            raise ValueError(f"words_per_line must be an int >= 0 (0: all words on one line), got {self.words_per_line!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``words_per_line`` only when set, so one-line folders keep their older file."""
        out: dict[str, Any] = {"read": self.read, "draw": self.draw}
        if self.words_per_line:
            out["words_per_line"] = self.words_per_line
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptFormat":
        unknown = set(data) - {"read", "draw", "words_per_line"}
        if unknown:
            raise ValueError(f"prompt format has unknown keys {sorted(unknown)}; expected 'read', 'draw' "
                             "and optionally 'words_per_line'")
        fmt = cls(**data)
        if "{words}" not in fmt.read or not fmt.read.rstrip().endswith(":"):
            raise ValueError(f"the read template must contain {{words}} and end with ':', got {fmt.read!r}")
        if "{label}" not in fmt.draw or not fmt.draw.rstrip().endswith(":"):
            raise ValueError(f"the draw template must contain {{label}} and end with ':', got {fmt.draw!r}")
        return fmt


def token_ids(llm_tokenizer: Any, text: str) -> list[int]:
    """The LM tokenizer's ids of ``text`` without special tokens."""
    return llm_tokenizer(text, add_special_tokens=False)["input_ids"]


def newline_id(llm_tokenizer: Any) -> int:
    """The LM's one token for ``"\\n"`` (``ValueError`` if its tokenizer splits a line break otherwise)."""
    ids = token_ids(llm_tokenizer, "\n")
    if len(ids) != 1:
        raise ValueError(f"the LM tokenizes a line break as {ids}, not one token; use words_per_line=0")
    return ids[0]


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
