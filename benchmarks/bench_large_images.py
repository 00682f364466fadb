"""Large photos: time and peak memory of turning one file into the model's input, reduced decoding
against the full-size path, and what reduced decoding does to ids.

    python benchmarks/bench_large_images.py FILE... [--size 64] [--repeats 5] [--ids-model photo]

For each file, each path runs ``--repeats`` times in a fresh Python process (so peak memory is that
image's alone) and the median wall time and peak resident memory above the process's baseline
(after imports) are reported:
  full      the previous path: decode the whole image, convert to float32, resize (antialiased bicubic)
  reduced   the current path: JPEG draft decoding and Image.reduce in 8 bits down to no less than
            REDUCE_MARGIN x the target's shorter side, then the same float resize
With ``--ids-model``, every file is also encoded both ways and the share of ids that differ printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from lqae_tokenizer.images import to_tensor
from lqae_tokenizer.preprocessing import prepare_batch, resize_and_crop
path, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "full":
    batch = resize_and_crop(to_tensor(path), size)[None]
else:
    batch = prepare_batch(path, size)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "shape": list(batch.shape)}))
"""


def measure(path: str, size: int, mode: str, repeats: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, path, str(size), mode], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(repeats)]
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_mib": statistics.median(r["peak_mib"] for r in runs)}


def id_changes(files: list[str], model: str) -> tuple[int, int]:
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.images import to_tensor
    from lqae_tokenizer.preprocessing import resize_and_crop

    tok = ImageTokenizer.from_pretrained(model, device="cpu")
    changed = total = 0
    for path in files:
        reduced = tok.encode(path)
        full = tok.encode(resize_and_crop(to_tensor(path), tok.image_size)[None])[0]
        changed += sum(a != b for a, b in zip(reduced, full))
        total += len(full)
    return changed, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ids-model", help="also measure how many ids reduced decoding changes")
    args = parser.parse_args()
    from PIL import Image

    print("| file | pixels | full: s | full: peak MiB | reduced: s | reduced: peak MiB | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for path in args.files:
        with Image.open(path) as image:
            pixels = f"{image.width}x{image.height}"
        full = measure(path, args.size, "full", args.repeats)
        reduced = measure(path, args.size, "reduced", args.repeats)
        print(f"| {Path(path).name} | {pixels} | {full['seconds']:.3f} | {full['peak_mib']:.0f} | "
              f"{reduced['seconds']:.3f} | {reduced['peak_mib']:.0f} | {full['seconds'] / reduced['seconds']:.1f}x |",
              flush=True)
    if args.ids_model:
        changed, total = id_changes(args.files, args.ids_model)
        print(f"\nids that differ between the two paths ({args.ids_model}): {changed} of {total} "
              f"({100 * changed / total:.2f}%)")


if __name__ == "__main__":
    main()
