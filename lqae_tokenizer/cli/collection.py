"""``lqae-tokenize ... --output OUT``: tokenize large collections, streaming, resumable, many processes.

    lqae-tokenize photos/ more.txt shard-000.tar --output tokens.jsonl          # one process
    lqae-tokenize photos/ --output tokens.parquet                               # Parquet (a folder)
    torchrun --nproc_per_node 8 -m lqae_tokenizer.cli.tokenize photos/ --output tokens.jsonl

Inputs (``cli/sources.py``): image files, folders (recursive), ``.txt`` lists of paths and
WebDataset-style ``.tar`` shards, expanded into one sorted list. Its batches of ``--batch-size``
consecutive images are shared among torchrun's processes round-robin (batch b to rank
``b % WORLD_SIZE``; each rank on its own GPU, ``cuda:LOCAL_RANK``, or the CPU), so each image is
encoded in the same batch as in a single-process run and gets the same ids. Each rank appends to its
own part (``cli/writers.py``) as soon as a batch is done; a rerun skips what its part already holds,
so a crashed rank is restarted by rerunning the same command. Memory stays bounded by the batch size.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .sources import distributed_rank, expand_inputs, read_batch, shard_batches
from .writers import open_writer


def output_format(output: Path, requested: str | None) -> str:
    """``"parquet"`` for ``--format parquet`` or an output ending in ``.parquet``, else ``"jsonl"``."""
    if requested == "parquet" or output.suffix.lower() == ".parquet":
        return "parquet"
    return "jsonl"


def tokenize_collection(tokenizer, inputs: Sequence[str], output: Path, batch_size: int,
                        fmt: str = "jsonl") -> int:
    """Write one record per readable image of ``inputs`` to this rank's part of ``output``;
    returns the number of this rank's inputs that could not be read."""
    from tqdm.auto import tqdm

    rank, world_size, _ = distributed_rank()
    keys = expand_inputs(inputs)
    if not keys:
        raise ValueError(f"no images found in {list(inputs)}")
    writer = open_writer(output, fmt, rank, world_size)
    done = writer.done_keys()
    mine = shard_batches(len(keys), batch_size, rank, world_size)
    batches = [[i for i in batch if keys[i] not in done] for batch in mine]
    todo = sum(len(b) for b in batches)
    who = f"lqae-tokenize[{rank}/{world_size}]" if world_size > 1 else "lqae-tokenize"
    print(f"{who}: {len(keys)} images in all, {sum(len(b) for b in mine)} for this process, "
          f"{len(done)} already written, {todo} to do", file=sys.stderr)
    failed = 0
    try:
        with tqdm(total=todo, unit="img", file=sys.stderr, disable=rank != 0) as bar:
            for batch in batches:
                if not batch:
                    continue
                loaded, unreadable = read_batch([keys[i] for i in batch], prog=who)
                failed += len(unreadable)
                if loaded:
                    index = {keys[i]: i for i in batch}
                    ids = tokenizer.encode([t for _, t in loaded], batch_size=batch_size)
                    records = []
                    for (key, _), row in zip(loaded, ids):
                        record = {"path": key, "index": index[key], "ids": row}
                        if tokenizer.has_text:
                            record["text"] = tokenizer.ids_to_text(row)
                        records.append(record)
                    writer.write(records)
                bar.update(len(batch))
    finally:
        writer.close()
    return failed
