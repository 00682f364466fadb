"""Tokenizer checkpoints on disk and on the Hugging Face Hub.

A checkpoint folder holds:
- ``config.json``: the :class:`LQAEConfig` (with the LM id, revision and codebook fingerprint);
- ``model.safetensors``: the trainable weights only (encoder and decoder; never the frozen LM);
- the text tokenizer's files (``tokenizer.json``, ``tokenizer_config.json``, ...);
- optionally ``language_model/``: the frozen LM itself, so the folder loads with nothing else.

Nothing is ever unpickled: weights are read from safetensors only. Files are written atomically
(temporary name, fsync, rename), so an interrupted save never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LANGUAGE_MODEL_DIR = "language_model"
FORMAT_VERSION = 1
# Checkpoints written before these config fields existed: the plain ViT tower, and the VQ-VAE
# baseline's codebook term at weight 1.
LEGACY_DEFAULTS = {"vit_block": "plain", "codebook_loss_weight": 1.0}
# What a Hub download fetches: never pickles, never unrelated files.
HUB_PATTERNS = [CONFIG_NAME, WEIGHTS_NAME, "README.md", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
                "added_tokens.json", "spiece.model", "sentencepiece.bpe.model", f"{LANGUAGE_MODEL_DIR}/*"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match what it is loaded with."""


def default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open``/``mkdir`` would give under the current umask (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(folder: Path, config: dict[str, Any]) -> None:
    payload = {"lqae_format_version": FORMAT_VERSION, **config}
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``CheckpointError`` when it is not UTF-8 JSON holding an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """The config dict of a checkpoint folder (without the format version)."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}; it is not an lqae-tokenizer checkpoint")
    data = read_json_object(path)
    version = data.pop("lqae_format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has lqae_format_version={version!r}; this version of lqae-tokenizer reads {FORMAT_VERSION}"
        )
    # Fields added since format 1 was first written take the meaning they had before they existed.
    for name, before in LEGACY_DEFAULTS.items():
        data.setdefault(name, before)
    return data


def write_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))


def read_weights(folder: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load ``model.safetensors`` and check it against ``expected`` (name -> tensor of the model).

    Raises :class:`CheckpointError` naming every missing or unexpected tensor, every shape
    mismatch, and any non-floating tensor where a floating one belongs. Never unpickles.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {pickles}: pickle files are never loaded, convert them to safetensors)" if pickles else ""
        raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}{hint}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err})") from err
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing weights {missing[:8]}"] if missing else []) + (
            [f"unexpected weights {unexpected[:8]}"] if unexpected else [])
        raise CheckpointError(f"{path} does not match its config.json: {', '.join(parts)}")
    for name, tensor in state.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise CheckpointError(f"{path}: weight {name!r} has shape {list(tensor.shape)}, "
                                  f"the config needs {list(want.shape)}")
        if tensor.is_floating_point() != want.is_floating_point():
            raise CheckpointError(f"{path}: weight {name!r} has dtype {tensor.dtype}, expected {want.dtype}")
    return state


def resolve_folder(name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None,
                   local_files_only: bool = False, token: str | bool | None = None,
                   patterns: list[str] | None = None, bundled: list[str] | None = None) -> Path:
    """A local checkpoint folder for ``name_or_path``: the folder itself, or a Hub snapshot.

    Hub ids go through ``huggingface_hub.snapshot_download`` (honours ``HF_ENDPOINT``,
    ``HF_HUB_OFFLINE`` and the cache) and fetch only ``patterns`` (default :data:`HUB_PATTERNS`, a
    tokenizer's files); every file fetched is checked against the hash the Hub advertised. Errors are
    one line; ``bundled`` (the bundled names of the kind asked for) is listed in them, since a name that
    is neither a folder nor on the Hub is most often a misspelt bundled one.
    """
    also = f"; bundled names are {bundled}" if bundled else ""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = os.fspath(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise CheckpointError(f"{text!r} is not a checkpoint folder (and not a Hub id of the form 'org/name'){also}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                                        local_files_only=local_files_only,
                                        allow_patterns=patterns or HUB_PATTERNS))
    except LocalEntryNotFoundError as err:
        raise CheckpointError(
            f"{text!r} is not a folder and not in the local Hugging Face cache, and downloading it is disabled or "
            f"failed (offline mode or local_files_only=True){also}. The Hub said: {_one_line(err)}"
        ) from err
    except (RepositoryNotFoundError, HfHubHTTPError) as err:
        raise CheckpointError(f"cannot fetch {text!r} from the Hugging Face Hub{also}: {_one_line(err)}") from err
    verify_snapshot(folder)
    return folder


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (huggingface_hub's span several)."""
    return " ".join(str(err).split())


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_snapshot(folder: Path) -> None:
    """Check every file of a Hub cache snapshot against the hash the Hub advertised for it.

    The cache stores each file as ``blobs/<etag>``: for LFS files the etag is the sha256 of the
    content, for small git files the git blob sha1. A file whose bytes do not match (a corrupted
    or tampered download) is removed from the cache and reported, so a retry downloads it again.
    """
    for link in sorted(p for p in folder.rglob("*") if p.is_symlink() or p.is_file()):
        blob = link.resolve()
        etag = blob.name
        data = blob.read_bytes()
        if len(etag) == 64:
            actual = hashlib.sha256(data).hexdigest()
        elif len(etag) == 40:
            actual = _git_blob_sha1(data)
        else:
            continue  # not a content hash: nothing to check against
        if actual != etag:
            blob.unlink(missing_ok=True)
            link.unlink(missing_ok=True)
            raise CheckpointError(
                f"downloaded file {link.relative_to(folder)} does not match the hash the Hub advertised "
                f"({etag[:12]}..., got {actual[:12]}...): corrupted or tampered in transit. It was removed from "
                "the cache; loading again downloads it afresh."
            )
