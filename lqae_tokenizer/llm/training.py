"""Train an :class:`~lqae_tokenizer.llm.ImageLM`'s LoRA adapter with ``transformers.Trainer`` and ``peft``.

The loop, checkpoints (``output/checkpoints/checkpoint-N``, resumable), progress bar, bf16 autocast
(CPU and GPU) and DistributedDataParallel under ``torchrun`` are the Trainer's; this module only
builds the examples (:mod:`~lqae_tokenizer.llm.data`), the LoRA config, the per-example loss and
writes the finished :class:`ImageLM` to ``output/final``. ``lqae-llm train`` is its command line.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..checkpoint import atomic_write_bytes
from ..evaluation.causal_lm import SMOLLM2
from .data import PadCollator, build_examples, per_example_loss, read_labelled_text
from .image_lm import ImageLM, load_image_tokenizer, require_llm_packages
from .prompt import PromptFormat

FINAL_DIR = "final"
PRECISIONS = ("auto", "bf16", "fp32")
CHECKPOINTS_DIR = "checkpoints"
RUN_SETTINGS = "run_settings.json"
# What the examples and the adapter's shape are made of: a resumed run must keep them (epochs, save
# steps, the progress bar and the like may change).
FIXED_ON_RESUME = ("image_tokenizer", "language_model", "label_names", "tasks", "words_per_line", "max_images",
                   "seed", "lora_rank", "lora_alpha", "lora_dropout", "target_modules")


class TrainingSetupError(ValueError):
    """The data or the run folder cannot be used (said before the LM loads; ``lqae-llm`` prints it as a
    usage error)."""


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

    Raises :class:`TrainingSetupError` (a ``ValueError``) before the LM loads for data with fewer than two
    classes or a ``resume`` whose settings of :data:`FIXED_ON_RESUME` differ from the run's; a
    ``ValueError`` for unknown labels.
    """
    require_llm_packages()
    from datasets import Dataset
    from transformers import Trainer

    from ..evaluation.causal_lm import load_causal_lm

    output = Path(config.output_dir)
    resume = config.resume and any((output / CHECKPOINTS_DIR).glob("checkpoint-*"))
    settings = run_settings(config)
    if resume:
        check_run_settings(output, settings)
    items = select_images(read_labelled_text(config.data, config.label_names), config.max_images, config.seed)
    labels = list(dict.fromkeys(config.label_names.values())) if config.label_names else sorted({i.label for i in items})
    if len(labels) < 2:
        raise TrainingSetupError(f"the training data has {len(labels)} label(s) ({labels}); an ImageLM needs at least two")
    if not resume:  # recorded once the data is known to be usable, so a refused run leaves nothing behind
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output / RUN_SETTINGS, (json.dumps(settings, indent=1) + "\n").encode())
    image_tokenizer = load_image_tokenizer(config.image_tokenizer)
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
    resumed_from = _checkpoint_step(output / CHECKPOINTS_DIR) if resume else 0
    start = time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.time() - start
    final = output / FINAL_DIR
    if trainer.is_world_process_zero():
        facts = _training_facts(config, items, examples, result, seconds, trainer)
        if resumed_from:
            facts["resumed_from_step"] = resumed_from
        image_lm = ImageLM(image_tokenizer, trainer.model, llm_tokenizer, labels, prompt=fmt,
                           language_model=config.language_model,
                           image_tokenizer_name=config.image_tokenizer, training=facts)
        image_lm.save_pretrained(final)
    return final


def run_settings(config: AdapterTrainingConfig) -> dict[str, Any]:
    """The settings of :data:`FIXED_ON_RESUME` as JSON values (tuples as lists), as ``run_settings.json`` holds them."""
    return json.loads(json.dumps({k: getattr(config, k) for k in FIXED_ON_RESUME}))


def check_run_settings(output: Path, settings: dict[str, Any]) -> None:
    """``TrainingSetupError`` naming each setting that differs from ``output/run_settings.json`` (written
    when the run started; a resumed checkpoint would otherwise go on training on other examples,
    silently). Runs older than the file are not checked."""
    path = output / RUN_SETTINGS
    if not path.is_file():
        return
    recorded = json.loads(path.read_text())
    changed = [f"{k}: {recorded.get(k)!r} in the run, {v!r} now" for k, v in settings.items() if recorded.get(k) != v]
    if changed:
        raise TrainingSetupError(f"--resume continues the run in {output}, whose settings differ: {'; '.join(changed)}. "
                                 "Use the run's settings, or a new --output folder to start another run")


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
