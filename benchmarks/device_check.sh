#!/usr/bin/env bash
# One prepared GPU check: the nearest-code kernel, the CUDA tests and the end-to-end pipeline
# (each step under a timeout; about 8 minutes at most on an H200).
# The device machine installs nothing, so the package is assembled from the source tree into a
# temporary folder (kernels/ becomes lqae_tokenizer/kernels, as pip would lay it out).
#   bash benchmarks/device_check.sh            # writes details under $OUT (default /tmp/lqae-device)
set -euo pipefail
OUT="${OUT:-/tmp/lqae-device}"
mkdir -p "$OUT"
SRC="$(mktemp -d)"
cp -r lqae_tokenizer "$SRC/lqae_tokenizer"
cp -r kernels "$SRC/lqae_tokenizer/kernels"
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python - <<'PY' 2>&1 | tee "$OUT/correctness.txt"
# Full-size exactness: Triton vs the torch path on every row, vs float64 on sampled rows.
import torch
from lqae_tokenizer import Codebook
from lqae_tokenizer.kernels.reference import float64_scan
g = torch.Generator(device="cuda").manual_seed(0)
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    table = (torch.randn(50265, 768, device="cuda", generator=g) * 0.1).to(dtype)
    for metric in ("cosine", "l2", "dot"):
        for n in (256, 4099):
            x = table[torch.randint(0, 50265, (n,), device="cuda", generator=g)].float()
            x = (x + 0.02 * torch.randn(n, 768, device="cuda", generator=g)).to(dtype)
            book = Codebook(table, metric=metric)
            got = book.search(x, backend="triton")
            same = torch.equal(got, book.search(x, backend="torch"))
            rows = torch.arange(0, n, 41, device="cuda")
            exact = torch.equal(got[rows].cpu(), float64_scan(x[rows].cpu(), table.cpu(), metric))
            print(f"{dtype} {metric} N={n}: triton==torch {same}, ==float64 on {len(rows)} rows {exact}")
            assert same and exact
print("CORRECTNESS OK")
PY
timeout 200 python benchmarks/bench_nearest_code.py --device cuda --repeats 5 --json "$OUT/bench.json" \
  | tee "$OUT/bench.md" || echo "bench_nearest_code: timed out or failed"
# The CUDA tests (fast path defaults, Triton), when pytest is there.
if python -c "import pytest" 2>/dev/null; then
  timeout 120 python -m pytest -q -x tests/test_fast_paths.py tests/test_gpu.py 2>&1 | tail -5 | tee "$OUT/tests.txt" || true
fi
# End to end: paper preset, bf16 fast path vs the straightforward float32 model (issue 7's targets).
timeout 200 python benchmarks/bench_pipeline.py --preset paper --device cuda --precision bf16 \
  --tasks encode decode train --batch-sizes 1 64 256 --repeats 5 | tee "$OUT/pipeline.md" \
  || echo "bench_pipeline: timed out or failed"
