"""Training configuration: one dataclass per concern, presets by exact name, files and flag overrides.

Precedence: preset < ``--config FILE`` (yaml or json, nested by section or flat) < command-line flags.
The resolved configuration is saved with every run (``output_dir/train_config.json``) and with every
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PRECISIONS, LQAEConfig

# The same words as ImageTokenizer(precision=...) and lqae-llm --precision; "no" (the earlier name of
# fp32, in saved train_config.json files) is still read.
MIXED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # a training run names its precision
PRECISION_ALIASES = {"no": "fp32"}
REPORT_TO = ("none", "tensorboard")
WEIGHT_DECAY_SCOPES = ("all", "matrices")


@dataclass
class DataConfig:
    train_data_dir: str = ""  # image folder (recursive) or a .txt file listing image paths
    validation_data_dir: str | None = None
    resolution: int = 256
    min_crop_scale: float = 0.2  # RandomResizedCrop scale range (min_crop_scale, 1), bicubic
    horizontal_flip: bool = True
    dataloader_num_workers: int = 2
    max_bad_file_fraction: float = 0.05  # abort when more of the files read so far are unreadable
    validation_images: int = 64


@dataclass
class OptimConfig:
    learning_rate: float | None = None  # absolute; None = base_learning_rate * global batch / 256
    base_learning_rate: float = 1.5e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 5e-4
    # "all": every trainable parameter decays (the official code: its no-decay list is never used);
    # "matrices": biases, norms, position embeddings and a learned codebook are exempt.
    weight_decay_scope: str = "all"
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    max_grad_norm: float = 0.0  # 0 = no clipping (the official clip_gradient=1e9)
    max_consecutive_bad_steps: int = 5  # abort after this many non-finite losses in a row
    # Train the decoder only: the encoder (and a learned codebook) keep init_from's weights, so every
    # image keeps its ids and vocabulary use; a step costs about half (no encoder or LM backward).
    freeze_encoder: bool = False
    # A learned (VQ-VAE) codebook only: every this many steps, the rows that no image chose since the
    # last check move to random encoder outputs of the step's batch (dead-code restarts; 0 = never).
    codebook_restart_steps: int = 0


@dataclass
class RunConfig:
    output_dir: str = "lqae-run"
    train_batch_size: int = 512  # global batch per optimiser step (all ranks, after accumulation)
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 100.0
    max_train_steps: int | None = None  # overrides num_train_epochs when set
    # End the run early (last checkpoint and final/ written) while the learning-rate schedule stays
    # that of the full run: a time budget cut that a later run can reproduce or resume past.
    stop_after_steps: int | None = None
    mixed_precision: str = "fp32"
    compile: bool = False
    seed: int = 42
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # a checkpoint folder or "latest"
    init_from: str | None = None  # fine-tune from a tokenizer checkpoint (fresh optimiser)
    log_every: int = 10
    validation_steps: int = 1000
    report_to: str = "none"
    progress_bar: bool = True
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None


# Every LQAEConfig field can be set from a config file (or the few flags of lqae-train) on top of the
# model preset; None keeps the preset's value. The image size is the data section's resolution, and
# the codebook fingerprint is computed, never set.
_NOT_SETTABLE = ("image_size", "codebook_fingerprint")
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(LQAEConfig) if f.name not in _NOT_SETTABLE)
# Generated from LQAEConfig (each field's own type, or None for "the preset's"), so a new model field
# is settable from a config file without being declared twice.
ModelOverrides = dataclasses.make_dataclass(
    "ModelOverrides",
    [("preset", str, field(default="paper"))]
    + [(f.name, f"{f.type} | None", field(default=None)) for f in dataclasses.fields(LQAEConfig) if f.name in MODEL_FIELDS],
)
ModelOverrides.__doc__ = "The LQAEConfig preset the model starts from and per-field overrides (None: the preset's)."


def model_overrides(m) -> dict[str, Any]:
    """The overrides of a ModelOverrides that are set."""
    return {name: getattr(m, name) for name in MODEL_FIELDS if getattr(m, name) is not None}


@dataclass
class TrainConfig:
    model: ModelOverrides = field(default_factory=ModelOverrides)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["run"]["hub_token"] = None  # never written to disk
        return data

    def validate(self) -> None:
        r, d, o = self.run, self.data, self.optim
        r.mixed_precision = PRECISION_ALIASES.get(r.mixed_precision, r.mixed_precision)
        if r.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {r.mixed_precision!r}")
        if o.weight_decay_scope not in WEIGHT_DECAY_SCOPES:
            raise ValueError(f"weight_decay_scope must be one of {WEIGHT_DECAY_SCOPES}, got {o.weight_decay_scope!r}")
        if not o.max_grad_norm >= 0:
            raise ValueError(f"max_grad_norm must be >= 0 (0 = no clipping), got {o.max_grad_norm!r}")
        if r.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {r.report_to!r}")
        for name, value in (("train_batch_size", r.train_batch_size), ("gradient_accumulation_steps",
                            r.gradient_accumulation_steps), ("checkpointing_steps", r.checkpointing_steps),
                            ("log_every", r.log_every), ("validation_steps", r.validation_steps),
                            ("resolution", d.resolution)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if r.max_train_steps is not None and r.max_train_steps < 1:
            raise ValueError(f"max_train_steps must be >= 1, got {r.max_train_steps}")
        if r.stop_after_steps is not None and (not isinstance(r.stop_after_steps, int) or r.stop_after_steps < 1):
            raise ValueError(f"stop_after_steps must be a positive integer (a step of the schedule), "
                             f"got {r.stop_after_steps!r}")
        if not 0 < d.min_crop_scale <= 1:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {d.min_crop_scale}")
        if not 0 <= d.max_bad_file_fraction < 1:
            raise ValueError(f"max_bad_file_fraction must be in [0, 1), got {d.max_bad_file_fraction}")
        if not d.train_data_dir:
            raise ValueError("train_data_dir is required: an image folder or a text file listing image paths")
        if r.push_to_hub and not r.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (e.g. --hub_model_id org/name)")
        if o.learning_rate is not None and o.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {o.learning_rate}")
        if o.freeze_encoder and not r.init_from:
            raise ValueError("freeze_encoder keeps a trained encoder and trains the decoder on its ids, so it "
                             "needs --init_from (a tokenizer folder or training checkpoint); got no init_from")
        if not isinstance(o.codebook_restart_steps, int) or o.codebook_restart_steps < 0:
            raise ValueError(f"codebook_restart_steps must be an integer >= 0 (0 = no restarts), "
                             f"got {o.codebook_restart_steps!r}")
        if o.codebook_restart_steps and o.freeze_encoder:
            raise ValueError("freeze_encoder keeps the codebook as init_from trained it, so no row can be restarted: "
                             "set codebook_restart_steps=0 or drop freeze_encoder")
        if r.checkpoints_total_limit is not None and r.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be >= 1, got {r.checkpoints_total_limit}")


TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The official run: AdamW (0.9, 0.95), wd 5e-4 on every parameter, no gradient clipping, lr
    # 1.5e-4 x batch/256, 5 warm-up epochs, cosine to 0, batch 512, 100 epochs, seed 42, 256x256
    # RandomResizedCrop(0.2-1, bicubic) + flip.
    "paper": {"model": {"preset": "paper"}},
    # CPU-sized: 32x32 images, the tiny model, a higher rate and a short warm-up.
    "tiny": {
        "model": {"preset": "tiny"},
        "data": {"resolution": 32, "dataloader_num_workers": 0, "validation_images": 16},
        "optim": {"base_learning_rate": 2e-3, "warmup_steps": 20, "max_grad_norm": 1.0,
                  "weight_decay_scope": "matrices"},
        "run": {"train_batch_size": 32, "num_train_epochs": 10.0, "checkpointing_steps": 100,
                "validation_steps": 100, "log_every": 5},
    },
    # The bundled demo tokenizer's recipe (README "Demo tokenizer"): Fashion-MNIST at 32x32.
    "demo": {
        "model": {"preset": "demo"},
        "data": {"resolution": 32, "min_crop_scale": 0.6, "dataloader_num_workers": 1, "validation_images": 64},
        "optim": {"learning_rate": 1e-3, "warmup_steps": 200, "weight_decay": 0.05, "max_grad_norm": 1.0,
                  "weight_decay_scope": "matrices"},
        "run": {"train_batch_size": 64, "max_train_steps": 6000, "checkpointing_steps": 500,
                "validation_steps": 500, "log_every": 20, "checkpoints_total_limit": 2},
    },
}

# The demo recipe over SmolLM2's own words (recipes/train_smollm2_words.sh).
TRAIN_PRESETS["demo-smollm2"] = {**TRAIN_PRESETS["demo"], "model": {"preset": "demo-smollm2"}}
# The ablation's VQ-VAE arm (RESULTS.md): the demo recipe with a learned codebook and no LM.
TRAIN_PRESETS["demo-vqvae"] = {**TRAIN_PRESETS["demo"], "model": {"preset": "demo-vqvae"}}
# The same with dead-code restarts, so that the VQ-VAE uses its codebook (the LLM study's VQ-VAE arm since
# 2026-12-06): a row no image chose in 25 steps (25 x 64 x 64 = 102,400 tokens) moves to an encoder output.
TRAIN_PRESETS["demo-vqvae-restarts"] = {
    **TRAIN_PRESETS["demo-vqvae"],
    "optim": {**TRAIN_PRESETS["demo"]["optim"], "codebook_restart_steps": 25},
}

SECTIONS = {"model": ModelOverrides, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def field_sections() -> dict[str, str]:
    """Flat field name -> its section (names are unique across sections)."""
    out: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in out, f.name
            out[f.name] = section
    return out


def _merge(config: TrainConfig, values: dict[str, Any], source: str) -> None:
    """Apply nested ({"run": {...}}) or flat ({"seed": 1}) values onto ``config``."""
    sections = field_sections()
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            _merge(config, {k: v for k, v in value.items()}, source)
            continue
        if key not in sections:
            raise ValueError(f"{source}: unknown training option {key!r}; valid options are {sorted(sections)}")
        setattr(getattr(config, sections[key]), key, value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Values from a ``.json`` or ``.yaml``/``.yml`` file (yaml needs PyYAML)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ValueError(f"{path} is YAML but PyYAML is not installed: pip install pyyaml, or use JSON") from err
        data = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file {path} must end in .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def resolve_config(preset: str, file_values: dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Preset, then file values, then flag overrides; validated."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets are {sorted(TRAIN_PRESETS)}")
    config = TrainConfig()
    _merge(config, TRAIN_PRESETS[preset], f"preset {preset!r}")
    if file_values:
        _merge(config, file_values, "config file")
    _merge(config, overrides, "command line")
    config.validate()
    return config
