"""Train an :class:`~lqae_tokenizer.llm.ImageLM`'s LoRA adapter with ``transformers.Trainer`` and ``peft``.

The loop, checkpoints (``output/checkpoints/checkpoint-N``, resumable), progress bar, bf16 autocast
(CPU and GPU) and DistributedDataParallel under ``torchrun`` are the Trainer's; this module checks
every input before the first step (settings, data files line by line, labels under the LM's tokenizer,
every text against the image tokenizer's codebook and words per image), builds the examples
(:mod:`~lqae_tokenizer.llm.data`), the LoRA config and the per-example loss, and writes the finished
:class:`ImageLM` to ``output/final``. The run folder's lock, pinned settings and incomplete checkpoints:
:mod:`~lqae_tokenizer.llm.run_folder`. ``lqae-llm train`` is its command line.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import bundled
from ..config import PRECISIONS as SHARED_PRECISIONS
from ..bundled import SMOLLM2
from .data import TASKS, PadCollator, build_examples, per_example_loss, read_labelled_text
from .image_lm import ImageLM, load_image_tokenizer, require_llm_packages
from .prompt import PromptFormat, check_labels
from .run_folder import (FIXED_ON_RESUME, RUN_SETTINGS, TrainingSetupError, check_run_settings,  # noqa: F401
                         data_fingerprints, run_lock, set_aside_incomplete_checkpoints, write_run_settings)

FINAL_DIR = "final"
# The shared vocabulary (config.PRECISIONS) but fp16: a LoRA run in fp16 autocast needs a loss scaler,
# which Trainer provides only on CUDA.
PRECISIONS = tuple(p for p in SHARED_PRECISIONS if p != "fp16")
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class AdapterTrainingConfig:
    """Everything a run needs; saved (with the data's size) in the ImageLM's ``image_lm.json``.

    ``max_images`` takes the first N images after a seeded shuffle, so smaller runs use subsets of
    larger ones (a learning curve). ``labels`` fixes the label order (default: ``label_names``'
    values in order, else the sorted raw labels). ``words_per_line`` lays each image's words out as
    grid rows of that many words (0: one line; see :class:`~lqae_tokenizer.llm.prompt.PromptFormat`).
    """

    data: list[str]
    output_dir: str
    image_tokenizer: str = "fashion-mnist"
    language_model: str = SMOLLM2
    label_names: dict[str, str] | None = None
    tasks: tuple[str, ...] = ("read", "draw")
    words_per_line: int = 0
    max_images: int | None = None
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 4e-4
    warmup_ratio: float = 0.03
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    precision: str = "auto"
    seed: int = 0
    save_steps: int = 200
    save_total_limit: int = 2
    logging_steps: int = 10
    resume: bool = False
    progress_bar: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        PromptFormat(words_per_line=self.words_per_line)  # ValueError for a bad layout, before anything loads
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_rank", "save_steps", "save_total_limit",
                     "logging_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, low, high in (("epochs", 0.0, 1e6), ("learning_rate", 0.0, 1.0), ("lora_alpha", 0.0, 1e6)):
            value = getattr(self, name)
            if not low < value <= high:  # also refuses NaN
                raise ValueError(f"{name} must be in ({low:g}, {high:g}], got {value!r}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"warmup_ratio and lora_dropout must be in [0, 1), got {self.warmup_ratio!r} and "
                             f"{self.lora_dropout!r}")
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty selection of {list(TASKS)}, got {list(self.tasks)}")
        if not self.target_modules or not all(self.target_modules):
            raise ValueError(f"target_modules must name at least one linear layer, got {list(self.target_modules)}")


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> ``"bf16"`` (autocast) on CUDA, ``"fp32"`` on a CPU.

    On a CPU without bf16 matrix units (no AMX or AVX512-BF16, e.g. the project's 2-core Xeon) bf16
    autocast emulates the products and a SmolLM2-135M step took 2x longer than in float32 (measured:
    RESULTS.md); on CPUs with AMX pass ``bf16`` explicitly.
    """
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() else "fp32"


def select_images(items: Sequence[Any], max_images: int | None, seed: int) -> list[Any]:
    """A seeded shuffle of ``items``, cut to ``max_images``: nested subsets for growing N."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[: max_images or len(order)]]


def _lora_model(base: Any, config: AdapterTrainingConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def _training_arguments(config: AdapterTrainingConfig, output: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output / CHECKPOINTS_DIR), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio,
        weight_decay=0.0, logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, bf16=resolve_precision(config.precision) == "bf16",
        use_cpu=not torch.cuda.is_available(), seed=config.seed, data_seed=config.seed, report_to=[],
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=not config.progress_bar,
        save_only_model=False, logging_first_step=True)


def train_adapter(config: AdapterTrainingConfig) -> Path:
    """Train, then write the :class:`ImageLM` to ``output_dir/final``; returns that folder.

    Raises :class:`TrainingSetupError` (a ``ValueError``) before the first step for unusable data (a
    file or line that cannot be read, fewer than two classes, labels the LM cannot tell apart, a text
    that is not the image tokenizer's words), for a ``resume`` whose settings or data differ from the
    run's, and while another run holds the folder.
    """
    require_llm_packages()
    output = Path(config.output_dir)
    with run_lock(output):
        return _train_locked(config, output)


def _train_locked(config: AdapterTrainingConfig, output: Path) -> Path:
    from datasets import Dataset
    from transformers import Trainer

    from .causal_lm import load_causal_lm
    from ..language_model import load_text_tokenizer

    checkpoints = output / CHECKPOINTS_DIR
    settings = run_settings(config)
    if config.resume:  # before the data is even read: the run's settings are the first thing to hold
        check_run_settings(output, settings)
    items, labels = _checked_items(config)
    settings["data_sha256"] = data_fingerprints(config.data)
    if config.resume:
        check_run_settings(output, settings)  # the same data files, byte for byte
        set_aside_incomplete_checkpoints(checkpoints)  # a kill mid-save must not block --resume
    resume = config.resume and any(checkpoints.glob("checkpoint-*[0-9]"))
    try:
        check_labels(load_text_tokenizer(config.language_model), labels)
    except ValueError as err:
        raise TrainingSetupError(f"the labels cannot be told apart by {config.language_model}: {err}") from None
    image_tokenizer = load_image_tokenizer(config.image_tokenizer)
    _check_texts(items, image_tokenizer, config.image_tokenizer)
    if not resume:  # recorded once the data is known to be usable, so a refused run leaves nothing behind
        write_run_settings(output, settings)
    torch.manual_seed(config.seed)  # the LoRA initialisation
    base, llm_tokenizer = load_causal_lm(config.language_model)
    fmt = PromptFormat(words_per_line=config.words_per_line)
    examples = build_examples(items, llm_tokenizer, config.tasks, fmt)
    model = _lora_model(base, config)
    trainer = Trainer(model=model, args=_training_arguments(config, output),
                      train_dataset=Dataset.from_list(examples),
                      data_collator=PadCollator(llm_tokenizer.pad_token_id or llm_tokenizer.eos_token_id),
                      compute_loss_func=per_example_loss)
    # a resumed run's clock starts at its checkpoint: the card must say which steps the seconds cover
    resumed_from = _checkpoint_step(checkpoints) if resume else 0
    start = time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.time() - start
    final = output / FINAL_DIR
    if trainer.is_world_process_zero():
        facts = _training_facts(config, items, examples, result, seconds, trainer)
        if resumed_from:
            facts["resumed_from_step"] = resumed_from
        # A bundled tokenizer is named; any other is saved into the folder, so it loads elsewhere.
        name = config.image_tokenizer if bundled.is_bundled(config.image_tokenizer) else None
        image_lm = ImageLM(image_tokenizer, trainer.model, llm_tokenizer, labels, prompt=fmt,
                           language_model=config.language_model, image_tokenizer_name=name, training=facts)
        image_lm.save_pretrained(final)
    return final


def _checked_items(config: AdapterTrainingConfig) -> tuple[list[Any], list[str]]:
    """The selected records and the label order; ``TrainingSetupError`` for unreadable data or < 2 labels."""
    try:
        records = read_labelled_text(config.data, config.label_names)
    except (ValueError, OSError) as err:
        raise TrainingSetupError(str(err)) from None
    items = select_images(records, config.max_images, config.seed)
    labels = list(dict.fromkeys(config.label_names.values())) if config.label_names else sorted({i.label for i in items})
    if len(labels) < 2:
        raise TrainingSetupError(f"the training data has {len(labels)} label(s) ({labels}); an ImageLM needs at least two")
    return items, labels


def _check_texts(items: Sequence[Any], image_tokenizer: Any, name: str) -> None:
    """Every record's text must be exactly the image tokenizer's words (codebook words, as many as an
    image has): text written by another tokenizer would train an adapter that no drawing decodes from."""
    for item in items:
        try:
            image_tokenizer.from_text(item.text)
        except ValueError as err:
            where = f"{item.where}: " if item.where else ""
            raise TrainingSetupError(f"{where}this record's text is not the words of the image tokenizer {name!r} "
                                     f"({image_tokenizer.tokens_per_image} per image): {err}. Tokenize the images "
                                     f"with it (lqae-tokenize DIR --model {name} --output FILE.jsonl) or pass "
                                     "the --image-tokenizer that wrote this text") from None


def run_settings(config: AdapterTrainingConfig) -> dict[str, Any]:
    """The settings of :data:`FIXED_ON_RESUME` as JSON values (tuples as lists), as ``run_settings.json`` holds them."""
    return json.loads(json.dumps({k: getattr(config, k) for k in FIXED_ON_RESUME}))


def _training_facts(config: AdapterTrainingConfig, items: Sequence[Any], examples: Sequence[dict], result: Any,
                    seconds: float, trainer: Any) -> dict[str, Any]:
    lengths = [len(e["input_ids"]) for e in examples]
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("data", "output_dir", "resume", "progress_bar", "extra", "language_model", "image_tokenizer")}
    return {
        "data": [Path(p).name for p in config.data], "images": len(items), "examples": len(examples),
        "mean_tokens_per_example": round(sum(lengths) / len(lengths), 1),
        "optimizer_steps": int(result.global_step), "final_train_loss": round(float(result.training_loss), 4),
        "seconds": round(seconds, 1), "device": str(trainer.args.device),
        "world_size": int(trainer.args.world_size), "trainable_parameters": _trainable(trainer.model),
        **settings, **config.extra,
    }


def _checkpoint_step(checkpoints: Path) -> int:
    """The optimizer step of the newest ``checkpoint-<step>`` folder, the one ``Trainer`` resumes from."""
    from transformers.trainer_utils import get_last_checkpoint

    newest = get_last_checkpoint(str(checkpoints))
    return int(Path(newest).name.split("-")[-1]) if newest else 0


def _trainable(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
