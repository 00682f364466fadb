"""Tokenizing a Hugging Face ``datasets.Dataset`` with ``Dataset.map``.

    from datasets import load_dataset
    ds = load_dataset("imagefolder", data_dir="photos", split="train")
    ds = ds.map(tok.datasets_map_fn(), batched=True, batch_size=64, num_proc=2)    # CPU processes
    ds = ds.map(tok.datasets_map_fn(), batched=True, with_rank=True, num_proc=8)   # one process per GPU
    ds.save_to_disk("photos-tokens")          # or ds.push_to_hub("org/photos-tokens")

The function adds an ``input_ids`` column (``tokens_per_image`` ints per row) and a ``text`` column
(absent for a learned VQ-VAE codebook) from the ``image`` column (``datasets.Image`` decodes rows to
PIL images; paths and arrays work too). It pickles as the checkpoint it was loaded from, so worker
processes load their own copy instead of receiving the weights; with ``with_rank=True`` worker ``r``
moves its copy to ``cuda:r`` (modulo the GPUs present). Worker processes on a CPU use one thread each.
"""

from __future__ import annotations

import os
from typing import Any

import torch


class DatasetsMapFunction:
    """A picklable ``Dataset.map(batched=True)`` function; build it with ``ImageTokenizer.datasets_map_fn``."""

    def __init__(self, tokenizer: Any, image_column: str = "image", ids_column: str = "input_ids",
                 text_column: str = "text", batch_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self.tokenizer_class = type(tokenizer)  # pickled by name: workers rebuild it without importing us back
        self.source = getattr(tokenizer, "source", None)  # (folder, language model) it was loaded from
        self.image_column, self.ids_column, self.text_column = image_column, ids_column, text_column
        self.batch_size = batch_size
        self.owner_pid = os.getpid()
        self.device: torch.device | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.source is not None:
            state["tokenizer"] = None  # workers load the checkpoint themselves
        return state

    def _tokenizer(self, rank: int | None) -> Any:
        if os.getpid() != self.owner_pid and torch.get_num_threads() > 1:
            # A worker process: share the cores, and never enter an OpenMP thread pool that a fork
            # copied from the parent (GNU OpenMP can hang there), not even while loading.
            torch.set_num_threads(1)
        if self.tokenizer is None:
            folder, language_model = self.source
            self.tokenizer = self.tokenizer_class.from_pretrained(folder, language_model=language_model, device="cpu")
        if rank is not None and torch.cuda.is_available():
            wanted = torch.device("cuda", rank % torch.cuda.device_count())
            if self.device != wanted:
                self.tokenizer.model.to(wanted)
                self.device = wanted
        return self.tokenizer

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        if self.image_column not in batch:
            raise ValueError(f"the dataset has no column {self.image_column!r} (columns: {sorted(batch)}); "
                             "pass datasets_map_fn(image_column=...)")
        tok = self._tokenizer(rank)
        images = batch[self.image_column]
        ids = tok.encode(list(images), batch_size=self.batch_size) if len(images) else []
        out: dict[str, list] = {self.ids_column: ids}
        if tok.has_text:
            out[self.text_column] = [tok.ids_to_text(row) for row in ids]
        return out
