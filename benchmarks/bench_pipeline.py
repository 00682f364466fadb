"""End-to-end throughput: encode, decode, features and one training step, fast path vs straightforward.

    python benchmarks/bench_pipeline.py --preset demo --batch-sizes 1 8 64 256                 # CPU
    python benchmarks/bench_pipeline.py --preset paper --tasks encode --batch-sizes 1 8 64
    python benchmarks/bench_pipeline.py --preset paper --device cuda --precision bf16 --batch-sizes 1 8 64 256

Fast path = the library's public API (``ImageTokenizer.__call__`` / ``batch_decode`` / ``features``
and ``LQAEModel.forward`` + AdamW for a training step) with ``--precision`` (fp32, or bf16 autocast)
and optionally ``--compile``. Straightforward = :mod:`lqae_tokenizer.straightforward`: the same
modules in float32 eager, whole batch at once, ``torch.cdist`` + ``argmin`` quantizer. Both run in the
same process on the same synthetic pixels; the speed-up is their ratio.

Weights are random with the real shapes (roberta-base under "paper"; a RoBERTa of MiniLM's shape
under "demo"; the small RoBERTa under "tiny") next to roberta-base's real tokenizer; no download.
Reported: images/s (median of --repeats timed calls after one warm-up), the median latency of a
call, peak memory of the warm-up call, after the one-time codebook preparation (CUDA: max_memory_allocated; CPU: peak RSS growth, sampled every 2 ms),
model FLOP utilisation against a matmul measured in the same run (bf16 on CUDA or with
--precision bf16, else fp32). FLOPs per image: encode = encoder + search (2*N*K*H); decode = LM +
decoder; features = encoder + search + LM; train = see bench_train.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from bench_train import LM_SHAPES, component_flops, flops_per_image, make_lm, matmul_peak, sync
from lqae_tokenizer import ImageTokenizer, LQAEConfig
from lqae_tokenizer.straightforward import straightforward_model

TASKS = ("encode", "decode", "features", "train")


class PeakMemory:
    """Peak memory (bytes) used while the block runs: CUDA allocator peak, or sampled CPU RSS growth."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            self._stop.wait(0.002)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._max = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self._rss()) - self._base


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds per call over ``repeats`` after one warm-up, peak bytes of the warm-up call)."""
    with PeakMemory(device) as memory:
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak


def task_flops(task: str, tok: ImageTokenizer, shapes: dict) -> float:
    args = (tok.config, shapes["hidden_size"], shapes["num_hidden_layers"], shapes["intermediate_size"],
            tok.model.codebook_size)
    if task == "train":
        return flops_per_image(*args)
    f = component_flops(*args)
    return {"encode": f["encoder"] + f["search"], "decode": f["lm"] + f["decoder"],
            "features": f["encoder"] + f["search"] + f["lm"]}[task]


def calls(task: str, tok: ImageTokenizer, plain, pixels: torch.Tensor, autocast_dtype):
    """(fast, straightforward) zero-argument callables doing ``task`` on the batch ``pixels`` (host)."""
    device, batch = tok.device, pixels.shape[0]
    if task == "encode":
        return (lambda: tok(pixels, return_tensors="pt", batch_size=batch),
                lambda: _no_grad(lambda: plain.encode(pixels.to(device)).cpu()))
    if task == "decode":
        ids = tok(pixels, return_tensors="pt", batch_size=batch)["input_ids"]
        return (lambda: tok.batch_decode(ids, output_type="pt", batch_size=batch),
                lambda: _no_grad(lambda: plain.decode(ids.to(device)).cpu()))
    if task == "features":
        return (lambda: tok.features(pixels, batch_size=batch),
                lambda: _no_grad(lambda: plain.hidden_states(plain.encode(pixels.to(device))).mean(1).cpu()))
    return train_step(tok.model, pixels, autocast_dtype), train_step(plain, pixels, None)


def _no_grad(fn):
    with torch.inference_mode():
        return fn()


def train_step(model, pixels: torch.Tensor, autocast_dtype):
    """One optimiser step (forward, backward, AdamW) on ``pixels`` with the config's mask ratio."""
    device = next(model.encoder.parameters()).device
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-6, betas=(0.9, 0.95))
    mask = torch.rand(pixels.shape[0], model.config.tokens_per_image, generator=torch.Generator().manual_seed(0))
    mask = (mask < model.config.mask_ratio).to(device)

    def step():
        model.train()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(pixels.to(device, non_blocking=True), mask=mask)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()

    return step


def build(preset: str, device: torch.device, precision: str, folder: Path) -> ImageTokenizer:
    config = LQAEConfig.from_preset(preset, language_model=str(make_lm(folder / "lm", preset)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageTokenizer(config, device=device, precision=precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(LM_SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the fast path's arithmetic")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path (ImageTokenizer.compile)")
    parser.add_argument("--no-baseline", action="store_true", help="time the fast path only")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = build(args.preset, device, args.precision, Path(tmp))
    if args.compile:
        tok.compile()
    plain = straightforward_model(tok.model)  # float32 cdist + argmin, float32 eager
    tok.model.quantizer.codebook(tok.model.codebook_table)  # the one-time search layout, not timed
    autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    shapes = LM_SHAPES[args.preset]
    peak = matmul_peak(device, torch.bfloat16 if (device.type == "cuda" or args.precision == "bf16") else torch.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name} | preset {args.preset} ({tok.image_size}px, {tok.tokens_per_image} tokens, codebook "
          f"{tok.model.codebook_size}) | fast path {args.precision}{' compiled' if args.compile else ''} | "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s | median of {args.repeats}")
    print("| task | batch | fast img/s | straightforward img/s | speed-up | fast ms/call | straightforward ms/call "
          "| fast peak MiB | straightforward peak MiB | fast MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        flops = task_flops(task, tok, shapes)
        for batch in args.batch_sizes:
            pixels = torch.rand(batch, 3, tok.image_size, tok.image_size, generator=torch.Generator().manual_seed(batch))
            fast, slow = calls(task, tok, plain, pixels, autocast_dtype)
            try:
                t_fast, m_fast = timed(fast, device, args.repeats)
                t_slow, m_slow = (float("nan"), float("nan")) if args.no_baseline else timed(slow, device, args.repeats)
            except torch.cuda.OutOfMemoryError:
                print(f"| {task} | {batch} | out of memory | | | | | | | |", flush=True)
                torch.cuda.empty_cache()
                continue
            print(f"| {task} | {batch} | {batch / t_fast:.1f} | {batch / t_slow:.1f} | {t_slow / t_fast:.2f}x | "
                  f"{1e3 * t_fast:.1f} | {1e3 * t_slow:.1f} | {m_fast / 2**20:.0f} | {m_slow / 2**20:.0f} | "
                  f"{flops * batch / t_fast / peak:.1%} |", flush=True)


if __name__ == "__main__":
    main()
