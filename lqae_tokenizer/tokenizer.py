"""``ImageTokenizer``: images <-> ids of a frozen language model's vocabulary <-> text.

Example:
    >>> tok = ImageTokenizer.from_pretrained("./my-tokenizer")
    >>> ids = tok.encode("cat.jpg")            # list[int], len == tok.tokens_per_image
    >>> prompt = tok.to_text("cat.jpg")        # what goes inside an LLM prompt
    >>> image = tok.decode(ids)                # PIL.Image, tok.image_size square
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from . import bundled as bundled_models, checkpoint
from .config import PRECISIONS, TRAINING_FIELDS, LQAEConfig
from .language_model import FrozenLanguageModel, load_language_model, load_text_tokenizer, quiet_transformers
from .lm_source import portable_name
from .folders import replace_folder
from .model import LQAEModel, no_mask_token_message
from .model_card import CARD_NAME, build_model_card, read_training_facts
from .preprocessing import prepare_batch
from .quantizer import codebook_fingerprint
from .text import TextCodec
from .vocabulary import codebook_ids, mask_token_id

OUTPUT_TYPES = ("pil", "np", "pt")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _is_batch(images: Any) -> bool:
    return isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4)


class ImageTokenizer:
    """Turns images into ids of a frozen language model's vocabulary, and back.

    Build a fresh (untrained) tokenizer from a config, or load a trained one with
    :meth:`from_pretrained`. All inference runs batched under ``torch.inference_mode`` on
    ``device`` (default: CUDA when available, else CPU).

    Args:
        config: the architecture; ``config.language_model`` (Hub id or folder) is loaded frozen.
        device, dtype: where and in which float dtype the model's weights live (default float32).
        precision: the arithmetic of encoder, LM and decoder at inference: ``"auto"`` (default:
            bf16 autocast on CUDA, float32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (autocast). The codebook search is exact in every case: ids are the true nearest codes
            of the encoder's output, which itself depends on the precision.
        cache_dir, local_files_only, token: passed to the Hub client when the LM is a Hub id.
    """

    def __init__(self, config: LQAEConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, precision: str = "auto", cache_dir: str | None = None,
                 local_files_only: bool = False, token: str | bool | None = None,
                 language_model: str | os.PathLike | FrozenLanguageModel | None = None,
                 text_tokenizer: Any = None, _initialise: bool = True) -> None:
        # A folder inside an installed package is recorded as pkg:<module>/<folder>, never as this
        # machine's absolute path; Hub ids and other folders are kept as given.
        config = dataclasses.replace(config, language_model=portable_name(config.language_model))
        hub = dict(revision=config.language_model_revision, cache_dir=cache_dir,
                   local_files_only=local_files_only, token=token)
        # ``language_model``: where to load the frozen LM from instead of the recorded name (a local copy,
        # or an already loaded one); the config keeps its recorded name and the fingerprint is checked.
        source = config.language_model if language_model is None else language_model
        if not isinstance(source, FrozenLanguageModel):
            source = load_language_model(source, **(hub if language_model is None else {}))
        if text_tokenizer is None:
            text_tokenizer = load_text_tokenizer(config.language_model if language_model is None
                                                 else language_model, **(hub if language_model is None else {}))
        self._setup(config, source, text_tokenizer, device, dtype, _initialise)
        self.precision = precision

    def _setup(self, config: LQAEConfig, language_model: FrozenLanguageModel, text_tokenizer: Any,
               device: torch.device | str | None, dtype: torch.dtype | None, initialise: bool = True) -> None:
        table = language_model.word_embeddings
        allowed = codebook_ids(text_tokenizer, table.shape[0], config.codebook_vocabulary)
        if config.quantizer == "learned":
            allowed = torch.arange(config.learned_codebook_size)
        fingerprint = codebook_fingerprint(table, allowed)
        if config.codebook_fingerprint is not None and config.codebook_fingerprint != fingerprint:
            raise checkpoint.CheckpointError(
                f"codebook fingerprint mismatch: the checkpoint was trained on codebook {config.codebook_fingerprint} "
                f"but language model {config.language_model!r} (revision {language_model.revision or 'unpinned'}) "
                f"with codebook_vocabulary={config.codebook_vocabulary!r} gives {fingerprint}. The ids would mean "
                f"different words: load the language model revision it was trained with "
                f"({config.language_model_revision or 'see config.json'})."
            )
        config = dataclasses.replace(config, codebook_fingerprint=fingerprint,
                                     language_model_revision=config.language_model_revision or language_model.revision)
        self._config = config
        # Facts about how it was trained (data, steps, metrics), written into the model card.
        self.training_facts: dict[str, Any] = {}
        # (checkpoint folder, language model override) when loaded from one: how worker processes reload it.
        self.source: tuple[str, str | None] | None = None
        self._text = TextCodec(text_tokenizer, allowed, config.tokens_per_image)
        mask_id = mask_token_id(text_tokenizer, config.mask_token, allowed)
        self.model = LQAEModel(config, language_model, allowed, mask_id, initialise=initialise)
        self.model.to(device=_default_device(device), dtype=dtype or torch.float32).eval()

    # -- loading and saving -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                        cache_dir: str | None = None, local_files_only: bool = False,
                        token: str | bool | None = None, language_model: str | os.PathLike | None = None,
                        precision: str = "auto") -> "ImageTokenizer":
        """Load a tokenizer from a bundled name (``"photo"``, ``"fashion-mnist"``: see
        :mod:`~lqae_tokenizer.bundled`), a local folder or a Hugging Face Hub repo (safetensors only).

        The frozen LM comes from ``language_model`` when given (e.g. a local copy), else from the
        checkpoint's ``language_model/`` folder when bundled, else from ``config.language_model`` at
        the pinned revision (same ``cache_dir``/``token``/``local_files_only``). ``precision`` as in
        the constructor. Whichever it is, its
        codebook must match the checkpoint's fingerprint. Raises
        :class:`~lqae_tokenizer.checkpoint.CheckpointError` for a
        missing config or weights file, a missing/unexpected/misshapen weight, or a codebook whose
        fingerprint differs from the one the checkpoint was trained with.
        """
        hub = dict(cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if bundled_models.is_bundled(name_or_path, bundled_models.IMAGE_LM) and not Path(name_or_path).is_dir():
            raise checkpoint.CheckpointError(
                f"{name_or_path!r} is a bundled ImageLM (an LLM adapter), not an image tokenizer: load it with "
                f"lqae_tokenizer.llm.ImageLM.from_pretrained; bundled image tokenizers are "
                f"{bundled_models.names(bundled_models.TOKENIZER)}")
        if bundled_models.is_bundled(name_or_path):  # "photo", "fashion-mnist": shipped inside the package
            reads = bundled_models.REGISTRY[name_or_path].language_model
            name_or_path = bundled_models.bundled_dir(name_or_path)
            if language_model is None and reads == bundled_models.MINILM:
                language_model = bundled_models.minilm_path()  # says which package to install when absent
        language_model_arg = language_model
        folder = checkpoint.resolve_folder(name_or_path, revision=revision, **hub,
                                           bundled=bundled_models.names(bundled_models.TOKENIZER))
        config = LQAEConfig.from_dict(checkpoint.read_config(folder))
        bundled = folder / checkpoint.LANGUAGE_MODEL_DIR
        if language_model is not None:
            language_model = load_language_model(language_model)
        elif bundled.is_dir():
            language_model = load_language_model(bundled)
        else:
            language_model = load_language_model(config.language_model, revision=config.language_model_revision, **hub)
        # Every trainable weight is read strictly from the checkpoint below: no random initialisation first.
        self = cls(config, device="cpu", dtype=torch.float32, language_model=language_model,
                   text_tokenizer=load_text_tokenizer(folder), _initialise=False)
        expected = self.model.trainable_state_dict()
        state = checkpoint.read_weights(folder, expected)
        for name, module in self.model.trainable_modules().items():
            prefix = name + "."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        self.model.to(device=_default_device(device), dtype=dtype or torch.float32)
        self.precision = precision
        self.training_facts = read_training_facts(folder)
        self.source = (str(folder), None if language_model_arg is None else str(language_model_arg))
        return self

    def save_pretrained(self, save_directory: str | os.PathLike, *, include_language_model: bool = False) -> None:
        """Write ``config.json``, ``model.safetensors``, the text tokenizer files and a model card
        (``README.md`` with YAML metadata: library, tags, language model and revision, image size,
        tokens per image, and :attr:`training_facts` such as data and metrics).

        With ``include_language_model=True`` the frozen LM is written to ``language_model/`` so
        the folder loads with no other source (offline, no Hub).
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._text.tokenizer.save_pretrained(str(folder))
        checkpoint.write_weights(folder, self.model.trainable_state_dict())
        card = build_model_card(self._config, self.training_facts)
        checkpoint.atomic_write_bytes(folder / CARD_NAME, str(card).encode("utf-8"))
        if include_language_model:
            self._save_language_model(folder / checkpoint.LANGUAGE_MODEL_DIR)
        # The config goes last: a folder without it is not a checkpoint, so a crash mid-save is visible.
        checkpoint.write_config(folder, self._config.to_dict())

    def _save_language_model(self, target: Path) -> None:
        lm = self.model.language_model
        # An untrained MLM head is not saved, so the bundled copy keeps reporting "no trained head".
        module = lm.model if lm.has_trained_head else lm.backbone
        with replace_folder(target, marker="config.json") as staging, quiet_transformers():
            module.save_pretrained(str(staging), safe_serialization=True)
            self._text.tokenizer.save_pretrained(str(staging))

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str = "Upload lqae-tokenizer checkpoint",
                    include_language_model: bool = False) -> str:
        """Upload the checkpoint to the Hugging Face Hub; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, include_language_model=include_language_model)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision,
                                     commit_message=commit_message)
        return str(getattr(info, "commit_url", info))

    def datasets_map_fn(self, *, image_column: str = "image", ids_column: str = "input_ids",
                        text_column: str = "text", batch_size: int = 64):
        """A function for ``datasets.Dataset.map(fn, batched=True)`` that adds ``input_ids`` and
        ``text`` columns from an image column; works with ``num_proc`` and ``with_rank=True`` (one
        process per GPU). See :mod:`lqae_tokenizer.hf_datasets`."""
        from .hf_datasets import DatasetsMapFunction

        return DatasetsMapFunction(self, image_column, ids_column, text_column, batch_size)

    def set_training_settings(self, **changes: Any) -> None:
        """Change how the tokenizer would be trained (mask ratio, loss weights: ``config.TRAINING_FIELDS``),
        e.g. before fine-tuning it; ``ValueError`` for any other field, which would change what it is."""
        other = sorted(set(changes) - set(TRAINING_FIELDS))
        if other:
            raise ValueError(f"{other} describe the network, not its training; only {list(TRAINING_FIELDS)} can change")
        config = dataclasses.replace(self._config, **changes)  # validated
        mask_id = mask_token_id(self._text.tokenizer, config.mask_token, self._text.allowed_ids)
        if config.mask_ratio > 0 and mask_id is None:
            raise ValueError(no_mask_token_message())
        self._config = config
        self.model.config, self.model.mask_token_id = config, mask_id

    # -- properties -------------------------------------------------------------------------------
    @property
    def config(self) -> LQAEConfig:
        return self._config

    @property
    def tokens_per_image(self) -> int:
        return self._config.tokens_per_image

    @property
    def image_size(self) -> int:
        return self._config.image_size

    @property
    def vocab_size(self) -> int:
        """Size of the id space: every id lies in ``[0, vocab_size)`` (the LM's vocabulary, or the
        learned codebook's size for the VQ-VAE baseline)."""
        return int(self.model.codebook_table.shape[0])

    @property
    def has_text(self) -> bool:
        """Whether ids are words of the language model (False for the VQ-VAE baseline's learned codes)."""
        return self._config.quantizer != "learned"

    def _require_language_codebook(self, what: str) -> None:
        if not self.has_text:
            raise ValueError(
                f"{what} needs ids that are words of the language model, but this tokenizer's codebook is "
                f"learned (quantizer='learned', the VQ-VAE baseline): its ids are code numbers 0.."
                f"{self._config.learned_codebook_size - 1}. Use encode/decode/features, or a tokenizer "
                "with quantizer='language'."
            )

    @property
    def codebook_ids(self) -> torch.Tensor:
        """``LongTensor[K]``: the ids image tokens can take (no special tokens)."""
        return self._text.allowed_ids

    @property
    def text_tokenizer(self) -> Any:
        return self._text.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.encoder.parameters()).device

    @property
    def precision(self) -> str:
        """``"auto"`` | ``"fp32"`` | ``"bf16"`` | ``"fp16"``: see the constructor; settable."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        self._precision = value

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of :attr:`precision`, replacing any autocast the caller has entered.

        ``"fp32"`` (and weights that are not float32, which run in their own dtype) switch autocast
        off, so a caller's ``torch.autocast(dtype=torch.bfloat16)`` cannot change the ids; ``"bf16"``
        and ``"fp16"`` enter their own autocast, whatever dtype the caller's had.
        """
        name = self._precision
        if name == "auto":
            name = "bf16" if self.device.type == "cuda" else "fp32"
        dtype = AUTOCAST_DTYPES[name]
        if dtype is None or next(self.model.encoder.parameters()).dtype != torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)

    def compile(self, **compile_kwargs: Any) -> "ImageTokenizer":
        """``torch.compile`` the encoder, the frozen LM and the decoder in place (the search is a
        registered op the compiler calls as is); returns ``self``. ``compile_kwargs`` go to
        ``torch.compile`` (e.g. ``mode="max-autotune"``). The first calls of each batch shape are
        slow while it compiles."""
        self.model.encoder.compile(**compile_kwargs)
        self.model.decoder.compile(**compile_kwargs)
        self.model.language_model.compile(**compile_kwargs)
        return self

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """Host batch -> the model's device; through pinned memory and without waiting on CUDA."""
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    # -- images -> ids ----------------------------------------------------------------------------
    def _encode_tensor(self, images: Any, do_resize: bool, batch_size: int) -> torch.Tensor:
        """Any image input -> ``LongTensor[B, N]`` on the CPU."""
        pixels = prepare_batch(images, self.image_size, do_resize=do_resize)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, pixels.shape[0], batch_size):
                # ids stay on the device until the end: one copy back, no per-batch wait.
                out.append(self.model.encode(self._to_device(pixels[start : start + batch_size])))
        return torch.cat(out).cpu()

    def encode(self, images: Any, *, do_resize: bool = True, batch_size: int = 64) -> list[int] | list[list[int]]:
        """Image(s) -> ids. One image gives ``list[int]`` of length ``tokens_per_image``; a list
        (or a ``BxCxHxW`` tensor) gives one such list per image."""
        ids = self._encode_tensor(images, do_resize, batch_size).tolist()
        return ids if _is_batch(images) else ids[0]

    def __call__(self, images: Any, *, return_tensors: str | None = None, do_resize: bool = True,
                 batch_size: int = 64) -> dict[str, Any]:
        """``{"input_ids": LongTensor[B, N]}`` with ``return_tensors="pt"``, else lists of ids."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        ids = self._encode_tensor(images, do_resize, batch_size)
        return {"input_ids": ids if return_tensors == "pt" else ids.tolist()}

    # -- ids -> images ----------------------------------------------------------------------------
    def decode(self, ids: Sequence[int] | torch.Tensor, *, output_type: str = "pil") -> Any:
        """One image's ids -> image: ids -> embeddings -> LM (no mask) -> decoder.

        ``output_type``: ``"pil"`` (RGB ``PIL.Image``), ``"np"`` (float32 ``[H, W, 3]`` in [0, 1])
        or ``"pt"`` (float32 ``[3, H, W]`` in [0, 1]). Raises ``ValueError`` for a sequence of
        the wrong length or ids outside the codebook (special tokens, out of range).
        """
        batch = self._text.check_ids(ids, batched=False)
        return self._decode_tensor(batch, output_type)[0]

    def batch_decode(self, ids: Sequence[Sequence[int]] | torch.Tensor, *, output_type: str = "pil",
                     batch_size: int = 64) -> Any:
        """Many images' ids ``[B, N]`` -> a list of PIL images, ``[B, H, W, 3]`` array or ``[B, 3, H, W]`` tensor."""
        batch = self._text.check_ids(ids, batched=True)
        return self._decode_tensor(batch, output_type, batch_size)

    def _decode_tensor(self, ids: torch.Tensor, output_type: str, batch_size: int = 64) -> Any:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        with torch.inference_mode(), self._autocast():
            pixels = torch.cat([self.model.decode(self._to_device(ids[s : s + batch_size])).float()
                                for s in range(0, ids.shape[0], batch_size)]).cpu()
        if output_type == "pt":
            return pixels
        array = pixels.permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
        if output_type == "np":
            return array
        return [Image.fromarray(np.round(a * 255.0).astype(np.uint8), mode="RGB") for a in array]

    # -- text ---------------------------------------------------------------------------------------
    def to_text(self, images: Any, *, do_resize: bool = True) -> str | list[str]:
        """Image(s) -> the LM tokenizer's decoding of their ids: the text to put in a prompt."""
        self._require_language_codebook("to_text")
        ids = self._encode_tensor(images, do_resize, 64).tolist()
        texts = [self._text.ids_to_text(row) for row in ids]
        return texts if _is_batch(images) else texts[0]

    def ids_to_text(self, ids: Sequence[int] | torch.Tensor) -> str:
        """One image's ids -> text (validated: ``ValueError`` for non-codebook ids or a wrong length)."""
        self._require_language_codebook("ids_to_text")
        return self._text.ids_to_text(self._text.check_ids(ids, batched=False)[0].tolist())

    def from_text(self, text: str) -> list[int]:
        """Text -> ids; the exact inverse of :meth:`to_text` when ``codebook_vocabulary="words"``."""
        self._require_language_codebook("from_text")
        return self._text.text_to_ids(text)

    def to_tokens(self, images: Any, *, do_resize: bool = True) -> list[str] | list[list[str]]:
        """Image(s) -> token strings (e.g. ``"Ġcat"``); always exactly invertible by :meth:`from_tokens`."""
        self._require_language_codebook("to_tokens")
        ids = self._encode_tensor(images, do_resize, 64).tolist()
        tokens = [self._text.tokenizer.convert_ids_to_tokens(row) for row in ids]
        return tokens if _is_batch(images) else tokens[0]

    def from_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Token strings -> ids, checked against the codebook."""
        self._require_language_codebook("from_tokens")
        return self._text.tokens_to_ids(tokens)

    # -- features -------------------------------------------------------------------------------------
    def features(self, images: Any, *, layers: Sequence[int] | str | None = None, do_resize: bool = True,
                 batch_size: int = 64) -> torch.Tensor:
        """Probe features of images, float32 on the CPU.

        ``layers``:
          - ``None`` (default): mean-pooled last LM hidden states of the images' ids, ``[B, H]``
            (for a learned codebook, the mean code vector);
          - a sequence of indices into (embedding output, layer 1, ..., layer L), negative from the
            end, e.g. ``(-1, -2, -3, -4)``: those hidden states averaged, then mean-pooled, ``[B, H]``;
          - ``"all"``: the official code's linear-probe representation: every encoder block's output
            and every LM hidden state (embeddings + L layers), each mean-pooled over the tokens, then
            concatenated: ``[B, encoder_depth * encoder_width + (L + 1) * H]`` (25 x 768 = 19,200 for
            the paper preset; a learned codebook has no LM, so only the encoder blocks).
        """
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers must be None, 'all' or a sequence of ints, got {layers!r}")
            return self._all_layer_features(images, do_resize, batch_size)
        ids = self._encode_tensor(images, do_resize, batch_size)
        chosen = None if layers is None else tuple(int(i) for i in layers)
        out = []
        with torch.inference_mode(), self._autocast():
            for s in range(0, ids.shape[0], batch_size):
                hidden = self.model.hidden_states(self._to_device(ids[s : s + batch_size]), chosen)  # [b, N, H]
                out.append(hidden.float().mean(dim=1))
        return torch.cat(out).cpu()

    def _all_layer_features(self, images: Any, do_resize: bool, batch_size: int) -> torch.Tensor:
        pixels = prepare_batch(images, self.image_size, do_resize=do_resize)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, pixels.shape[0], batch_size):
                out.append(self.model.probe_features(self._to_device(pixels[start : start + batch_size])).float())
        return torch.cat(out).cpu()
