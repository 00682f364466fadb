"""Generation that can only write codebook words, exactly ``n_words`` of them, so every drawing decodes.

A prefix tree (:class:`WordTrie`) holds the causal LM's token sequence of every codebook word written
with its leading space (``" dye"`` -> ``[" d", "ye"]`` or ``[" dye"]``, whatever that LM's tokenizer
gives). A word's first token always starts with the space and its other tokens never do, so the
tokens of a drawing split into words without ambiguity. :class:`CodebookWordsProcessor`, a
``transformers`` ``LogitsProcessor``, walks the tree along each row's generated tokens and sets every
score it does not allow to ``-inf``:

- inside a word: only the tokens that continue it to a codebook word;
- at the end of a word, fewer than ``n_words`` written: continue it, or start the next word;
- at the end of the ``n_words``-th word: continue it, or end of sequence (the only way to finish).

With ``words_per_line`` = W (the grid-rows layout of :class:`~lqae_tokenizer.llm.prompt.PromptFormat`),
the end of every W-th word, but the last, allows the newline token instead of a new word, and after it
only a new word: the same token sequence as :meth:`PromptFormat.draw_answer_ids` writes for training.

So a sampled sequence is always ``n_words`` codebook words followed by end-of-sequence, whatever the LM's
scores (tested with a random LM). ``max_new_tokens`` = :meth:`WordTrie.max_tokens` bounds the length.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

_ROOT = 0


class WordTrie:
    """Token-sequence prefix tree of a set of words under one causal LM tokenizer.

    Args:
        llm_tokenizer: the causal LM's Hugging Face tokenizer.
        words: the codebook's words (e.g. ``ImageTokenizer.codebook_words()``), without spaces.

    Raises ``ValueError`` for a word whose tokens do not start a new word on their own (the first
    token must decode with a leading space, the others without), which would make word boundaries
    ambiguous, or for two words with the same token sequence.
    """

    def __init__(self, llm_tokenizer: Any, words: Iterable[str]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.word_at: list[str | None] = [None]
        self.max_word_tokens = 0
        words = list(words)
        encoded = llm_tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        for word, ids in zip(words, encoded):
            self._check_boundaries(llm_tokenizer, word, ids)
            node = _ROOT
            for token in ids:
                node = self.children[node].setdefault(token, self._new_node())
            if self.word_at[node] is not None:
                raise ValueError(f"words {self.word_at[node]!r} and {word!r} have the same LM tokens {ids}")
            self.word_at[node] = word
            self.max_word_tokens = max(self.max_word_tokens, len(ids))
        self._allowed: dict[int, torch.Tensor] = {}

    def _new_node(self) -> int:
        self.children.append({})
        self.word_at.append(None)
        return len(self.children) - 1

    @staticmethod
    def _check_boundaries(llm_tokenizer: Any, word: str, ids: Sequence[int]) -> None:
        pieces = [llm_tokenizer.decode([t]) for t in ids]
        if not ids or not pieces[0].startswith(" ") or any(p.startswith(" ") for p in pieces[1:]) \
                or "".join(pieces) != " " + word:
            raise ValueError(f"the causal LM tokenizes {' ' + word!r} as {pieces}: a codebook word must be "
                             "one leading-space token followed by tokens without a space")

    def __len__(self) -> int:
        return sum(w is not None for w in self.word_at)

    def max_tokens(self, n_words: int) -> int:
        """Upper bound on the tokens of ``n_words`` words plus end of sequence: a ``max_new_tokens``."""
        return n_words * self.max_word_tokens + 1

    def step(self, node: int, token: int) -> tuple[int, bool] | None:
        """Follow ``token`` from ``node``: ``(next node, starts a new word)``, or None if not allowed."""
        if node != _ROOT:
            child = self.children[node].get(token)
            if child is not None:
                return child, False
            if self.word_at[node] is None:
                return None
        child = self.children[_ROOT].get(token)  # a new word (its first token carries the space)
        return None if child is None else (child, True)

    def child_tokens(self, node: int) -> torch.Tensor:
        """``LongTensor`` of the tokens that continue ``node`` (cached)."""
        if node not in self._allowed:
            self._allowed[node] = torch.tensor(sorted(self.children[node]), dtype=torch.long)
        return self._allowed[node]

    def split_words(self, tokens: Sequence[int]) -> list[str]:
        """The words a valid generated token sequence spells (``ValueError`` if it leaves the tree)."""
        words, node = [], _ROOT
        for token in tokens:
            moved = self.step(node, token)
            if moved is None:
                raise ValueError(f"token {token} does not continue a codebook word here")
            if moved[1] and node != _ROOT:
                words.append(self.word_at[node])
            node = moved[0]
        if node != _ROOT:
            if self.word_at[node] is None:
                raise ValueError("the sequence ends inside a word")
            words.append(self.word_at[node])
        return words


class CodebookWordsProcessor:
    """``LogitsProcessor``: only codebook words, exactly ``n_words``, then end of sequence.

    Args:
        trie: the codebook words' :class:`WordTrie` under the LM's tokenizer.
        n_words: how many words a drawing has (the image tokenizer's ``tokens_per_image``).
        prompt_length: tokens of the prompt in every row (generated tokens start there).
        eos_token_id: the id that ends a drawing.
        words_per_line: 0 (one line), or W: a newline token between every W words.
        newline_id: the LM's newline token (needed when ``words_per_line`` > 0).
    """

    def __init__(self, trie: WordTrie, n_words: int, prompt_length: int, eos_token_id: int, *,
                 words_per_line: int = 0, newline_id: int | None = None) -> None:
        if words_per_line and newline_id is None:
            raise ValueError("words_per_line > 0 needs the LM's newline_id")
        self.trie, self.n_words, self.prompt_length, self.eos = trie, n_words, prompt_length, eos_token_id
        self.words_per_line, self.newline = words_per_line, newline_id
        self._states: dict[int, tuple[int, int, int]] = {}  # row -> (tokens consumed, node, words started)

    def _state(self, row: int, generated: torch.Tensor) -> tuple[int, int] | None:
        """``(node, words started)`` after ``generated``; None once the row has ended."""
        consumed, node, count = self._states.get(row, (0, _ROOT, 0))
        if consumed > len(generated):  # a new generate call reusing this processor
            consumed, node, count = 0, _ROOT, 0
        for token in generated[consumed:].tolist():
            if node is None or token == self.eos and self._may_end(node, count):
                node = None
                continue
            if token == self.newline and self._line_ends(node, count):
                node = _ROOT  # the next token starts a word
                continue
            moved = self.trie.step(node, token)
            if moved is None:
                raise RuntimeError(f"generated token {token} left the codebook words (a bug in the constraint)")
            node, count = moved[0], count + moved[1]
        self._states[row] = (len(generated), node, count)
        return None if node is None else (node, count)

    def _may_end(self, node: int, count: int) -> bool:
        return count == self.n_words and self.trie.word_at[node] is not None

    def _line_ends(self, node: int, count: int) -> bool:
        """At the end of a word that closes a line (a multiple of W, not the last word)."""
        return (bool(self.words_per_line) and node != _ROOT and self.trie.word_at[node] is not None
                and count < self.n_words and count % self.words_per_line == 0)

    def max_new_tokens(self) -> int:
        """Upper bound on a drawing's tokens: its words, the line breaks and end of sequence."""
        breaks = (self.n_words - 1) // self.words_per_line if self.words_per_line else 0
        return self.trie.max_tokens(self.n_words) + breaks

    def allowed(self, node: int, count: int) -> torch.Tensor:
        """Token ids allowed next at ``node`` with ``count`` words started."""
        parts = [self.trie.child_tokens(node)]
        if self._line_ends(node, count):
            parts.append(torch.tensor([self.newline]))
        elif node != _ROOT and self.trie.word_at[node] is not None and count < self.n_words:
            parts.append(self.trie.child_tokens(_ROOT))
        if self._may_end(node, count):
            parts.append(torch.tensor([self.eos]))
        return torch.cat(parts)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            state = self._state(row, input_ids[row, self.prompt_length:])
            allowed = torch.tensor([self.eos]) if state is None else self.allowed(*state)
            allowed = allowed.to(scores.device)
            masked[row, allowed] = scores[row, allowed]
        return masked
