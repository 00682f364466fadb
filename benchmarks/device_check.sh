#!/usr/bin/env bash
# One prepared GPU check, about 11 minutes at most on an H200 (usually less): each step runs under its
# own timeout, writes its log and results into $OUT/results.tgz (re-packed after every step, since
# the device tool brings back only a few files; $OUT defaults to /tmp/lqae-device) and its status
# line to $OUT/status.txt; the script
# exits non-zero if any step failed or timed out. Steps run in order of importance, so a cut-short
# run still leaves the correctness and search results.
#   bash benchmarks/device_check.sh [all|search|pipeline]
# "search" (about 6 minutes at most): exactness, the accumulation probe, search timings, the kernel
# sweep; "pipeline" (about 5): encode/decode/training throughput, torchrun with NCCL and a resume,
# the CUDA tests. "all" runs both.
# The device machine installs nothing, so the package is assembled from the source tree into a
# temporary folder (kernels/ becomes lqae_tokenizer/kernels, as pip would lay it out). Nothing runs
# with the repository root as the first import path: its lqae_tokenizer/ folder lacks kernels/.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-/tmp/lqae-device}"
mkdir -p "$OUT"
LOGS="$(mktemp -d)"
SRC="$(mktemp -d)"
cp -r "$REPO/lqae_tokenizer" "$SRC/lqae_tokenizer"
rm -rf "$SRC/lqae_tokenizer/kernels"
cp -r "$REPO/kernels" "$SRC/lqae_tokenizer/kernels"
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="$(command -v python3 || command -v python)"
WORK="$(mktemp -d)"
: >"$OUT/status.txt"
failed=0

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, record "NAME: ok|FAILED (rc) in Ns"
  local name="$1" limit="$2"
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  if [ "$rc" -eq 124 ]; then verdict="TIMED OUT after ${limit}s"; elif [ "$rc" -ne 0 ]; then verdict="FAILED (exit $rc)"; fi
  [ "$rc" -eq 0 ] || failed=1
  echo "$name: $verdict in $((SECONDS - start))s" | tee -a "$OUT/status.txt"
  tail -4 "$LOGS/$name.log"
  cp "$OUT/status.txt" "$LOGS/status.txt"
  tar czf "$OUT/results.tgz.part" -C "$LOGS" . && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}

TRAIN_PRESET="${TRAIN_PRESET:-paper}"  # "tiny" for a CPU dry run of the torchrun step
export REPO PY WORK TRAIN_PRESET LOGS
train_and_resume() {  # torchrun (NCCL, 1 process): 4 steps with a checkpoint at 2, then resume to 6
  local lm="$WORK/lm" run="$WORK/run"
  (cd "$WORK" && "$PY" -c "import sys; sys.path.insert(0, '$REPO/benchmarks'); from pathlib import Path; \
from bench_train import make_lm; make_lm(Path('$lm'), '$TRAIN_PRESET')") || return 1
  local common=(--preset "$TRAIN_PRESET" --language_model "$lm" --train_data_dir "$REPO/tests/data/fashion-mnist-320"
    --output_dir "$run" --train_batch_size 64 --mixed_precision bf16 --checkpointing_steps 2 --log_every 1
    --no_progress_bar --dataloader_num_workers 4 --max_train_steps 6)
  (cd "$WORK" && "$PY" -m torch.distributed.run --nproc_per_node 1 -m lqae_tokenizer.train "${common[@]}" \
    --stop_after_steps 4) || return 1
  ls "$run"
  (cd "$WORK" && "$PY" -m torch.distributed.run --nproc_per_node 1 -m lqae_tokenizer.train "${common[@]}" \
    --resume_from_checkpoint latest) || return 1
  ls "$run" "$run/final"
  cp "$run/metrics.jsonl" "$LOGS/torchrun_metrics.jsonl"
  tail -3 "$run/metrics.jsonl"
}
export -f train_and_resume

PART="${1:-all}"
cd "$WORK"
step gpu 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv
step versions 60 "$PY" -c "import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, \
triton.__version__, transformers.__version__, torch.version.cuda, torch.cuda.get_device_name(), \
torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
if [ "$PART" = all ] || [ "$PART" = search ]; then
  step exactness 90 "$PY" "$REPO/benchmarks/gpu_exactness.py" --json "$LOGS/exactness.json"
  step wgmma 10 bash -c "grep -rlE 'wgmma.mma_async' ~/.triton/cache --include='*.ptx' | wc -l; \
grep -rhoE 'wgmma.mma_async[.a-z0-9_]*' ~/.triton/cache --include='*.ptx' | sort | uniq -c | head"
  step bench_search 100 "$PY" "$REPO/benchmarks/bench_nearest_code.py" --device cuda --dtypes bfloat16 \
    --metrics cosine --sizes 256 4096 65536 131072 --repeats 10 --json "$LOGS/bench_search.json"
fi
if [ "$PART" = all ] || [ "$PART" = pipeline ]; then
  step pipeline 70 "$PY" "$REPO/benchmarks/bench_pipeline.py" --preset paper --device cuda --precision bf16 \
    --tasks encode decode --batch-sizes 1 64 256 --repeats 5
  step train 50 "$PY" "$REPO/benchmarks/bench_pipeline.py" --preset paper --device cuda --precision bf16 \
    --tasks train --batch-sizes 64 256 512 --repeats 3
  step torchrun 70 bash -c train_and_resume
fi
if [ "$PART" = all ] || [ "$PART" = search ]; then
  step sweep 80 "$PY" "$REPO/benchmarks/sweep_kernel.py" --json "$LOGS/sweep.json"
fi
if [ "$PART" = all ] || [ "$PART" = pipeline ]; then
  step cuda_tests 90 bash -c "cd '$REPO' && '$PY' -P -m pytest -q -x -p no:cacheprovider \
tests/test_nearest_code_gpu.py tests/test_fast_paths.py::test_cuda_default_is_bf16_autocast_with_exact_ids"
fi
echo "----" | tee -a "$OUT/status.txt"
if [ "$failed" -ne 0 ]; then echo "device check: SOME STEPS FAILED" | tee -a "$OUT/status.txt"; exit 1; fi
echo "device check: all steps ok" | tee -a "$OUT/status.txt"
