"""Training checkpoints: complete or absent, verified on load, the last K kept.

A checkpoint is the folder ``output_dir/checkpoint-<step>/`` holding the files the trainer hands in
(weights as safetensors, optimiser/scheduler/scaler/RNG state as tensors-only torch files) and
``trainer_state.json`` with the step, the data position, counters, the resolved config and the
sha256 of every other file. It is written by the package's one folder writer
(:func:`lqae_tokenizer.folders.replace_folder`, durable): under a temporary name, every file and the
folder fsynced, and only then swapped into place, so a crash at any moment leaves either the previous
checkpoints alone or one more complete checkpoint, never a partial folder that ``latest`` would pick.
It also turns the trainer's state into such files and back: every random generator (``capture_rng``,
``restore_rng``) and tensors-only torch files read with the restricted unpickler (``tensor_bytes``,
``from_bytes``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..folders import replace_folder

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"
_NAME = re.compile(r"checkpoint-(\d+)")


class CheckpointCorrupt(ValueError):
    """A checkpoint folder whose files do not match the checksums written with them."""


def _write_file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def save(output_dir: Path, step: int, files: dict[str, bytes], state: dict[str, Any]) -> Path:
    """Write ``checkpoint-<step>`` atomically and durably; returns its path.

    Raises ``OSError`` (disk full, read-only folder, ...) with nothing left behind but the
    previous checkpoints; the caller must not report the checkpoint as saved. Re-saving a step (e.g.
    after a resume) swaps the new folder in for the old one.
    """
    final = output_dir / f"{PREFIX}{step}"
    with replace_folder(final, marker=STATE_NAME, durable=True) as staging:
        checksums = {name: _write_file(staging / name, data) for name, data in files.items()}
        payload = {**state, "step": step, "checksums": checksums}
        _write_file(staging / STATE_NAME, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())
    return final


def steps_present(output_dir: Path) -> list[int]:
    """Steps of the ``checkpoint-<step>`` folders, ascending (temporary folders never match)."""
    if not output_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in output_dir.iterdir() if p.is_dir() and (m := _NAME.fullmatch(p.name)))


def read_verified(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(state, files)`` of a checkpoint, after checking every file's sha256.

    Raises :class:`CheckpointCorrupt` naming the first file that is missing or altered.
    """
    try:
        state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
        checksums = state["checksums"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointCorrupt(f"{path}: unreadable {STATE_NAME} ({err})") from err
    files = {}
    for name, digest in checksums.items():
        try:
            data = (path / name).read_bytes()
        except OSError as err:
            raise CheckpointCorrupt(f"{path}: missing {name} ({err})") from err
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointCorrupt(f"{path}: {name} does not match its checksum (truncated or altered)")
        files[name] = data
    return state, files


def load_latest(output_dir: Path) -> tuple[Path, dict[str, Any], dict[str, bytes]] | None:
    """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning."""
    for step in reversed(steps_present(output_dir)):
        path = output_dir / f"{PREFIX}{step}"
        try:
            state, files = read_verified(path)
        except CheckpointCorrupt as err:
            logger.warning("skipping corrupt checkpoint: %s", err)
            continue
        return path, state, files
    return None


def prune(output_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None`` keeps all)."""
    if keep is None:
        return
    for step in steps_present(output_dir)[:-keep]:
        _discard(output_dir / f"{PREFIX}{step}")
    for leftover in output_dir.glob(f".old-{PREFIX}*"):  # from a process killed while deleting
        shutil.rmtree(leftover, ignore_errors=True)


def _discard(path: Path) -> None:
    """Delete a checkpoint folder so that no half-deleted folder ever keeps a checkpoint's name:
    rename it aside (atomic) first, then delete. A kill during the delete leaves only a dot-folder."""
    aside = path.parent / f".old-{path.name}-{os.getpid()}"
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def capture_rng() -> dict[str, Any]:
    """Every generator this process uses (python, numpy, torch CPU and CUDA), tensors-only friendly."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every generator back to a :func:`capture_rng` state (CUDA only where this process has it)."""
    random.setstate(state["python"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tensor_bytes(obj: Any) -> bytes:
    """``obj`` (tensors and plain containers) as the bytes of a torch file, for a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Any:
    """What :func:`tensor_bytes` wrote, on the CPU. ``weights_only``: a restricted unpickler that only
    rebuilds tensors and plain containers, so a tampered checkpoint file cannot run code."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
