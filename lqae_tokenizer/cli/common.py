"""What ``lqae-tokenize``, its collection mode and the demo command share: checking arguments before
the model loads, reading images, and writing one line per image.

Imports run one way: ``cli.tokenize`` -> ``demo`` -> ``cli.common``; ``cli.collection`` ->
``cli.common``. This module imports neither.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..images import InvalidImageError, to_tensor

FORMATS = ("text", "tokens", "ids", "json")


class UsageError(ValueError):
    """A command-line mistake: reported in one line, exit status 2."""


def parse_device(name: str | None) -> torch.device | None:
    """``--device`` as a torch device that exists here; ``UsageError`` (one line) otherwise."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use e.g. cpu, cuda or cuda:1") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: lqae-tokenize runs on cpu, cuda or mps")
    return device


def _probe_writable(folder: Path, what: str) -> None:
    """``UsageError`` unless a file can be created in ``folder`` (the nearest existing ancestor of an
    output): permissions alone do not say it (root may write anywhere on paper, not in /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"{what}: cannot write in {folder} ({err.strerror or err}); choose a writable place") from None


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_output_folder(path: Path | None, flag: str) -> None:
    """A folder the command will create or fill (``--reconstruct DIR``, a Parquet ``--output``)."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is an existing file, not a folder; give a folder (it is created if missing)")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, so the folder cannot be created")
    _probe_writable(ancestor, f"{flag} {path}")


def check_output_file(path: Path | None, flag: str) -> None:
    """A file the command will create or append to (a JSONL ``--output``)."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file such as {path / 'tokens.jsonl'} "
                         "(or OUT.parquet for a folder of Parquet files)")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, so {path.parent} cannot be created")
    _probe_writable(ancestor, f"{flag} {path}")


def check_files(paths: Sequence[str]) -> None:
    """Plain mode takes image files: a folder is a usage error that points at ``--output``."""
    for path in paths:
        if Path(path).is_dir():
            raise UsageError(f"{path} is a folder: tokenize folders with --output FILE.jsonl (collection mode: "
                             "recursive, resumable, one JSON line per image), e.g. "
                             f"lqae-tokenize {path} --output tokens.jsonl")


def read_images(paths: Sequence[str], prog: str = "lqae-tokenize") -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """Decode every path; failures are reported on stderr by path and returned."""
    loaded, failed = [], []
    for path in paths:
        try:
            loaded.append((path, to_tensor(path)))
        except (InvalidImageError, OSError, ValueError, TypeError) as err:
            print(f"{prog}: skipping {path}: {err}", file=sys.stderr)
            failed.append(path)
    return loaded, failed


def format_line(fmt: str, path: str, ids: list[int], tokenizer: Any, label: bool) -> str:
    """One output line; ``label`` prefixes ``path: `` (as grep does with several files)."""
    if fmt == "json":
        tokens = tokenizer.text_tokenizer.convert_ids_to_tokens(ids) if tokenizer.has_text else None
        record = {"path": path, "ids": ids}
        if tokenizer.has_text:
            record.update(tokens=tokens, text=tokenizer.ids_to_text(ids))
        return json.dumps(record, ensure_ascii=False)
    if fmt == "ids":
        body = " ".join(map(str, ids))
    elif fmt == "tokens":
        body = " ".join(tokenizer.text_tokenizer.convert_ids_to_tokens(ids))
    else:
        body = tokenizer.ids_to_text(ids)
    return f"{path}: {body}" if label else body


def reconstruction_paths(paths: Sequence[str], folder: Path) -> list[Path]:
    """``folder/<stem>.png`` per input, with ``-1``, ``-2``... added when stems collide."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        stem = Path(path).stem or "image"
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        out.append(folder / (f"{stem}.png" if count == 0 else f"{stem}-{count}.png"))
    return out


def tokenize_and_print(tokenizer: Any, loaded: list[tuple[str, torch.Tensor]], fmt: str, label: bool,
                       reconstruct: Path | None, batch_size: int) -> None:
    """Encode in batches, print one line per image, optionally write reconstructions."""
    targets = []
    if reconstruct is not None:
        reconstruct.mkdir(parents=True, exist_ok=True)
        targets = reconstruction_paths([p for p, _ in loaded], reconstruct)
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        ids = tokenizer.encode([t for _, t in chunk], batch_size=batch_size)
        for (path, _), row in zip(chunk, ids):
            print(format_line(fmt, path, row, tokenizer, label), flush=True)
        if reconstruct is not None:
            for target, image in zip(targets[start : start + batch_size], tokenizer.batch_decode(ids)):
                image.save(target)
