"""What a run reports: JSONL metrics, optional TensorBoard, validation numbers and image grids."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..evaluation.metrics import mse, psnr
from ..quantizer import codebook_usage


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (and to TensorBoard when asked).

    On resume, lines logged after the resumed step (by the interrupted run) are dropped first, so
    the file reads as one continuous run.
    """

    def __init__(self, output_dir: Path, *, resume_step: int | None, tensorboard: bool) -> None:
        self.path = output_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ValueError("--report_to tensorboard needs the tensorboard package: pip install tensorboard") from err
            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@torch.no_grad()
def validate(model, loader, device: torch.device, autocast) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """Mask ratio 0: MSE, PSNR and codebook usage over ``loader``; also the first batch and its reconstruction."""
    was_training = model.training
    model.eval()
    mses, psnrs, ids, first = [], [], [], None
    for pixels, _, _ in loader:
        pixels = pixels.to(device)
        with autocast():
            out = model(pixels, mask_ratio=0.0)
        recon = out.reconstruction.float().clamp(0, 1)
        mses.append(mse(recon, pixels).cpu())
        psnrs.append(psnr(recon, pixels).cpu())
        ids.append(out.ids.cpu())
        if first is None:
            first = (pixels.cpu(), recon.cpu())
    model.train(was_training)
    usage, perplexity = codebook_usage(torch.cat(ids), model.codebook_size)
    metrics = {"val_mse": float(torch.cat(mses).mean()), "val_psnr": float(torch.cat(psnrs).mean()),
               "val_codebook_usage": float(usage), "val_perplexity": float(perplexity)}
    return metrics, first


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, limit: int = 8) -> None:
    """PNG with originals on the top row and their reconstructions below, ``limit`` columns at most."""
    a, b = originals[:limit], reconstructions[:limit]
    rows = [torch.cat(list(x), dim=2) for x in (a, b)]  # [3, H, n*W] each
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(path)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
