"""The training loop: data, optimiser steps, logging, validation, checkpoints, resume, signals."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import TRAINING_FIELDS, LQAEConfig
from ..tokenizer import ImageTokenizer
from . import run_state
from .config import TrainConfig, model_overrides
from .dead_codes import CodeUsage, restart_dead_codes
from .data import ImageFiles, ResumableSampler, collate, list_images, token_masks
from .distributed import DistributedContext
from .errors import TrainingAborted
from .optim import build_optimizer, warmup_cosine
from .reporting import MetricsLog, finite_or_none, save_grid, validate

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # per-rank micro-batches of the current epoch already consumed
    files_read: int = 0  # all ranks
    files_skipped: int = 0  # unreadable, all ranks
    steps_skipped: int = 0  # non-finite loss or gradient
    bad_steps_in_row: int = 0
    codes_restarted: int = 0  # learned-codebook rows moved by dead-code restarts, all checks so far




def apply_training_settings(tokenizer: ImageTokenizer, overrides: dict[str, Any]) -> None:
    """Set the training-only fields of a loaded tokenizer's config (mask ratio, loss weights); any other
    field given must equal the checkpoint's (``ValueError`` naming it otherwise)."""
    current = tokenizer.config
    changes = {k: v for k, v in overrides.items() if k in TRAINING_FIELDS}
    # A list from a config file means the same as the config's tuple (decoder_layers).
    fixed = {k: v for k, v in overrides.items()
             if k not in TRAINING_FIELDS and getattr(current, k) != (tuple(v) if isinstance(v, list) else v)}
    if fixed:
        name, value = next(iter(fixed.items()))
        raise ValueError(f"--init_from fine-tunes the checkpoint as it is: {name}={value!r} differs from its "
                         f"{getattr(current, name)!r}; only {', '.join(TRAINING_FIELDS)} can change")
    if changes:
        tokenizer.set_training_settings(**changes)


def build_tokenizer(config: TrainConfig, device: torch.device) -> ImageTokenizer:
    """A fresh tokenizer from the model preset and overrides, or a checkpoint to fine-tune (with the
    training-only overrides applied)."""
    torch.manual_seed(config.run.seed)
    if config.run.init_from:
        source = Path(config.run.init_from)
        overrides = model_overrides(config.model)
        # --language_model says where to load the checkpoint's frozen LM from (a local copy, the folder of
        # an installed package), not which LM to use: the codebook fingerprint checks it is the same one,
        # and the checkpoint's portable name for it is what the fine-tuned model records.
        language_model = overrides.pop("language_model", None)
        if (source / run_state.STATE_NAME).is_file():
            tokenizer = tokenizer_from_checkpoint(source, device, language_model=language_model)
        else:
            tokenizer = ImageTokenizer.from_pretrained(config.run.init_from, device=device,
                                                       language_model=language_model)
        apply_training_settings(tokenizer, overrides)
        return tokenizer
    lqae = LQAEConfig.from_preset(config.model.preset, image_size=config.data.resolution,
                                  **model_overrides(config.model))
    return ImageTokenizer(lqae, device=device)


def _init_from_label(source: str) -> str:
    """What a model card calls ``--init_from``, never this machine's path: a Hub id as given,
    ``run/final`` and ``run/checkpoint-500`` with their run's name, any other folder by its own name."""
    folder = Path(source)
    if not folder.exists():
        return source
    folder = folder.resolve()
    if folder.name == "final" or folder.name.startswith(run_state.PREFIX):
        return f"{folder.parent.name}/{folder.name}"
    return folder.name


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process. A scheduler that signals the whole
    process group would otherwise kill them mid-step, and the main process, told to checkpoint and stop,
    would die on the dead worker instead. They still exit when the main process shuts them down or dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def load_trainable(model: torch.nn.Module, data: bytes) -> None:
    """Load a checkpoint's ``trainable.safetensors`` bytes into the model's trainable modules."""
    from safetensors.torch import load as load_safetensors

    weights = load_safetensors(data)
    for name, module in model.trainable_modules().items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})


def tokenizer_from_checkpoint(path: Path, device: torch.device | str = "cpu",
                              language_model: str | os.PathLike | None = None) -> ImageTokenizer:
    """The tokenizer a training checkpoint (``output_dir/checkpoint-<step>``) holds, checksums verified.

    Lets a run be exported or fine-tuned (``--init_from``) from any step, not only from ``final``.
    ``language_model``: a local copy to load the frozen LM from instead of the recorded name (as in
    ``ImageTokenizer.from_pretrained``); the recorded name is kept and the codebook fingerprint must match.
    Raises :class:`~lqae_tokenizer.training.run_state.CheckpointCorrupt` for altered files.
    """
    state, files = run_state.read_verified(Path(path))
    config = LQAEConfig.from_dict(state["model_config"])
    tokenizer = ImageTokenizer(config, device=device, language_model=language_model)
    load_trainable(tokenizer.model, files["trainable.safetensors"])
    tokenizer.model.eval()
    return tokenizer


class Trainer:
    """Trains ``ImageTokenizer.model`` per a :class:`TrainConfig` on this process's rank."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dist = DistributedContext.from_environment()
        self.output_dir = Path(config.run.output_dir)
        self.stop_requested = False
        self.progress = Progress()
        with warnings.catch_warnings():
            if not self.dist.is_main:
                warnings.simplefilter("ignore")
            self.tokenizer = build_tokenizer(config, self.dist.device)
        # A fine-tuned tokenizer's card keeps how its starting point was made (the card's facts of
        # --init_from), so a staged recipe is not reduced to its last stage.
        self.start_facts = dict(self.tokenizer.training_facts) if config.run.init_from else {}
        self.model = self.tokenizer.model
        if self.model.mlm_term_dropped and self.dist.is_main:
            logger.warning("language model %r has no trained masked-LM head: the masked-LM loss term is off "
                           "(set mlm_loss_weight=0 to silence this)", self.model.config.language_model)
        if config.optim.freeze_encoder:
            self._freeze_encoder()
        self.code_usage = self._code_usage()
        self.model.train()
        self._setup_data()
        self._setup_optimisation()

    # -- setup ------------------------------------------------------------------------------------
    def _freeze_encoder(self) -> None:
        """Stop training everything that decides the ids: the encoder and a learned codebook. Their
        weights still go into every checkpoint, so a checkpoint is a whole tokenizer."""
        frozen = [self.model.encoder] + ([self.model.codebook] if self.model.codebook is not None else [])
        if self.model.quantizer.projection is not None:  # the search projection decides ids too
            frozen.append(self.model.quantizer)
        for module in frozen:
            module.requires_grad_(False)

    def _code_usage(self) -> CodeUsage | None:
        """The usage counts of dead-code restarts, when asked for (a learned codebook only)."""
        every = self.config.optim.codebook_restart_steps
        if not every:
            return None
        if self.model.codebook is None:
            raise ValueError("codebook_restart_steps restarts unused rows of a learned codebook, but this model's "
                             "codebook is the language model's frozen embedding table (quantizer='language'): "
                             "set quantizer='learned' or codebook_restart_steps=0")
        return CodeUsage(self.model.codebook.num_embeddings, every)

    def _per_rank_batch(self) -> int:
        r = self.config.run
        per_rank, rest = divmod(r.train_batch_size, self.dist.world_size * r.gradient_accumulation_steps)
        if rest or per_rank < 1:
            raise ValueError(
                f"train_batch_size={r.train_batch_size} must be a multiple of world size ({self.dist.world_size}) x "
                f"gradient_accumulation_steps ({r.gradient_accumulation_steps})"
            )
        return per_rank

    def _setup_data(self) -> None:
        c, d = self.config, self.config.data
        self.batch_size = self._per_rank_batch()
        paths = list_images(d.train_data_dir)
        self.train_set = ImageFiles(paths, d.resolution, seed=c.run.seed, train=True,
                                    min_crop_scale=d.min_crop_scale, flip=d.horizontal_flip)
        self.sampler = ResumableSampler(len(paths), self.batch_size, seed=c.run.seed, rank=self.dist.rank,
                                        world_size=self.dist.world_size)
        self.steps_per_epoch = max(1, self.sampler.batches_per_epoch // c.run.gradient_accumulation_steps)
        self.total_steps = c.run.max_train_steps or math.ceil(c.run.num_train_epochs * self.steps_per_epoch)
        self.val_loader = None
        if d.validation_data_dir and self.dist.is_main:
            val_paths = list_images(d.validation_data_dir)[: d.validation_images]
            val_set = ImageFiles(val_paths, d.resolution, seed=c.run.seed, train=False)
            self.val_loader = DataLoader(val_set, batch_size=min(len(val_paths), 64), collate_fn=collate,
                                         sampler=[(0, i) for i in range(len(val_paths))])

    def _setup_optimisation(self) -> None:
        c = self.config
        lr = c.optim.learning_rate or c.optim.base_learning_rate * c.run.train_batch_size / 256
        self.optimizer = build_optimizer(self.model.trainable_modules(), c.optim, lr)
        warmup = c.optim.warmup_steps if c.optim.warmup_steps is not None else round(c.optim.warmup_epochs * self.steps_per_epoch)
        warmup = max(1, min(warmup, self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(warmup, self.total_steps))
        precision = c.run.mixed_precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=precision == "fp16")
        if c.run.compile:  # in place, so state-dict keys stay the same
            self.model.encoder.compile()
            self.model.decoder.compile()
        self.forward_model = self.model
        if self.dist.enabled:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                broadcast_buffers=False)

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank's RNG goes in)."""
        rngs = self.dist.gather(run_state.capture_rng())
        if self.code_usage is not None:
            self._summed_usage = self.dist.sum_tensor(self.code_usage.counts)
        path = None
        if self.dist.is_main:
            from safetensors.torch import save as save_safetensors

            files = {
                "trainable.safetensors": save_safetensors({k: v.detach().cpu().contiguous()
                                                           for k, v in self.model.trainable_state_dict().items()}),
                "optimizer.pt": run_state.tensor_bytes(self.optimizer.state_dict()),
                "scheduler.pt": run_state.tensor_bytes(self.scheduler.state_dict()),
                "scaler.pt": run_state.tensor_bytes(self.scaler.state_dict()),
                "rng.pt": run_state.tensor_bytes(rngs),
            }
            if self.code_usage is not None:  # the open window's counts (summed over the ranks)
                files["code_usage.pt"] = run_state.tensor_bytes({"counts": self._summed_usage})
            state = {"progress": self.progress.__dict__, "config": self.config.to_dict(),
                     "model_config": self.tokenizer.config.to_dict(), "world_size": self.dist.world_size}
            path = run_state.save(self.output_dir, self.progress.step, files, state)
            run_state.prune(self.output_dir, self.config.run.checkpoints_total_limit)
        self.dist.barrier()
        return path

    def resume(self, target: str) -> None:
        """Continue from ``target`` (a checkpoint folder or "latest") at its exact step."""
        if target == "latest":
            found = run_state.load_latest(self.output_dir)
            if found is None:
                raise TrainingAborted(f"--resume_from_checkpoint latest: no complete checkpoint in {self.output_dir}")
            path, state, files = found
        else:
            path = Path(target)
            state, files = run_state.read_verified(path)
        load_trainable(self.model, files["trainable.safetensors"])
        self.optimizer.load_state_dict(run_state.from_bytes(files["optimizer.pt"]))
        self.scheduler.load_state_dict(run_state.from_bytes(files["scheduler.pt"]))
        self.scaler.load_state_dict(run_state.from_bytes(files["scaler.pt"]))
        rngs = run_state.from_bytes(files["rng.pt"])
        run_state.restore_rng(rngs[min(self.dist.rank, len(rngs) - 1)])
        self.progress = Progress(**state["progress"])
        if self.code_usage is not None:
            self._resume_code_usage(files.get("code_usage.pt"))
        if self.dist.is_main:
            logger.info("resumed from %s at step %d", path, self.progress.step)

    def _resume_code_usage(self, data: bytes | None) -> None:
        """The open window's counts: all on rank 0 (their sum is what decides), none elsewhere. A checkpoint
        of a run without restarts has none: the first window starts at the resumed step."""
        if data is None:
            if self.dist.is_main:
                logger.info("the checkpoint has no codebook usage counts: the first restart window starts now")
            return
        if self.dist.is_main:
            self.code_usage.load_state_dict(run_state.from_bytes(data))

    # -- the loop ---------------------------------------------------------------------------------
    def _batches(self):
        """Micro-batches from the current data position on, across epochs, forever."""
        while True:
            self.sampler.set_position(self.progress.epoch, self.progress.batch_in_epoch)
            loader = DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler, collate_fn=collate,
                                num_workers=self.config.data.dataloader_num_workers,
                                worker_init_fn=_ignore_stop_signals,
                                pin_memory=self.dist.device.type == "cuda", drop_last=True)
            for batch in loader:
                yield batch
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0

    def _count_files(self, failed: list[str], batch: int) -> None:
        for entry in failed:
            logger.warning("skipping unreadable training file %s", entry)
        read, skipped = self.dist.sum([float(batch + len(failed)), float(len(failed))])
        p = self.progress
        p.files_read += int(read)
        p.files_skipped += int(skipped)
        limit = self.config.data.max_bad_file_fraction
        if p.files_read >= 20 and p.files_skipped / p.files_read > limit:
            raise TrainingAborted(
                f"{p.files_skipped} of {p.files_read} training files read so far are unreadable, more than "
                f"max_bad_file_fraction={limit}; fix the data folder or raise the limit"
            )

    def _optimizer_step(self, micro_batches: list) -> dict[str, float]:
        """One optimiser step over ``gradient_accumulation_steps`` micro-batches."""
        accum = len(micro_batches)
        tokens = self.model.config.tokens_per_image
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, (pixels, seeds, failed) in enumerate(micro_batches):
            self._count_files(failed, pixels.shape[0])
            pixels = pixels.to(self.dist.device, non_blocking=True)
            masks = token_masks(seeds, tokens, self.model.config.mask_ratio).to(self.dist.device)
            sync = self.forward_model.no_sync() if (self.dist.enabled and i < accum - 1) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = self.forward_model(pixels, mask=masks)
                self.scaler.scale(out.loss / accum).backward()
            for key in ("loss", "pixel_loss", "commitment_loss", "mlm_loss", "codebook_loss", "entropy_loss",
                        "codebook_usage", "perplexity"):
                sums[key] = sums.get(key, 0.0) + float(getattr(out, key).detach()) / accum
            if self.code_usage is not None:
                self.code_usage.observe(out.ids)
        self.scaler.unscale_(self.optimizer)
        params = self.model.trainable_parameters()
        max_norm = self.config.optim.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        # Gradients are already averaged over ranks, so every rank sees the same norm and decision.
        finite = bool(torch.isfinite(grad_norm)) and math.isfinite(sums["loss"])
        finite = not self.dist.any(not finite)
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self._count_step(finite)
        if self.code_usage is not None and self.code_usage.due(self.progress.step + 1):
            self._restart_dead_codes(micro_batches[-1][0])
        return {**sums, "grad_norm": float(grad_norm)}

    def _restart_dead_codes(self, pixels: torch.Tensor) -> None:
        """Restart the learned codebook's rows that no rank chose in this window (see ``dead_codes``).
        The draw is seeded by the run's seed and the step, so a resumed run makes the same one."""
        seed = self.config.run.seed * 1_000_003 + self.progress.step + 1
        self.progress.codes_restarted += restart_dead_codes(self.model, self.optimizer, self.code_usage, pixels,
                                                            self.dist, seed, self.autocast)

    def _count_step(self, finite: bool) -> None:
        p = self.progress
        p.bad_steps_in_row = 0 if finite else p.bad_steps_in_row + 1
        p.steps_skipped += 0 if finite else 1
        if not finite:
            logger.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", p.step + 1,
                           p.bad_steps_in_row)
        limit = self.config.optim.max_consecutive_bad_steps
        if p.bad_steps_in_row >= limit:
            raise TrainingAborted(f"{p.bad_steps_in_row} non-finite steps in a row (limit {limit}); "
                                  "lower the learning rate or check the data")

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            self.stop_requested = True
            logger.warning("signal %d: finishing this step, then checkpointing and exiting", signum)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def train(self) -> int:
        """Run to ``total_steps`` (or ``stop_after_steps``, or a stop signal); returns the exit code (0)."""
        r = self.config.run
        if r.resume_from_checkpoint:
            self.resume(r.resume_from_checkpoint)
        # stop_after_steps ends the run early; the learning-rate schedule stays that of total_steps.
        self.end_step = min(self.total_steps, r.stop_after_steps or self.total_steps)
        self._install_signal_handlers()
        log = self._open_log()
        bar = self._progress_bar()
        batches = self._batches()
        accum = r.gradient_accumulation_steps
        timer = (time.perf_counter(), self.progress.step)
        try:
            while self.progress.step < self.end_step:
                micro = [next(batches) for _ in range(accum)]
                metrics = self._optimizer_step(micro)
                self.progress.step += 1
                self.progress.batch_in_epoch += accum
                timer = self._after_step(metrics, log, bar, timer)
                if self.dist.any(self.stop_requested):
                    self.save_checkpoint()
                    return 0
            if self.progress.step % r.checkpointing_steps:
                self.save_checkpoint()
            self._finish()
        finally:
            if log is not None:
                log.close()
            if bar is not None:
                bar.close()
        return 0

    def _after_step(self, metrics: dict[str, float], log, bar, timer):
        r, p = self.config.run, self.progress
        now = time.perf_counter()
        if p.step % r.log_every == 0 or p.step == self.end_step:
            images_per_s = (p.step - timer[1]) * r.train_batch_size / max(now - timer[0], 1e-9)
            record = {"step": p.step, "epoch": p.epoch, "lr": self.scheduler.get_last_lr()[0],
                      "images_per_s": images_per_s, "skipped_files": p.files_skipped,
                      "skipped_steps": p.steps_skipped, **{k: finite_or_none(v) for k, v in metrics.items()}}
            if self.code_usage is not None:
                record["codes_restarted"] = p.codes_restarted
            if log is not None:
                log.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{images_per_s:.1f}")
            timer = (now, p.step)
        if bar is not None:
            bar.update(1)
        if self.val_loader is not None and (p.step % r.validation_steps == 0 or p.step == self.end_step):
            self._validate(log)
        if p.step % r.checkpointing_steps == 0:
            self.save_checkpoint()
        return timer

    def _validate(self, log) -> None:
        metrics, (originals, recon) = validate(self.model, self.val_loader, self.dist.device, self.autocast)
        self.last_validation = {"step": self.progress.step, **metrics}
        save_grid(originals, recon, self.output_dir / "samples" / f"step-{self.progress.step:07d}.png")
        if log is not None:
            log.write({"step": self.progress.step, **metrics})

    def _open_log(self) -> MetricsLog | None:
        if not self.dist.is_main:
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "train_config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        resumed = self.progress.step if self.config.run.resume_from_checkpoint else None
        return MetricsLog(self.output_dir, resume_step=resumed, tensorboard=self.config.run.report_to == "tensorboard")

    def _progress_bar(self):
        if not (self.dist.is_main and self.config.run.progress_bar):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.end_step, initial=self.progress.step, desc="lqae-train", unit="step")

    def _training_facts(self) -> dict[str, Any]:
        """What the model card says about this run (data by folder name, never this machine's path)."""
        c, p = self.config, self.progress
        facts: dict[str, Any] = {
            "datasets": [Path(c.data.train_data_dir).name],
            "steps": p.step, "images_seen": p.step * c.run.train_batch_size, "resolution": c.data.resolution,
            "train_batch_size": c.run.train_batch_size, "mixed_precision": c.run.mixed_precision,
        }
        if c.run.init_from:
            facts["init_from"] = _init_from_label(c.run.init_from)
            earlier = {k: v for k, v in self.start_facts.items() if k != "metrics"}  # its metrics are stale
            if earlier:
                facts["init_from_training"] = earlier
        if getattr(self, "last_validation", None):
            facts["metrics"] = {k: finite_or_none(v) for k, v in self.last_validation.items()}
        return facts

    def _finish(self) -> None:
        """Export the trained tokenizer (rank 0), push it when asked."""
        if self.dist.is_main:
            final = self.output_dir / "final"
            self.tokenizer.training_facts = self._training_facts()
            self.tokenizer.save_pretrained(final)
            if self.config.run.push_to_hub:
                self.tokenizer.push_to_hub(self.config.run.hub_model_id, token=self.config.run.hub_token)
        self.dist.barrier()
