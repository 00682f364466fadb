"""The run folder of ``lqae-llm train``: one run at a time, settings and data pinned for ``--resume``,
checkpoints that are complete or ignored.

- :func:`run_lock`: an exclusive ``flock`` on ``output/.lock`` for the whole run, so a second run into
  the same folder stops at once with the holder's pid instead of both "succeeding" over each other.
- ``run_settings.json``: the settings that make the examples and the adapter's shape
  (:data:`FIXED_ON_RESUME`) and a SHA-256 of every data file, written when the run starts;
  :func:`check_run_settings` refuses a ``--resume`` that differs, naming each difference.
- :func:`set_aside_incomplete_checkpoints`: ``Trainer`` writes ``checkpoint-N`` file by file and
  ``trainer_state.json`` last; a kill in between leaves a folder that ``--resume`` would pick and fail
  on. Before resuming, such folders are renamed ``incomplete-checkpoint-N`` (kept, never deleted; a name
  that ``Trainer``'s own rotation, which globs ``checkpoint-*``, never touches), so the run goes on from
  the newest complete one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..checkpoint import atomic_write_bytes

RUN_SETTINGS = "run_settings.json"
LOCK_NAME = ".lock"
TRAINER_STATE = "trainer_state.json"
# What the examples and the adapter's shape are made of: a resumed run must keep them (epochs, save
# steps, the progress bar and the like may change).
FIXED_ON_RESUME = ("image_tokenizer", "language_model", "label_names", "tasks", "words_per_line", "max_images",
                   "seed", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "batch_size",
                   "gradient_accumulation_steps")


class TrainingSetupError(ValueError):
    """The data or the run folder cannot be used (said before the LM loads; ``lqae-llm`` prints it as a
    usage error)."""


@contextlib.contextmanager
def run_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` for the run; ``TrainingSetupError`` if another run holds it.
    A run refused before it wrote anything leaves no folder behind (the lock file and a folder it
    created are removed)."""
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise TrainingSetupError(f"another lqae-llm train (pid {holder}) is running in {output}; wait for it, "
                                     "or train into another --output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        except TrainingSetupError:
            if created and [p.name for p in output.iterdir()] == [LOCK_NAME]:
                (output / LOCK_NAME).unlink()
                output.rmdir()
            raise
    finally:
        handle.close()  # releases the lock


def data_fingerprints(paths: Sequence[str]) -> list[str]:
    """``sha256:<hex>`` of each data file (a ``datasets`` folder: of its files, in name order)."""
    out = []
    for path in map(Path, paths):
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode() + b"|")
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
        out.append("sha256:" + digest.hexdigest())
    return out


def write_run_settings(output: Path, settings: dict[str, Any]) -> None:
    atomic_write_bytes(output / RUN_SETTINGS, (json.dumps(settings, indent=1) + "\n").encode())


def check_run_settings(output: Path, settings: dict[str, Any]) -> None:
    """``TrainingSetupError`` naming each setting that differs from ``output/run_settings.json`` (written
    when the run started; a resumed checkpoint would otherwise go on training on other examples,
    silently). Runs older than the file are not checked; settings a run's file lacks are not compared."""
    path = output / RUN_SETTINGS
    if not path.is_file():
        return
    recorded = json.loads(path.read_text())
    changed = [f"{k}: {recorded.get(k)!r} in the run, {v!r} now" for k, v in settings.items()
               if k in recorded and recorded[k] != v]
    if changed:
        raise TrainingSetupError(f"--resume continues the run in {output}, whose settings differ: {'; '.join(changed)}. "
                                 "Use the run's settings and data, or a new --output folder to start another run")


def is_complete_checkpoint(folder: Path) -> bool:
    """Whether ``Trainer`` finished writing ``folder``: its ``trainer_state.json`` (written last) parses."""
    try:
        json.loads((folder / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def set_aside_incomplete_checkpoints(checkpoints: Path) -> list[Path]:
    """Rename every ``checkpoint-N`` under ``checkpoints`` that is not complete to ``incomplete-checkpoint-N``;
    returns the new paths (nothing is deleted)."""
    moved = []
    for folder in sorted(checkpoints.glob("checkpoint-*")):
        if folder.is_dir() and folder.name.split("-")[-1].isdigit() and not is_complete_checkpoint(folder):
            target = folder.with_name("incomplete-" + folder.name)
            suffix = 1
            while target.exists():
                target = folder.with_name(f"incomplete{suffix}-{folder.name}")
                suffix += 1
            folder.rename(target)
            moved.append(target)
    return moved
