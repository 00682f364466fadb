"""``lqae-tokenize --output FILE.jsonl``: tokenize large collections, streaming and resumable.

Folders are expanded recursively (by image suffix, sorted). Each image becomes one JSON line
``{"path", "ids", "text"}`` (no ``text`` for a learned VQ-VAE codebook) appended to the output as soon
as its batch is done; on a rerun the paths
already in the file are skipped, and a last line cut by a crash is dropped first. Memory stays bounded
by the batch size, whatever the collection's size.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from ..training.data import list_images


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders replaced by the images under them (recursive, sorted)."""
    out: list[str] = []
    for item in inputs:
        if Path(item).is_dir():
            out.extend(str(p) for p in list_images(item))
        else:
            out.append(item)
    return out


def done_paths(output: Path) -> set[str]:
    """Paths already in ``output``; a trailing partial line (from a crash) is truncated away."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with open(output, "r+b") as f:
            f.truncate(cut)
    return {json.loads(line)["path"] for line in data[:cut].decode("utf-8").splitlines() if line.strip()}


def _batches(paths: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def tokenize_collection(tokenizer, inputs: Sequence[str], output: Path, batch_size: int) -> int:
    """Append one JSON line per readable image to ``output``; returns the number of failed inputs."""
    paths = expand_inputs(inputs)
    skip = done_paths(output)
    todo = [p for p in paths if p not in skip]
    print(f"lqae-tokenize: {len(paths)} images, {len(paths) - len(todo)} already in {output}, {len(todo)} to do",
          file=sys.stderr)
    from tqdm.auto import tqdm

    from .common import read_images

    failed = 0
    with open(output, "a", encoding="utf-8") as out, tqdm(total=len(todo), unit="img", file=sys.stderr) as bar:
        for chunk in _batches(todo, batch_size):
            loaded, unreadable = read_images(chunk)
            failed += len(unreadable)
            if loaded:
                ids = tokenizer.encode([t for _, t in loaded], batch_size=batch_size)
                records = [{"path": p, "ids": row} for (p, _), row in zip(loaded, ids)]
                if tokenizer.has_text:
                    for record in records:
                        record["text"] = tokenizer.ids_to_text(record["ids"])
                lines = [json.dumps(record, ensure_ascii=False) for record in records]
                out.write("".join(line + "\n" for line in lines))
                out.flush()
            bar.update(len(chunk))
        os.fsync(out.fileno())
    return failed
