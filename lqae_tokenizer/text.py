"""Between image ids and the language model's text: validation, text and token strings."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .vocabulary import decode_ids, encode_text


class TextCodec:
    """Checks ids against the codebook and converts them to and from text and token strings.

    Args:
        tokenizer: the language model's Hugging Face tokenizer.
        allowed_ids: ``LongTensor[K]`` the codebook's ids.
        tokens_per_image: N, the length of every image's id sequence.
    """

    def __init__(self, tokenizer: Any, allowed_ids: torch.Tensor, tokens_per_image: int) -> None:
        self.tokenizer = tokenizer
        self.allowed_ids = allowed_ids
        self.tokens_per_image = tokens_per_image
        self._allowed = torch.zeros(int(allowed_ids.max()) + 1, dtype=torch.bool)
        self._allowed[allowed_ids] = True

    def _not_allowed(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of ids that are not codebook ids (out of range or special)."""
        in_range = (ids >= 0) & (ids < self._allowed.numel())
        return ~in_range | ~self._allowed[ids.clamp(0, self._allowed.numel() - 1)]

    def check_ids(self, ids: Any, *, batched: bool) -> torch.Tensor:
        """ids of one image (``batched=False``) or many -> ``LongTensor[B, N]``, validated."""
        try:
            tensor = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"ids must be a sequence of ints or an integer tensor, got {type(ids).__name__}") from err
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"ids must be integers, got dtype {tensor.dtype}")
        want = 1 if not batched else 2
        shape = "[N]" if not batched else "[B, N]"
        if tensor.dim() != want:
            raise ValueError(f"expected ids of shape {shape} with N={self.tokens_per_image}, got shape {list(tensor.shape)}"
                             + ("; use batch_decode for many images" if tensor.dim() == 2 else ""))
        tensor = tensor.reshape(-1, tensor.shape[-1]).long().cpu()
        if tensor.shape[1] != self.tokens_per_image:
            raise ValueError(f"an image is exactly {self.tokens_per_image} ids, got {tensor.shape[1]}")
        bad = self._not_allowed(tensor)
        if bool(bad.any()):
            where = bad.nonzero()[:5].tolist()
            values = [int(tensor[b, p]) for b, p in where]
            raise ValueError(
                f"ids {values} (at positions {[p for _, p in where]}) are not codebook ids: special tokens, "
                f"out-of-range ids and (with codebook_vocabulary='words') non-word ids never encode an image"
            )
        return tensor

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return decode_ids(self.tokenizer, list(ids))

    def text_to_ids(self, text: str) -> list[int]:
        """Text -> exactly ``tokens_per_image`` codebook ids, or ``ValueError`` saying why not.

        If ``text`` does not start with whitespace and fails as is, it is tried once more with one
        leading space (byte-level tokenizers mark word starts with it, and generated text often
        drops it).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = encode_text(self.tokenizer, [text])[0]
        problem = self._text_problem(ids)
        if problem and not text[:1].isspace():
            retry = encode_text(self.tokenizer, [" " + text])[0]
            if not self._text_problem(retry):
                return retry
        if problem:
            raise ValueError(f"text does not encode an image: {problem}")
        return ids

    def _text_problem(self, ids: list[int]) -> str | None:
        if len(ids) != self.tokens_per_image:
            return (f"it re-encodes to {len(ids)} ids, an image is exactly {self.tokens_per_image} "
                    "(text from to_text round-trips exactly only with codebook_vocabulary='words')")
        mask = self._not_allowed(torch.tensor(ids, dtype=torch.long)).tolist()
        bad = [i for i, m in zip(ids, mask) if m]
        if bad:
            tokens = self.tokenizer.convert_ids_to_tokens(bad[:5])
            return f"it contains tokens outside the codebook: {tokens}"
        return None

    def tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise TypeError("tokens must be a list of token strings (as returned by to_tokens)")
        ids = self.tokenizer.convert_tokens_to_ids(list(tokens))
        unknown = [t for t, i in zip(tokens, ids) if i is None or i == self.tokenizer.unk_token_id]
        if unknown:
            raise ValueError(f"tokens {unknown[:5]} are not in the language model's vocabulary")
        return self.check_ids(ids, batched=False)[0].tolist()
