#!/usr/bin/env bash
# One prepared GPU check, about 7.5 minutes at most on an H200: each step runs under its own
# timeout, writes its log to $OUT (default /tmp/lqae-device), and reports its status; the script
# exits non-zero if any step failed or timed out.
#   bash benchmarks/device_check.sh
# The device machine installs nothing, so the package is assembled from the source tree into a
# temporary folder (kernels/ becomes lqae_tokenizer/kernels, as pip would lay it out).
set -uo pipefail
OUT="${OUT:-/tmp/lqae-device}"
mkdir -p "$OUT"
SRC="$(mktemp -d)"
cp -r lqae_tokenizer "$SRC/lqae_tokenizer"
cp -r kernels "$SRC/lqae_tokenizer/kernels"
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
: >"$OUT/status.txt"
failed=0

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, record "NAME: ok|FAILED (rc) in Ns"
  local name="$1" limit="$2"
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  if [ "$rc" -eq 124 ]; then verdict="TIMED OUT after ${limit}s"; elif [ "$rc" -ne 0 ]; then verdict="FAILED (exit $rc)"; fi
  [ "$rc" -eq 0 ] || failed=1
  echo "$name: $verdict in $((SECONDS - start))s" | tee -a "$OUT/status.txt"
  tail -3 "$OUT/$name.log"
}

step gpu 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step versions 30 python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
step exactness 110 python benchmarks/gpu_exactness.py --json "$OUT/exactness.json"
step cuda_tests 100 python -m pytest -q -x tests/test_nearest_code_gpu.py tests/test_fast_paths.py
step bench_search 140 python benchmarks/bench_nearest_code.py --device cuda --dtypes bfloat16 --metrics cosine \
  --sizes 256 4096 65536 131072 --repeats 5 --json "$OUT/bench_search.json"
step pipeline 90 python benchmarks/bench_pipeline.py --preset paper --device cuda --precision bf16 \
  --tasks encode decode train --batch-sizes 1 64 256 --repeats 5
echo "----" | tee -a "$OUT/status.txt"
if [ "$failed" -ne 0 ]; then echo "device check: SOME STEPS FAILED" | tee -a "$OUT/status.txt"; exit 1; fi
echo "device check: all steps ok" | tee -a "$OUT/status.txt"
