"""Collection mode throughput: one process against torchrun with several, in one run.

    python benchmarks/bench_collection.py [--images DIR] [--model NAME_OR_PATH] [--processes 1 2] [--repeats 3]

Times ``lqae-tokenize DIR --output OUT.jsonl`` end to end (start-up, model load, decoding, encoding,
writing) for each process count, with a fresh output each time, and reports the median images/s over
``--repeats`` runs. With P processes on a CPU each takes cores/P threads. On a multi-GPU node the same
command runs one process per GPU:

    torchrun --nproc_per_node 8 -m lqae_tokenizer.cli.tokenize /data/images --output tokens.jsonl --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "fashion-mnist-320"


def run_once(images: Path, model: str | None, processes: int, batch_size: int, work: Path) -> float:
    out = work / f"p{processes}" / "tokens.jsonl"
    shutil.rmtree(out.parent, ignore_errors=True)
    args = [str(images), "--output", str(out), "--batch-size", str(batch_size)] + (["--model", model] if model else [])
    command = [sys.executable, "-m", "lqae_tokenizer.cli.tokenize", *args]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", "0", "-m", "lqae_tokenizer.cli.tokenize", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", help="tokenizer (default: the bundled one)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from lqae_tokenizer.cli.sources import expand_inputs

    count = len(expand_inputs([str(args.images)]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            times = [run_once(args.images, args.model, processes, args.batch_size, Path(tmp))
                     for _ in range(args.repeats)]
            rows.append((processes, statistics.median(times), count / statistics.median(times)))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"# {cpu}, {os.cpu_count()} cores | {count} images from {args.images.name} | batch {args.batch_size} | "
          f"{date.today()} | median of {args.repeats}")
    print("| processes | median s (end to end) | images/s | vs 1 process |")
    print("|---|---|---|---|")
    base = rows[0][2]
    for processes, seconds, rate in rows:
        print(f"| {processes} | {seconds:.2f} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
