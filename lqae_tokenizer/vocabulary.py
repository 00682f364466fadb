"""Which language-model ids may stand for image patches (the codebook's rows).

Never allowed: special tokens (``<s> </s> <pad> <unk> <mask>``, ``[CLS]``...), added tokens and ids
beyond the text tokenizer's vocabulary, so image text can never carry control tokens.

``"words"`` further keeps only ids that stand for one whole ASCII-alphabetic word and that survive
the text round trip: the tokenizer's decoding of the id re-encodes to exactly that id, and so does
the decoding of the id twice in a row (which rules out word pieces that would glue to their
neighbour). Checked per id, this makes ``encode(decode(ids)) == ids`` hold for any sequence of them.
Measured: roberta-base keeps 32,064 of 50,265 ids; MiniLM/BERT uncased keeps 21,745 of 30,522.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_WORD = re.compile(r" ?[A-Za-z]+")


def special_ids(text_tokenizer: Any) -> set[int]:
    """Ids of special and added tokens."""
    ids = set(int(i) for i in text_tokenizer.all_special_ids)
    ids.update(int(i) for i in getattr(text_tokenizer, "added_tokens_decoder", {}))
    return ids


def decode_ids(text_tokenizer: Any, ids: list[int]) -> str:
    """The tokenizer's decoding, with no clean-up that would break re-encoding."""
    return text_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def encode_text(text_tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of each text, without special tokens."""
    if not texts:
        return []
    return text_tokenizer(texts, add_special_tokens=False)["input_ids"]


def decode_many(text_tokenizer: Any, sequences: list[list[int]]) -> list[str]:
    """:func:`decode_ids` of each sequence; a fast (Rust) tokenizer decodes them all in one call."""
    backend = getattr(text_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [decode_ids(text_tokenizer, s) for s in sequences]
    return backend.decode_batch(sequences, skip_special_tokens=False)


def encode_many(text_tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """:func:`encode_text`; a fast tokenizer encodes them in one call without building Python encodings.

    The Rust tokenizer can carry padding and truncation settings from its ``tokenizer.json`` (MiniLM's
    pads to 128), which transformers switches off per call: they are switched off on a copy here."""
    backend = getattr(text_tokenizer, "backend_tokenizer", None)
    if backend is None or not texts:
        return encode_text(text_tokenizer, texts)
    if backend.padding is not None or backend.truncation is not None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _word_ids(text_tokenizer: Any, candidates: list[int], decode=decode_many, encode=encode_many) -> list[int]:
    texts = decode(text_tokenizer, [[i] for i in candidates])
    words = [(i, t) for i, t in zip(candidates, texts) if _WORD.fullmatch(t)]
    doubled = decode(text_tokenizer, [[i, i] for i, _ in words])
    # Two copies must decode to two whitespace-separated words: then every sequence of such ids
    # decodes to separate words, which the pre-tokenizer splits apart and encodes one by one.
    words = [(i, t, d) for (i, t), d in zip(words, doubled) if d.split() == [t.strip()] * 2]
    single = encode(text_tokenizer, [t for _, t, _ in words])
    twice = encode(text_tokenizer, [d for _, _, d in words])
    return [i for (i, _, _), one, two in zip(words, single, twice) if one == [i] and two == [i, i]]


def word_ids_reference(text_tokenizer: Any, candidates: list[int]) -> list[int]:
    """The whole-word rule through the tokenizer's own Python ``decode`` and ``__call__``, one id at a
    time: the reference the batched fast path is tested against."""
    return _word_ids(text_tokenizer, candidates, lambda tok, seqs: [decode_ids(tok, s) for s in seqs],
                     encode_text)


def codebook_ids(text_tokenizer: Any, num_embeddings: int, vocabulary: str = "all") -> torch.Tensor:
    """Sorted ids usable as image tokens.

    Args:
        text_tokenizer: the language model's Hugging Face tokenizer.
        num_embeddings: rows of the embedding table (may exceed the tokenizer's vocabulary).
        vocabulary: ``"all"`` (every non-special id) or ``"words"`` (round-trip-safe whole words).

    Returns:
        ``LongTensor[K]`` of ids in ``[0, min(num_embeddings, len(text_tokenizer)))``, ascending.
    """
    excluded = special_ids(text_tokenizer)
    candidates = [i for i in range(min(num_embeddings, len(text_tokenizer))) if i not in excluded]
    if vocabulary == "words":
        candidates = _word_ids(text_tokenizer, candidates)
    elif vocabulary != "all":
        raise ValueError(f"codebook_vocabulary must be 'all' or 'words', got {vocabulary!r}")
    if not candidates:
        raise ValueError(
            f"the text tokenizer {type(text_tokenizer).__name__} leaves no usable {vocabulary!r} ids "
            f"out of {num_embeddings} embeddings; use codebook_vocabulary='all' or another language model"
        )
    return torch.tensor(candidates, dtype=torch.long)


def mask_token_id(text_tokenizer: Any, mask_token: str | None, allowed_ids: torch.Tensor) -> int | None:
    """The id whose embedding stands for a masked position: ``mask_token``'s, or (None) the tokenizer's
    own mask token's (None when it has none). ``ValueError`` when ``mask_token`` is not one token of
    the vocabulary, or is a codebook id (a masked position must never look like an image word)."""
    if mask_token is None:
        return text_tokenizer.mask_token_id
    found = text_tokenizer.convert_tokens_to_ids(mask_token)
    unknown = getattr(text_tokenizer, "unk_token_id", None)
    if found is None or (found == unknown and mask_token != text_tokenizer.unk_token):
        specials = sorted(set(text_tokenizer.all_special_tokens))
        raise ValueError(f"mask_token {mask_token!r} is not a token of the language model's vocabulary; "
                         f"name one of its special tokens, e.g. {specials}")
    if bool((allowed_ids == int(found)).any()):
        raise ValueError(f"mask_token {mask_token!r} (id {found}) is a codebook word: a masked position would "
                         "look like an image word; name a special token instead")
    return int(found)
