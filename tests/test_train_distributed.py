"""Multi-process training with real torch.distributed (gloo, 2 CPU processes through torchrun)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import final_weights, metrics, run_train, train_args

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"

RANK_DUMP = """
import os, sys
from safetensors.torch import save_file
from lqae_tokenizer.train import parse_config
from lqae_tokenizer.training.trainer import Trainer
trainer = Trainer(parse_config(sys.argv[2:]))
assert trainer.train() == 0
state = {k: v.contiguous() for k, v in trainer.model.trainable_state_dict().items()}
save_file(state, os.path.join(sys.argv[1], f"rank{trainer.dist.rank}.safetensors"))
trainer.dist.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(roberta_lm_dir, tmp_path):
    # The masked-LM term averages over each rank's masked tokens, so it is turned off here to make
    # the two-process gradient exactly the one-process gradient (up to float summation order).
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps({"model": {"mlm_loss_weight": 0.0}}))
    common = ["--max_train_steps", "12", "--checkpointing_steps", "6", "--config", str(config_file)]
    single = run_train(train_args(roberta_lm_dir, tmp_path / "single", *common))
    assert single.returncode == 0, single.stderr[-3000:]

    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(ranks),
           *train_args(roberta_lm_dir, tmp_path / "ddp", *common)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    rank0, rank1 = (load_file(str(ranks / f"rank{r}.safetensors")) for r in (0, 1))
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k  # DDP keeps the ranks identical
    ddp, one = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "single")
    for k in one:
        assert torch.equal(ddp[k], rank0[k]), k  # rank 0 exported what it trained
        assert torch.allclose(ddp[k], one[k], rtol=1e-4, atol=1e-5), (k, (ddp[k] - one[k]).abs().max())
    # Only rank 0 wrote: one metrics line per step, one set of checkpoints, no per-rank files.
    assert [r["step"] for r in metrics(tmp_path / "ddp") if "loss" in r] == list(range(1, 13))
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "checkpoint-12", "checkpoint-6", "final", "metrics.jsonl", "train_config.json"]


def test_dead_code_restarts_keep_the_ranks_identical(roberta_lm_dir, tmp_path):
    # Each rank sees other images, so only a decision summed over the ranks and rank 0's rows sent to
    # all keep the learned codebook the same everywhere; DDP itself would not notice a difference.
    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    settings = tmp_path / "restarts.json"
    settings.write_text(json.dumps({"optim": {"codebook_restart_steps": 2}}))
    args = train_args(roberta_lm_dir, tmp_path / "ddp", "--quantizer", "learned", "--mask_ratio", "0",
                      "--config", str(settings), "--max_train_steps", "6", "--checkpointing_steps", "3")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(ranks), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0, rank1 = (load_file(str(ranks / f"rank{r}.safetensors")) for r in (0, 1))
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    rows = [r for r in metrics(tmp_path / "ddp") if "loss" in r]
    assert rows[-1]["codes_restarted"] > 0
    assert "code_usage.pt" in {p.name for p in (tmp_path / "ddp" / "checkpoint-3").iterdir()}
